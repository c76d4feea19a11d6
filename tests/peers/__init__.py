"""Test fixtures: faithful copies of peers' modules that cannot be installed here.

They exist only so that refimpl.interop is tested against the key layout and the
arithmetic of the real module; they are not part of refimpl.
"""
