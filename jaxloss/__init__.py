"""jaxloss: PyTorch's loss functions, exactly, inside ``jax.jit``.

Every public name is a ``torch.nn.functional`` loss with torch's keywords,
values and gradients (plus ``pairwise_distance``, the default distance of the
triplet losses).
"""

from jaxloss._binary import binary_cross_entropy, binary_cross_entropy_with_logits
from jaxloss._cross_entropy import cross_entropy, nll_loss
from jaxloss._ctc import ctc_loss
from jaxloss._divergence import gaussian_nll_loss, kl_div, poisson_nll_loss
from jaxloss._embedding import (
    cosine_embedding_loss,
    pairwise_distance,
    triplet_margin_loss,
    triplet_margin_with_distance_loss,
)
from jaxloss._linear_cross_entropy import linear_cross_entropy
from jaxloss._margin import (
    hinge_embedding_loss,
    margin_ranking_loss,
    multi_margin_loss,
    multilabel_margin_loss,
    multilabel_soft_margin_loss,
    soft_margin_loss,
)
from jaxloss._regression import huber_loss, l1_loss, mse_loss, smooth_l1_loss

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cosine_embedding_loss",
    "cross_entropy",
    "ctc_loss",
    "gaussian_nll_loss",
    "hinge_embedding_loss",
    "huber_loss",
    "kl_div",
    "l1_loss",
    "linear_cross_entropy",
    "margin_ranking_loss",
    "mse_loss",
    "multi_margin_loss",
    "multilabel_margin_loss",
    "multilabel_soft_margin_loss",
    "nll_loss",
    "pairwise_distance",
    "poisson_nll_loss",
    "smooth_l1_loss",
    "soft_margin_loss",
    "triplet_margin_loss",
    "triplet_margin_with_distance_loss",
]

__version__ = "0.1.0"
