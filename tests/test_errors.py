"""Bad input gets a clear error, never a wrong answer.

Each case calls a public function with one thing wrong and checks the exception type and,
with `match=`, that the message names the argument and says what was expected and what
came. The inputs are otherwise valid (the first group checks that they pass).
"""

import dataclasses
import re

import numpy as np
import pytest

import refimpl

CONFIG = refimpl.ResamplerConfig(dim=6, depth=1, heads=2, dim_head=3, num_latents=4, num_time_embeds=3)
PARAMS = refimpl.init_resampler(CONFIG, seed=0)
NORM32_CONFIG = dataclasses.replace(CONFIG, norm_dtype="float32")
NORM32_PARAMS = refimpl.init_resampler(NORM32_CONFIG, seed=0)
RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3, 5, 6))  # (B, T, S, D)
MASK = np.ones((2, 3, 5), dtype=bool)

Q, K, V = RNG.standard_normal((4, 5)), RNG.standard_normal((6, 5)), RNG.standard_normal((6, 3))

MH_PARAMS = {
    "wq": RNG.standard_normal((6, 8)),
    "wk": RNG.standard_normal((3, 4)),
    "wv": RNG.standard_normal((3, 4)),
    "wo": RNG.standard_normal((8, 6)),
}
QUERIES, CONTEXT = RNG.standard_normal((2, 5, 6)), RNG.standard_normal((2, 7, 3))  # (B, R, D), (B, N, Dc)

GATED = refimpl.init_gated_xattn_dense(6, 4, heads=2, dim_head=3, ff_mult=2, gate=0.5, seed=0)
HIDDEN, VISUAL = RNG.standard_normal((2, 5, 6)), RNG.standard_normal((2, 7, 4))  # (B, L, Dt), (B, Nv, Dv)


def with_value(array, index, value):
    changed = np.array(array, dtype=np.result_type(array, type(value)))
    changed[index] = value
    return changed


def replaced(params, name, value):
    return {**params, name: value}


def without(params, name):
    return {key: value for key, value in params.items() if key != name}


def resample(params=PARAMS, x=X, **options):
    return lambda: refimpl.perceiver_resampler(params, x, CONFIG, **options)


def attend(q=Q, k=K, v=V, **options):
    return lambda: refimpl.attention(q, k, v, **options)


def multi_head(params=MH_PARAMS, queries=QUERIES, context=CONTEXT, heads=2, kv_heads=1, **options):
    return lambda: refimpl.multi_head_attention(params, queries, context, heads=heads, kv_heads=kv_heads, **options)


def gated(params=GATED, hidden=HIDDEN, visual=VISUAL, heads=2, **options):
    return lambda: refimpl.gated_xattn_dense(params, hidden, visual, heads=heads, **options)


def shape(*sizes):
    """The regex for a shape as Python prints it: shape(2, 3) -> r'\\(2, 3\\)'."""
    return re.escape(str(tuple(sizes)))


@pytest.mark.parametrize("call", [resample(), resample(mask=MASK), attend(), multi_head(), gated()])
def test_the_unchanged_inputs_of_this_module_are_accepted(call):
    assert np.isfinite(call()).all()


