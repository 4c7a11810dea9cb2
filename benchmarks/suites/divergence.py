"""kl_div, poisson_nll_loss and gaussian_nll_loss.

kl_div is timed with ``reduction="batchmean"`` (the reduction torch recommends; its
default ``"mean"`` divides by numel and warns). optax equivalents:
``kl_divergence(log_q, p).mean()`` and, with ``log_target=True``,
``kl_divergence_with_log_targets(log_q, log_p).mean()``: optax sums over the last axis
per example, so the mean over the batch is torch's sum / N. optax has no Poisson or
Gaussian NLL: those compare with torch only.

Sizes: kl_div ``N`` x ``C`` distributions; the NLLs ``N`` x ``D`` predictions.
"""

from __future__ import annotations

import numpy as np

from benchmarks import harness as H

QUICK = [{"N": 1024, "C": 4096}]
FULL = [{"N": 4096, "C": 32768}]
QUICK_NLL = [{"N": 1024, "D": 1024}]
FULL_NLL = [{"N": 4096, "D": 4096}]


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return (z - np.log(np.exp(z).sum(axis=1, keepdims=True))).astype(np.float32)


def _kl_data(N: int, C: int, seed: int = 0):
    """(log q, p, log p)."""
    rng = np.random.default_rng(seed)
    logq = _log_softmax(rng.standard_normal((N, C), dtype=np.float32))
    logp = _log_softmax(rng.standard_normal((N, C), dtype=np.float32))
    return logq, np.exp(logp), logp


def _nll_data(N: int, D: int, seed: int = 1):
    """(log rate, Poisson counts, mean, target, variance)."""
    rng = np.random.default_rng(seed)
    lograte = rng.normal(0.0, 0.5, (N, D)).astype(np.float32)
    counts = rng.poisson(np.exp(lograte)).astype(np.float32)
    mu = rng.standard_normal((N, D), dtype=np.float32)
    y = (mu + rng.standard_normal((N, D), dtype=np.float32)).astype(np.float32)
    var = rng.uniform(0.1, 2.0, (N, D)).astype(np.float32)
    return lograte, counts, mu, y, var


def cases(quick: bool, sizes: list[dict] | None) -> list[H.BenchCase]:
    import optax

    kl = H.jaxloss_loss("kl_div")
    pois = H.jaxloss_loss("poisson_nll_loss")
    gauss = H.jaxloss_loss("gaussian_nll_loss")
    F = H.torch_functional()
    variant_modes = ("value_and_grad",) if quick else H.MODES
    out: list[H.BenchCase] = []
    for size in H.pick_sizes(sizes, QUICK if quick else FULL):
        N, C = size["N"], size["C"]
        d = H.cached_data(("kl", N, C), lambda N=N, C=C: _kl_data(N, C))
        out += H.loss_cases(
            "kl_div",
            size,
            d,
            jaxloss=kl and (lambda lq, p, lp: kl(lq, p, reduction="batchmean")),
            optax=lambda lq, p, lp: optax.losses.kl_divergence(lq, p).mean(),
            torch=F and (lambda lq, p, lp: F.kl_div(lq, p, reduction="batchmean")),
        )
        out += H.loss_cases(
            "kl_div",
            size,
            d,
            jaxloss=kl and (lambda lq, p, lp: kl(lq, lp, reduction="batchmean", log_target=True)),
            optax=lambda lq, p, lp: optax.losses.kl_divergence_with_log_targets(lq, lp).mean(),
            torch=F and (lambda lq, p, lp: F.kl_div(lq, lp, reduction="batchmean", log_target=True)),
            plain=kl and (lambda lq, p, lp: kl(lq, p, reduction="batchmean")),
            variant="log_target",
            modes=variant_modes,
        )
    for size in H.pick_sizes(sizes, QUICK_NLL if quick else FULL_NLL):
        N, D = size["N"], size["D"]
        d = H.cached_data(("prob-nll", N, D), lambda N=N, D=D: _nll_data(N, D))
        out += H.loss_cases(
            "poisson_nll_loss",
            size,
            d,
            jaxloss=pois and (lambda lr, k, mu, y, var: pois(lr, k)),
            torch=F and (lambda lr, k, mu, y, var: F.poisson_nll_loss(lr, k)),
        )
        out += H.loss_cases(
            "gaussian_nll_loss",
            size,
            d,
            jaxloss=gauss and (lambda lr, k, mu, y, var: gauss(mu, y, var)),
            torch=F and (lambda lr, k, mu, y, var: F.gaussian_nll_loss(mu, y, var)),
            argnums=(2, 4),
        )
    return out
