"""What from_<peer> must be told, and what it says when given something other than its
resampler's state dict: a whole model's without `prefix` gets the prefix to pass (not every
key of the vision and text towers listed as unexpected), another peer's gets the peer's name.
find_prefix, which finds a peer's resampler among a whole model's keys, is tested on the
real packages' modules (open-flamingo 2.0.1, flamingo-pytorch, transformers).
"""

import numpy as np
import pytest
import torch
from flamingo_pytorch import PerceiverResampler as FlamingoPytorchResampler
from helpers import open_flamingo_model_state_dict, randomise
from hypothesis import given
from hypothesis import strategies as st
from transformers import IdeficsConfig
from transformers.models.idefics.perceiver import IdeficsPerceiverResampler
from transformers.models.idefics2.configuration_idefics2 import Idefics2PerceiverConfig
from transformers.models.idefics2.modeling_idefics2 import Idefics2PerceiverResampler

from refimpl import interop
from refimpl.interop import flamingo_pytorch, idefics, idefics2, open_flamingo
from refimpl.interop.open_flamingo import installed_helpers


def flamingo_pytorch_state_dict():
    module = FlamingoPytorchResampler(
        dim=12, depth=2, dim_head=5, heads=3, num_latents=7, num_media_embeds=4, ff_mult=2
    )
    return randomise(module, seed=1).state_dict()


def idefics_state_dict():
    config = IdeficsConfig(vision_config={"embed_dim": 12}, perceiver_config={"qk_layer_norms_perceiver": True})
    return IdeficsPerceiverResampler(config, embed_dim=12, depth=2, n_heads=3, head_dim=5, n_latents=7).state_dict()


def idefics2_state_dict():
    config = Idefics2PerceiverConfig(
        hidden_size=12,
        resampler_n_latents=7,
        resampler_depth=2,
        resampler_n_heads=4,
        resampler_head_dim=5,
        num_key_value_heads=2,
    )
    return Idefics2PerceiverResampler(config).state_dict()


def open_flamingo_state_dict():
    module = installed_helpers().PerceiverResampler(
        dim=12, depth=2, dim_head=5, heads=3, num_latents=7, max_num_frames=2
    )
    return module.state_dict()


STATE_DICTS = {
    "open_flamingo": open_flamingo_state_dict,
    "flamingo_pytorch": flamingo_pytorch_state_dict,
    "idefics": idefics_state_dict,
    "idefics2": idefics2_state_dict,
}
PEER_MODULES = {
    "open_flamingo": open_flamingo,
    "flamingo_pytorch": flamingo_pytorch,
    "idefics": idefics,
    "idefics2": idefics2,
}


@pytest.mark.parametrize("read", [interop.from_open_flamingo, interop.from_flamingo_pytorch], ids=lambda f: f.__name__)
def test_heads_has_no_default(read):
    # a default of 8 read a 4-head module's weights into a wrong config without a word
    with pytest.raises(TypeError, match="heads"):
        read(flamingo_pytorch_state_dict())


def test_a_whole_models_state_dict_without_prefix_names_the_prefix_it_found():
    full, _ = open_flamingo_model_state_dict()
    with pytest.raises(ValueError) as error:
        interop.from_open_flamingo(full, heads=3)
    message = str(error.value)
    assert "\n" not in message and "under the prefix 'perceiver.': pass prefix='perceiver.'" in message
    assert "vision_encoder" not in message and "lang_encoder" not in message


def test_the_prefix_found_reads_the_same_as_the_resampler_alone():
    full, alone = open_flamingo_model_state_dict()
    config, params = interop.from_open_flamingo(full, heads=3, prefix="perceiver.")
    expected_config, expected_params = interop.from_open_flamingo(alone, heads=3)
    assert config == expected_config
    assert params.keys() == expected_params.keys() and all(
        np.array_equal(params[n], expected_params[n]) for n in params
    )


@pytest.mark.parametrize(
    "given, read, expected",
    [
        (
            "flamingo_pytorch",
            lambda sd: interop.from_idefics2(sd, heads=3),
            "this looks like a flamingo_pytorch state dict; read it with from_flamingo_pytorch",
        ),
        (
            "idefics2",
            lambda sd: interop.from_open_flamingo(sd, heads=4),
            "this looks like an idefics2 state dict; read it with from_idefics2",
        ),
        (
            "idefics",
            lambda sd: interop.from_flamingo_pytorch(sd, heads=3),
            "this looks like an idefics state dict; read it with from_idefics",
        ),
        (
            "open_flamingo",
            lambda sd: interop.from_idefics(sd, heads=3),
            "this looks like an open_flamingo state dict; read it with from_open_flamingo",
        ),
    ],
)
def test_another_peers_state_dict_is_named(given, read, expected):
    with pytest.raises(ValueError) as error:
        read(STATE_DICTS[given]())
    assert "\n" not in str(error.value) and expected in str(error.value)


def test_another_peers_whole_model_names_the_peer_and_its_prefix():
    full, _ = open_flamingo_model_state_dict()
    with pytest.raises(
        ValueError,
        match=r"looks like an open_flamingo state dict, with its resampler under the prefix "
        r"'perceiver\.'; read it with from_open_flamingo\(\.\.\., prefix='perceiver\.'\)",
    ):
        interop.from_flamingo_pytorch(full, heads=3)


def test_a_resampler_with_one_bad_key_is_still_reported_key_by_key():
    state_dict = dict(flamingo_pytorch_state_dict())
    state_dict["layers.1.0.to_q.weight"] = torch.zeros(14, 12)
    with pytest.raises(
        ValueError, match=r"mis-shaped: layers\.1\.0\.to_q\.weight: expected \(15, 12\), got \(14, 12\)"
    ):
        interop.from_flamingo_pytorch(state_dict, heads=3)


@pytest.mark.parametrize("peer", list(STATE_DICTS))
@pytest.mark.parametrize(
    "prefix", ["", "perceiver.", "model.connector.perceiver_resampler.", "module.vision.resampler."]
)
def test_find_prefix_finds_its_own_resampler_under_any_prefix_and_no_other_peers(peer, prefix):
    keys = [prefix + key for key in STATE_DICTS[peer]()] + [
        "lm_head.weight",
        "model.text_model.layers.0.self_attn.q_proj.weight",
    ]
    for other, module in PEER_MODULES.items():
        assert module.find_prefix(keys) == (prefix if other == peer else None), other


KEYS = {peer: list(state_dict()) for peer, state_dict in STATE_DICTS.items()}
segments = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=6)


@given(
    peer=st.sampled_from(list(STATE_DICTS)),
    prefix=st.lists(segments, max_size=3).map(lambda parts: "".join(part + "." for part in parts)),
    decoys=st.lists(
        st.tuples(st.sampled_from(list(STATE_DICTS)), st.lists(segments, min_size=1, max_size=2)), max_size=3
    ),
)
def test_find_prefix_finds_the_prefix_among_other_peers_keys_not_latents_beside_them(peer, prefix, decoys):
    # decoys: another peer's keys without its latents (a tower whose layer names look alike)
    keys = [prefix + key for key in KEYS[peer]]
    for other, parts in decoys:
        where = "".join(part + "." for part in parts) + "decoy."
        keys += [where + key for key in KEYS[other] if key != "latents"]
    assert PEER_MODULES[peer].find_prefix(keys) == prefix


def test_find_prefix_in_open_flamingos_model_skips_the_gated_cross_attention():
    full, _ = open_flamingo_model_state_dict()
    assert open_flamingo.find_prefix(full) == "perceiver."