RESAMPLER_CASES = {
    "x of rank 2": (resample(x=X[0, 0]), ValueError, r"x must have shape \(\.\.\., T, S, D\).*; got " + shape(5, 6)),
    "x with the wrong D": (
        resample(x=RNG.standard_normal((2, 3, 5, 7))),
        ValueError,
        r"x must have shape .*D = config\.dim = 6; got " + shape(2, 3, 5, 7),
    ),
    "x of ints": (resample(x=X.astype(np.int64)), TypeError, r"x must be a real floating-point array.*got dtype int64"),
    "x of complex": (
        resample(x=X.astype(np.complex128)),
        TypeError,
        r"x must be a real floating-point array.*got dtype complex128",
    ),
    "x of objects": (
        resample(x=X.astype(object)),
        TypeError,
        r"x must be a real floating-point array.*got dtype object",
    ),
    "x of bools": (resample(x=X > 0), TypeError, r"x must be a real floating-point array.*got dtype bool"),
    "x with a NaN": (
        resample(x=with_value(X, (1, 2, 3, 4), np.nan)),
        ValueError,
        r"x must be finite; got 1 NaN or inf",
    ),
    "x with an inf": (
        resample(x=with_value(X, (0, 0, 0, 0), -np.inf)),
        ValueError,
        r"x must be finite; got 1 NaN or inf",
    ),
    "x that overflows float32": (
        resample(x=with_value(X, (0, 1, 2, 3), 1e39), dtype=np.float32),
        ValueError,
        r"x must be finite.*after casting to float32",
    ),
    "a parameter with a NaN": (
        resample(params=replaced(PARAMS, "layers.0.attn.wq", with_value(PARAMS["layers.0.attn.wq"], (0, 0), np.nan))),
        ValueError,
        r"params\['layers\.0\.attn\.wq'\] must be finite",
    ),
    "a parameter with an inf": (
        resample(params=replaced(PARAMS, "latents", with_value(PARAMS["latents"], (1, 1), np.inf))),
        ValueError,
        r"params\['latents'\] must be finite",
    ),
    "a parameter of ints": (
        resample(params=replaced(PARAMS, "norm.weight", np.ones(6, dtype=int))),
        TypeError,
        r"params\['norm\.weight'\] must be a real floating-point array.*int",
    ),
    "a missing parameter": (
        resample(params=without(PARAMS, "layers.0.attn.wo")),
        ValueError,
        r"missing: layers\.0\.attn\.wo",
    ),
    "a mis-shaped parameter": (
        resample(params=replaced(PARAMS, "layers.0.attn.wq", np.ones((6, 5)))),
        ValueError,
        r"layers\.0\.attn\.wq: expected \(6, 6\), got \(6, 5\)",
    ),
    "a transposed parameter": (
        resample(params=replaced(PARAMS, "time_embeds", PARAMS["time_embeds"].T)),
        ValueError,
        r"time_embeds: expected \(3, 6\), got \(6, 3\)",
    ),
    "an unexpected parameter": (
        resample(params=replaced(PARAMS, "layers.1.attn.wq", np.ones((6, 6)))),
        ValueError,
        r"unexpected: layers\.1\.attn\.wq",
    ),
    "params that are not a dict": (resample(params=list(PARAMS.values())), TypeError, r"params must be a dict"),
    "a mask of the wrong shape": (
        resample(mask=np.ones((2, 3, 4), dtype=bool)),
        ValueError,
        r"mask must have shape \(\.\.\., T, S\) = .*" + shape(2, 3, 5) + r"; got " + shape(2, 3, 4),
    ),
    "a mask that would broadcast": (
        resample(mask=np.ones((3, 5), dtype=bool)),
        ValueError,
        r"mask must have shape \(\.\.\., T, S\) = .*" + shape(2, 3, 5) + r"; got " + shape(3, 5),
    ),
    "a mask of ints": (resample(mask=MASK.astype(int)), TypeError, r"mask must be a boolean array.*got dtype int64"),
    "a mask of floats": (
        resample(mask=MASK.astype(float)),
        TypeError,
        r"mask must be a boolean array.*got dtype float64",
    ),
    "more frames than time embeddings": (
        resample(x=RNG.standard_normal((2, 4, 5, 6))),
        ValueError,
        r"T = 4 .*num_time_embeds = 3",
    ),
    "an unknown backend": (
        resample(backend="torch"),
        ValueError,
        r"backend must be one of 'numpy', 'numba'; got 'torch'",
    ),
    "x that is a ragged nested list": (
        resample(x=[[[[0.0] * 6] * 5] * 3, [[[0.0] * 6] * 4] * 3]),
        ValueError,
        r"x must be an array of shape \(\.\.\., T, S, D\); got a ragged nested sequence",
    ),
    "x of float16 with an inf": (
        resample(x=with_value(X, (0, 0, 0, 0), np.inf).astype(np.float16)),
        ValueError,
        r"x must be finite; got 1 NaN or inf value\(s\)$",
    ),
    "x beyond float32 with config.norm_dtype float32": (
        lambda: refimpl.perceiver_resampler(NORM32_PARAMS, X * 1e39, NORM32_CONFIG),
        ValueError,
        r"x must fit float32 \(config\.norm_dtype = 'float32': the norms compute in it\); got max \|x\| = 2\.\d+e\+39",
    ),
    "a config that is a dict": (
        lambda: refimpl.perceiver_resampler(PARAMS, X, {"dim": 6}),
        TypeError,
        r"config must be a refimpl\.ResamplerConfig; got dict",
    ),
    "params with a key that is not a str": (
        resample(params={**PARAMS, 0: np.ones(6)}),
        TypeError,
        r"params must have str keys \(parameter names such as 'latents'\); got the key 0 \(int\)",
    ),
    "a float16 compute dtype": (
        resample(dtype=np.float16),
        ValueError,
        r"dtype must be float32 or float64; got float16",
    ),
    "an int compute dtype": (resample(dtype=np.int32), ValueError, r"dtype must be float32 or float64; got int32"),
    "a compute dtype that is no dtype": (
        resample(dtype="float64x"),
        TypeError,
        r"dtype must be float32 or float64; got 'float64x'",
    ),
}

