"""jaxloss: PyTorch's loss functions, exactly, inside ``jax.jit``.

Every public name is a ``torch.nn.functional`` loss with torch's keywords,
values and gradients.
"""

from jaxloss._cross_entropy import cross_entropy, nll_loss
from jaxloss._margin import (
    hinge_embedding_loss,
    margin_ranking_loss,
    multi_margin_loss,
    multilabel_margin_loss,
    multilabel_soft_margin_loss,
    soft_margin_loss,
)

__all__ = [
    "cross_entropy",
    "nll_loss",
    "hinge_embedding_loss",
    "margin_ranking_loss",
    "multi_margin_loss",
    "multilabel_margin_loss",
    "multilabel_soft_margin_loss",
    "soft_margin_loss",
]

__version__ = "0.1.0"
