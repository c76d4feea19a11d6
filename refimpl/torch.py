"""refimpl.torch: the Perceiver Resampler as PyTorch modules, the same function as the NumPy
reference, for the CPU and the GPU.

    import refimpl.torch
    module = refimpl.torch.PerceiverResampler.from_refimpl(config, params)   # float64, exact
    module = module.to("cuda", torch.bfloat16)     # or float16 where the GPU has no bfloat16 (a T4)
    latents = module(x, mask=mask)                                           # (..., R, D)

Every `ResamplerConfig` works, with the conventions of `refimpl.perceiver_resampler`:
x (..., T, S, D) (or (..., I, T, S, D) with config.num_media_embeds), mask (..., T, S),
True = real token, output (..., R, D). The attention runs through
`F.scaled_dot_product_attention`, so on a GPU it uses the flash or memory-efficient
kernels; `return_attention=True` takes an explicit path that forms the weights. In float16
(largest finite value 65504) an eager forward raises FloatingPointError rather than return
an output that overflowed to inf or NaN (check_float16_output).

State-dict names are refimpl's parameter names; a projection `w*` becomes an nn.Linear
whose `.weight` is the transpose of refimpl's (in, out) array: refimpl "layers.0.attn.wq"
(D, H*Dh) is torch "layers.0.attn.wq.weight" (H*Dh, D), and its bias refimpl
"layers.0.attn.bq" (config.attn_bias) is torch "layers.0.attn.wq.bias"; "media_proj.weight"
and "out_proj.weight" keep their names, transposed. `from_refimpl` and `to_refimpl` move the
weights both ways exactly. With config.positions, forward takes `grid` as
refimpl.perceiver_resampler does; the positions are refimpl.positions' tables, built in torch.

torch.compile(module, fullgraph=True) captures the whole forward pass in one graph for
every config, in any mode, and so does a CUDA graph; see PerceiverResampler for the two
checks that then cannot raise.

Axis letters: B batch (the leading axes, flattened), N = T*S media tokens, R latents,
H heads, Hkv key/value heads, Dh head width, D width, F feed-forward width.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import _checks
from .config import ResamplerConfig, check_config
from .gated_xattn import GatedXattnConfig, gated_xattn_param_shapes, resolve_config
from .params import ATTENTION_BIASES, PROJECTION_MATRICES, check_params, param_shapes
from .positions import check_grid, check_grid_sides


class Norm(nn.Module):
    """LayerNorm (scale and shift) or RMSNorm (scale), optionally normalising in float32."""

    def __init__(self, dim, kind="layernorm", eps=1e-5, norm_dtype=None):
        super().__init__()
        self.kind, self.eps, self.norm_dtype = kind, eps, norm_dtype
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if kind == "layernorm" else None

    def normalize(self, x):
        """The normalisation alone, without scale and shift: (x - mean) / std or x / rms, in x's dtype.

        Both through torch's fused norms, which accumulate a half-precision x in float32: a
        mean of squares written out in float16 overflows (to a zero output) once |x| > 256."""
        h = x.float() if self.norm_dtype == "float32" else x
        if self.kind == "layernorm":
            h = F.layer_norm(h, h.shape[-1:], eps=self.eps)
        else:
            h = F.rms_norm(h, h.shape[-1:], eps=self.eps)
        return h.to(x.dtype)

    def forward(self, x):
        if self.norm_dtype is None:  # one fused kernel
            if self.kind == "layernorm":
                return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
            return F.rms_norm(x, x.shape[-1:], self.weight, self.eps)
        h = self.normalize(x) * self.weight
        return h if self.bias is None else h + self.bias


class CrossAttention(nn.Module):
    """Multi-head cross-attention with projections (refimpl.multi_head_attention).

    queries (B, R, D), context (B, N, Dc), mask bool (B, R|1, N) or None, True = may attend.
    Returns (B, R, D) and, with return_weights, the weights (B, H, R, N).
    """

    def __init__(self, dim, dim_context, *, heads, kv_heads=None, dim_head=64, qk_norm_eps=None, bias=False):
        super().__init__()
        self.heads, self.kv_heads, self.dim_head = heads, kv_heads or heads, dim_head
        self.wq = nn.Linear(dim, heads * dim_head, bias=bias)
        self.wk = nn.Linear(dim_context, self.kv_heads * dim_head, bias=bias)
        self.wv = nn.Linear(dim_context, self.kv_heads * dim_head, bias=bias)
        self.wo = nn.Linear(heads * dim_head, dim, bias=bias)
        self.q_norm = self.k_norm = None
        if qk_norm_eps is not None:
            self.q_norm = nn.LayerNorm(dim_head, eps=qk_norm_eps)
            self.k_norm = nn.LayerNorm(dim_head, eps=qk_norm_eps)

    def forward(self, queries, context, mask=None, return_weights=False):
        return self.attend(self.wq(queries), self.wk(context), self.wv(context), mask, return_weights)

    def attend(self, q, k, v, mask=None, return_weights=False):
        """Attention from projected queries q (B, R, H*Dh), keys and values k, v (B, N, Hkv*Dh)."""
        q = q.unflatten(-1, (self.heads, self.dim_head)).transpose(-2, -3)  # (B, H, R, Dh)
        k = k.unflatten(-1, (self.kv_heads, self.dim_head)).transpose(-2, -3)  # (B, Hkv, N, Dh)
        v = v.unflatten(-1, (self.kv_heads, self.dim_head)).transpose(-2, -3)  # (B, Hkv, N, Dh)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        mask = None if mask is None else mask.unsqueeze(-3)  # (B, 1, R|1, N), the same for every head
        weights = None
        if return_weights:
            group = self.heads // self.kv_heads  # query head h reads key/value head h // group
            k, v = k.repeat_interleave(group, dim=-3), v.repeat_interleave(group, dim=-3)  # (B, H, N, Dh)
            scores = (q * self.dim_head**-0.5) @ k.transpose(-1, -2)  # (B, H, R, N), scaled first: no float16 overflow
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(dim=-1)
            out = weights @ v  # (B, H, R, Dh)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.heads != self.kv_heads)
        return self.wo(out.transpose(-2, -3).flatten(-2)), weights  # (B, R, D)


class ResamplerAttention(CrossAttention):
    """attn(q = norm(latents) [+ pq], kv = concat(norm(media), norm(latents))), without the residual
    (no norms without config.pre_norm; query positions pq with positions="keys_and_queries")."""

    def __init__(self, config):
        super().__init__(
            config.dim,
            config.dim,
            heads=config.heads,
            kv_heads=config.num_kv_heads,
            dim_head=config.dim_head,
            qk_norm_eps=config.norm_eps if config.qk_norm else None,
            bias=config.attn_bias,
        )
        self.latents_in_kv = config.latents_in_kv
        self.norm_media = self.norm_latents = None
        if config.pre_norm:
            self.norm_media = Norm(config.dim, config.norm, config.norm_eps, config.norm_dtype)
            self.norm_latents = Norm(config.dim, config.norm, config.norm_eps, config.norm_dtype)

    def forward(self, kv, latents, key_mask=None, return_weights=False, query_positions=None):
        """kv (B, N [+ R], 2*Hkv*Dh): this layer's keys then values of the normalised media tokens,
        with R rows left for the latents' when they join the keys (PerceiverResampler.media_keys_values);
        latents (B, R, D); key_mask (B, 1, N [+ R]) or None; query_positions (R, D) or None."""
        if self.norm_latents is not None:
            latents = self.norm_latents(latents)
        if self.latents_in_kv:
            kv = _replace_last_rows(kv, torch.cat([self.wk(latents), self.wv(latents)], dim=-1))  # (B, N + R, 2*Hkv*Dh)
        k, v = kv.chunk(2, dim=-1)  # (B, N [+ R], Hkv*Dh) each
        queries = latents if query_positions is None else latents + query_positions  # (B, R, D)
        return self.attend(self.wq(queries), k, v, key_mask, return_weights)


def _check_bool_mask(mask, meaning, device):
    """TypeError unless `mask` is a bool tensor (`meaning` says what True means), ValueError
    unless it is on `device`. F.scaled_dot_product_attention would take a float or int
    mask as a bias added to the scores: a 0/1 mask would change every weight, silently."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = f"dtype {mask.dtype}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"mask must be a bool tensor ({meaning}); got {got}")
    if mask.device != device:
        raise ValueError(f"mask must be on the device of the inputs, {device}; got {mask.device}")


