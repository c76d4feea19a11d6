"""State dicts in and out: what the import and export of every peer share.

A peer's *layout* is a dict, in the peer module's own state-dict order,

    peer key -> (kind, refimpl names)

and `kind` says how the peer's tensor and refimpl's parameter(s) are laid out:

| kind        | peer tensor                          | refimpl parameter(s)                              |
|-------------|--------------------------------------|---------------------------------------------------|
| "same"      | any shape                            | the same array                                    |
| "linear"    | nn.Linear.weight (out, in)           | its transpose (in, out), so a projection is x @ w |
| "fused_kv"  | to_kv.weight (2 * H*Dh, D)           | wk, wv (D, H*Dh): torch's chunk(2) order, the     |
|             |                                      | first half keys, the second half values           |
| "fused_qkv" | qkv.weight (3 * H*Dh, D)             | wq, wk, wv (D, H*Dh): queries, keys, values in    |
|             |                                      | thirds (kv_heads = heads)                         |
| "per_item"  | (I, 1, D), one row per media item    | (I, D)                                            |
| "gate"      | a tanh gate: (1,), or (1, 1, Dt) for | () or (Dt,) (refimpl.gated_xattn_dense)           |
|             | a per-channel one (IDEFICS "vector") |                                                   |
| "fused_qkv_bias" | in_proj_bias (3 * H*Dh,)        | bq, bk, bv (H*Dh,): queries, keys, values in      |
|             |                                      | thirds (nn.MultiheadAttention's in_proj_bias)     |
| "fixed"     | a table the peer stores (Qwen-VL's   | none: refimpl computes it (the layout holds the   |
|             | pos_embed)                           | table, a Fixed, in place of refimpl names)        |

A "fixed" tensor is checked for its shape like the others; its values are checked by the
peer's from_<peer> (`check_fixed`), not by `to_params`, which also reads gradients (zero
for a table that is not trained). Export writes the computed table.

Import reads the sizes off the tensors (each peer module says from which keys), builds the
ResamplerConfig, derives every key's expected shape from `refimpl.param_shapes(config)`
(for a gated cross-attention layer, from the `shapes` of its GatedXattnConfig) through the
layout, and reports every missing, unexpected and mis-shaped key at once.
Export checks the parameters against the config and writes the layout's tensors.

torch is imported only where a torch tensor is made (export); import recognises torch
tensors without importing torch (a caller who has one has imported torch already).
"""

import re
import sys
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .. import _checks
from ..config import ResamplerConfig
from ..params import check_params, param_shapes

SAME, LINEAR, FUSED_KV, FUSED_QKV, PER_ITEM, GATE = "same", "linear", "fused_kv", "fused_qkv", "per_item", "gate"
FUSED_QKV_BIAS, FIXED = "fused_qkv_bias", "fixed"


@dataclass(frozen=True)
class Fixed:
    """A table a peer stores but refimpl computes (Qwen-VL's pos_embed): `table` (float64),
    and `atol`, how far a stored copy may be from it (a table computed in float32)."""

    table: np.ndarray
    atol: float


# ---------------------------------------------------------------- reading a state dict


def read(state_dict, prefix=""):
    """{key without `prefix`: float64 ndarray (a copy)} for every key of `state_dict` that
    starts with `prefix` (the others, e.g. the rest of a full model, are left out).

    Values may be torch tensors (any device, any floating dtype; detached, moved to the CPU)
    or anything np.asarray reads. Raises TypeError for a non-float or non-mapping value and
    ValueError for NaN or inf.
    """
    if not hasattr(state_dict, "items"):
        raise TypeError(f"state_dict must be a mapping of names to tensors or arrays; got {type(state_dict).__name__}")
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str; got {type(prefix).__name__} {prefix!r}")
    state = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not key.startswith(prefix):
            continue
        value = _as_numpy(key, value)
        state[key[len(prefix) :]] = np.array(_checks.float_array(f"state_dict[{key!r}]", value, np.float64), copy=True)
    return state


