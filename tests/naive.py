"""A deliberately naive oracle: the Perceiver Resampler in Python floats and explicit loops.

Nothing here calls refimpl, and no arithmetic here uses NumPy: arrays are turned into
nested Python lists at the door, every sum is a Python loop, every exponential is
`math.exp` on one number. It is slow and obviously written from the algorithm, which is
the point: the reference is checked against something it did not compute.

The algorithm (Flamingo, Alayrac et al. 2022, Fig. 5 and Appendix A.1.1; pre-norm, with a
final norm, as in every public implementation):

    x_f = x_f + time_embeddings            (row t of the table added to every token of frame t)
    x_f = flatten(x_f)                     (T, S, D) -> (T*S, D), frame-major: token t*S + s
    for each layer:
        latents += attn(q = norm_latents(latents), kv = concat(norm_media(x_f), norm_latents(latents)))
        latents += ffw(latents)            (ffw = norm, then the MLP)
    latents = norm(latents)

Conventions pinned by the issue: weights are stored (in, out), so a projection is x @ w;
head h of a projection is columns h*Dh ... (h+1)*Dh - 1; with grouped-query attention
query head h uses key/value head h // (H / Hkv); qk_norm is a LayerNorm over Dh of each
head's q and k (eps = norm_eps) before the scores; swiglu is
(silu(h @ w_gate) * (h @ w_up)) @ w_down.
"""

import math

import numpy as np

# ---------------------------------------------------------------- scalars and vectors


def as_lists(array):
    """A float64 array as nested Python lists of Python floats."""
    return np.asarray(array, dtype=np.float64).tolist()


def add(a, b):
    return [x + y for x, y in zip(a, b, strict=True)]


def scaled(a, factor):
    return [x * factor for x in a]


def dot(a, b):
    total = 0.0
    for x, y in zip(a, b, strict=True):
        total += x * y
    return total


def project(x, w):
    """x (In,) @ w (In, Out) -> (Out,), one output column at a time."""
    n_out = len(w[0])
    out = []
    for j in range(n_out):
        total = 0.0
        for i in range(len(x)):
            total += x[i] * w[i][j]
        out.append(total)
    return out


# ---------------------------------------------------------------- softmax, norms, activations


def softmax_row(scores, allowed=None):
    """exp(s_j - m) / sum exp(s_k - m) over the allowed entries; 0 elsewhere."""
    if allowed is None:
        allowed = [True] * len(scores)
    largest = None
    for s, ok in zip(scores, allowed, strict=True):
        if ok and (largest is None or s > largest):
            largest = s
    if largest is None:
        raise ValueError("no allowed entry in the row")
    exps = [math.exp(s - largest) if ok else 0.0 for s, ok in zip(scores, allowed, strict=True)]
    total = 0.0
    for e in exps:
        total += e
    return [e / total for e in exps]


def softmax(x, axis=-1, mask=None):
    """The softmax of an ndarray along `axis`, one row at a time with `softmax_row`."""
    x = np.asarray(x, dtype=np.float64)
    allowed = np.ones(x.shape, dtype=bool) if mask is None else np.broadcast_to(mask, x.shape)
    rows = np.moveaxis(x, axis, -1)
    rows_allowed = np.moveaxis(allowed, axis, -1)
    out = np.empty(rows.shape)
    for index in np.ndindex(rows.shape[:-1]):
        out[index] = softmax_row(rows[index].tolist(), rows_allowed[index].tolist())
    return np.moveaxis(out, -1, axis)


def layer_norm(x, weight, bias, eps):
    n = len(x)
    mean = 0.0
    for value in x:
        mean += value
    mean /= n
    var = 0.0
    for value in x:
        var += (value - mean) ** 2
    var /= n
    denominator = math.sqrt(var + eps)
    return [(value - mean) / denominator * w + b for value, w, b in zip(x, weight, bias, strict=True)]


def rms_norm(x, weight, eps):
    mean_square = 0.0
    for value in x:
        mean_square += value * value
    mean_square /= len(x)
    denominator = math.sqrt(mean_square + eps)
    return [value / denominator * w for value, w in zip(x, weight, strict=True)]


def gelu(x):
    return 0.5 * x * math.erfc(-x / math.sqrt(2.0))  # = x/2 (1 + erf(x/sqrt 2)), without its cancellation


def relu(x):
    return x if x > 0 else 0.0


def squared_relu(x):
    return x * x if x > 0 else 0.0


