# %% [markdown]
# # 11. The resampler family: nine resamplers side by side
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/perceiver-resampler-course/perceiver-resampler-course/blob/v0.1.0/notebooks/11_family.ipynb)
#
# Runs on a laptop CPU in about 20 s. Besides the course package it needs the peers' own
# packages, `transformers`, `flamingo-pytorch` and `open-flamingo` (the README's set-up line
# installs them; on Colab, `transformers` is there and the second set-up cell installs the
# other two). Qwen-VL's and MiniCPM-V's resamplers ship only with their checkpoints on the
# model hub, so the package carries stand-ins for them, `refimpl.interop.hub_standins`: our own
# modules, written from the published description, with exactly their state-dict layout and
# forward. After it you will be able to say, for nine
# published resamplers (the Flamingo paper's, flamingo-pytorch, open_flamingo, IDEFICS,
# Idefics2, Kosmos-2, Evolla, Qwen-VL and MiniCPM-V), which design choices each makes and which
# `ResamplerConfig` switch each one is; count a member's parameters at its published size and
# check the count against the real module's; draw the 2-D sin-cos position table that Qwen-VL
# and MiniCPM-V add to their keys, and say why it lets attention see offsets; write that table
# and the bicubic resize Qwen-VL applies to it; and check any member against `refimpl` in
# float64, block by block.

# %% tags=["remove-cell"]
# Colab set-up: install the course package (v0.1.0); Colab's torch, numpy and matplotlib are kept.
# Elsewhere this does nothing: install as the README says.
import subprocess
import sys

if "google.colab" in sys.modules:
    source = "git+https://github.com/perceiver-resampler-course/perceiver-resampler-course@v0.1.0"
    requirement = f"perceiver-resampler-course[notebooks] @ {source}"
    command = [sys.executable, "-m", "pip", "install", "--quiet", requirement]
    pip = subprocess.run(command, capture_output=True, text=True)
    if pip.returncode != 0:
        raise RuntimeError(
            f"Installing the course package failed (pip exit status {pip.returncode}); its last words:\n"
            f"{pip.stderr[-1500:]}\n"
            "Check that this runtime is connected to the internet, then run this cell again (Runtime > Restart "
            f"session first if it installed some packages). To install by hand: !pip install '{requirement}'"
        )

# %% tags=["remove-cell"]
# Colab set-up, this notebook's peers: what it needs beyond the course package (the peers' packages, pinned).
# Elsewhere this does nothing: install as the README says.
import subprocess
import sys

if "google.colab" in sys.modules:
    for arguments in [["flamingo-pytorch==0.1.2", "einops-exts==0.0.4"], ["--no-deps", "open-flamingo==2.0.1"]]:
        command = [sys.executable, "-m", "pip", "install", "--quiet", *arguments]
        pip = subprocess.run(command, capture_output=True, text=True)
        if pip.returncode != 0:
            raise RuntimeError(
                f"Installing {' '.join(arguments)} failed (pip exit status {pip.returncode}); its last words:\n"
                f"{pip.stderr[-1500:]}\n"
                "Check that this runtime is connected to the internet, then run this cell again. "
                "To install by hand, in a cell:"
                "\n!pip install flamingo-pytorch==0.1.2 einops-exts==0.0.4"
                "\n!pip install --no-deps open-flamingo==2.0.1"
            )

# %% [markdown]
# ## Set-up
#
# The peers are the installed packages (flamingo-pytorch, open-flamingo's `helpers.py`, the
# `transformers` modules of IDEFICS, Idefics2, Kosmos-2 and Evolla) and the two stand-ins from
# `refimpl.interop.hub_standins`. Everything runs in float64 on one CPU thread.

# %%
import dataclasses
import io
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

import refimpl
from refimpl import interop, viz
from refimpl.exercises import family as ex
from refimpl.interop.hub_standins import MiniCPMVResampler, QwenVLResampler
from refimpl.interop.open_flamingo import installed_helpers

warnings.filterwarnings("ignore", message="IProgress not found")  # transformers' progress bars, unused here
from flamingo_pytorch import PerceiverResampler as FlamingoPytorchResampler  # noqa: E402
from transformers import EvollaConfig, IdeficsConfig, Kosmos2Config  # noqa: E402
from transformers.models.evolla.modeling_evolla import EvollaSequenceCompressorResampler  # noqa: E402
from transformers.models.idefics.perceiver import IdeficsPerceiverResampler  # noqa: E402
from transformers.models.idefics2.configuration_idefics2 import Idefics2PerceiverConfig  # noqa: E402
from transformers.models.idefics2.modeling_idefics2 import Idefics2PerceiverResampler  # noqa: E402
from transformers.models.kosmos2.modeling_kosmos2 import Kosmos2ImageToTextProjection  # noqa: E402

