"""Element-wise building blocks with torch's derivatives at their kinks and at NaN.

JAX's ``abs`` has the derivative 1 at 0 and -1 at NaN; torch's is ``sgn``, 0 at
both. torch's ``clamp_min(z, 0)`` passes the gradient where ``z >= 0`` and masks
NaN out. The losses that take absolute values or hinges use these, so that their
gradients are torch's at exact ties and on NaN entries too. ``exp_`` keeps
``exp(+inf) = inf`` inside XLA:CPU's fused loops.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sgn(d: jax.Array, dtype) -> jax.Array:
    """torch's ``sgn(d)`` in ``dtype``: -1, 0 or 1, and 0 at NaN."""
    return (d > 0).astype(dtype) - (d < 0).astype(dtype)


@jax.custom_jvp
def abs_(d: jax.Array) -> jax.Array:
    """``|d|`` with torch's derivative ``sgn(d)``: 0 at 0 and at NaN."""
    return jnp.abs(d)


@abs_.defjvp
def _abs_jvp(primals, tangents):
    (d,), (t,) = primals, tangents
    return jnp.abs(d), sgn(d, t.dtype) * t


@jax.custom_jvp
def clamp_min0(z: jax.Array) -> jax.Array:
    """``max(z, 0)`` as torch's ``clamp_min``: NaN stays NaN in the value; the derivative
    is 1 where ``z >= 0`` (the kink included) and 0 elsewhere, NaN included."""
    return jnp.where(z < 0, jnp.zeros_like(z), z)


@clamp_min0.defjvp
def _clamp_min0_jvp(primals, tangents):
    (z,), (t,) = primals, tangents
    return clamp_min0(z), jnp.where(z >= 0, t, jnp.zeros_like(t))


@jax.custom_jvp
def exp_(x: jax.Array) -> jax.Array:
    """``exp(x)``, exactly ``inf`` at ``x = +inf``.

    XLA:CPU's vectorised ``exp`` inside a fused loop returns a large finite number
    for ``+inf`` (the scalar remainder does not), so ``exp(x) - t * x`` came out
    ``-inf`` instead of torch's NaN depending on the array's length. The
    derivative is the value, as for ``exp``.
    """
    return jnp.where(x == jnp.inf, jnp.inf, jnp.exp(x))


@exp_.defjvp
def _exp_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    e = exp_(x)
    return e, e * t


def times_weight(loss: jax.Array, weight: jax.Array) -> jax.Array:
    """``loss * weight`` as torch computes it, for a weight of any real dtype.

    A bool weight is multiplied too, not selected: XLA rewrites a product with
    ``convert(bool)`` into a select, which would turn a NaN or infinite loss under
    a ``False`` weight into 0 (torch's ``nan * 0`` is NaN), and its gradient with it.
    """
    if weight.dtype == jnp.bool_:
        return jnp.where(weight, loss, loss * 0)
    return loss * weight.astype(loss.dtype)
