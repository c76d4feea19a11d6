"""ModuleSpec: a resampler refimpl does not know, described once so that `compare` can run it.

    from refimpl import interop
    spec = interop.ModuleSpec(
        config=config,                                   # the ResamplerConfig it implements
        layout=layout,                                   # where its weights are (below)
        attention="blocks.{i}.attn",                     # layer i's attention block
        feed_forward="blocks.{i}.ff",                    # layer i's feed-forward block
        final_norm="norm",
        layer_input=interop.Point("blocks.{i}.attn", "latents"),   # the latents entering layer i
        media="embed",                                   # optional: the media after the embeddings
    )
    rows = interop.compare(module, x, spec=spec)

A *point* is a value the module computes, which compare records with a torch hook: a
string "path" is the output of the submodule at `path` (`module.get_submodule(path)`; a tuple
output gives its first element), `Point(path, argument)` one of its inputs, by position (an
int) or by name (a str, as its forward names it). In a pattern, "{i}" stands for the layer.

| field              | the value recorded there                                    | default                          |
|--------------------|-------------------------------------------------------------|----------------------------------|
| media              | the media, embeddings added: (..., N, D) or (..., T, S, D)  | None: no row                     |
| attention          | layer i's attention output, before its residual (..., R, D) | required                         |
| attention_residual | the latents after that residual                             | input 0 of feed_forward          |
| feed_forward       | layer i's feed-forward output, before its residual          | required (None: no feed-forward) |
| layer_input        | the latents entering layer i (layer i - 1's output)         | required                         |
| final_norm         | the final norm's output; input 0: the last layer's output   | required (None: no final norm)   |
| output_projection  | a submodule: the output projection's output (*)             | None: no row                     |
| output_norm        | a submodule: the norm after the output projection           | None: no row                     |

(*) its input 0 is the last layer's output where there is no final norm.

Without a feed-forward, the attention residual row is read where the latents go next (the
next layer's input, the final norm's or the output projection's input; a module whose last
layer's output goes straight out has no such row: the output row covers it). `record(block,
value)`, if given, maps a recorded tensor into refimpl's layout, e.g. the (R, B, D) output
of a sequence-first torch.nn.MultiheadAttention to (B, R, D).

Every row is the module's own value, recorded as it runs: the residual rows are read off the
inputs of the blocks that receive them (the feed-forward's input, the next layer's input,
the final norm's input), never recomputed.

`layout` says where the weights are, in the form the peer modules use (refimpl.interop's
_state_dict): {state-dict key: (kind, (refimpl name, ...))}, kind one of

    "same"      the same array                                   ("latents": ("same", ("latents",)))
    "linear"    an nn.Linear weight (out, in), refimpl's transposed (in, out)
    "fused_kv"  one (2 * Hkv*Dh, D) weight, keys then values: refimpl's wk, wv
    "per_item"  (I, 1, D) -> refimpl's (I, D) media_embeds
    "fused_qkv", "fused_qkv_bias"  torch.nn.MultiheadAttention's in_proj_weight / in_proj_bias

Every key of the module's state dict must be in it and every refimpl parameter of the
config covered (a ValueError lists what is missing, unexpected or mis-shaped).

The input: compare passes `x` (and `mask`, if given) to `call(module, x, mask)`, by default
`module(x)` or `module(x, mask=mask)`, and gives refimpl `to_refimpl(x, mask)` (NumPy arrays),
by default x and mask as they are: x in refimpl's layout (..., T, S, D) (or (..., I, T, S, D)),
mask boolean (..., T, S), True = a real token. Where the config has positions, to_refimpl
returns (x, mask, grid), the grid perceiver_resampler takes.
"""

from collections.abc import Callable
from dataclasses import dataclass

from ..config import ResamplerConfig


