"""jaxloss: PyTorch's loss functions, exactly, inside ``jax.jit``.

Every public name is a ``torch.nn.functional`` loss with torch's keywords,
values and gradients.
"""

from jaxloss._cross_entropy import cross_entropy, nll_loss
from jaxloss._linear_cross_entropy import linear_cross_entropy

__all__ = [
    "cross_entropy",
    "linear_cross_entropy",
    "nll_loss",
]

__version__ = "0.1.0"