OpenFlamingoResampler = installed_helpers().PerceiverResampler  # the installed open-flamingo's
torch.set_num_threads(1)
rng = np.random.default_rng(0)
print("refimpl and the peers imported; torch threads:", torch.get_num_threads())


# %% [markdown]
# ## 1. Nine members, one config
#
# Every member is a set of learned queries that cross-attends to the media; they differ in a
# handful of choices, and each choice is a switch of `refimpl.ResamplerConfig`. We do not type
# the switches: for each member with code we build its module (small sizes, every weight
# random, float64), hand its state dict to its importer, `refimpl.interop.from_<peer>`, and take
# the config the importer reads off the tensors. The paper has no code, so its config is the one
# line typed from the paper (as in notebook 4).
#
# The small sizes are non-square on purpose ($D = 12$ or 16, $H \cdot D_h \ne D$ where the module allows
# it, $R = 5$ to 9), so that a transposed weight cannot pass unnoticed in section 4.


# %%
def randomised(module, seed):
    # every parameter random, in float64, eval mode: norm scales U(0.5, 1.5), biases N(0, 0.1^2),
    # projections N(0, 1/fan_in), latents and tables N(0, 1); Qwen-VL's pos_embed, a fixed sin-cos
    # table that its importer checks against the computed one, is left as built
    generator = torch.Generator().manual_seed(seed)
    module = module.double().eval()
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            shape = parameter.shape
            if name == "pos_embed":
                continue
            if name.endswith("bias"):
                value = 0.1 * torch.randn(shape, generator=generator, dtype=torch.float64)
            elif name.endswith("weight") and parameter.ndim == 1:
                value = 0.5 + torch.rand(shape, generator=generator, dtype=torch.float64)
            elif name.endswith("weight") or name == "proj":
                value = torch.randn(shape, generator=generator, dtype=torch.float64) * shape[-1] ** -0.5
            else:
                value = torch.randn(shape, generator=generator, dtype=torch.float64)
            parameter.copy_(value)
    return module


idefics2_config = Idefics2PerceiverConfig(
    hidden_size=12,
    resampler_n_latents=7,
    resampler_depth=2,
    resampler_n_heads=4,
    resampler_head_dim=5,
    num_key_value_heads=2,
    rms_norm_eps=1e-6,
)
idefics2_config._attn_implementation = "sdpa"  # the eager path takes its softmax in float32
kosmos2_config = Kosmos2Config(
    vision_config=dict(hidden_size=10), text_config=dict(embed_dim=16, attention_heads=4), latent_query_num=5
)
kosmos2_config.text_config._attn_implementation = "eager"
evolla_config = EvollaConfig(
    protein_encoder_config=dict(hidden_size=12),
    hidden_size=20,
    resampler_depth=2,
    resampler_dim_head=5,
    resampler_heads=3,
    resampler_num_latents=7,
    resampler_ff_mult=2,
)
# name: (the module, small and random; its importer with the head count, which shapes cannot tell)
members = {
    "flamingo-pytorch": (
        FlamingoPytorchResampler(dim=12, depth=2, dim_head=5, heads=3, num_latents=7, num_media_embeds=2, ff_mult=2),
        lambda sd: interop.from_flamingo_pytorch(sd, heads=3),
    ),
    "open_flamingo": (
        OpenFlamingoResampler(
            dim=12, depth=2, dim_head=5, heads=3, num_latents=7, max_num_media=2, max_num_frames=3, ff_mult=2
        ),
        lambda sd: interop.from_open_flamingo(sd, heads=3),
    ),
    "IDEFICS": (
        IdeficsPerceiverResampler(
            IdeficsConfig(vision_config={"embed_dim": 12}), embed_dim=12, depth=2, n_heads=3, head_dim=5, n_latents=7
        ),
        lambda sd: interop.from_idefics(sd, heads=3),
    ),
    "Idefics2": (Idefics2PerceiverResampler(idefics2_config), lambda sd: interop.from_idefics2(sd, heads=4)),
    "Kosmos-2": (Kosmos2ImageToTextProjection(kosmos2_config), lambda sd: interop.from_kosmos2(sd, heads=4)),
    "Evolla": (EvollaSequenceCompressorResampler(evolla_config), lambda sd: interop.from_evolla(sd, heads=3)),
    "Qwen-VL": (
        QwenVLResampler(grid_size=3, embed_dim=16, num_heads=4, kv_dim=10),
        lambda sd: interop.from_qwen_vl(sd, heads=4),
    ),
    "MiniCPM-V": (
        MiniCPMVResampler(num_queries=5, embed_dim=16, num_heads=4, kv_dim=10, max_size=(3, 3)),
        lambda sd: interop.from_minicpm_v(sd, heads=4),
    ),
}
modules, imported = {}, {}
for seed, (name, (module, read)) in enumerate(members.items()):
    modules[name] = randomised(module, seed)
    imported[name] = read(modules[name].state_dict())  # (config, params), params float64
    print(f"{name:17} {type(module).__name__:36} -> {len(imported[name][1]):2} refimpl arrays")