ATTENTION_CASES = {
    "q of rank 1": (attend(q=Q[0]), ValueError, r"q must have shape \(\.\.\., M, Dh\); got " + shape(5)),
    "k with the wrong Dh": (
        attend(k=RNG.standard_normal((6, 4))),
        ValueError,
        r"k must have shape \(\.\.\., N, Dh\) with Dh = q\.shape\[-1\] = 5; got " + shape(6, 4),
    ),
    "v with the wrong N": (
        attend(v=RNG.standard_normal((7, 3))),
        ValueError,
        r"v must have shape \(\.\.\., N, Dv\) with N = k\.shape\[-2\] = 6; got " + shape(7, 3),
    ),
    "batch axes that do not broadcast": (
        attend(q=RNG.standard_normal((2, 4, 5)), k=RNG.standard_normal((3, 6, 5))),
        ValueError,
        r"batch axes of q \(2,\), k \(3,\)",
    ),
    "a Dh of 0": (
        attend(q=np.ones((4, 0)), k=np.ones((6, 0))),
        ValueError,
        r"q must have shape \(\.\.\., M, Dh\) with Dh >= 1; got " + shape(4, 0),
    ),
    "no keys": (attend(k=np.ones((0, 5)), v=np.ones((0, 3))), ValueError, r"N = 0 keys"),
    "q of ints": (attend(q=Q.astype(int)), TypeError, r"q must be a real floating-point array.*int64"),
    "k of complex": (attend(k=K.astype(complex)), TypeError, r"k must be a real floating-point array.*complex128"),
    "v of bools": (attend(v=V > 0), TypeError, r"v must be a real floating-point array.*bool"),
    "q of objects": (attend(q=Q.astype(object)), TypeError, r"q must be a real floating-point array.*object"),
    "q with a NaN": (attend(q=with_value(Q, (0, 0), np.nan)), ValueError, r"q must be finite"),
    "v with an inf": (attend(v=with_value(V, (0, 0), np.inf)), ValueError, r"v must be finite"),
    "a mask that would grow the output": (
        attend(mask=np.ones((2, 4, 6), dtype=bool)),
        ValueError,
        r"mask must be broadcastable to \(\.\.\., M, N\) = " + shape(4, 6) + r"; got " + shape(2, 4, 6),
    ),
    "a mask with the wrong N": (
        attend(mask=np.ones((4, 7), dtype=bool)),
        ValueError,
        r"mask must be broadcastable to \(\.\.\., M, N\) = " + shape(4, 6) + r"; got " + shape(4, 7),
    ),
    "a mask of ints": (attend(mask=np.ones((4, 6), dtype=int)), TypeError, r"mask must be a boolean array.*int64"),
    "a mask row with nothing allowed": (
        attend(mask=with_value(np.ones((4, 6), dtype=bool), 2, False)),
        ValueError,
        r"mask allows no entry in 1 row\(s\) \(the first at index \(2,\)\)",
    ),
    "a scale of 0": (attend(scale=0.0), ValueError, r"scale must be a positive finite number; got 0\.0"),
    "a negative scale": (attend(scale=-1.0), ValueError, r"scale must be a positive finite number; got -1\.0"),
    "a NaN scale": (attend(scale=float("nan")), ValueError, r"scale must be a positive finite number; got nan"),
    "a scale that is a string": (attend(scale="1"), TypeError, r"scale must be a number; got str '1'"),
    "an unknown backend": (attend(backend="cuda"), ValueError, r"backend must be one of 'numpy', 'numba'; got 'cuda'"),
    "q that is a ragged nested list": (
        attend(q=[[1.0, 2.0, 3.0, 4.0, 5.0], [1.0]]),
        ValueError,
        r"q must be an array of shape \(\.\.\., M, Dh\); got a ragged nested sequence",
    ),
    "q of float16 with an inf": (
        attend(q=with_value(Q, (0, 0), -np.inf).astype(np.float16)),
        ValueError,
        r"q must be finite; got 1 NaN or inf value\(s\)$",
    ),
    "q of float64 that overflows float32": (
        attend(q=with_value(Q, (1, 1), 1e39), dtype=np.float32),
        ValueError,
        r"q must be finite; got 1 NaN or inf value\(s\) \(after casting to float32: max \|q\| = 1e\+39\)",
    ),
}

