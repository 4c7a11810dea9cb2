"""The seeded case generator of the fuzz tests: random layouts, options and data for every loss.

Each case is ``(args, kwargs, gidx)``: numpy arrays (or Python floats) in torch's
argument order, torch's keywords, and the indices of the arguments torch
differentiates. ``kwargs["__jl"]`` holds jaxloss-only keywords. ``mutate`` changes one
array argument of a case (for the bad-input tests). Neither needs torch:
``test_fuzz_live`` compares the cases with torch, ``test_fuzz_transforms`` checks them
under JAX's transformations.
"""

from __future__ import annotations

import jax
import numpy as np

RED = ["none", "mean", "sum"]
NAMES = [
    "cross_entropy",
    "nll_loss",
    "linear_cross_entropy",
    "ctc_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "soft_margin_loss",
    "kl_div",
    "poisson_nll_loss",
    "gaussian_nll_loss",
    "multi_margin_loss",
    "multilabel_margin_loss",
    "multilabel_soft_margin_loss",
    "hinge_embedding_loss",
    "margin_ranking_loss",
    "cosine_embedding_loss",
    "triplet_margin_loss",
    "triplet_margin_with_distance_loss",
    "pairwise_distance",
]
BIG = ["cross_entropy", "nll_loss", "linear_cross_entropy", "multi_margin_loss"]


def batch_shape(r):
    return tuple(int(r.integers(0 if r.random() < 0.1 else 1, 4)) for _ in range(r.integers(0, 4)))


def gen(r, name, big=False):
    """(args, kwargs, indices of the arguments to differentiate): the arrays as NumPy
    arrays (0-d ones too), Python floats kept. kwargs["__jl"] holds jaxloss-only keywords."""
    args, kw, gidx = _draw(r, name, big)
    args = tuple(a if type(a) is float else np.asarray(a) for a in args)
    kw = {key: (np.asarray(v) if isinstance(v, np.floating) else v) for key, v in kw.items()}
    return args, kw, gidx