# %% [markdown]
# **The published sizes.** Each member's config at its published size is the importer's config
# with the sizes replaced (`dataclasses.replace`), so the switches stay as the importer read
# them. Where each size comes from, as published (we could not open the model hub's files from
# here; where a number is from our reading of a paper, a model card or a library's defaults
# rather than a file we checked, the source says so):
#
# - **Flamingo (paper)**: the appendix of Alayrac et al. 2022 (as transcribed by the flamingo-mini
#   project, see notebook 4): $L = 6$, $D = 1536$, $H = 16$, $R = 64$, $F = 4D$, squared ReLU,
#   reported as 194M. The head width is not given: we take $D_h = 128$ (notebook 4 counts 96 too).
#   The time-embedding table's length is not given either: we take 8 rows (8 frames), our assumption.
# - **flamingo-pytorch**: no trained model; the README's example `PerceiverResampler(dim=1024,
#   depth=2, dim_head=64, heads=8, num_latents=64, ...)` with 4 media embeddings and the
#   constructor's `ff_mult=4`.
# - **open_flamingo**: `PerceiverResampler(dim=1024)` with its defaults (depth 6, 8 heads of 64,
#   64 latents, `ff_mult=4`, no embedding tables), as OpenFlamingo builds it for CLIP ViT-L/14
#   (width 1024).
# - **IDEFICS**: the perceiver sizes are `transformers`' `IdeficsPerceiverConfig` defaults (6
#   layers, 16 heads of 96, 64 latents); $D$ is the vision encoder's width, 1280 for the
#   ViT-H/14 of IDEFICS-9B/80B as we read their config files (`IdeficsVisionConfig`'s own default is 768).
# - **Idefics2**: `transformers`' `Idefics2PerceiverConfig` defaults: $D$ = 4096 (Mistral-7B's
#   width), 3 layers, 16 query heads of 96, 4 key/value heads, 64 latents.
# - **Kosmos-2**: `transformers`' `Kosmos2Config` defaults (64 latent queries, text `embed_dim`
#   2048 with 32 heads, vision width 1024), which are the sizes of the released
#   kosmos-2-patch14-224 as we read its config.
# - **Evolla**: `transformers`' `EvollaConfig` defaults: protein encoder width 1280 (SaProt-650M),
#   6 layers, 8 heads of 64, 64 latents, `ff_mult` 4, output width 4096. That these are the
#   released Evolla-10B's sizes is our reading, not checked against its config file.
# - **Qwen-VL**: its `visual.py` builds `Resampler(grid_size=16, embed_dim=4096,
#   num_heads=4096 // 128, kv_dim=1664)`: 256 queries, width 4096 (Qwen-7B's), 32 heads, media
#   width 1664 (ViT-bigG), as we read the published code and paper; the head count does not
#   change the count of parameters.
# - **MiniCPM-V** 2.6: 64 queries, width 3584 (Qwen2-7B's), 28 heads of 128, media width 1152
#   (SigLIP-400M), as we read its model card and code description; again, not checked against
#   a file here.

