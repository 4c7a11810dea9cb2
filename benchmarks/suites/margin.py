"""The margin losses: soft_margin, multilabel_soft_margin, multi_margin,
multilabel_margin, hinge_embedding and margin_ranking.

optax equivalents, where the quantity is the same: soft_margin_loss(x, y) is
``sigmoid_binary_cross_entropy(x, (y + 1) / 2).mean()`` (log(1 + exp(-y x)) for
y = +-1) and multilabel_soft_margin_loss(x, y) without weight is
``sigmoid_binary_cross_entropy(x, y).mean()`` (mean over labels, then over the batch).
optax's ``multiclass_hinge_loss`` takes the largest violating class where torch's
multi_margin_loss sums over classes, and optax has no ranking or embedding hinge:
those compare with torch only.

Sizes: ``N`` x ``C`` scores (margin_ranking_loss: N*C pairs; multilabel_margin_loss
uses ``C_ml`` classes: its cost grows with C squared).
"""

from __future__ import annotations

import numpy as np

from benchmarks import harness as H

QUICK = [{"N": 1024, "C": 1000, "C_ml": 100}]
FULL = [{"N": 4096, "C": 1000, "C_ml": 200}]


def _data(N: int, C: int, C_ml: int, seed: int = 0):
    """(scores, +-1 labels, {0,1} multi-labels, class indices, class weight, scores for
    multilabel_margin, its -1-terminated targets, score pairs and +-1 pair labels)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C), dtype=np.float32)
    pm = np.where(rng.random((N, C)) < 0.5, -1.0, 1.0).astype(np.float32)
    multi = (rng.random((N, C)) < 0.1).astype(np.float32)
    cls = rng.integers(0, C, N, dtype=np.int32)
    w = rng.uniform(0.5, 1.5, C).astype(np.float32)
    xm = rng.standard_normal((N, C_ml), dtype=np.float32)
    k = rng.integers(1, min(6, C_ml) + 1, N)
    tm = np.full((N, C_ml), -1, np.int32)
    for i in range(N):
        tm[i, : k[i]] = rng.choice(C_ml, k[i], replace=False)
    x1 = rng.standard_normal(N * C, dtype=np.float32)
    x2 = rng.standard_normal(N * C, dtype=np.float32)
    yr = pm.reshape(-1)
    return x, pm, multi, cls, w, xm, tm, x1, x2, yr


def cases(quick: bool, sizes: list[dict] | None) -> list[H.BenchCase]:
    import optax

    F = H.torch_functional()
    names = [
        "soft_margin_loss",
        "multilabel_soft_margin_loss",
        "multi_margin_loss",
        "multilabel_margin_loss",
        "hinge_embedding_loss",
        "margin_ranking_loss",
    ]
    fn = {n: H.jaxloss_loss(n) for n in names}
    tf = {n: getattr(F, n) if F else None for n in names}

    def j(name, call):
        return fn[name] and (lambda *a: call(fn[name], *a))

    def t(name, call):
        return tf[name] and (lambda *a: call(tf[name], *a))

    variant_modes = ("value_and_grad",) if quick else H.MODES
    out: list[H.BenchCase] = []
    for size in H.pick_sizes(sizes, QUICK if quick else FULL):
        d = H.cached_data(("margin", *size.values()), lambda size=size: _data(**size))
        specs = [
            # name, call(f, *arrays), optax or None, argnums, variant, modes
            (
                "soft_margin_loss",
                lambda f, x, pm, *_: f(x, pm),
                lambda x, pm, *_: optax.losses.sigmoid_binary_cross_entropy(x, (pm + 1) / 2).mean(),
                0,
                "",
                H.MODES,
            ),
            (
                "multilabel_soft_margin_loss",
                lambda f, x, pm, multi, *_: f(x, multi),
                lambda x, pm, multi, *_: optax.losses.sigmoid_binary_cross_entropy(x, multi).mean(),
                0,
                "",
                H.MODES,
            ),
            ("multi_margin_loss", lambda f, x, pm, multi, cls, *_: f(x, cls), None, 0, "", H.MODES),
            (
                "multi_margin_loss",
                lambda f, x, pm, multi, cls, w, *_: f(x, cls, p=2, margin=0.5, weight=w),
                None,
                0,
                "p=2,margin=0.5,weight",
                variant_modes,
            ),
            ("multilabel_margin_loss", lambda f, x, pm, multi, cls, w, xm, tm, *_: f(xm, tm), None, 5, "", H.MODES),
            ("hinge_embedding_loss", lambda f, x, pm, *_: f(x, pm), None, 0, "", H.MODES),
            (
                "margin_ranking_loss",
                lambda f, x, pm, multi, cls, w, xm, tm, x1, x2, yr: f(x1, x2, yr, margin=0.1),
                None,
                (7, 8),
                "",
                H.MODES,
            ),
        ]
        # a variant's options are timed beside the same loss's plain call
        plain_call = {name: call for name, call, _, _, variant, _ in specs if not variant}
        for name, call, ox, argnums, variant, modes in specs:
            out += H.loss_cases(
                name,
                size,
                d,
                jaxloss=j(name, call),
                optax=ox,
                torch=t(name, call),
                argnums=argnums,
                plain=j(name, plain_call[name]) if variant else None,
                variant=variant,
                modes=modes,
            )
    return out
