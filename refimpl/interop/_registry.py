"""The resamplers refimpl knows, each by the one module that owns everything about it.

A peer module (refimpl/interop/<peer>.py) exposes NAME, `recognises(module)` and
`drive(module, x, mask)` for compare and compare_grads, and from_<peer> / to_<peer> and the
checkpoint hooks for `python -m refimpl verify`. Adding a peer is one new module and one
line in PEERS.
"""

from . import evolla, flamingo_pytorch, idefics, idefics2, kosmos2, minicpm_v, open_flamingo, qwen_vl, refimpl_torch

# the published resamplers: the names `python -m refimpl verify --peer` takes
PEERS = {
    "open_flamingo": open_flamingo,
    "flamingo_pytorch": flamingo_pytorch,
    "idefics": idefics,
    "idefics2": idefics2,
    "kosmos2": kosmos2,
    "evolla": evolla,
    "qwen_vl": qwen_vl,
    "minicpm_v": minicpm_v,
}

# what compare and compare_grads recognise: the peers and refimpl's own torch module
# (which has no checkpoints for verify to read)
COMPARED = {"refimpl_torch": refimpl_torch, **PEERS}


def peer_of_module(module):
    """The module (of COMPARED) that recognises `module`'s class, or None."""
    return next((peer for peer in COMPARED.values() if peer.recognises(module)), None)


def peer(name):
    """The peer module called `name`; ValueError naming the known names."""
    if name not in PEERS:
        raise ValueError(f"peer must be one of {', '.join(PEERS)}; got {name!r}")
    return PEERS[name]