# %%
flamingo_paper = refimpl.ResamplerConfig(
    dim=1536, depth=6, heads=16, dim_head=128, num_latents=64, ff_mult=4, activation="squared_relu", num_time_embeds=8
)
published_sizes = {
    "flamingo-pytorch": dict(dim=1024, depth=2, heads=8, dim_head=64, num_latents=64, ff_mult=4, num_media_embeds=4),
    "open_flamingo": dict(
        dim=1024, depth=6, heads=8, dim_head=64, num_latents=64, ff_mult=4, num_time_embeds=None, num_media_embeds=None
    ),
    "IDEFICS": dict(dim=1280, depth=6, heads=16, dim_head=96, num_latents=64, ff_mult=4),
    "Idefics2": dict(dim=4096, depth=3, heads=16, dim_head=96, kv_heads=4, num_latents=64, ff_mult=4),
    "Kosmos-2": dict(dim=2048, heads=32, dim_head=64, num_latents=64, media_dim=1024),
    "Evolla": dict(dim=1280, depth=6, heads=8, dim_head=64, num_latents=64, ff_mult=4, out_dim=4096),
    "Qwen-VL": dict(dim=4096, heads=32, dim_head=128, num_latents=256, pos_grid=16, media_dim=1664),
    "MiniCPM-V": dict(dim=3584, heads=28, dim_head=128, num_latents=64, media_dim=1152, out_dim=3584),
}
published = {"Flamingo (paper)": flamingo_paper}
published |= {name: dataclasses.replace(imported[name][0], **sizes) for name, sizes in published_sizes.items()}
for name, config in published.items():  # only sizes were replaced: every switch is the importer's
    if name in imported:
        switches = [f.name for f in dataclasses.fields(config) if f.name not in published_sizes[name]]
        assert all(getattr(config, s) == getattr(imported[name][0], s) for s in switches), name
print(len(published), "configs at their published sizes")

# %% [markdown]
# **The design choices.** One row per member, read off its config (the mask column is the
# member's input, which a config does not hold: Idefics2, Evolla and MiniCPM-V take one, the
# others none). "pre" norms are the attention's norms of media and latents and the
# feed-forward's; a blank embedding cell means the tokens are an unordered set.

# %%
MASKS = {
    "Idefics2": "key padding (`attention_mask`)",
    "Evolla": "key padding (`mask`)",
    "MiniCPM-V": "key padding (from `tgt_sizes`)",
}


def norms(config):
    kinds = [f"pre ({config.norm}{', float32' if config.norm_dtype else ''})"] if config.pre_norm else []
    kinds += ["q/k"] * config.qk_norm + ["final"] * config.final_norm + ["after out proj"] * config.out_norm
    return ", ".join(kinds) or "none"


def positions(config):
    kinds = [f"time table ({config.num_time_embeds})"] * bool(config.num_time_embeds)
    kinds += [f"media table ({config.num_media_embeds})"] * bool(config.num_media_embeds)
    if config.positions:
        grid = f", {config.pos_grid}x{config.pos_grid} grid" if config.pos_grid else ", each image's h x w"
        kinds += [f"2-D sin-cos to {config.positions.replace('_', ' ')}{grid}"]
    return ", ".join(kinds)


def choices(name, config):
    heads = f"{config.heads} x {config.dim_head}" + (f" ({config.kv_heads} K/V)" if config.kv_heads else "")
    ff = f"{config.activation}, F = {config.ff_dim}" if config.feed_forward else "none"
    in_proj = f"{config.media_dim} -> {config.dim}{' + bias' * config.media_proj_bias}" if config.media_dim else ""
    out_proj = f"{config.dim} -> {config.out_dim}{' + bias' * config.out_proj_bias}" if config.out_dim else ""
    return {
        "member": name,
        "layers": config.depth,
        "heads H x Dh": heads,
        "D": config.dim,
        "R": config.num_latents,
        "latents in K/V": "yes" if config.latents_in_kv else "no",
        "norms": norms(config),
        "residual": "yes" if config.attn_residual else "no",
        "q/k/v/o biases": "yes" if config.attn_bias else "no",
        "embeddings / positions": positions(config),
        "feed-forward": ff,
        "input proj": in_proj,
        "output proj": out_proj,
        "mask": MASKS.get(name, "none"),
    }


rows = [choices(name, config) for name, config in published.items()]
header = list(rows[0])
table = "\n".join(
    ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    + ["| " + " | ".join(str(row[key]) for key in header) + " |" for row in rows]
)
display(Markdown(table))

# %%
# the claims of the next cell, from the configs
in_kv = [name for name, c in published.items() if c.latents_in_kv]
assert in_kv == ["Flamingo (paper)", "flamingo-pytorch", "open_flamingo", "IDEFICS", "Idefics2", "Kosmos-2", "Evolla"]
one_layer = [name for name, c in published.items() if c.depth == 1]
assert one_layer == ["Kosmos-2", "Qwen-VL", "MiniCPM-V"]
assert all(not c.feed_forward and not c.attn_residual and c.attn_bias for c in map(published.get, one_layer))
assert not published["Kosmos-2"].pre_norm and norms(published["Kosmos-2"]) == "none"
assert [name for name, c in published.items() if c.positions] == ["Qwen-VL", "MiniCPM-V"]
assert [name for name, c in published.items() if c.media_dim] == one_layer
print("every claim below holds for these configs")