def _as_numpy(key, value):
    """A torch tensor as a float64 ndarray on the CPU; anything else unchanged."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise TypeError(f"state_dict[{key!r}] must be a floating-point tensor; got dtype {value.dtype}")
        return value.detach().to(device="cpu", dtype=torch.float64).numpy()
    return value


def size(state, *sources, default=1):
    """The length of axis `axis` of the first `(key, axis)` in `sources` that `state` has;
    `default` where none has it (the keys are then missing, and reported as such)."""
    for key, axis in sources:
        if key in state and state[key].ndim > axis:
            return state[key].shape[axis]
    return default


def depth(state, pattern):
    """1 + the largest layer index i among the keys that match `pattern` (a regular
    expression whose first group is i), or 1 if none does (its keys are then missing)."""
    indices = [int(match.group(1)) for key in state if (match := re.match(pattern, key))]
    return max(indices) + 1 if indices else 1


def heads_divide(width, heads, key, what="H * Dh"):
    """Dh = width / heads for the projection `key` whose output width is `what`; ValueError
    naming `heads` where it does not divide."""
    heads = _checks.positive_int("heads", heads)
    if width == 0 or width % heads:
        raise ValueError(f"heads = {heads} must divide the output width of {key} ({what}); got {width}")
    return width // heads


def kv_heads_divide(kv_width, dim_head, heads, key):
    """Hkv = kv_width / Dh for the key projection `key` (Hkv * Dh rows); ValueError where
    that is not a whole divisor of heads."""
    if kv_width == 0 or kv_width % dim_head or heads % (kv_width // dim_head):
        raise ValueError(
            f"{key} has {kv_width} rows, which is not Hkv * Dh for a number of key/value heads Hkv "
            f"dividing heads = {heads} (Dh = {dim_head} from the query projection)"
        )
    return kv_width // dim_head


def ff_mult(ff_dim, dim):
    """F / D as a number that ResamplerConfig turns back into F exactly: an int where D
    divides F, else a float where dim * (F / D) == F, else a Fraction."""
    if dim and ff_dim % dim == 0:
        return ff_dim // dim
    ratio = ff_dim / dim if dim else 0
    return ratio if dim * ratio == ff_dim else Fraction(ff_dim, dim)


def to_params(state, layout, config, what, prefix="", shapes=None):
    """refimpl's parameters (float64, (in, out) projections) from `state` (see `read`),
    after checking it against the peer shapes that `layout` and `config` give; `shapes`
    (refimpl name -> shape) defaults to `param_shapes(config)`, the resampler's.

    Raises ValueError listing every missing, unexpected and mis-shaped key at once.
    """
    shapes = param_shapes(config) if shapes is None else shapes
    expected = {key: _expected_shape(kind, names, shapes) for key, (kind, names) in layout.items()}
    _check_fits(state, expected, f"{what} with the sizes read from it ({config})", prefix)
    params = {}
    for key, (kind, names) in layout.items():
        if kind != FIXED:
            params |= dict(zip(names, to_refimpl(kind, state[key])))
    return {name: np.asarray(params[name], order="C") for name in shapes}  # refimpl's order; 0-d stays 0-d


def _expected_shape(kind, names, shapes):
    if kind == FIXED:
        return names.table.shape
    return peer_shape(kind, [shapes[name] for name in names])


def check_fixed(state, layout, prefix=""):
    """ValueError naming each "fixed" tensor of `state` (present, of the right shape) that is
    further than its atol from the table refimpl computes."""
    for key, (kind, fixed) in layout.items():
        if kind == FIXED and key in state and state[key].shape == fixed.table.shape:
            error = float(np.abs(state[key] - fixed.table).max(initial=0.0))
            if error > fixed.atol:
                raise ValueError(
                    f"state_dict[{prefix + key!r}] must be the fixed 2-D sin-cos table refimpl computes "
                    f"(to {fixed.atol:g}); it differs by {error:.2g}"
                )


def _check_fits(state, expected, what, prefix):
    where = f" (keys read after the prefix {prefix!r})" if prefix else ""
    _checks.check_fits(
        f"state_dict does not fit {what}{where}", {key: value.shape for key, value in state.items()}, expected
    )


# ---------------------------------------------------------------- a resampler inside a whole model


def find_prefix(keys, anchor, *, also=(), never=(), known=("",)):
    """The prefix p under which `keys` (a state dict's, e.g. a whole model's: vision tower,
    language model and all) hold a peer's resampler: p + anchor and p + each key of `also`
    are among them, and no p + key of `never`. p is "" or ends in "."; among several, the
    first in `known` (the peer's usual places), else the shortest. None where there is none.
    """
    keys = set(keys)
    found = sorted(
        {key[: len(key) - len(anchor)] for key in keys if key.endswith(anchor)},
        key=lambda prefix: (len(prefix), prefix),
    )
    found = [
        prefix
        for prefix in found
        if (prefix == "" or prefix.endswith("."))
        and all(prefix + key in keys for key in also)
        and not any(prefix + key in keys for key in never)
    ]
    return next((prefix for prefix in known if prefix in found), found[0] if found else None)


def other_peer(keys, name):
    """(the name of another peer whose resampler `keys` hold, its prefix), or None."""
    from ._registry import PEERS  # the registry imports every peer module, which import this one

    for other, module in PEERS.items():
        if other != name and (prefix := module.find_prefix(keys)) is not None:
            return other, prefix
    return None


def looks_like(other, prefix, what="state dict"):
    """'this looks like an idefics2 state dict, with its resampler under the prefix ...'."""
    article = "an" if other[0] in "aeiou" else "a"
    where = f", with its resampler under the prefix {prefix!r}" if prefix else ""
    return f"this looks like {article} {other} {what}{where}"


def check_holds_resampler(state_dict, name, prefix):
    """ValueError, in one line, where the keys of `state_dict` after `prefix` are not peer
    `name`'s resampler but hold it under a longer prefix (a whole model's state dict: the
    message names the prefix to pass), or hold another peer's resampler (the message names
    the peer), rather than listing every key of a vision tower and a language model.
    Anything else, a resampler with a bad key included, is left to `to_params` to report.
    """
    if not hasattr(state_dict, "keys") or not isinstance(prefix, str):
        return  # `read` says what is wrong with them
    keys = [key[len(prefix) :] for key in state_dict.keys() if isinstance(key, str) and key.startswith(prefix)]
    from ._registry import peer

    found = peer(name).find_prefix(keys)
    if found:
        raise ValueError(
            f"state_dict is a whole model's, with {name}'s resampler under the prefix {prefix + found!r}: "
            f"pass prefix={prefix + found!r}"
        )
    if found is None and (other := other_peer(keys, name)) is not None:
        other, where = other[0], prefix + other[1]
        raise ValueError(
            f"state_dict does not hold {name}'s resampler: {looks_like(other, where)}; read it with "
            + (f"from_{other}(..., prefix={where!r})" if where else f"from_{other}")
        )


def load_module(module, state_dict):
    """`module`, in the dtype of `state_dict`'s tensors, with them loaded (strict=True), in
    eval mode: how every peer's build_module ends."""
    module = module.to(next(iter(state_dict.values())).dtype)
    module.load_state_dict(state_dict, strict=True)
    return module.eval()