FLOAT16_MAX = torch.finfo(torch.float16).max  # 65504


def may_not_wait_for_device(x):
    """Whether a forward pass on x must not wait for the device (a host sync): while
    torch.compile traces it (a sync would break the graph) or while a CUDA stream captures a
    CUDA graph (a sync is not allowed there). The checks that read tensor values then defer."""
    return torch.compiler.is_compiling() or (x.is_cuda and torch.cuda.is_current_stream_capturing())


def check_float16_output(out, module):
    """FloatingPointError if `out`, the float16 output of `module` (its class name, for the
    message), holds an inf or a NaN: float16's largest finite value is 65504, and a value on
    the way that passes it becomes inf, then NaN in the next norm or softmax, and torch
    raises nothing. The inputs may be finite float16 and still overflow inside (a large x through
    media_proj, a residual stream that grows). Outputs of other dtypes pass unchecked.

    Reading whether every entry is finite waits for the device (a host sync), so the check
    runs in eager mode only: it is skipped while torch.compile traces and while a CUDA graph
    is captured (may_not_wait_for_device).
    """
    if out.dtype != torch.float16 or may_not_wait_for_device(out):
        return
    if not torch.isfinite(out).all():
        raise FloatingPointError(
            f"{module} in float16 gave an output that is not finite (inf or NaN): a value on the way exceeded "
            f"float16's largest finite value {FLOAT16_MAX:g} (or the input held inf or NaN); run the module in "
            "bfloat16 (float32's range) or float32"
        )