# %% [markdown]
# **Notice.** Two families. The Flamingo line (the paper, flamingo-pytorch, open_flamingo,
# IDEFICS, Idefics2, and Evolla, which is flamingo-pytorch's layers on protein sequences) is a
# pre-norm Transformer decoder: several layers, each an attention with a residual and a
# feed-forward, the latents joined to the keys and values, a final norm (Evolla instead
# projects to its language model's width and normalises after that). Idefics2 modernises it
# (RMSNorm in float32, SwiGLU, grouped-query attention) without changing its shape. The
# learned-query line (Kosmos-2, Qwen-VL, MiniCPM-V) is a single biased cross-attention with no
# residual and no feed-forward, an input projection from the vision encoder's width, and (for
# Qwen-VL and MiniCPM-V, which builds on Qwen-VL's) the latents kept out of the keys and a 2-D
# sin-cos table added to the keys instead; Kosmos-2 has no norm at all. Only Idefics2, Evolla and MiniCPM-V take a mask,
# for batches of different lengths.

# %% [markdown]
# ## 2. How many parameters each has
#
# `refimpl.param_shapes(config)` lists every array of a config; its sum is the count. As an
# independent count we build each member's real module at its published size on PyTorch's
# `meta` device, which gives tensors shapes but no memory (a 650M-parameter Idefics2 costs
# nothing), and sum `numel()` over its parameters. Qwen-VL's stand-in stores its sin-cos table
# as a parameter (`pos_embed`, not trained); refimpl computes the table, so we leave it out of
# the module's count. The paper has no module: its line is compared with the 194M it reports.


# %%
def count(config):
    return sum(int(np.prod(shape)) for shape in refimpl.param_shapes(config).values())


with torch.device("meta"):  # shapes only, no memory, no initialisation work
    full_size = {
        "flamingo-pytorch": FlamingoPytorchResampler(
            dim=1024, depth=2, dim_head=64, heads=8, num_latents=64, num_media_embeds=4
        ),
        "open_flamingo": OpenFlamingoResampler(dim=1024),
        "IDEFICS": IdeficsPerceiverResampler(
            IdeficsConfig(vision_config={"embed_dim": 1280}),
            embed_dim=1280,
            depth=6,
            n_heads=16,
            head_dim=96,
            n_latents=64,
        ),
        "Idefics2": Idefics2PerceiverResampler(Idefics2PerceiverConfig()),
        "Kosmos-2": Kosmos2ImageToTextProjection(Kosmos2Config()),
        "Evolla": EvollaSequenceCompressorResampler(EvollaConfig()),
        "Qwen-VL": QwenVLResampler(grid_size=16, embed_dim=4096, num_heads=32, kv_dim=1664),
        "MiniCPM-V": MiniCPMVResampler(num_queries=64, embed_dim=3584, num_heads=28, kv_dim=1152),
    }
module_counts = {
    name: sum(p.numel() for pname, p in module.named_parameters() if pname != "pos_embed")
    for name, module in full_size.items()
}
counts = {name: count(config) for name, config in published.items()}
for name, n in module_counts.items():
    assert counts[name] == n, f"{name}: refimpl counts {counts[name]:,}, the module has {n:,}"
PAPER_COUNT = 194_000_000  # the Flamingo paper's "194M"
print("refimpl.param_shapes equals the real module's numel (meta device) for all", len(module_counts), "modules")


# %%
def ff_share(config):
    return sum(int(np.prod(s)) for key, s in refimpl.param_shapes(config).items() if ".ff." in key) / count(config)


# NBVAL_CHECK_OUTPUT
print(f"{'member':17} {'parameters':>13}  {'checked against':34} {'feed-forward share':>18}")
for name, config in published.items():
    against = (
        f"the paper's 194M ({counts[name] / PAPER_COUNT:.0%})"
        if name not in module_counts
        else "the module's numel: equal"
    )
    print(f"{name:17} {counts[name]:>13,}  {against:34} {ff_share(config):>18.0%}")