def _draw(r, name, big):  # noqa: C901 (one branch per loss)
    shape_batch = lambda: batch_shape(r)  # noqa: E731
    red = RED[r.integers(3)]
    if name in ("cross_entropy", "nll_loss"):
        C = int(r.integers(1, 6)) if not big else int(r.choice([255, 256, 257, 300, 1024, 2049]))
        layout = r.integers(3)
        if layout == 0:
            xs, ts = (C,), ()
        else:
            N = int(r.integers(0, 4))
            ks = tuple(int(r.integers(1, 3)) for _ in range(r.integers(0, 3)))
            xs, ts = (N, C) + ks, (N,) + ks
        x = r.standard_normal(xs)
        if name == "nll_loss":
            x = np.asarray(jax.nn.log_softmax(x, axis=0 if layout == 0 else 1))
        kw = {"reduction": red}
        prob = name == "cross_entropy" and r.random() < 0.4
        if prob:
            t = (
                r.random(xs)
                if r.random() < 0.5
                else np.asarray(jax.nn.softmax(r.standard_normal(xs), axis=0 if layout == 0 else 1))
            )
        else:
            t = r.integers(0, C, ts)
            if r.random() < 0.5 and t.size:
                ii = int(r.choice([-100, 0, C - 1, -1, 7]))
                kw["ignore_index"] = ii
                m = r.random(ts) < 0.4
                t = np.where(m, ii, t) if ii >= 0 or ii == -100 else t
        if r.random() < 0.5:
            kw["weight"] = r.random(C) * 2
        if name == "cross_entropy" and r.random() < 0.5:
            kw["label_smoothing"] = float(r.choice([0.0, 0.1, 0.5, 1.0]))
        return (x, t), kw, [0] + ([1] if prob else [])
    if name == "binary_cross_entropy":
        s = shape_batch()
        x = r.uniform(0.001, 0.999, s)
        t = r.random(s)
        if r.random() < 0.3:
            x = np.where(r.random(s) < 0.3, r.choice([0.0, 1.0], s), x)
        kw = {"reduction": red}
        if r.random() < 0.5:
            kw["weight"] = r.random(s[-1:] if s and r.random() < 0.5 else s)
        return (x, t), kw, [0, 1]
    if name == "binary_cross_entropy_with_logits":
        s = shape_batch()
        x = r.standard_normal(s) * 5
        t = r.random(s)
        kw = {"reduction": red}
        if r.random() < 0.5:
            kw["weight"] = r.random(s[-1:] if s and r.random() < 0.5 else s)
        if r.random() < 0.5:
            kw["pos_weight"] = r.random(s[-1:] if s and r.random() < 0.7 else s) * 3
        return (x, t), kw, [0, 1]
    if name in ("mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "soft_margin_loss"):
        s = shape_batch()
        x = r.standard_normal(s) * 2
        t = r.standard_normal(s)
        if r.random() < 0.2 and s:
            t = r.standard_normal(s[1:])  # broadcast target
        if r.random() < 0.2:
            t = x.copy() if t.shape == x.shape else t
        if name == "soft_margin_loss":
            t = np.sign(t) + (t == 0)
        kw = {"reduction": red}
        if name == "smooth_l1_loss":
            kw["beta"] = float(r.choice([0.0, 0.5, 1.0, 2.0]))
        if name == "huber_loss":
            kw["delta"] = float(r.choice([0.5, 1.0, 2.0]))
        if name in ("mse_loss", "l1_loss", "huber_loss") and r.random() < 0.4:
            kw["weight"] = r.random(np.broadcast_shapes(np.shape(x), np.shape(t)))
        return (x, t), kw, [0] + ([] if name == "soft_margin_loss" else [1])
    if name == "kl_div":
        s = shape_batch()
        x = np.log(r.uniform(0.01, 1, s))
        lt = bool(r.random() < 0.5)
        t = np.log(r.uniform(0.01, 1, s)) if lt else r.uniform(0, 1, s)
        if not lt and r.random() < 0.3:
            t = np.where(r.random(s) < 0.3, 0.0, t)
        return (x, t), {"reduction": str(r.choice(RED + ["batchmean"])), "log_target": lt}, [0, 1]
    if name == "poisson_nll_loss":
        s = shape_batch()
        li = bool(r.random() < 0.5)
        x = r.standard_normal(s) if li else r.uniform(0, 3, s)
        t = r.poisson(2, s).astype(float)
        return (
            (x, t),
            {"reduction": red, "log_input": li, "full": bool(r.random() < 0.5), "eps": float(r.choice([1e-8, 0.1]))},
            [0],
        )
    if name == "gaussian_nll_loss":
        s = shape_batch() or (3,)
        x = r.standard_normal(s)
        t = r.standard_normal(s)
        c = r.integers(4)
        v = (
            r.uniform(0.01, 2, s)
            if c == 0
            else (
                r.uniform(0.01, 2, s[:-1] + (1,))
                if c == 1
                else (r.uniform(0.01, 2, s[:-1]) if c == 2 and len(s) > 1 else float(r.uniform(0.01, 2)))
            )
        )
        return (
            (x, t, v),
            {"reduction": red, "full": bool(r.random() < 0.5), "eps": float(r.choice([1e-6, 0.5]))},
            [0, 1] + ([2] if not isinstance(v, float) else []),
        )
    if name == "multi_margin_loss":
        C = int(r.integers(1, 5)) if not big else int(r.choice([255, 256, 300]))
        un = r.random() < 0.3
        N = int(r.integers(0, 4))
        x = r.standard_normal((C,) if un else (N, C))
        t = r.integers(0, C, () if un else (N,))
        kw = {"reduction": red, "p": int(r.choice([1, 2])), "margin": float(r.choice([0.0, 1.0, 2.5]))}
        if r.random() < 0.5:
            kw["weight"] = r.random(C)
        return (x, t), kw, [0]
    if name == "multilabel_margin_loss":
        C = int(r.integers(1, 5))
        un = r.random() < 0.3
        N = int(r.integers(0, 4))
        s = (C,) if un else (N, C)
        x = r.standard_normal(s)
        t = r.integers(-1, C, s)
        return (x, t), {"reduction": red}, [0]
    if name == "multilabel_soft_margin_loss":
        C = int(r.integers(1, 5))
        N = int(r.integers(0, 4))
        un = r.random() < 0.2
        s = (C,) if un else (N, C)
        x = r.standard_normal(s)
        t = (r.random(s) < 0.5).astype(float)
        kw = {"reduction": red}
        if r.random() < 0.5:
            kw["weight"] = r.random(C)
        return (x, t), kw, [0]
    if name == "hinge_embedding_loss":
        s = shape_batch()
        x = r.standard_normal(s) * 2
        t = r.choice([-1.0, 1.0], s)
        return (x, t), {"reduction": red, "margin": float(r.choice([0.0, 1.0, 2.0]))}, [0]
    if name == "margin_ranking_loss":
        s = shape_batch()
        return (
            (r.standard_normal(s), r.standard_normal(s), r.choice([-1.0, 1.0], s)),
            {"reduction": red, "margin": float(r.choice([0.0, 0.5]))},
            [0, 1],
        )
    if name == "cosine_embedding_loss":
        un = r.random() < 0.3
        D = int(r.integers(1, 4))
        N = int(r.integers(0, 4))
        s = (D,) if un else (N, D)
        a, b = r.standard_normal(s), r.standard_normal(s)
        if r.random() < 0.2:
            a = np.zeros(s)
        return (
            (a, b, r.choice([-1.0, 1.0], () if un else (N,))),
            {"reduction": red, "margin": float(r.choice([0.0, 0.5, -0.5]))},
            [0, 1],
        )
    if name == "triplet_margin_loss":
        un = r.random() < 0.3
        D = int(r.integers(1, 4))
        N = int(r.integers(0, 4))
        s = (D,) if un else (N, D)
        return (
            (r.standard_normal(s), r.standard_normal(s), r.standard_normal(s)),
            {
                "reduction": red,
                "margin": float(r.choice([0.0, 1.0])),
                "p": float(r.choice([1.0, 2.0, 3.0, 0.5])),
                "eps": float(r.choice([1e-6, 0.1])),
                "swap": bool(r.random() < 0.5),
            },
            [0, 1, 2],
        )
    if name == "pairwise_distance":
        D = int(r.integers(1, 4))
        s1 = tuple(int(r.integers(1, 3)) for _ in range(r.integers(0, 3))) + (D,)
        s2 = s1[1:] if (r.random() < 0.3 and len(s1) > 1) else s1
        return (
            (r.standard_normal(s1), r.standard_normal(s2)),
            {
                "p": float(r.choice([1.0, 2.0, 3.0, 0.5, np.inf, 0.0])),
                "eps": float(r.choice([1e-6, 0.1])),
                "keepdim": bool(r.random() < 0.5),
            },
            [0, 1],
        )
    if name == "triplet_margin_with_distance_loss":
        un = r.random() < 0.3
        D = int(r.integers(1, 4))
        N = int(r.integers(0, 4))
        s_ = (D,) if un else (N, D)
        return (
            (r.standard_normal(s_), r.standard_normal(s_), r.standard_normal(s_)),
            {"reduction": red, "margin": float(r.choice([0.0, 1.0, 0.3])), "swap": bool(r.random() < 0.5)},
            [0, 1, 2],
        )
    if name == "linear_cross_entropy":
        D = int(r.integers(1, 5))
        C = int(r.integers(1, 6)) if not big else int(r.choice([255, 256, 300, 1024]))
        un = r.random() < 0.25
        ks = () if un else tuple(int(r.integers(1, 3)) for _ in range(r.integers(0, 3)))
        N = int(r.integers(1, 5)) if r.random() < 0.9 else 0
        x = r.standard_normal((D,) if un else (N, D))
        W = r.standard_normal((C,) + ks + (D,))
        kw = {"reduction": red}
        cshape = (C,) + ks if un else (N, C) + ks
        tshape = () if un else (N,) + ks
        prob = r.random() < 0.35
        if prob:
            t = (
                np.asarray(jax.nn.softmax(r.standard_normal(cshape), axis=0 if un else 1))
                if r.random() < 0.6
                else r.random(cshape)
            )
        else:
            t = r.integers(0, C, tshape)
            if r.random() < 0.5:
                ii = int(r.choice([-100, 0, C - 1]))
                kw["ignore_index"] = ii
                t = np.where(r.random(tshape) < 0.4, ii, t)
            elif r.random() < 0.3:
                kw["ignore_index"] = None
        b = r.random()
        if b < 0.3:
            kw["linear_bias"] = r.standard_normal((C,))
        elif b < 0.5:
            kw["linear_bias"] = r.standard_normal((C,) + ks)
        if r.random() < 0.5:
            kw["weight"] = r.random(C) * 2
        if r.random() < 0.5:
            kw["label_smoothing"] = float(r.choice([0.0, 0.2, 1.0]))
        kw["__jl"] = {
            "chunk_size": int(r.choice([1, 2, 3, 64])) if r.random() < 0.7 else None,
            "method": str(r.choice(["auto", "fused", "checkpoint", "tiled"])),
        }
        return (x, W, t), kw, [0, 1] + ([2] if prob else [])
    if name == "ctc_loss":
        C = int(r.integers(2, 6))
        T = int(r.integers(1, 8))
        N = int(r.integers(1, 4))
        un = r.random() < 0.2
        if un:
            N = 1
        blank = int(r.integers(0, C)) if r.random() < 0.5 else 0
        lab = [c for c in range(C) if c != blank]
        S = int(r.integers(0, 5))
        tl = r.integers(0, S + 1, N)
        il = r.integers(1, T + 1, N) if r.random() < 0.5 else np.full(N, T)
        lp = r.standard_normal((T, C) if un else (T, N, C))
        if r.random() < 0.5 or un:
            tg = r.choice(lab, (N, max(S, 1)))
            tg = tg[0][: int(tl[0])] if un else tg
            if un:
                tg = tg if tg.size else r.choice(lab, (0,))
        else:
            tg = r.choice(lab, (int(tl.sum()),))
        kw = {"reduction": red, "blank": blank, "zero_infinity": bool(r.random() < 0.5)}
        if un:
            return (
                (lp, tg, np.asarray(il[0]), np.asarray(tl[0] if tg.ndim == 1 and len(tg) == tl[0] else len(tg))),
                kw,
                [0],
            )
        return (lp, tg, il, tl), kw, [0]
    raise KeyError(name)


def mutate(r, args, kw):
    """(args, kw, "shape" or "dtype", description) with one array argument changed, or None."""
    args, kw = list(args), dict(kw)
    keys = [("a", i) for i, a in enumerate(args) if type(a) is not float]
    keys += [("k", k) for k, v in kw.items() if isinstance(v, np.ndarray)]
    where, key = keys[r.integers(len(keys))]
    a = args[key] if where == "a" else kw[key]
    m = int(r.integers(6))
    if m == 0:
        b, what = (a[..., None] if a.ndim else a.reshape(1)), "shape"
    elif m == 1 and a.ndim and a.size:
        b, what = (a.reshape(a.shape[:-2] + (-1,)) if a.ndim > 1 else a[0]), "shape"
    elif m == 2 and a.ndim and a.shape[-1] > 0:
        b, what = np.concatenate([a, a[..., :1]], -1), "shape"
    elif m == 3:
        b, what = (a.astype(np.int64) if a.dtype.kind == "f" else a.astype(np.float64)), "dtype"
    elif m == 4:
        b, what = a.astype(bool), "dtype"
    elif m == 5:
        b, what = a.astype(np.complex128), "dtype"
    else:
        return None
    b = np.asarray(b)
    if where == "a":
        args[key] = b
    else:
        kw[key] = b
    return tuple(args), kw, what, f"{key}: {a.shape} {a.dtype} -> {b.shape} {b.dtype}"