def _replace_last_rows(kv, rows):
    """kv (B, N + R, C) with its last R rows replaced by rows (B, R, C).

    Without autograd the rows are written in place, and the media's keys and values are never
    copied: on a GPU, copying them in every layer took as long as the largest matrix product.
    With autograd that would overwrite a tensor an earlier layer saved for its backward pass,
    so there a new tensor is built.
    """
    if torch.is_grad_enabled():
        return torch.cat([kv[:, : -rows.shape[1]], rows], dim=1)
    kv[:, -rows.shape[1] :] = rows
    return kv


class FeedForward(nn.Module):
    """Pre-norm MLP without the residual: act(norm(x) @ w_in) @ w_out, or gated SiLU (swiglu)."""

    def __init__(self, dim, ff_dim, activation="gelu", norm="layernorm", eps=1e-5, norm_dtype=None, pre_norm=True):
        super().__init__()
        self.activation = activation
        self.norm = Norm(dim, norm, eps, norm_dtype) if pre_norm else None
        if activation == "swiglu":
            self.w_gate = nn.Linear(dim, ff_dim, bias=False)
            self.w_up = nn.Linear(dim, ff_dim, bias=False)
            self.w_down = nn.Linear(ff_dim, dim, bias=False)
        else:
            self.w_in = nn.Linear(dim, ff_dim, bias=False)
            self.w_out = nn.Linear(ff_dim, dim, bias=False)

    def forward(self, x):
        h = x if self.norm is None else self.norm(x)
        if self.activation == "swiglu":
            return self.w_down(F.silu(self.w_gate(h)) * self.w_up(h))
        h = self.w_in(h)
        if self.activation == "gelu":
            h = F.gelu(h)
        elif self.activation == "relu":
            h = F.relu(h)
        else:  # squared_relu
            h = F.relu(h).square()
        return self.w_out(h)