# %%
assert counts["Kosmos-2"] < counts["flamingo-pytorch"] < counts["open_flamingo"] < counts["Evolla"] < counts["IDEFICS"]
assert max(counts, key=counts.get) == "Idefics2" and counts["Idefics2"] > 3 * counts["Flamingo (paper)"]
assert abs(counts["Flamingo (paper)"] / PAPER_COUNT - 1) < 0.05  # within 5% of the reported 194M (notebook 4)
ff_free = [name for name, c in published.items() if not c.feed_forward]
assert all(counts[name] < 0.5 * counts["Flamingo (paper)"] for name in ff_free)
qwen = published["Qwen-VL"]
attention_share = 4 * qwen.dim * qwen.heads * qwen.dim_head / counts["Qwen-VL"]
print(f"Qwen-VL: the attention's four projections hold {attention_share:.0%} of its parameters")
assert attention_share > 0.8
ff_shares = {name: ff_share(config) for name, config in published.items() if config.feed_forward}
assert 0.59 < min(ff_shares.values()) and max(ff_shares.values()) < 0.94
assert round(counts["Idefics2"] / counts["Kosmos-2"]) == 34
idefics2_ff = sum(
    int(np.prod(s)) for key, s in refimpl.param_shapes(published["Idefics2"]).items() if key.startswith("layers.0.ff.")
)
print(f"Idefics2: one layer's feed-forward holds {idefics2_ff / 1e6:.0f}M parameters")
assert round(idefics2_ff / 1e6) == 201

# %% [markdown]
# **Notice.** The counts span 34 times: Kosmos-2's 19M to Idefics2's 651M. Width decides most of
# it: Idefics2 has only 3 layers, but at $D = 4096$ each feed-forward (SwiGLU, three matrices
# of $D \times 4D$) costs 201M. In the Flamingo line 60% to 93% of the parameters sit in the
# feed-forwards; the single-layer members have none, so their count is the attention's
# four $D \times D$ projections, the input projection and the queries (and MiniCPM-V's output
# projection). None of these counts
# depends on the image size. The paper's line is within 5% of the reported 194M, not equal to
# it: notebook 4 discusses the gap (the paper does not give every size).

# %% [markdown]
# ## 3. The 2-D sin-cos table
#
# Qwen-VL and MiniCPM-V give their keys no learned positions: they add a fixed table over the
# patch grid to the inputs of the key projection (Qwen-VL to the queries' too),
# $k = (\mathrm{norm}(x) + p)\,W_k$, never to the values. For patch $(r, c)$ of an $h \times w$
# grid (row $r w + c$ of the table) and width $D$, with $\omega_k = 10000^{-k/(D/4)}$,
# $k < D/4$:
#
# $$p_{r,c} = [\sin(c\,\omega),\ \cos(c\,\omega),\ \sin(r\,\omega),\ \cos(r\,\omega)]$$
#
# the first half of the channels the column, the second half the row (the MAE layout). Since
# $\sin a \sin b + \cos a \cos b = \cos(a - b)$, the dot product of two rows is
# $\sum_k \cos((c - c')\,\omega_k) + \cos((r - r')\,\omega_k)$: it depends only on the offset
# between the two patches, and is largest, $D/2$, at offset 0. So a query that carries a
# position attends by relative position, wherever on the grid it is.

# %%
h, w, dim = 12, 16, 64
table = refimpl.sincos_2d(dim, h, w)  # (h*w, D), row r*w + c
assert table.shape == (h * w, dim)
dots = table @ table.T  # (h*w, h*w)
rows, cols = np.divmod(np.arange(h * w), w)
offsets = (rows[:, None] - rows[None, :]) * 100 + (cols[:, None] - cols[None, :])  # one code per (dr, dc)
spread = max(np.ptp(dots[offsets == code]) for code in np.unique(offsets))
print(f"max spread of the dot product among pairs with the same offset: {spread:.1e}")
assert spread < 1e-12  # a function of the offset alone
assert np.allclose(np.diag(dots), dim / 2) and (dots < dim / 2 - 1e-9)[offsets != 0].all()  # largest at offset 0

fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), gridspec_kw=dict(width_ratios=[1.6, 1, 1]))
viz.matrix(
    table,
    ax=axes[0],
    title=f"sincos_2d({dim}, {h}, {w})",
    xlabel="channel (column half | row half)",
    ylabel="patch r*w + c",
)
for ax, (r, c) in zip(axes[1:], [(3, 4), (8, 11)]):
    weights = refimpl.softmax(dots[r * w + c] / np.sqrt(dim))  # attention by position alone
    viz.attention_map(weights, (h, w), ax=ax, title=f"softmax(p . p_(r={r}, c={c}) / sqrt(D))")
    ax.plot(c + 0.5, r + 0.5, "r+", markersize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Notice.** Left: the low channels of each half (fast frequencies) change from patch to patch,
# the high ones (slow) hardly at all; the column half repeats every $w = 16$ rows, the row half
# changes once per 16 rows. Middle and right: attention by position alone is the same shape
# around any patch (the red cross), the table's dot product being a function of the offset; only
# the grid's edge cuts it. Qwen-VL's table is made for a $16 \times 16$ grid; for another grid it
# resizes the key table by bicubic interpolation (`refimpl.resize_positions`, which matches
# `torch.nn.functional.interpolate(mode="bicubic", align_corners=False)`), the second exercise.

# %% [markdown]
# ## 4. Every member against refimpl
#
# Each module runs on its own input (small random batches; a padded batch where the member
# takes a mask; Qwen-VL on a $4 \times 4$ grid, so its $3 \times 3$ key table is resized;
# MiniCPM-V on three images of different sizes, padded), and `refimpl.perceiver_resampler`
# runs on the same input mapped to refimpl's `x (B, [I,] T, S, D)`, mask and grid, with the
# imported params. The bound is `refimpl.TOLERANCES`' entry for the comparison: float64
# "another implementation vs refimpl" ($10^{-10}$), except for Idefics2, whose RMSNorm computes
# in float32 whatever the dtype, and Qwen-VL and MiniCPM-V, whose modules build their sin-cos
# tables in float32 (each its own key, $10^{-6}$). Then `refimpl.interop.compare` checks the
# same module block by block (each layer's attention, feed-forward and residual, the norms,
# the output) against refimpl's trace.

# %%
FLOAT64 = ("float64", "another implementation vs refimpl")
# name: (the module's inputs, refimpl's x, mask and grid, the TOLERANCES key)
x = rng.standard_normal((2, 2, 9, 12))  # flamingo-pytorch: (b, times, n, D)
cases = {"flamingo-pytorch": ((x,), x[:, :, None], None, None, FLOAT64)}
x = rng.standard_normal((2, 2, 3, 9, 12))  # open_flamingo: (b, T media, F frames, v, D)
cases["open_flamingo"] = ((x,), x, None, None, FLOAT64)
x = rng.standard_normal((2, 9, 12))
cases["IDEFICS"] = ((x,), x[:, None], None, None, FLOAT64)
x, real = rng.standard_normal((3, 9, 12)), np.arange(9) < np.array([[9], [4], [6]])  # (B, S), padded rows
cases["Idefics2"] = (
    (x, real.astype(np.int64)),
    x[:, None],
    real[:, None],
    None,
    ("float64", "Idefics2 module (float32 RMSNorm) vs refimpl"),
)
x = rng.standard_normal((2, 7, 10))
cases["Kosmos-2"] = ((x,), x[:, None], None, None, FLOAT64)
x, real = rng.standard_normal((3, 9, 12)), np.arange(9) < np.array([[9], [2], [6]])
cases["Evolla"] = ((x, real.astype(np.int64)), x[:, None], real[:, None], None, FLOAT64)
POSITIONS64 = ("float64", "module with float32 sin-cos positions vs refimpl")
x = rng.standard_normal((2, 16, 10))  # a 4 x 4 grid: the 3 x 3 key table is resized
cases["Qwen-VL"] = ((x,), x[:, None], None, (4, 4), POSITIONS64)
tgt_sizes = np.array([[3, 4], [2, 5], [4, 2]])  # three images, (h, w) patches each, padded to 12 tokens
x, real = rng.standard_normal((3, 12, 10)), np.arange(12) < np.prod(tgt_sizes, axis=1)[:, None]
cases["MiniCPM-V"] = ((x, tgt_sizes), x[:, None], real[:, None], tgt_sizes, POSITIONS64)
assert list(cases) == list(modules)


def run_module(module, inputs):
    tensors = [torch.tensor(a) for a in inputs]  # float64 stays float64, int64 masks and sizes stay ints
    with torch.no_grad():
        output = module(*tensors)
    return (output[0] if isinstance(output, tuple) else output).numpy()


verdicts = []
for name, (inputs, x, mask, grid, key) in cases.items():
    config, params = imported[name]
    ours = refimpl.perceiver_resampler(params, x, config, mask=mask, **({} if grid is None else dict(grid=grid)))
    theirs = run_module(modules[name], inputs)
    assert theirs.shape == ours.shape, (name, theirs.shape, ours.shape)
    error, bound = refimpl.relative_error(theirs, ours), refimpl.TOLERANCES[key]
    assert error <= bound, f"{name}: relative error {error:.2g} > {bound:g}"
    # block by block, quietly; the second input (Idefics2's and Evolla's mask, MiniCPM-V's tgt_sizes) is its mask
    blocks = interop.compare(modules[name], inputs[0], mask=inputs[1] if len(inputs) > 1 else None, out=io.StringIO())
    assert all(row["ok"] for row in blocks), name
    assert error < 1e-13 or key != FLOAT64, f"{name}: {error:.2g}"  # the float64 ones: to rounding
    verdicts.append((name, ours.shape, error, bound, len(blocks)))

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'member':17} {'output':14} {'max rel. error':>14} {'bound':>7}  {'compare: blocks within it':25}")
for name, shape, error, bound, n_blocks in verdicts:
    print(f"{name:17} {str(shape):14} {'< 1e-13' if error < 1e-13 else '<= 1e-6':>14} {bound:>7.0e}  all {n_blocks}")