def sigmoid(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def silu(x):
    return x * sigmoid(x)


ACTIVATIONS = {"gelu": gelu, "relu": relu, "squared_relu": squared_relu}


# ---------------------------------------------------------------- attention


def attention_rows(q_rows, k_rows, v_rows, allowed, scale):
    """q (M, d), k (N, d), v (N, dv) lists; allowed (M, N) bools -> out (M, dv), weights (M, N)."""
    out, weights = [], []
    for i, q in enumerate(q_rows):
        scores = [dot(q, k) * scale for k in k_rows]
        p = softmax_row(scores, allowed[i])
        row = [0.0] * (len(v_rows[0]) if v_rows else 0)
        for j, v in enumerate(v_rows):
            if p[j] != 0.0:
                row = add(row, scaled(v, p[j]))
        out.append(row)
        weights.append(p)
    return out, weights


def attention(q, k, v, mask=None, scale=None):
    """Batched attention on ndarrays, one batch entry at a time: (..., M, d), (..., N, d), (..., N, dv)."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    m, n = q.shape[-2], k.shape[-2]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    q, k, v = (np.broadcast_to(a, batch + a.shape[-2:]) for a in (q, k, v))
    allowed = np.ones(batch + (m, n), dtype=bool) if mask is None else np.broadcast_to(mask, batch + (m, n))
    out = np.empty(batch + (m, v.shape[-1]))
    weights = np.empty(batch + (m, n))
    for index in np.ndindex(batch):
        o, w = attention_rows(q[index].tolist(), k[index].tolist(), v[index].tolist(), allowed[index].tolist(), scale)
        out[index] = np.array(o).reshape(m, v.shape[-1])
        weights[index] = np.array(w).reshape(m, n)
    return out, weights


def multi_head_rows(params, prefix, queries, context, allowed, heads, kv_heads, qk_norm_eps, key_rows=None):
    """One batch item. queries (R, D), context (N, Dc) lists; allowed (R, N) bools.
    key_rows: the key projection's inputs (N, Dc) where they differ from the context's.
    Where params hold prefix + "bq" (attn_bias), every projection adds its bias.

    returns out (R, D) and weights (H, R, N) as lists.
    """
    wq, wk, wv, wo = (params[prefix + name] for name in ("wq", "wk", "wv", "wo"))
    head_dim = len(wq[0]) // heads
    group = heads // kv_heads

    def linear(row, which):
        out = project(row, params[prefix + "w" + which])
        return add(out, params[prefix + "b" + which]) if prefix + "bq" in params else out

    q_all = [linear(row, "q") for row in queries]  # (R, H*Dh)
    k_all = [linear(row, "k") for row in (context if key_rows is None else key_rows)]  # (N, Hkv*Dh)
    v_all = [linear(row, "v") for row in context]  # (N, Hkv*Dh)
    concat = [[] for _ in queries]  # (R, H*Dh), built head by head
    weights = []
    for h in range(heads):
        g = h // group  # the key/value head that query head h reads
        q_h = [row[h * head_dim : (h + 1) * head_dim] for row in q_all]
        k_h = [row[g * head_dim : (g + 1) * head_dim] for row in k_all]
        v_h = [row[g * head_dim : (g + 1) * head_dim] for row in v_all]
        if qk_norm_eps is not None:
            q_h = [
                layer_norm(row, params[prefix + "q_norm.weight"], params[prefix + "q_norm.bias"], qk_norm_eps)
                for row in q_h
            ]
            k_h = [
                layer_norm(row, params[prefix + "k_norm.weight"], params[prefix + "k_norm.bias"], qk_norm_eps)
                for row in k_h
            ]
        out_h, weights_h = attention_rows(q_h, k_h, v_h, allowed, 1.0 / math.sqrt(head_dim))
        for i in range(len(queries)):
            concat[i] = concat[i] + out_h[i]
        weights.append(weights_h)
    return [linear(row, "o") for row in concat], weights


def multi_head_attention(params, queries, context, *, heads, kv_heads=None, mask=None, qk_norm_eps=None):
    """Batched multi-head cross-attention on ndarrays: queries (..., R, D), context (..., N, Dc)."""
    kv_heads = heads if kv_heads is None else kv_heads
    queries, context = np.asarray(queries, dtype=np.float64), np.asarray(context, dtype=np.float64)
    batch = queries.shape[:-2]
    r, n = queries.shape[-2], context.shape[-2]
    allowed = np.ones(batch + (r, n), dtype=bool) if mask is None else np.broadcast_to(mask, batch + (r, n))
    lists = {name: as_lists(value) for name, value in params.items()}
    out = np.empty(queries.shape)
    weights = np.empty(batch + (heads, r, n))
    for index in np.ndindex(batch):
        o, w = multi_head_rows(
            lists,
            "",
            queries[index].tolist(),
            context[index].tolist(),
            allowed[index].tolist(),
            heads,
            kv_heads,
            qk_norm_eps,
        )
        out[index] = np.array(o)
        weights[index] = np.array(w).reshape(heads, r, n)
    return out, weights


# ---------------------------------------------------------------- the resampler


def norm_rows(params, prefix, rows, kind, eps):
    if kind == "layernorm":
        return [layer_norm(row, params[prefix + "weight"], params[prefix + "bias"], eps) for row in rows]
    return [rms_norm(row, params[prefix + "weight"], eps) for row in rows]


def feed_forward_row(params, prefix, x, activation, norm_kind, eps, pre_norm=True):
    """The pre-norm MLP on one row, without the residual (no norm without pre_norm)."""
    h = norm_rows(params, prefix + "norm.", [x], norm_kind, eps)[0] if pre_norm else x
    if activation == "swiglu":
        gate = project(h, params[prefix + "w_gate"])
        up = project(h, params[prefix + "w_up"])
        hidden = [silu(a) * b for a, b in zip(gate, up, strict=True)]
        return project(hidden, params[prefix + "w_down"])
    act = ACTIVATIONS[activation]
    hidden = [act(value) for value in project(h, params[prefix + "w_in"])]
    return project(hidden, params[prefix + "w_out"])


def resample_one(params, frames, real, config, grid=None):
    """One batch item: frames (T, S, D) lists, real (T, S) bools, grid (h, w) or None ->
    latents (R, D), weights per layer."""
    media, media_real = [], []
    for t, frame in enumerate(frames):
        for s, token in enumerate(frame):
            if config.media_dim is not None:
                token = project(token, params["media_proj.weight"])
                if config.media_proj_bias:
                    token = add(token, params["media_proj.bias"])
            if config.num_time_embeds is not None:
                token = add(token, params["time_embeds"][t])
            media.append(token)  # frame-major: token t*S + s
            media_real.append(real[t][s])
    latents = [list(row) for row in params["latents"]]
    key_positions = query_positions = None
    if config.positions is not None:
        h, w = grid
        if config.pos_grid is None:
            table = sincos_2d(config.dim, h, w)
        else:
            side = config.pos_grid
            table = bicubic_resize(sincos_2d(config.dim, side, side), side, side, h, w)
        padding = [[0.0] * config.dim] * (len(frames[0]) - h * w)
        key_positions = (table + padding) * len(frames)  # every frame's S tokens alike
        if config.positions == "keys_and_queries":
            query_positions = sincos_2d(config.dim, config.pos_grid, config.pos_grid)
    maps = []
    for i in range(config.depth):
        prefix = f"layers.{i}.attn."
        media_normed, latents_normed = media, latents
        if config.pre_norm:
            media_normed = norm_rows(params, prefix + "norm_media.", media, config.norm, config.norm_eps)
            latents_normed = norm_rows(params, prefix + "norm_latents.", latents, config.norm, config.norm_eps)
        queries, key_rows = latents_normed, None
        if key_positions is not None:
            key_rows = [add(row, p) for row, p in zip(media_normed, key_positions, strict=True)]
        if query_positions is not None:
            queries = [add(row, p) for row, p in zip(latents_normed, query_positions, strict=True)]
        if config.latents_in_kv:
            context = media_normed + latents_normed
            allowed_row = media_real + [True] * len(latents)
        else:
            context, allowed_row = media_normed, media_real
        allowed = [allowed_row] * len(latents)
        attended, weights = multi_head_rows(
            params,
            prefix,
            queries,
            context,
            allowed,
            config.heads,
            config.num_kv_heads,
            config.norm_eps if config.qk_norm else None,
            key_rows,
        )
        if config.attn_residual:
            latents = [add(row, delta) for row, delta in zip(latents, attended, strict=True)]
        else:
            latents = attended
        if config.feed_forward:
            ff = f"layers.{i}.ff."
            latents = [
                add(
                    row,
                    feed_forward_row(params, ff, row, config.activation, config.norm, config.norm_eps, config.pre_norm),
                )
                for row in latents
            ]
        maps.append(weights)
    if config.final_norm:
        latents = norm_rows(params, "norm.", latents, config.norm, config.norm_eps)
    if config.out_dim is not None:
        latents = [project(row, params["out_proj.weight"]) for row in latents]
        if config.out_proj_bias:
            latents = [add(row, params["out_proj.bias"]) for row in latents]
        if config.out_norm:
            latents = norm_rows(params, "out_norm.", latents, config.norm, config.norm_eps)
    return latents, maps


def perceiver_resampler(params, x, config, mask=None, grid=None):
    """x (..., T, S, D) -> latents (..., R, D) and a list of weights (..., H, R, T*S [+ R]) per layer.
    grid: (h, w), or an int array (..., 2) per batch item, where config.positions is set."""
    x = np.asarray(x, dtype=np.float64)
    *batch, n_frames, n_space, _ = x.shape
    dim = config.dim if config.out_dim is None else config.out_dim
    batch = tuple(batch)
    real = np.ones(x.shape[:-1], dtype=bool) if mask is None else np.asarray(mask)
    lists = {name: as_lists(value) for name, value in params.items()}
    r = config.num_latents
    n_keys = n_frames * n_space + (r if config.latents_in_kv else 0)
    out = np.empty(batch + (r, dim))
    maps = [np.empty(batch + (config.heads, r, n_keys)) for _ in range(config.depth)]
    grids = None if grid is None else np.broadcast_to(grid, batch + (2,))
    for index in np.ndindex(batch):
        item_grid = None if grids is None else tuple(int(side) for side in grids[index])
        latents, weights = resample_one(lists, x[index].tolist(), real[index].tolist(), config, item_grid)
        out[index] = np.array(latents)
        for layer, w in enumerate(weights):
            maps[layer][index] = np.array(w).reshape(config.heads, r, n_keys)
    return out, maps


def expected_param_shapes(config):
    """The parameter table of the issue, written out again from the config."""
    d, r, h, dh, f = config.dim, config.num_latents, config.heads, config.dim_head, config.ff_dim
    hkv = config.heads if config.kv_heads is None else config.kv_heads
    norm = ("weight", "bias") if config.norm == "layernorm" else ("weight",)
    shapes = {}
    if config.media_dim is not None:
        shapes["media_proj.weight"] = (config.media_dim, d)
        if config.media_proj_bias:
            shapes["media_proj.bias"] = (d,)
    shapes["latents"] = (r, d)
    if config.num_time_embeds is not None:
        shapes["time_embeds"] = (config.num_time_embeds, d)
    for i in range(config.depth):
        a, m = f"layers.{i}.attn.", f"layers.{i}.ff."
        for which in ("norm_media", "norm_latents") if config.pre_norm else ():
            for p in norm:
                shapes[f"{a}{which}.{p}"] = (d,)
        shapes[a + "wq"], shapes[a + "wk"], shapes[a + "wv"], shapes[a + "wo"] = (
            (d, h * dh),
            (d, hkv * dh),
            (d, hkv * dh),
            (h * dh, d),
        )
        if config.attn_bias:
            shapes[a + "bq"], shapes[a + "bk"], shapes[a + "bv"], shapes[a + "bo"] = (
                (h * dh,),
                (hkv * dh,),
                (hkv * dh,),
                (d,),
            )
        if config.qk_norm:
            for which in ("q_norm", "k_norm"):
                shapes[f"{a}{which}.weight"] = shapes[f"{a}{which}.bias"] = (dh,)
        if not config.feed_forward:
            continue
        for p in norm if config.pre_norm else ():
            shapes[f"{m}norm.{p}"] = (d,)
        if config.activation == "swiglu":
            shapes[m + "w_gate"], shapes[m + "w_up"], shapes[m + "w_down"] = (d, f), (d, f), (f, d)
        else:
            shapes[m + "w_in"], shapes[m + "w_out"] = (d, f), (f, d)
    for p in norm if config.final_norm else ():
        shapes[f"norm.{p}"] = (d,)
    if config.out_dim is not None:
        shapes["out_proj.weight"] = (d, config.out_dim)
        if config.out_proj_bias:
            shapes["out_proj.bias"] = (config.out_dim,)
        for p in norm if config.out_norm else ():
            shapes[f"out_norm.{p}"] = (config.out_dim,)
    return shapes


# ---------------------------------------------------------------- 2-D sin-cos positions


def sincos_2d(dim, h, w):
    """The MAE table as rows of Python floats: patch (r, c) is row r*w + c; its first dim/2
    entries are sin(c * omega_k) for k < dim/4, then cos(c * omega_k), then the same for r,
    with omega_k = 1 / 10000 ** (k / (dim / 4))."""
    quarter = dim // 4
    omegas = [1.0 / 10000 ** (k / quarter) for k in range(quarter)]
    rows = []
    for r in range(h):
        for c in range(w):
            rows.append(
                [math.sin(c * o) for o in omegas]
                + [math.cos(c * o) for o in omegas]
                + [math.sin(r * o) for o in omegas]
                + [math.cos(r * o) for o in omegas]
            )
    return rows


def cubic_kernel(d, a=-0.75):
    """Keys' cubic convolution kernel W(d): (a+2)|d|^3 - (a+3)|d|^2 + 1 for |d| <= 1,
    a|d|^3 - 5a|d|^2 + 8a|d| - 4a for 1 < |d| < 2, else 0."""
    d = abs(d)
    if d <= 1:
        return (a + 2) * d**3 - (a + 3) * d**2 + 1
    if d < 2:
        return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return 0.0


def bicubic_resize(table, h0, w0, h, w):
    """Rows (h0*w0, D) of an h0 x w0 grid resized to h x w: output pixel (y, x) reads the input
    at (sy, sx) = ((y + 0.5) h0/h - 0.5, (x + 0.5) w0/w - 0.5), summing W(sy - i) W(sx - j) times
    pixel (clamp(i), clamp(j)) over the 4 x 4 pixels i = floor(sy) - 1 ... floor(sy) + 2 (and j)."""
    out = []
    for y in range(h):
        sy = (y + 0.5) * h0 / h - 0.5
        for x in range(w):
            sx = (x + 0.5) * w0 / w - 0.5
            row = [0.0] * len(table[0])
            for i in range(math.floor(sy) - 1, math.floor(sy) + 3):
                for j in range(math.floor(sx) - 1, math.floor(sx) + 3):
                    weight = cubic_kernel(sy - i) * cubic_kernel(sx - j)
                    pixel = table[min(max(i, 0), h0 - 1) * w0 + min(max(j, 0), w0 - 1)]
                    row = [a + weight * b for a, b in zip(row, pixel, strict=True)]
            out.append(row)
    return out


# ---------------------------------------------------------------- gated cross-attention


def gated_xattn_dense(params, hidden, visual, *, heads, mask=None, norm_eps=1e-5):
    """Flamingo's GATED XATTN-DENSE on ndarrays, one batch item at a time.

    y = hidden + tanh(attn_gate) * attn(q = LN(hidden), kv = visual)   (0 for a text token that sees nothing)
    y = y + tanh(ff_gate) * ffw(y),  ffw = LN, Linear, GELU, Linear
    """
    hidden, visual = np.asarray(hidden, dtype=np.float64), np.asarray(visual, dtype=np.float64)
    batch = hidden.shape[:-2]
    n_text, n_visual = hidden.shape[-2], visual.shape[-2]
    visual = np.broadcast_to(visual, batch + visual.shape[-2:])
    allowed = (
        np.ones(batch + (n_text, n_visual), dtype=bool)
        if mask is None
        else np.broadcast_to(mask, batch + (n_text, n_visual))
    )
    p = {name: as_lists(value) for name, value in params.items()}
    attn_gate, ff_gate = math.tanh(p["attn_gate"]), math.tanh(p["ff_gate"])
    out = np.empty(hidden.shape)
    for index in np.ndindex(batch):
        rows = hidden[index].tolist()
        sees = [any(row) for row in allowed[index].tolist()]
        normed = [layer_norm(row, p["attn.norm.weight"], p["attn.norm.bias"], norm_eps) for row in rows]
        seeing = [i for i in range(n_text) if sees[i]]
        attended = [[0.0] * hidden.shape[-1] for _ in rows]
        if seeing:
            mh, _ = multi_head_rows(
                p,
                "attn.",
                [normed[i] for i in seeing],
                visual[index].tolist(),
                [allowed[index][i].tolist() for i in seeing],
                heads,
                heads,
                None,
            )
            for i, row in zip(seeing, mh, strict=True):
                attended[i] = row
        rows = [add(row, scaled(a, attn_gate)) for row, a in zip(rows, attended, strict=True)]
        rows = [
            add(row, scaled(feed_forward_row(p, "ff.", row, "gelu", "layernorm", norm_eps), ff_gate)) for row in rows
        ]
        out[index] = np.array(rows).reshape(hidden.shape[-2:])
    return out
