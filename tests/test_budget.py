"""The token budget: refimpl.tiny.budget.XAttnCost against torch's own FLOP counter and the
bytes of the tensors a cross-attention caches, and notebook 9's table as the README quotes it."""

import re
from pathlib import Path

import nbformat
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from refimpl.tiny.budget import XAttnCost
from refimpl.torch import CrossAttention

ROOT = Path(__file__).resolve().parent.parent


@st.composite
def layers(draw):
    """(XAttnCost, a CrossAttention of those sizes, L text tokens, Nv visual tokens), widths unequal
    where they may be (Dt != Dv != H * Dh) so that no transposed factor can hide."""
    cost = XAttnCost(
        dim=draw(st.integers(1, 24)),
        dim_visual=draw(st.integers(1, 24)),
        heads=draw(st.integers(1, 4)),
        dim_head=draw(st.integers(1, 8)),
    )
    module = CrossAttention(cost.dim, cost.dim_visual, heads=cost.heads, dim_head=cost.dim_head)
    return cost, module, draw(st.integers(1, 9)), draw(st.integers(1, 40))


def counted(fn):
    """The FLOPs torch's FlopCounterMode sees while fn() runs (every matrix product)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def inputs(cost, text_tokens, visual_tokens, batch=1):
    generator = torch.Generator().manual_seed(text_tokens * 100 + visual_tokens)
    text = torch.randn(batch, text_tokens, cost.dim, generator=generator)  # (B, L, Dt)
    visual = torch.randn(batch, visual_tokens, cost.dim_visual, generator=generator)  # (B, Nv, Dv)
    return text, visual


@given(case=layers())
def test_flops_of_the_whole_layer_are_what_torch_counts(case):
    # the explicit path (return_weights): torch's counter does not see inside the fused SDPA kernel on the CPU
    cost, module, text_tokens, visual_tokens = case
    text, visual = inputs(cost, text_tokens, visual_tokens)
    assert counted(lambda: module(text, visual, None, True)) == sum(cost.flops(text_tokens, visual_tokens).values())


@given(case=layers())
def test_flops_per_text_token_are_what_one_more_token_costs_with_the_cache_kept(case):
    cost, module, _, visual_tokens = case
    text, visual = inputs(cost, 1, visual_tokens)
    keys, values = module.wk(visual), module.wv(visual)  # the cache: computed once per image
    one_more = counted(lambda: module.attend(module.wq(text), keys, values, None, True))
    assert one_more == cost.flops_per_text_token(visual_tokens)


@given(case=layers(), more=st.integers(1, 5))
def test_each_further_text_token_adds_flops_per_text_token_to_the_whole_layer(case, more):
    cost, module, text_tokens, visual_tokens = case
    short = counted(lambda: module(*inputs(cost, text_tokens, visual_tokens), None, True))
    long = counted(lambda: module(*inputs(cost, text_tokens + more, visual_tokens), None, True))
    assert long - short == more * cost.flops_per_text_token(visual_tokens)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@given(case=layers())
def test_kv_cache_bytes_are_the_bytes_of_the_cached_keys_and_values(dtype, case):
    cost, module, _, visual_tokens = case
    module = module.to(dtype)
    visual = torch.randn(1, visual_tokens, cost.dim_visual, dtype=dtype)
    with torch.no_grad():
        keys, values = module.wk(visual), module.wv(visual)  # (1, Nv, H Dh) each
    itemsize = torch.finfo(dtype).bits // 8
    assert keys.nbytes + values.nbytes == cost.kv_cache_bytes(visual_tokens, itemsize=itemsize)


def test_reading_r_tokens_costs_the_same_whatever_the_image_while_patches_cost_more_beyond_n_equals_r():
    cost = XAttnCost(dim=48, dim_visual=64, heads=4, dim_head=16)
    R, patches = 16, [(side // 8) ** 2 for side in (32, 64, 128, 256, 512)]  # N = 16 .. 4096
    per_token = [cost.flops_per_text_token(n) for n in patches]
    cache = [cost.kv_cache_bytes(n) for n in patches]
    assert per_token[0] == cost.flops_per_text_token(R) and cache[0] == cost.kv_cache_bytes(R)  # N = R: equal
    assert all(a < b for a, b in zip(per_token, per_token[1:])) and all(a < b for a, b in zip(cache, cache[1:]))
    # at 512 x 512, 4096 patches: 4 H Dh (Dt + N) = 256 * 4144 FLOPs against 256 * 64, and 4096 / 16 the cache
    assert per_token[-1] == 1_060_864 and cost.flops_per_text_token(R) == 16_384
    assert cache[-1] == 256 * cost.kv_cache_bytes(R) == 2_097_152


@pytest.mark.parametrize(
    "sizes, error, message",
    [
        (dict(dim=0, dim_visual=4, heads=2, dim_head=3), ValueError, "dim must be >= 1; got 0"),
        (dict(dim=4, dim_visual=4.0, heads=2, dim_head=3), TypeError, "dim_visual must be an int; got float 4.0"),
        (dict(dim=4, dim_visual=4, heads=True, dim_head=3), TypeError, "heads must be an int; got bool True"),
        (dict(dim=4, dim_visual=4, heads=2, dim_head=-1), ValueError, "dim_head must be >= 1; got -1"),
    ],
)
def test_bad_sizes_are_refused_naming_the_argument(sizes, error, message):
    with pytest.raises(error, match=re.escape(message)):
        XAttnCost(**sizes)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda cost: cost.flops(0, 16), ValueError, "text_tokens must be >= 1; got 0"),
        (lambda cost: cost.flops(3, 16.5), TypeError, "visual_tokens must be an int; got float 16.5"),
        (lambda cost: cost.flops_per_text_token(-2), ValueError, "visual_tokens must be >= 1; got -2"),
        (lambda cost: cost.kv_cache_bytes(16, itemsize=0), ValueError, "itemsize must be >= 1; got 0"),
    ],
)
def test_bad_token_counts_are_refused_naming_the_argument(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call(XAttnCost(dim=4, dim_visual=6, heads=2, dim_head=3))


def test_readme_token_budget_table_is_notebook_9s():
    """The README quotes notebook 9's token-budget table as the notebook last computed it."""
    notebook = nbformat.read(ROOT / "notebooks" / "09_gated_xattn.ipynb", as_version=4)
    tables = [
        "".join(output["data"]["text/markdown"]).strip()
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "text/markdown" in output.get("data", {})
        and "FLOPs per text token" in "".join(output["data"]["text/markdown"])
    ]
    assert len(tables) == 1, f"notebook 9 shows {len(tables)} token-budget tables"
    section = (ROOT / "README.md").read_text().split("### The token budget (notebook 9)", 1)
    assert len(section) == 2, "README.md has no section '### The token budget (notebook 9)'"
    assert tables[0] in section[1], "README.md's token-budget table differs from notebook 9's output: copy it over"
