"""The closed registry of peers: name -> the refimpl.interop module that owns the peer.

STUB on the verify branch (INTERFACE.md): the registry helper's branch owns this file and
its version replaces this one at merge (it adds peer_of_module).
"""

from . import flamingo_pytorch, idefics, idefics2, open_flamingo

PEERS = {"open_flamingo": open_flamingo, "flamingo_pytorch": flamingo_pytorch, "idefics": idefics, "idefics2": idefics2}


def peer(name):
    """The peer module called `name`; ValueError naming the known names."""
    if name not in PEERS:
        raise ValueError(f"peer must be one of {', '.join(PEERS)}; got {name!r}")
    return PEERS[name]
