"""jaxloss: PyTorch's loss functions, exactly, inside ``jax.jit``.

Every public name is a ``torch.nn.functional`` loss with torch's keywords,
values and gradients.
"""

from jaxloss._binary import binary_cross_entropy, binary_cross_entropy_with_logits
from jaxloss._cross_entropy import cross_entropy, nll_loss
from jaxloss._divergence import gaussian_nll_loss, kl_div, poisson_nll_loss
from jaxloss._linear_cross_entropy import linear_cross_entropy
from jaxloss._margin import (
    hinge_embedding_loss,
    margin_ranking_loss,
    multi_margin_loss,
    multilabel_margin_loss,
    multilabel_soft_margin_loss,
    soft_margin_loss,
)

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "linear_cross_entropy",
    "nll_loss",
    "gaussian_nll_loss",
    "kl_div",
    "poisson_nll_loss",
    "hinge_embedding_loss",
    "margin_ranking_loss",
    "multi_margin_loss",
    "multilabel_margin_loss",
    "multilabel_soft_margin_loss",
    "soft_margin_loss",
]

__version__ = "0.1.0"