class PerceiverResampler(nn.Module):
    """The Perceiver Resampler for any `ResamplerConfig` (see refimpl.perceiver_resampler).

    forward(x, mask=None, return_attention=False, grid=None):
      x (..., T, S, D), or (..., I, T, S, D) with config.num_media_embeds (D = media_dim with
      config.media_dim); mask bool (..., T, S) (resp. (..., I, T, S)), True = real token; grid
      with config.positions, as for refimpl.perceiver_resampler. Returns (..., R, D) (D =
      out_dim with config.out_dim) [and a list of the per-layer attention weights (..., H, R, N [+ R])].

    Under torch.compile (fullgraph=True works for every config) and while a CUDA graph is
    captured, the grid must be one (h, w) pair of ints for the whole batch, and the items
    whose mask eager mode rejects come out as NaN (see check_input; call it first for the
    error). Compiled, after one recompile, new batch sizes and S reuse the graph (dynamic
    shapes); a new grid compiles a new one.

    In float16, an eager call whose output is not finite raises FloatingPointError (check_float16_output).
    """

    def __init__(self, config: ResamplerConfig):
        super().__init__()
        self.config = check_config(config)
        if config.media_dim is not None:
            self.media_proj = nn.Linear(config.media_dim, config.dim, bias=config.media_proj_bias)
        self.latents = nn.Parameter(torch.randn(config.num_latents, config.dim))
        if config.num_time_embeds is not None:
            self.time_embeds = nn.Parameter(torch.zeros(config.num_time_embeds, config.dim))
        if config.num_media_embeds is not None:
            self.media_embeds = nn.Parameter(torch.zeros(config.num_media_embeds, config.dim))
        norm_options = (config.norm, config.norm_eps, config.norm_dtype)
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {"attn": ResamplerAttention(config)}
                | (
                    {"ff": FeedForward(config.dim, config.ff_dim, config.activation, *norm_options, config.pre_norm)}
                    if config.feed_forward
                    else {}
                )
            )
            for _ in range(config.depth)
        )
        self.norm = Norm(config.dim, *norm_options) if config.final_norm else None
        if config.out_dim is not None:
            self.out_proj = nn.Linear(config.dim, config.out_dim, bias=config.out_proj_bias)
            if config.out_norm:
                self.out_norm = Norm(config.out_dim, *norm_options)

    def forward(self, x, mask=None, return_attention=False, grid=None):
        config = self.config
        sides = self.check_input(x, mask, grid)
        key_positions, query_positions = self.sincos_positions(x, sides)
        if config.media_dim is not None:
            x = self.media_proj(x)  # (..., T, S, D)
        *batch, n_frames, n_space, dim = x.shape
        if config.num_media_embeds is not None:
            x = x + self.media_embeds[: x.shape[-4], None, None, :]  # (..., I, T, S, D)
        if config.num_time_embeds is not None:
            x = x + self.time_embeds[:n_frames, None, :]  # (..., T, S, D)
        n_batch = math.prod(batch)
        media = x.reshape(n_batch, n_frames * n_space, dim)  # (B, N, D)
        latents = self.latents.expand(n_batch, -1, -1)  # (B, R, D)
        key_mask = None
        if mask is not None:
            key_mask = mask.reshape(n_batch, n_frames * n_space)  # (B, N)
            if config.latents_in_kv:
                key_mask = torch.cat([key_mask, key_mask.new_ones(n_batch, config.num_latents)], dim=-1)
            key_mask = key_mask[:, None, :]  # (B, 1, N [+ R])
        maps = []
        for layer, kv in zip(self.layers, self.media_keys_values(media, key_positions), strict=True):
            attended, weights = layer["attn"](kv, latents, key_mask, return_attention, query_positions)
            latents = latents + attended if config.attn_residual else attended
            if config.feed_forward:
                latents = latents + layer["ff"](latents)
            maps.append(weights)
        if self.norm is not None:
            latents = self.norm(latents)  # (B, R, D)
        if config.out_dim is not None:
            latents = self.out_proj(latents)  # (B, R, Do)
            if config.out_norm:
                latents = self.out_norm(latents)
        if mask is not None and may_not_wait_for_device(x):
            rejected = self.items_eager_would_reject(mask.reshape(n_batch, n_frames, n_space), sides)  # (B,)
            latents = torch.where(rejected[:, None, None], torch.nan, latents)
        latents = latents.reshape(*batch, config.num_latents, config.out_width)  # (..., R, D or Do)
        check_float16_output(latents, "PerceiverResampler")
        if not return_attention:
            return latents
        return latents, [w.reshape(*batch, *w.shape[1:]) for w in maps]

    def check_input(self, x, mask, grid=None):
        """forward's arguments checked, with the messages of refimpl.perceiver_resampler:
        x a floating tensor of the module's dtype and device, of shape (..., [I,] T, S, D)
        that fits the config's tables; mask None or a bool tensor (..., [I,] T, S) on x's
        device; grid as refimpl.perceiver_resampler takes it. Returns every image's (h, w),
        one pair per batch item (flattened) or a single pair for the whole batch, or None
        without positions.

        Shapes, dtypes and the grid are known on the host. Two checks read the mask's values:
        that every item has a real token where the latents are not among the keys, and that
        no token past an image's h*w is real. They wait for the device in eager mode; under
        torch.compile or a CUDA graph's capture they may not (may_not_wait_for_device), so
        there the grid must be one (h, w) pair of ints, the items they would reject come out
        as NaN (items_eager_would_reject), and calling check_input first raises their errors."""
        expected = self.latents
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
        if x.dtype != expected.dtype:
            raise TypeError(
                f"x must have the module's dtype {expected.dtype}; got {x.dtype} "
                f"(convert x with x.to({expected.dtype}), or the module with module.to({x.dtype}))"
            )
        if x.device != expected.device:
            raise ValueError(f"x must be on the module's device {expected.device}; got {x.device}")
        if mask is not None:
            _check_bool_mask(mask, "True = real token", x.device)
        _checks.resampler_input(x.shape, None if mask is None else mask.shape, self.config)
        deferred = may_not_wait_for_device(x)
        if not self.config.latents_in_kv:
            empty = None
            if mask is not None and not deferred:
                empty = (~mask.flatten(-2).any(dim=-1)).cpu().numpy()  # (...), True where an item has no real token
            _checks.resampler_items_have_tokens(tuple(x.shape), empty)
        if self.config.positions is None or grid is None:
            return check_grid(grid, x.shape, None, self.config)  # None, or the error for a grid out of place
        if deferred:
            return [_one_grid_pair(grid, x.shape[-2], mask is not None)]
        grid = grid.cpu().numpy() if isinstance(grid, torch.Tensor) else grid
        mask = None if mask is None else mask.cpu().numpy()
        return [tuple(pair) for pair in check_grid(grid, tuple(x.shape), mask, self.config).reshape(-1, 2).tolist()]

    def items_eager_would_reject(self, mask, sides):
        """mask (B, T, S), sides from check_input without a host sync (one (h, w) pair, or
        None) -> (B,) bool: the items whose mask check_input rejects in eager mode (no real
        token without the latents among the keys; a real token past the grid's h*w), computed
        on the device, with no copy from the host (which a CUDA graph's capture forbids)."""
        rejected = torch.zeros(mask.shape[0], dtype=torch.bool, device=mask.device)  # (B,)
        if not self.config.latents_in_kv:
            rejected = rejected | ~mask.flatten(1).any(dim=1)
        if sides is not None:
            ((h, w),) = sides
            past = torch.arange(mask.shape[-1], device=mask.device) >= h * w  # (S,) tokens past h*w
            rejected = rejected | (mask & past).flatten(1).any(dim=1)
        return rejected

    def sincos_positions(self, x, sides):
        """The sin-cos positions for the images' grids (sides from check_input), as constant
        tensors in x's dtype and device: keys (B|1, N, D), zero past each image's h*w, and
        queries (R, D); each None where config.positions has none. The tables of
        refimpl.positions, built in torch (sincos_table)."""
        config = self.config
        if sides is None:
            return None, None
        n_frames, n_space = x.shape[-3], x.shape[-2]
        padded = {  # (S, D) per distinct grid
            (h, w): F.pad(sincos_table(config, h, w, x.device), (0, 0, 0, n_space - h * w)) for h, w in set(sides)
        }
        keys = torch.stack([padded[pair] for pair in sides])  # (B|1, S, D)
        keys = keys[:, None].expand(-1, n_frames, -1, -1).flatten(1, 2)  # (B|1, N, D), frame-major
        queries = None
        if config.positions == "keys_and_queries":
            queries = sincos_2d(config.dim, config.pos_grid, config.pos_grid, x.device)  # (R, D)
        return tuple(None if p is None else p.to(x.dtype) for p in (keys, queries))

    def media_keys_values(self, media, key_positions=None):
        """Every layer's keys and values of the media tokens, from one normalisation and one
        matrix product: media (B, N, D) -> a tuple of depth tensors (B, N [+ R], 2*Hkv*Dh), keys
        then values; when the latents join the keys, R more rows per tensor wait for each layer's.
        key_positions (B, N, D) or None: added to the keys' inputs, never to the values'.

        The media tokens are the same in every layer; a layer only brings its own norm_media
        scale g and shift b and its projections W = [Wk | Wv] (D, 2*Hkv*Dh). With xhat the
        normalisation alone, norm(x) = xhat * g + b, so

            norm(x) @ W = xhat @ (g[:, None] * W) + b @ W,

        and xhat is computed once, for all layers, and multiplied by every layer's folded W at
        once. The same function as normalising per layer, up to rounding; on a GPU it reads the
        media once instead of depth times and runs one large matrix product instead of 2*depth.
        Without pre-norms or with positions, each layer projects on its own (_layer_keys_values).
        """
        attention = [layer["attn"] for layer in self.layers]
        if not self.config.pre_norm or key_positions is not None:
            return tuple(self._layer_keys_values(a, media, key_positions) for a in attention)
        weight = [torch.cat([a.wk.weight, a.wv.weight]) for a in attention]  # depth x (2*Hkv*Dh, D)
        folded = torch.cat([w * a.norm_media.weight for w, a in zip(weight, attention)])  # (depth*2*Hkv*Dh, D)
        bias = None
        if self.config.norm == "layernorm":
            bias = torch.cat([w @ a.norm_media.bias for w, a in zip(weight, attention)])  # (depth*2*Hkv*Dh,)
        if self.config.attn_bias:
            biases = torch.cat([torch.cat([a.wk.bias, a.wv.bias]) for a in attention])  # (depth*2*Hkv*Dh,)
            bias = biases if bias is None else bias + biases
        xhat = attention[0].norm_media.normalize(media)  # every layer's norm has the same kind and eps
        if self.config.latents_in_kv:
            xhat = F.pad(xhat, (0, 0, 0, self.config.num_latents))  # (B, N + R, D), rows the layers overwrite
        return F.linear(xhat, folded, bias).chunk(len(attention), dim=-1)  # (B, N [+ R], depth*2*Hkv*Dh) -> per layer

    def _layer_keys_values(self, attention, media, key_positions):
        """One layer's keys and values: k = wk(norm(media) [+ positions]), v = wv(norm(media)),
        (B, N [+ R], 2*Hkv*Dh) with R rows left for the latents' as in media_keys_values."""
        normed = media if attention.norm_media is None else attention.norm_media(media)  # (B, N, D)
        keys_input = normed if key_positions is None else normed + key_positions  # (B, N, D)
        kv = torch.cat([attention.wk(keys_input), attention.wv(normed)], dim=-1)  # (B, N, 2*Hkv*Dh)
        return F.pad(kv, (0, 0, 0, self.config.num_latents)) if self.config.latents_in_kv else kv

    @classmethod
    def from_refimpl(cls, config, params, dtype=torch.float64, device=None):
        """A module holding refimpl's `params` exactly (checked against `config`), in `dtype`."""
        module = cls(config).to(dtype=dtype, device=device)
        module.load_state_dict(
            to_state_dict(check_params(params, param_shapes(config), np.float64, f"the config {config}"), dtype, device)
        )
        return module

    def to_refimpl(self):
        """The parameters as refimpl's flat dict of float64 NumPy arrays."""
        return from_state_dict(self.state_dict())