# ---------------------------------------------------------------- writing a state dict


def check_expressible(config, peer, problems):
    """Raise ValueError listing `problems` (lines saying what `peer` cannot express), if any."""
    if problems:
        raise ValueError(f"{peer} cannot express this config ({config}):\n  " + "\n  ".join(problems))


def mlp_and_table_problems(config, peer, ff_mult):
    """What a peer whose MLP is ff_mult * D wide and which has no embedding tables (the
    Hugging Face resamplers) cannot express in `config`."""
    problems = []
    if config.ff_dim != ff_mult * config.dim:
        problems.append(f"ff_mult = {config.ff_mult}; {peer}'s MLP is {ff_mult} * D wide")
    for name in ("num_time_embeds", "num_media_embeds"):
        if getattr(config, name) is not None:
            problems.append(f"{name} = {getattr(config, name)}; {peer} has no embedding table")
    return problems


def differences(config, wanted, peer):
    """One line per switch where `config` differs from `wanted` (name -> the peer's value)."""
    return [
        f"{name} = {getattr(config, name)!r}; {peer} has {value!r}"
        for name, value in wanted.items()
        if getattr(config, name) != value
    ]


def check_config(config):
    """TypeError unless `config` is a ResamplerConfig."""
    if not isinstance(config, ResamplerConfig):
        raise TypeError(f"config must be a refimpl.ResamplerConfig; got {type(config).__name__}")


