"""l1_loss, mse_loss, huber_loss and smooth_l1_loss on (N, D) predictions.

optax equivalents: ``squared_error(x, y).mean()`` for mse_loss,
``huber_loss(x, y, delta=1.0).mean()`` for huber_loss (same piecewise formula) and
for smooth_l1_loss with its default ``beta=1`` (smooth L1 is Huber divided by beta).
optax has no L1 loss and no weighted means: those compare with torch only. The
``weight`` variants run when both jaxloss's and torch's functions take ``weight``.

Sizes: ``N`` x ``D``.
"""

from __future__ import annotations

import inspect

import numpy as np

from benchmarks import harness as H

QUICK = [{"N": 1024, "D": 1024}]
FULL = [{"N": 4096, "D": 4096}]


def _data(N: int, D: int, seed: int = 0):
    """(prediction, target, elementwise weight)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D), dtype=np.float32)
    y = (x + 1.5 * rng.standard_normal((N, D), dtype=np.float32)).astype(np.float32)
    w = rng.uniform(0.0, 1.0, (N, D)).astype(np.float32)
    return x, y, w


def _takes_weight(fn) -> bool:
    try:
        return "weight" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def cases(quick: bool, sizes: list[dict] | None) -> list[H.BenchCase]:
    import optax

    F = H.torch_functional()
    optax_eq = {
        "l1_loss": None,
        "mse_loss": lambda x, y, w: optax.losses.squared_error(x, y).mean(),
        "huber_loss": lambda x, y, w: optax.losses.huber_loss(x, y, delta=1.0).mean(),
        "smooth_l1_loss": lambda x, y, w: optax.losses.huber_loss(x, y, delta=1.0).mean(),
    }
    fns = {name: H.jaxloss_loss(name) for name in optax_eq}
    variant_modes = ("value_and_grad",) if quick else H.MODES
    out: list[H.BenchCase] = []
    for size in H.pick_sizes(sizes, QUICK if quick else FULL):
        N, D = size["N"], size["D"]
        d = H.cached_data(("regression", N, D), lambda N=N, D=D: _data(N, D))
        for name, ox in optax_eq.items():
            fn = fns[name]
            tf = getattr(F, name) if F else None
            out += H.loss_cases(
                name,
                size,
                d,
                jaxloss=fn and (lambda x, y, w, fn=fn: fn(x, y)),
                optax=ox,
                torch=tf and (lambda x, y, w, tf=tf: tf(x, y)),
            )
            if fn is not None and _takes_weight(fn):
                out += H.loss_cases(
                    name,
                    size,
                    d,
                    jaxloss=lambda x, y, w, fn=fn: fn(x, y, weight=w),
                    torch=(lambda x, y, w, tf=tf: tf(x, y, weight=w)) if tf and _takes_weight(tf) else None,
                    plain=lambda x, y, w, fn=fn: fn(x, y),
                    variant="weight",
                    modes=variant_modes,
                )
    return out