def _one_grid_pair(grid, n_space, masked):
    """Under torch.compile or a CUDA graph's capture: grid as one (h, w) pair of ints for the
    whole batch, checked against S = n_space as refimpl.positions.check_grid_sides checks it."""
    if not (isinstance(grid, (tuple, list)) and len(grid) == 2 and all(isinstance(side, int) for side in grid)):
        got = repr(grid) if isinstance(grid, (tuple, list)) else type(grid).__name__
        raise TypeError(
            "grid must be one (h, w) pair of ints for the whole batch under torch.compile or a CUDA graph's "
            f"capture (a grid per image, an array (..., 2), needs eager mode); got {got}"
        )
    check_grid_sides([tuple(grid)], n_space, masked=masked)
    return tuple(grid)


def sincos_2d(dim, h, w, device=None):
    """refimpl.positions.sincos_2d in torch: the 2-D sin-cos table of an h x w grid, (h*w, dim)
    float64; channels [:dim/2] encode the column c, [dim/2:] the row r of patch r*w + c, each
    as [sin(p * omega), cos(p * omega)] with omega_k = 10000 ** (-k / (dim/4)), k < dim/4."""
    omega = 10000.0 ** -(torch.arange(dim // 4, dtype=torch.float64, device=device) / (dim // 4))  # (dim/4,)
    patch = torch.arange(h * w, device=device)  # (h*w,)

    def encode(p):  # (h*w,) -> (h*w, dim/2)
        angles = p[:, None] * omega  # (h*w, dim/4)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    return torch.cat([encode(patch % w), encode(patch // w)], dim=-1)


def sincos_table(config, h, w, device=None):
    """The key positions of an h x w image (h*w, D) float64, as refimpl.positions builds them:
    sincos_2d(D, h, w), or with config.pos_grid the pos_grid x pos_grid table resized to h x w
    by F.interpolate(mode="bicubic", align_corners=False) (refimpl.resize_positions)."""
    if config.pos_grid is None:
        return sincos_2d(config.dim, h, w, device)
    side = config.pos_grid
    table = sincos_2d(config.dim, side, side, device)  # (side*side, D)
    if (h, w) == (side, side):
        return table
    image = table.T.reshape(1, config.dim, side, side)  # (1, D, side, side)
    return F.interpolate(image, size=(h, w), mode="bicubic", align_corners=False)[0].flatten(1).T  # (h*w, D)


class GatedXAttnDense(nn.Module):
    """A gated cross-attention block (refimpl.gated_xattn_dense) for any GatedXattnConfig.

    forward(hidden (..., L, Dt), visual (..., Nv, Dv), mask bool (..., L, Nv) or None).
    A text token that may see no visual token (a blind row) is handled as
    config.blind_rows and config.zero_blind_ff say: by default it gets no attention output.
    In float16, an eager call whose output is not finite raises FloatingPointError (check_float16_output).
    """

    FLAMINGO_SIZES = dict(heads=8, dim_head=64, ff_mult=4, norm_eps=1e-5)

    def __init__(self, config, dim_visual=None, **sizes):
        """GatedXAttnDense(config) for a GatedXattnConfig, or GatedXAttnDense(dim, dim_visual,
        heads=8, dim_head=64, ff_mult=4, norm_eps=1e-5) for the Flamingo block (F = round(dim * ff_mult))."""
        super().__init__()
        if isinstance(config, GatedXattnConfig):
            if dim_visual is not None or sizes:
                raise TypeError(
                    f"GatedXAttnDense(config) takes no sizes besides the config; got {dim_visual=}, {sizes}"
                )
        else:
            unknown = sorted(set(sizes) - set(self.FLAMINGO_SIZES))
            if unknown or dim_visual is None:
                raise TypeError(
                    f"GatedXAttnDense(dim, dim_visual, **sizes) takes sizes {sorted(self.FLAMINGO_SIZES)}; got "
                    f"{dim_visual=}, {sizes}"
                )
            sizes = self.FLAMINGO_SIZES | sizes
            config = GatedXattnConfig(
                config,
                dim_visual,
                heads=sizes["heads"],
                dim_head=sizes["dim_head"],
                ff_dim=round(config * sizes["ff_mult"]),
                norm_eps=sizes["norm_eps"],
            )
        self.config = config
        self.attn = CrossAttention(
            config.dim, config.dim_visual, heads=config.heads, kv_heads=config.kv_heads, dim_head=config.dim_head
        )
        self.attn.norm = Norm(config.dim, config.norm, config.norm_eps)
        if config.qk_norm is not None:  # over each head's Dh; CrossAttention.attend applies them
            self.attn.q_norm = Norm(config.dim_head, config.qk_norm, config.norm_eps)
            self.attn.k_norm = Norm(config.dim_head, config.qk_norm, config.norm_eps)
        gate_shape = (config.dim,) if config.vector_gates else ()
        self.attn_gate = nn.Parameter(torch.zeros(gate_shape))
        self.ff = FeedForward(config.dim, config.num_ff, config.activation, config.norm, config.norm_eps)
        self.ff_gate = nn.Parameter(torch.zeros(gate_shape))

    def forward(self, hidden, visual, mask=None):
        config = self.config
        batch = torch.broadcast_shapes(hidden.shape[:-2], visual.shape[:-2])
        queries = hidden.expand(*batch, *hidden.shape[-2:]).reshape(-1, *hidden.shape[-2:])  # (B, L, Dt)
        context = visual.expand(*batch, *visual.shape[-2:]).reshape(-1, *visual.shape[-2:])  # (B, Nv, Dv)
        sees = None
        if mask is not None:
            _check_bool_mask(mask, "True = text token may see visual token", hidden.device)
            mask = mask.expand(*batch, hidden.shape[-2], visual.shape[-2]).reshape(
                queries.shape[0], -1, visual.shape[-2]
            )
            sees = mask.any(dim=-1, keepdim=True)  # (B, L, 1)
            mask = mask | ~sees  # blind rows attend anywhere (then are zeroed, by default)
        attended, _ = self.attn(self.attn.norm(queries), context, mask)  # (B, L, Dt)
        if sees is not None and config.blind_rows == "zero":
            attended = attended * sees
        elif sees is not None and config.blind_rows == "uniform":
            attended = torch.where(sees, attended, self.mean_of_values(context))
        out = queries + torch.tanh(self.attn_gate) * attended
        fed = self.ff(out)  # (B, L, Dt)
        if sees is not None and config.zero_blind_ff:
            fed = fed * sees
        out = out + torch.tanh(self.ff_gate) * fed
        check_float16_output(out, "GatedXAttnDense")
        return out.reshape(*batch, *hidden.shape[-2:])

    def mean_of_values(self, context):
        """Uniform weights: each head's mean value through wo. context (B, Nv, Dv) -> (B, 1, Dt)."""
        config = self.config
        values = (
            self.attn.wv(context).mean(dim=-2).unflatten(-1, (config.num_kv_heads, config.dim_head))
        )  # (B, Hkv, Dh)
        values = values.repeat_interleave(config.heads // config.num_kv_heads, dim=-2)  # (B, H, Dh)
        return self.attn.wo(values.flatten(-2))[:, None, :]

    @classmethod
    def from_refimpl(cls, params, config=None, *, heads=None, norm_eps=None, dtype=torch.float64, device=None):
        """A block holding refimpl's gated_xattn_dense `params` exactly: for `config`, or,
        without one, the default block with the sizes read off params (heads default 8,
        norm_eps 1e-5), as refimpl.gated_xattn_dense reads them."""
        dim, dim_visual = np.shape(params["attn.wq"])[0], np.shape(params["attn.wk"])[0]
        config = resolve_config(config, heads, norm_eps, params, dim, dim_visual)
        params = check_params(params, gated_xattn_param_shapes(config), np.float64, f"the config {config}")
        module = cls(config).to(dtype=dtype, device=device)
        module.load_state_dict(to_state_dict(params, dtype, device))
        return module

    def to_refimpl(self):
        return from_state_dict(self.state_dict())


def interpolate_time_embeds(time_embeds, frames):
    """refimpl.interpolate_time_embeds in torch: time_embeds (Tmax, D) -> (frames, D), linearly
    interpolated with the first and last rows kept (differentiable)."""
    if time_embeds.ndim != 2 or len(time_embeds) < 2 or frames < 2:
        raise ValueError(
            f"time_embeds must be (Tmax, D) with Tmax >= 2 and frames >= 2; got {tuple(time_embeds.shape)}, {frames}"
        )
    stretched = F.interpolate(time_embeds.T[None], size=frames, mode="linear", align_corners=True)  # (1, D, frames)
    return stretched[0].T


PROJECTIONS = ("wq", "wk", "wv", "wo", "w_in", "w_out", "w_gate", "w_up", "w_down")


def _is_projection(name):
    return name.rsplit(".", 1)[-1] in PROJECTIONS


def state_dict_key(name):
    """refimpl's parameter name -> (this module family's state-dict key, whether the array is
    stored transposed there): "…wq" ->
    "…wq.weight" (transposed), the bias "…bq" -> "…wq.bias", media_proj.weight and
    out_proj.weight -> themselves (transposed), anything else -> itself."""
    prefix, _, last = name.rpartition(".")
    if last in PROJECTIONS:
        return name + ".weight", True
    if last in ATTENTION_BIASES:
        return (f"{prefix}." if prefix else "") + f"w{last[1:]}.bias", False
    return name, name in PROJECTION_MATRICES


def _refimpl_name(key):
    """The inverse of state_dict_key: the state-dict key -> (refimpl's name, whether transposed)."""
    prefix, _, last = key.rpartition(".")
    head, _, projection = prefix.rpartition(".")
    if projection in PROJECTIONS:
        return (
            (prefix, True)
            if last == "weight"
            else (f"{head}.b{projection[1:]}" if head else "b" + projection[1:], False)
        )
    return key, key in PROJECTION_MATRICES


def to_state_dict(params, dtype=torch.float64, device=None):
    """refimpl's flat dict -> this module family's state dict (projections transposed)."""
    state = {}
    for name, value in params.items():
        key, transposed = state_dict_key(name)
        state[key] = torch.as_tensor(
            np.asarray(value).T if transposed else np.asarray(value), dtype=dtype, device=device
        )
    return state


def from_state_dict(state_dict):
    """This module family's state dict -> refimpl's flat dict of float64 NumPy arrays."""
    params = {}
    for key, tensor in state_dict.items():
        array = tensor.detach().to("cpu", torch.float64).numpy()
        name, transposed = _refimpl_name(key)
        params[name] = array.T if transposed else array
    return params
