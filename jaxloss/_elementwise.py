"""Element-wise building blocks with torch's derivatives at their kinks and at NaN.

JAX's ``abs`` has the derivative 1 at 0 and -1 at NaN; torch's is ``sgn``, 0 at
both. torch's ``clamp_min(z, 0)`` passes the gradient where ``z >= 0`` and masks
NaN out. The losses that take absolute values or hinges use these, so that their
gradients are torch's at exact ties and on NaN entries too. ``exp_`` keeps
``exp(+inf) = inf`` inside XLA:CPU's fused loops.

``softplus_`` and ``log_sigmoid_`` are JAX's, written without a select. XLA:CPU
(jax 0.10) runs a reduction together with the element-wise work before it as one
YNNPACK kernel only when that work is arithmetic, ``min``, ``max``, ``abs``,
``exp``, ``log1p`` and the like; the select in ``jnp.logaddexp`` made it write the
per-element losses out first and read them back. Measured side by side, value
only, at 1024 x 1024, 2048 x 2048 and 4096 x 4096: 0.29x-0.52x the time for
``binary_cross_entropy_with_logits``, ``soft_margin_loss`` and
``multilabel_soft_margin_loss``.

What was measured and not taken (select-free forms that are exact): for huber,
smooth_l1, BCE's range check, gaussian_nll's variance check, the hinges' clamp
and the KL term, 0.3x-0.7x at 4096 x 4096 but 1.0x-3.1x (KL: 0.8x-1.5x) at the
two smaller sizes; ``max(exp(x), x)`` for ``exp_``, a faster value but a slower
``value_and_grad``; and Stirling's term, where XLA:CPU summed
``log(t) + 0.5 log(2 pi t)`` wrongly (two logs of proportional arguments in one
YNNPACK reduction: ``sum(log(u) + log(2u))`` came out ``2 sum(log(u))``). Those
kernels' ``min``/``max`` also drop NaN (``max(NaN, 0)`` is 0); in ``softplus_``
the NaN stays through ``log1p(exp(-|x|))``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sgn(d: jax.Array, dtype) -> jax.Array:
    """torch's ``sgn(d)`` in ``dtype``: -1, 0 or 1, and 0 at NaN."""
    return (d > 0).astype(dtype) - (d < 0).astype(dtype)


def pow_scalar(x: jax.Array, e: float) -> jax.Array:
    """torch's ``Tensor.pow(e)`` for a static Python exponent ``e``.

    torch's kernels compute the exponents 2, 3, -1, -2, 0.5 and -0.5 as ``x * x``,
    ``x * x * x``, ``1 / x``, ``1 / (x * x)``, ``sqrt(x)`` and ``rsqrt(x)`` (0 and 1
    as a fill and a copy); others go to ``pow``. The difference shows where a power
    leaves the float range, and in signs: ``1e20 ** -2`` is ``1 / inf = 0`` in
    float32 for torch (on CPU and CUDA), while a rounded ``pow`` gives the subnormal
    ``1e-40``, which XLA:CPU flushes to 0 and XLA:GPU keeps; ``(-0.0) ** -0.5`` is
    ``-inf`` (``pow``'s is ``+inf``). Written out, the result is torch's on every
    backend (torch's CPU ``sqrt`` itself is not always the rounded square root:
    3162277.5 for ``sqrt(1e13)`` in float32, where the rounded one is 3162277.75)."""
    if e == 0:
        return jnp.ones_like(x)  # torch fills 1 (NaN ** 0 too)
    if e == 1:
        return x
    if e == 2:
        return x * x
    if e == 3:
        return x * x * x
    if e == -1:
        return 1 / x
    if e == -2:
        return 1 / (x * x)
    if e == 0.5:
        return jnp.sqrt(x)
    if e == -0.5:
        return 1 / jnp.sqrt(x)
    return x**e


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


def _softplus_value(x: jax.Array) -> jax.Array:
    # jnp.logaddexp(x, 0)'s own expression, less its select for a NaN difference
    # (x - 0 is NaN only for a NaN x, which makes the log1p term NaN anyway).
    return jnp.maximum(x, jnp.zeros_like(x)) + jnp.log1p(jnp.exp(-jnp.abs(x)))


@jax.custom_jvp
def softplus_(x: jax.Array) -> jax.Array:
    """``jax.nn.softplus`` (its values and derivatives) written without a select.

    Differentiated, it is ``jax.nn.softplus`` itself (value and derivatives, every
    order): XLA fuses that with the derivative's work, where the select-free value
    beside it measured up to 2x slower.
    """
    return _softplus_value(x)


@softplus_.defjvp
def _softplus_jvp(primals, tangents):
    return jax.jvp(jax.nn.softplus, primals, tangents)


def log_sigmoid_(x: jax.Array) -> jax.Array:
    """``jax.nn.log_sigmoid`` (its values and derivatives) written without a select."""
    return -softplus_(-x)