SOFTMAX_CASES = {
    "an axis past the last": (
        lambda: refimpl.softmax(np.zeros((2, 3)), axis=5),
        ValueError,
        r"axis must be in \[-2, 2\) for an array of 2 dimension\(s\); got 5",
    ),
    "an axis before the first": (
        lambda: refimpl.softmax(np.zeros(3), axis=-2),
        ValueError,
        r"axis must be in \[-1, 1\).*; got -2",
    ),
    "an axis that is a float": (
        lambda: refimpl.softmax(np.zeros(3), axis=0.0),
        TypeError,
        r"axis must be an int; got float 0\.0",
    ),
    "x of ints": (lambda: refimpl.softmax(np.arange(5)), TypeError, r"x must be a real floating-point array.*int64"),
    "x with a NaN": (lambda: refimpl.softmax(np.array([0.0, np.nan])), ValueError, r"x must be finite"),
    "a mask of floats": (
        lambda: refimpl.softmax(np.zeros((2, 3)), mask=np.ones((2, 3))),
        TypeError,
        r"mask must be a boolean array.*float64",
    ),
    "a mask that would grow x": (
        lambda: refimpl.softmax(np.zeros((2, 3)), mask=np.ones((4, 2, 3), dtype=bool)),
        ValueError,
        r"mask must be broadcastable to x\.shape = " + shape(2, 3) + r"; got " + shape(4, 2, 3),
    ),
}

MULTI_HEAD_CASES = {
    "kv_heads not dividing heads": (
        multi_head(heads=2, kv_heads=3, params={**MH_PARAMS, "wk": np.ones((3, 12)), "wv": np.ones((3, 12))}),
        ValueError,
        r"kv_heads must divide heads = 2; got 3",
    ),
    "heads of 0": (multi_head(heads=0), ValueError, r"heads must be >= 1; got 0"),
    "heads that is a float": (multi_head(heads=2.0), TypeError, r"heads must be an int; got float 2\.0"),
    "queries of rank 1": (
        multi_head(queries=QUERIES[0, 0]),
        ValueError,
        r"queries must have shape \(\.\.\., R, D\); got " + shape(6),
    ),
    "context with other batch axes": (
        multi_head(context=CONTEXT[:1]),
        ValueError,
        r"context must have shape \(\.\.\., N, Dc\) with \.\.\. = \(2,\); got " + shape(1, 7, 3),
    ),
    "wq columns not a multiple of heads": (
        multi_head(heads=3, kv_heads=1, params={**MH_PARAMS, "wq": np.ones((6, 8))}),
        ValueError,
        r"params\['wq'\] must have shape \(D, H \* Dh\) with H = heads = 3 and Dh >= 1; got \(6, 8\)",
    ),
    "a missing wk": (multi_head(params=without(MH_PARAMS, "wk")), ValueError, r"missing: wk"),
    "a mis-shaped wo": (
        multi_head(params=replaced(MH_PARAMS, "wo", np.ones((8, 5)))),
        ValueError,
        r"wo: expected \(8, 6\), got \(8, 5\)",
    ),
    "a wv with a NaN": (
        multi_head(params=replaced(MH_PARAMS, "wv", with_value(MH_PARAMS["wv"], (0, 0), np.nan))),
        ValueError,
        r"params\['wv'\] must be finite",
    ),
    "qk norm parameters missing": (
        multi_head(qk_norm_eps=1e-5),
        ValueError,
        r"missing: k_norm\.bias, k_norm\.weight, q_norm\.bias, q_norm\.weight",
    ),
    "a qk_norm_eps of 0": (
        multi_head(qk_norm_eps=0.0),
        ValueError,
        r"qk_norm_eps must be a positive finite number; got 0\.0",
    ),
    "a mask of the wrong shape": (
        multi_head(mask=np.ones((2, 5, 6), dtype=bool)),
        ValueError,
        r"mask must be broadcastable to \(\.\.\., R, N\) = " + shape(2, 5, 7) + r"; got " + shape(2, 5, 6),
    ),
    "a mask of ints": (
        multi_head(mask=np.ones((2, 5, 7), dtype=int)),
        TypeError,
        r"mask must be a boolean array.*int64",
    ),
    "a mask row with nothing allowed": (
        multi_head(mask=with_value(np.ones((2, 5, 7), dtype=bool), (1, 3), False)),
        ValueError,
        r"mask allows no entry in 1 row\(s\) \(the first at index \(1, 3\)\)",
    ),
    "no context tokens": (multi_head(context=np.ones((2, 0, 3))), ValueError, r"context has N = 0 tokens"),
    "a wq that is a scalar": (multi_head(params=replaced(MH_PARAMS, "wq", np.float64(1.0))), ValueError, r"wq"),
    "a wq with no columns": (
        multi_head(
            params={
                **MH_PARAMS,
                "wq": np.ones((6, 0)),
                "wk": np.ones((3, 0)),
                "wv": np.ones((3, 0)),
                "wo": np.ones((0, 6)),
            }
        ),
        ValueError,
        r"wq",
    ),
    "an unknown backend": (
        multi_head(backend="jax"),
        ValueError,
        r"backend must be one of 'numpy', 'numba'; got 'jax'",
    ),
    "params with a key that is not a str": (
        multi_head(params={**MH_PARAMS, ("wq",): np.ones((6, 8))}),
        TypeError,
        r"params must have str keys .*; got the key \('wq',\) \(tuple\)",
    ),
}