# %% [markdown]
# `compare`'s own table, for MiniCPM-V (the module's value in every row, refimpl's beside it):

# %%
x, tgt_sizes = cases["MiniCPM-V"][0]
rows = interop.compare(modules["MiniCPM-V"], x, mask=tgt_sizes)
assert [row["block"] for row in rows][-1] == "output" and all(row["ok"] for row in rows)


# %% [markdown]
# **Notice.** Eight modules, six from three installed packages and two stand-ins, reproduce
# refimpl's numbers: the Flamingo line and Kosmos-2 and Evolla to float64 rounding (below $10^{-13}$,
# the bound $10^{-10}$), Idefics2 and the two Qwen-based members to the float32 rounding of their
# own norms or tables (below $10^{-6}$), with padding masks, a resized key table and a
# batch of images of three sizes. The paper's row has no code to run: its config is checked
# only through the counts above. `compare` locates a difference, where there is one, at the
# first block over the bound.

# %% [markdown]
# ## 5. Exercises
#
# **Exercise 1.** Write the 2-D sin-cos table of section 3: `sincos_2d(dim, h, w)` returns
# `(h*w, dim)`, row `r*w + c` for patch `(r, c)`, the column in the first half of the channels,
# the row in the second, each half `[sin(p omega), cos(p omega)]` with
# `omega_k = 10000 ** (-k / (dim/4))`, `k < dim/4`. Hint: `np.divmod(np.arange(h * w), w)` gives
# every patch's row and column.


# %%
def sincos_2d(dim, h, w):
    # your code here: return an (h*w, dim) array
    raise NotImplementedError


# %%
ex.check_sincos_2d(sincos_2d)


# %% [markdown]
# **Exercise 2.** Qwen-VL resizes its key table from its $16 \times 16$ grid to the image's
# grid by bicubic interpolation, one axis after the other; along one axis that is a matrix.
# Write `cubic_weights(size_in, size_out)` -> `(size_out, size_in)` such that
# `weights @ samples` is torch's bicubic resize with `align_corners=False`: output `j` reads the
# input at `x = (j + 0.5) * size_in / size_out - 0.5`, from the samples `i = floor(x) - 1 ..
# floor(x) + 2` (an index past the border counts as the border's sample), each weighted by the
# cubic kernel at `d = |x - i|` with `A = -0.75`: `(A + 2) d^3 - (A + 3) d^2 + 1` for `d <= 1`,
# `A d^3 - 5A d^2 + 8A d - 4A` for `1 < d < 2`. The check applies your matrices along both axes
# of a table and compares with `refimpl.resize_positions`.


# %%
def cubic_weights(size_in, size_out):
    # your code here: return a (size_out, size_in) array
    raise NotImplementedError


# %%
ex.check_cubic_weights(cubic_weights)

# %% [markdown]
# Stuck? `??ex.sincos_2d` and `??ex.cubic_weights` show worked solutions.
#
# ## Summary
#
# **What you saw.** Nine resamplers as nine `ResamplerConfig`s, eight of them read by
# `refimpl.interop`'s importers from the modules themselves: the Flamingo line (pre-norm layers
# with feed-forwards, latents among the keys) and the learned-query line (one biased
# cross-attention, input projection, no residual or feed-forward, 2-D sin-cos positions on the
# keys for Qwen-VL and MiniCPM-V); their parameter counts at their published sizes, from 19M
# (Kosmos-2) to 651M (Idefics2), each equal to the real module's count on the meta device; the
# 2-D sin-cos table, whose dot products depend only on the offset between patches; and every
# member with code reproduced by refimpl, block by block, within its bound.
#
# **What to notice.**
# - A design choice is a switch: the same reference, with the switches the importer reads,
#   reproduces modules that look nothing alike in code.
# - Width, not depth, sets the size; a feed-forward is most of a Flamingo-style layer.
# - A fixed position table needs no training and resizes to any grid; the bicubic resize is one
#   small matrix per axis.
#
# **Next.** This is the last notebook of the course. To check a resampler of your own, or a
# checkpoint: `refimpl.interop.compare` (block by block) and `compare_grads` (gradients), and
# `python -m refimpl verify CHECKPOINT --peer NAME` for a saved file (see the README).
