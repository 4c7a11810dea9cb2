"""jaxloss: PyTorch's loss functions, exactly, inside ``jax.jit``.

Every public name is a ``torch.nn.functional`` loss with torch's keywords,
values and gradients.
"""

from jaxloss._cross_entropy import cross_entropy, nll_loss
from jaxloss._embedding import (
    cosine_embedding_loss,
    pairwise_distance,
    triplet_margin_loss,
    triplet_margin_with_distance_loss,
)
from jaxloss._regression import huber_loss, l1_loss, mse_loss, smooth_l1_loss

__all__ = [
    "cross_entropy",
    "nll_loss",
    "huber_loss",
    "l1_loss",
    "mse_loss",
    "smooth_l1_loss",
    "cosine_embedding_loss",
    "pairwise_distance",
    "triplet_margin_loss",
    "triplet_margin_with_distance_loss",
]

__version__ = "0.1.0"