@dataclass(frozen=True)
class Point:
    """Input `argument` (a position or a keyword name) of the submodule at `path`; see the module docstring."""

    path: str
    argument: int | str

    def __post_init__(self):
        if not isinstance(self.path, str):
            raise TypeError(f"Point.path must be a str (a submodule's dotted path); got {type(self.path).__name__}")
        if not isinstance(self.argument, int | str) or isinstance(self.argument, bool):
            raise TypeError(f"Point.argument must be an int (a position) or a str (a name); got {self.argument!r}")


@dataclass(frozen=True)
class ModuleSpec:
    """How to read and run a resampler module refimpl does not know; see the module docstring."""

    config: ResamplerConfig
    layout: dict
    attention: str
    feed_forward: str | None
    final_norm: str | None
    layer_input: str | Point
    attention_residual: str | Point | None = None
    media: str | Point | None = None
    call: Callable | None = None
    to_refimpl: Callable | None = None
    output_projection: str | None = None
    output_norm: str | None = None
    record: Callable | None = None

    def __post_init__(self):
        if not isinstance(self.config, ResamplerConfig):
            raise TypeError(f"ModuleSpec.config must be a refimpl.ResamplerConfig; got {type(self.config).__name__}")
        if not hasattr(self.layout, "items"):
            raise TypeError(
                "ModuleSpec.layout must be a dict of state-dict key -> (kind, refimpl names); got "
                f"{type(self.layout).__name__}"
            )
        if not isinstance(self.attention, str):
            raise TypeError(f"ModuleSpec.attention must be a str, a submodule's dotted path; got {self.attention!r}")
        for name in ("feed_forward", "final_norm", "output_projection", "output_norm"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise TypeError(
                    f"ModuleSpec.{name} must be a str, a submodule's dotted path, or None; got {getattr(self, name)!r}"
                )
        for name in ("layer_input", "attention_residual", "media"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str | Point):
                raise TypeError(
                    f"ModuleSpec.{name} must be a str (a submodule's output) or a Point (an input); got "
                    f"{getattr(self, name)!r}"
                )
        for name in ("attention", "feed_forward", "layer_input", "attention_residual"):
            point = getattr(self, name)
            if point is not None and "{i}" not in _path(point) and self.config.depth > 1:  # one layer: a plain path
                raise ValueError(
                    f"ModuleSpec.{name} must be a pattern with {{i}} for the layer, e.g. 'blocks.{{i}}.attn'; got "
                    f"{point!r}"
                )
        for name in ("call", "to_refimpl", "record"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise TypeError(f"ModuleSpec.{name} must be a function; got {type(getattr(self, name)).__name__}")

    def points(self):
        """[(block, layer, point)] in the order of refimpl's trace, with the patterns filled in."""
        depth = self.config.depth
        rows = [] if self.media is None else [("media", None, self.media)]
        for i in range(depth):
            layer_output = _at(self.layer_input, i + 1) if i + 1 < depth else self._last_layer_output()
            rows.append(("attention", i, _at(self.attention, i)))
            if self.feed_forward is None:
                residual = self.attention_residual or layer_output
                rows += [] if residual is None else [("attention residual", i, _at(residual, i))]
                continue
            rows += [
                ("attention residual", i, _at(self.attention_residual or Point(self.feed_forward, 0), i)),
                ("feed-forward", i, _at(self.feed_forward, i)),
            ]
            rows += [] if layer_output is None else [("feed-forward residual", i, layer_output)]
        ends = (
            ("final norm", self.final_norm),
            ("output projection", self.output_projection),
            ("output norm", self.output_norm),
        )
        return rows + [(block, None, path) for block, path in ends if path is not None]

    def _last_layer_output(self):
        """Where the last layer's output is read: the final norm's input, else the output
        projection's, else nowhere (it is the module's output)."""
        after = self.final_norm or self.output_projection
        return None if after is None else Point(after, 0)


def _path(point):
    return point.path if isinstance(point, Point) else point


def _at(point, i):
    """The point with "{i}" replaced by layer i."""
    if isinstance(point, Point):
        return Point(point.path.replace("{i}", str(i)), point.argument)
    return point.replace("{i}", str(i))
