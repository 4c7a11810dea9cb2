"""The embedding losses: cosine_embedding_loss, triplet_margin_loss and
triplet_margin_with_distance_loss (default distance), gradients w.r.t. every input.

No optax equivalent: ``optax.triplet_margin_loss`` puts eps inside the power sum
((sum |a - p|^p + eps)^(1/p)) where torch adds eps to the difference (||a - p + eps||_p),
and ``optax.cosine_distance`` covers only torch's y = +1 branch without its eps.

Sizes: ``N`` x ``D`` embeddings.
"""

from __future__ import annotations

import numpy as np

from benchmarks import harness as H

QUICK = [{"N": 4096, "D": 256}]
FULL = [{"N": 16384, "D": 512}]


def _data(N: int, D: int, seed: int = 0):
    """(anchor, positive, negative, +-1 labels)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((N, D), dtype=np.float32)
    # positives and negatives at similar distances, so that most triplets violate the margin
    p = (a + rng.standard_normal((N, D), dtype=np.float32)).astype(np.float32)
    n = (a + 1.05 * rng.standard_normal((N, D), dtype=np.float32)).astype(np.float32)
    y = np.where(rng.random(N) < 0.5, -1.0, 1.0).astype(np.float32)
    return a, p, n, y


def cases(quick: bool, sizes: list[dict] | None) -> list[H.BenchCase]:
    F = H.torch_functional()
    cos = H.jaxloss_loss("cosine_embedding_loss")
    tri = H.jaxloss_loss("triplet_margin_loss")
    trid = H.jaxloss_loss("triplet_margin_with_distance_loss")
    variant_modes = ("value_and_grad",) if quick else H.MODES
    out: list[H.BenchCase] = []
    for size in H.pick_sizes(sizes, QUICK if quick else FULL):
        N, D = size["N"], size["D"]
        d = H.cached_data(("embedding", N, D), lambda N=N, D=D: _data(N, D))
        out += H.loss_cases(
            "cosine_embedding_loss",
            size,
            d,
            jaxloss=cos and (lambda a, p, n, y: cos(a, n, y, margin=0.2)),
            torch=F and (lambda a, p, n, y: F.cosine_embedding_loss(a, n, y, margin=0.2)),
            argnums=(0, 2),
        )
        out += H.loss_cases(
            "triplet_margin_loss",
            size,
            d,
            jaxloss=tri and (lambda a, p, n, y: tri(a, p, n)),
            torch=F and (lambda a, p, n, y: F.triplet_margin_loss(a, p, n)),
            argnums=(0, 1, 2),
        )
        out += H.loss_cases(
            "triplet_margin_loss",
            size,
            d,
            jaxloss=tri and (lambda a, p, n, y: tri(a, p, n, p=1, swap=True)),
            torch=F and (lambda a, p, n, y: F.triplet_margin_loss(a, p, n, p=1, swap=True)),
            argnums=(0, 1, 2),
            plain=tri and (lambda a, p, n, y: tri(a, p, n)),
            variant="p=1,swap",
            modes=variant_modes,
        )
        out += H.loss_cases(
            "triplet_margin_with_distance_loss",
            size,
            d,
            jaxloss=trid and (lambda a, p, n, y: trid(a, p, n)),
            torch=F and (lambda a, p, n, y: F.triplet_margin_with_distance_loss(a, p, n)),
            argnums=(0, 1, 2),
        )
    return out