GATED_CASES = {
    "hidden of rank 1": (
        gated(hidden=HIDDEN[0, 0]),
        ValueError,
        r"hidden must have shape \(\.\.\., L, Dt\); got " + shape(6),
    ),
    "visual with the wrong Dv": (
        gated(visual=RNG.standard_normal((2, 7, 5))),
        ValueError,
        r"attn\.wk: expected \(5, 6\), got \(4, 6\)",
    ),
    "visual batch axes that do not broadcast": (
        gated(visual=RNG.standard_normal((3, 7, 4))),
        ValueError,
        r"visual must have batch axes that broadcast to hidden's \(2,\); got visual " + shape(3, 7, 4),
    ),
    "hidden of ints": (
        gated(hidden=HIDDEN.astype(int)),
        TypeError,
        r"hidden must be a real floating-point array.*int64",
    ),
    "visual with a NaN": (gated(visual=with_value(VISUAL, (0, 0, 0), np.nan)), ValueError, r"visual must be finite"),
    "a NaN gate": (
        gated(params=replaced(GATED, "attn_gate", np.array(np.nan))),
        ValueError,
        r"params\['attn_gate'\] must be finite",
    ),
    "a missing gate": (gated(params=without(GATED, "ff_gate")), ValueError, r"missing: ff_gate"),
    "heads not dividing the wq columns": (
        gated(heads=4),
        ValueError,
        r"params\['attn\.wq'\] must have shape \(D, H \* Dh\) with H = heads = 4 and Dh >= 1; got \(\d+, 6\)",
    ),
    "a mask of the wrong shape": (
        gated(mask=np.ones((2, 5, 6), dtype=bool)),
        ValueError,
        r"mask must be broadcastable to \(\.\.\., L, Nv\) = " + shape(2, 5, 7) + r"; got " + shape(2, 5, 6),
    ),
    "a mask of ints": (gated(mask=np.ones((2, 5, 7), dtype=int)), TypeError, r"mask must be a boolean array.*int64"),
    "no visual tokens and no mask": (gated(visual=np.ones((2, 0, 4))), ValueError, r"visual has Nv = 0 tokens"),
    "a norm_eps of 0": (gated(norm_eps=0.0), ValueError, r"norm_eps must be a positive finite number; got 0\.0"),
    "an unknown backend": (
        gated(backend="numpy2"),
        ValueError,
        r"backend must be one of 'numpy', 'numba'; got 'numpy2'",
    ),
    "visual that is a ragged nested list": (
        gated(visual=[[[0.0] * 4] * 7, [[0.0] * 4] * 6]),
        ValueError,
        r"visual must be an array of shape \(\.\.\., Nv, Dv\); got a ragged nested sequence",
    ),
    "hidden with no width": (
        gated(hidden=np.ones((2, 5, 0))),
        ValueError,
        r"hidden must have shape \(\.\.\., L, Dt\) with a width >= 1; got \(2, 5, 0\)",
    ),
}