def to_state_dict(params, config, layout, dtype, shapes=None):
    """{peer key: torch tensor of `dtype` (default torch.float64), a fresh contiguous copy}
    in the layout's order, from refimpl's `params` (checked against `config`, or against
    `shapes` where given: refimpl name -> shape)."""
    import torch

    dtype = _torch_dtype(torch, dtype)
    shapes = param_shapes(config) if shapes is None else shapes
    params = check_params(params, shapes, np.float64, f"the config {config}")
    return {
        key: torch.tensor(
            np.ascontiguousarray(names.table if kind == FIXED else to_peer(kind, [params[name] for name in names])),
            dtype=dtype,
        )
        for key, (kind, names) in layout.items()
    }


def _torch_dtype(torch, dtype):
    """torch.float64 for None; a torch floating dtype as is; a NumPy float dtype's torch twin."""
    if dtype is None:
        return torch.float64
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    else:
        try:
            resolved = torch.from_numpy(np.zeros(0, dtype=np.dtype(dtype))).dtype
        except TypeError:
            raise TypeError(f"dtype must be a torch or NumPy floating dtype; got {dtype!r}") from None
    if not resolved.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype; got {resolved}")
    return resolved


# ---------------------------------------------------------------- the kinds


def norm(peer_prefix, refimpl_prefix, bias=True):
    """The layout of a norm: weight (and bias, for a LayerNorm), each "same"."""
    names = ("weight", "bias") if bias else ("weight",)
    return {f"{peer_prefix}.{name}": (SAME, (f"{refimpl_prefix}.{name}",)) for name in names}


def peer_shape(kind, shapes):
    """The peer tensor's shape from the shapes of its refimpl parameter(s)."""
    if kind == SAME:
        return shapes[0]
    if kind == LINEAR:
        return shapes[0][::-1]  # (in, out) -> (out, in)
    if kind == FUSED_KV:
        (d, inner), _ = shapes
        return (2 * inner, d)
    if kind == FUSED_QKV:
        (d, inner), *kv = shapes
        if any(shape != (d, inner) for shape in kv):
            raise ValueError(f"a fused_qkv weight needs q, k and v of one width (kv_heads = heads); got {shapes}")
        return (3 * inner, d)
    if kind == PER_ITEM:
        items, d = shapes[0]
        return (items, 1, d)
    if kind == GATE:
        return (1,) if shapes[0] == () else (1, 1) + shapes[0]
    if kind == FUSED_QKV_BIAS:
        if len({shape for shape in shapes}) != 1:
            raise ValueError(f"a fused_qkv_bias needs q, k and v biases of one width (kv_heads = heads); got {shapes}")
        return (3 * shapes[0][0],)
    raise AssertionError(f"unknown kind {kind!r}")


def to_refimpl(kind, tensor):
    """The refimpl parameter(s), as a tuple, from a peer tensor of the right shape."""
    if kind == SAME:
        return (tensor,)
    if kind == LINEAR:
        return (tensor.T,)  # (out, in) -> (in, out)
    if kind == FUSED_KV:
        keys, values = np.split(tensor, 2, axis=0)  # torch's to_kv(x).chunk(2, dim=-1)
        return keys.T, values.T
    if kind == FUSED_QKV:
        return tuple(part.T for part in np.split(tensor, 3, axis=0))  # queries, keys, values
    if kind == PER_ITEM:
        return (tensor[:, 0, :],)  # (I, 1, D) -> (I, D)
    if kind == GATE:
        return (tensor.reshape(tensor.shape[2:]),)  # (1,) -> (), (1, 1, Dt) -> (Dt,)
    if kind == FUSED_QKV_BIAS:
        return tuple(np.split(tensor, 3))  # queries, keys, values
    raise AssertionError(f"unknown kind {kind!r}")


def to_peer(kind, arrays):
    """The peer tensor from the refimpl parameter(s): the inverse of `to_refimpl`."""
    if kind == SAME:
        return arrays[0]
    if kind == LINEAR:
        return arrays[0].T
    if kind == FUSED_KV:
        wk, wv = arrays
        return np.concatenate([wk.T, wv.T], axis=0)  # (2 * H*Dh, D): keys first
    if kind == FUSED_QKV:
        return np.concatenate([w.T for w in arrays], axis=0)  # (3 * H*Dh, D)
    if kind == PER_ITEM:
        return arrays[0][:, None, :]
    if kind == GATE:
        return arrays[0].reshape(peer_shape(GATE, [arrays[0].shape]))
    if kind == FUSED_QKV_BIAS:
        return np.concatenate(arrays)  # (3 * H*Dh,)
    raise AssertionError(f"unknown kind {kind!r}")
