"""binary_cross_entropy and binary_cross_entropy_with_logits on multi-label batches.

optax equivalent: ``sigmoid_binary_cross_entropy(x, t).mean()`` for the plain logits
call; optax has no per-class ``weight``, no ``pos_weight`` and no probability-space BCE,
so those compare with torch only.

Sizes: ``N`` examples, ``C`` labels each.
"""

from __future__ import annotations

import numpy as np

from benchmarks import harness as H

QUICK = [{"N": 1024, "C": 1000}]
FULL = [{"N": 4096, "C": 1000}, {"N": 16384, "C": 1000}]


def _data(N: int, C: int, seed: int = 0):
    """(logits, probabilities in (0, 1), {0, 1} targets, per-class weight, pos_weight)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C), dtype=np.float32) * 2
    p = (1 / (1 + np.exp(-x))).astype(np.float32)
    t = (rng.random((N, C)) < 0.1).astype(np.float32)
    w = rng.uniform(0.5, 1.5, C).astype(np.float32)
    pw = rng.uniform(1.0, 5.0, C).astype(np.float32)
    return x, p, t, w, pw


def cases(quick: bool, sizes: list[dict] | None) -> list[H.BenchCase]:
    import optax

    bce = H.jaxloss_loss("binary_cross_entropy")
    bcel = H.jaxloss_loss("binary_cross_entropy_with_logits")
    F = H.torch_functional()
    variant_modes = ("value_and_grad",) if quick else H.MODES
    out: list[H.BenchCase] = []
    for size in H.pick_sizes(sizes, QUICK if quick else FULL):
        N, C = size["N"], size["C"]
        d = H.cached_data(("binary", N, C), lambda N=N, C=C: _data(N, C))
        out += H.loss_cases(
            "binary_cross_entropy_with_logits",
            size,
            d,
            jaxloss=bcel and (lambda x, p, t, w, pw: bcel(x, t)),
            optax=lambda x, p, t, w, pw: optax.losses.sigmoid_binary_cross_entropy(x, t).mean(),
            torch=F and (lambda x, p, t, w, pw: F.binary_cross_entropy_with_logits(x, t)),
        )
        out += H.loss_cases(
            "binary_cross_entropy_with_logits",
            size,
            d,
            jaxloss=bcel and (lambda x, p, t, w, pw: bcel(x, t, weight=w, pos_weight=pw)),
            torch=F and (lambda x, p, t, w, pw: F.binary_cross_entropy_with_logits(x, t, weight=w, pos_weight=pw)),
            plain=bcel and (lambda x, p, t, w, pw: bcel(x, t)),
            variant="weight,pos_weight",
            modes=variant_modes,
        )
        out += H.loss_cases(
            "binary_cross_entropy",
            size,
            d,
            jaxloss=bce and (lambda x, p, t, w, pw: bce(p, t)),
            torch=F and (lambda x, p, t, w, pw: F.binary_cross_entropy(p, t)),
            argnums=1,
        )
        out += H.loss_cases(
            "binary_cross_entropy",
            size,
            d,
            jaxloss=bce and (lambda x, p, t, w, pw: bce(p, t, weight=w)),
            torch=F and (lambda x, p, t, w, pw: F.binary_cross_entropy(p, t, weight=w)),
            argnums=1,
            plain=bce and (lambda x, p, t, w, pw: bce(p, t)),
            variant="weight",
            modes=variant_modes,
        )
    return out