CONFIG_CASES = {
    "init_resampler with a dict": (
        lambda: refimpl.init_resampler({"dim": 6}),
        TypeError,
        r"config must be a refimpl\.ResamplerConfig; got dict",
    ),
    "param_shapes with None": (
        lambda: refimpl.param_shapes(None),
        TypeError,
        r"config must be a refimpl\.ResamplerConfig; got NoneType",
    ),
}

INIT_GATED_CASES = {
    "heads of 0": (lambda: refimpl.init_gated_xattn_dense(6, 4, heads=0), ValueError, r"heads must be >= 1; got 0"),
    "a dim_head of 0": (
        lambda: refimpl.init_gated_xattn_dense(6, 4, dim_head=0),
        ValueError,
        r"dim_head must be >= 1; got 0",
    ),
    "a dim of -1": (lambda: refimpl.init_gated_xattn_dense(-1, 4), ValueError, r"dim must be >= 1; got -1"),
    "a dim_visual that is a float": (
        lambda: refimpl.init_gated_xattn_dense(6, 4.0),
        TypeError,
        r"dim_visual must be an int; got float 4\.0",
    ),
    "an ff_mult of 0": (
        lambda: refimpl.init_gated_xattn_dense(6, 4, ff_mult=0),
        ValueError,
        r"ff_mult must be a positive finite number; got 0",
    ),
    "an ff_mult that makes F fractional": (
        lambda: refimpl.init_gated_xattn_dense(6, 4, ff_mult=0.25),
        ValueError,
        r"ff_mult must make dim \* ff_mult a whole number; got 6 \* 0\.25 = 1\.5",
    ),
    "a NaN gate": (
        lambda: refimpl.init_gated_xattn_dense(6, 4, gate=float("nan")),
        ValueError,
        r"gate must be a finite number; got nan",
    ),
    "a gate that is a string": (
        lambda: refimpl.init_gated_xattn_dense(6, 4, gate="0"),
        TypeError,
        r"gate must be a number; got str '0'",
    ),
    "the shapes with heads of 0": (
        lambda: refimpl.gated_xattn_dense_shapes(6, 4, heads=0),
        ValueError,
        r"heads must be >= 1; got 0",
    ),
}

RELATIVE_ERROR_CASES = {
    "a complex actual": (
        lambda: refimpl.relative_error(np.ones(3) * 1j, np.ones(3)),
        TypeError,
        r"actual must be a real array \(float, int or bool\); got dtype complex128",
    ),
    "a complex reference": (
        lambda: refimpl.relative_error(np.ones(3), np.ones(3, dtype=np.complex64)),
        TypeError,
        r"reference must be a real array \(float, int or bool\); got dtype complex64",
    ),
}

ALL_CASES = {
    f"{group}: {name}": case
    for group, cases in [
        ("perceiver_resampler", RESAMPLER_CASES),
        ("attention", ATTENTION_CASES),
        ("softmax", SOFTMAX_CASES),
        ("multi_head_attention", MULTI_HEAD_CASES),
        ("gated_xattn_dense", GATED_CASES),
        ("config", CONFIG_CASES),
        ("init_gated_xattn_dense", INIT_GATED_CASES),
        ("relative_error", RELATIVE_ERROR_CASES),
    ]
    for name, case in cases.items()
}


@pytest.mark.parametrize(("call", "error", "message"), ALL_CASES.values(), ids=ALL_CASES.keys())
def test_bad_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_bad_input_raises_the_same_error_with_either_backend(backend):
    with pytest.raises(ValueError, match=r"x must have shape .*; got " + shape(2, 3, 5, 7)):
        refimpl.perceiver_resampler(PARAMS, RNG.standard_normal((2, 3, 5, 7)), CONFIG, backend=backend)
