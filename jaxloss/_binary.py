"""binary_cross_entropy and binary_cross_entropy_with_logits with torch.nn.functional's semantics."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike

from jaxloss import _validation as V
from jaxloss._dtypes import compute_dtype, result_dtype
from jaxloss._elementwise import log_sigmoid_, times_weight
from jaxloss._reduction import check_reduction, reduce

# torch's floor under p(1 - p) in the BCE gradient (aten/src/ATen/native/Loss.cpp, EPSILON):
# 1e-12 held as a float32 (9.99999996e-13), also in float64 computations.
_BCE_GRAD_EPS = float(np.float32(1e-12))
# torch clamps each log term of BCE at -100.
_BCE_LOG_FLOOR = -100.0


def _check_float_target(target: jax.Array, input: jax.Array) -> None:
    if not jnp.issubdtype(target.dtype, jnp.floating):
        raise TypeError(
            f"target: expected a floating-point array (probabilities in [0, 1]) with the input's shape "
            f"{tuple(input.shape)}, got dtype {target.dtype}; cast it, e.g. target.astype(input.dtype)"
        )
    V.require_shape("target", target, input.shape, context=f"(the shape of input {tuple(input.shape)})")


def _check_broadcast_weight(name: str, w, shape: tuple[int, ...], *, allow_bool: bool = True) -> jax.Array | None:
    """An optional ``w`` that broadcasts to ``shape`` without enlarging it (torch's rule).

    Floating, integer or (where torch accepts it: not ``pos_weight``) bool, as torch
    accepts them; integer and bool weights are not differentiable, and none of them
    changes the result's dtype."""
    if w is None:
        return None
    w = V.as_array(name, w)
    if not (jnp.issubdtype(w.dtype, jnp.integer) or (allow_bool and w.dtype == jnp.bool_)):
        V.require_floating(name, w)
    V.require_broadcastable(name, w.shape, shape, context="(the shape of input)")
    return w


@jax.custom_jvp
def _bce_terms(p: jax.Array, t: jax.Array) -> jax.Array:
    """Element-wise BCE, torch's forward: each log clamped at -100."""
    return (t - 1) * jnp.maximum(jnp.log1p(-p), _BCE_LOG_FLOOR) - t * jnp.maximum(jnp.log(p), _BCE_LOG_FLOOR)


def _bce_terms_jvp(primals, tangents):
    # torch's backward: d/dp = (p - t) / max((1 - p) p, 1e-12), finite at p in {0, 1}
    # where the clamped logs have no useful derivative; d/dt = -logit(p) (+-inf at p in {0, 1},
    # as in torch). Written with jnp ops so that it is itself differentiable (second order).
    # Symbolic zeros: an argument that is not differentiated (usually the target) adds
    # nothing, rather than inf * 0 = NaN at p in {0, 1}.
    p, t = primals
    p_dot, t_dot = tangents
    out = _bce_terms(p, t)
    tangent = jnp.zeros_like(out)
    if not isinstance(p_dot, SymbolicZero):
        tangent = tangent + (p - t) / jnp.maximum((1 - p) * p, _BCE_GRAD_EPS) * p_dot
    if not isinstance(t_dot, SymbolicZero):
        tangent = tangent + (jnp.log1p(-p) - jnp.log(p)) * t_dot
    return out, tangent


_bce_terms.defjvp(_bce_terms_jvp, symbolic_zeros=True)


@functools.partial(jax.jit, static_argnames=("reduction", "out_dtype"))
def _binary_cross_entropy(p, t, weight, *, reduction, out_dtype):
    cdt = compute_dtype(out_dtype)
    p = p.astype(cdt)
    t = t.astype(cdt)
    ok = (p >= 0) & (p <= 1) & (t >= 0) & (t <= 1)
    V.debug_check(jnp.all(ok), "input and target: all elements should be between 0 and 1")
    loss = _bce_terms(p, t)
    if weight is not None:
        loss = times_weight(loss, weight)
    # Out of [0, 1] (only possible under jit): NaN, never a finite number.
    loss = jnp.where(ok, loss, jnp.nan)
    return reduce(loss, reduction, dtype=out_dtype)


def binary_cross_entropy(
    input: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    r"""Binary cross entropy between probabilities and targets in [0, 1].

    Equals ``torch.nn.functional.binary_cross_entropy`` (2.13) in value and gradient.

    .. math::
        \ell_i = -w_i \left[ t_i \max(\log p_i, -100) + (1 - t_i) \max(\log(1 - p_i), -100) \right]

    ``"mean"`` is :math:`\frac{1}{n}\sum_i \ell_i` over all :math:`n` elements
    (not divided by the weights), ``"sum"`` is :math:`\sum_i \ell_i`. The gradient
    is torch's: :math:`w_i (p_i - t_i) / \max(p_i (1 - p_i), 10^{-12})` with respect
    to :math:`p_i`, finite at :math:`p_i \in \{0, 1\}`, and
    :math:`-w_i \operatorname{logit}(p_i)` with respect to :math:`t_i`.

    Args:
      input: probabilities :math:`p`, any shape (``()``, ``(N,)``, ``(N, *)``), floating.
      target: probabilities :math:`t` of the input's shape, floating.
      weight: optional rescaling weight that broadcasts to the input's shape
        (e.g. ``(N, 1)`` or a scalar).
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``; torch's
        deprecated ``"elementwise_mean"`` is taken as ``"mean"``, with its warning.

    Returns:
      ``"none"``: the loss per element, shaped like ``input``; ``"mean"``/``"sum"``: a
      scalar. The dtype is that of ``input`` and ``target`` (``weight`` does not
      promote it, as in torch).

    Raises:
      TypeError: a non-floating ``input`` or ``target``, or a ``weight`` that is
        neither floating, integer nor bool.
      ValueError: ``target`` of another shape, a ``weight`` that does not broadcast
        to the input, an unknown ``reduction``, or (concrete arrays) an element of
        ``input`` or ``target`` outside [0, 1] (NaN included).

    Example:
      >>> import jax, jax.numpy as jnp, jaxloss
      >>> p = jnp.array([0.9, 0.2, 0.0])
      >>> t = jnp.array([1.0, 0.0, 1.0])
      >>> [round(float(v), 5) for v in jaxloss.binary_cross_entropy(p, t, reduction="none")]
      [0.10536, 0.22314, 100.0]
      >>> [float(f"{float(g):.4g}") for g in jax.grad(lambda p: jaxloss.binary_cross_entropy(p, t))(p)]
      [-0.3704, 0.4167, -333300000000.0]

    .. note::
       Inside ``jax.jit`` values cannot raise: elements of ``input`` or ``target``
       outside [0, 1] make those losses NaN. Wrap the call in
       ``jax.experimental.checkify.checkify`` to get the error instead.

    .. note::
       torch requires ``input`` and ``target`` to share a dtype; jaxloss promotes
       them (bf16 with float32 gives float32). ``weight`` is differentiable here
       (torch implements no gradient for it). The second derivative at the clamp
       (:math:`p (1 - p) < 10^{-12}`) is the derivative of torch's first-order rule,
       which differs there from torch's own double-backward formula; elsewhere they
       agree.
    """
    input = V.as_array("input", input)
    target = V.as_array("target", target)
    V.require_floating("input", input)
    reduction = check_reduction(reduction, elementwise_mean=True)
    _check_float_target(target, input)
    weight = _check_broadcast_weight("weight", weight, input.shape)
    V.check_values("input", input, lambda p: (p >= 0) & (p <= 1), "all elements of input should be between 0 and 1")
    V.check_values("target", target, lambda t: (t >= 0) & (t <= 1), "all elements of target should be between 0 and 1")
    out_dtype = result_dtype(input.dtype, target.dtype)
    return _binary_cross_entropy(input, target, weight, reduction=reduction, out_dtype=out_dtype)


@jax.custom_jvp
def _bcel_terms(x, t, pw):
    """Element-wise BCE on logits (``pw``: ``pos_weight`` or None)."""
    log_sig = log_sigmoid_(x)  # -softplus(-x): exact for |x| up to the float range
    if pw is not None:
        log_sig = log_sig * (1 + (pw - 1) * t)
    return (1 - t) * x - log_sig


def _bcel_terms_jvp(primals, tangents):
    # torch's derivatives, each one expression: for the input sigmoid(x) - t, or with
    # pos_weight q (q t + 1 - t) sigmoid(x) - q t; for the target -x, or with q
    # log_sigmoid(-x) - q log_sigmoid(x). Autodiff of the formula splits them into
    # terms that an infinite weight multiplies one by one, or that are infinite at
    # x = -inf (inf - inf = NaN where torch's gradient is +-inf). The pos_weight
    # derivative (torch has none) is the formula's, -t log_sigmoid(x). Each is taken
    # only when perturbed (a zero tangent times an infinite partial would be NaN).
    # Written with jnp ops, so second derivatives work.
    x, t, pw = primals
    dx, dt, dpw = tangents
    out = _bcel_terms(x, t, pw)
    tangent = jnp.zeros_like(out)
    if not isinstance(dx, SymbolicZero):
        sig = jax.nn.sigmoid(x)
        if pw is None:
            g = sig - t
        else:
            qt = pw * t
            g = (qt + 1 - t) * sig - qt
        tangent = tangent + g * dx
    if not isinstance(dt, SymbolicZero):
        g = -x if pw is None else jax.nn.log_sigmoid(-x) - pw * jax.nn.log_sigmoid(x)
        tangent = tangent + g * dt
    if pw is not None and not isinstance(dpw, SymbolicZero):
        tangent = tangent - jax.nn.log_sigmoid(x) * (dpw * t)
    return out, tangent


_bcel_terms.defjvp(_bcel_terms_jvp, symbolic_zeros=True)


@functools.partial(jax.jit, static_argnames=("reduction", "out_dtype"))
def _binary_cross_entropy_with_logits(x, t, weight, pos_weight, *, reduction, out_dtype):
    cdt = compute_dtype(jnp.promote_types(x.dtype, out_dtype))
    x = x.astype(cdt)
    t = t.astype(cdt)
    loss = _bcel_terms(x, t, None if pos_weight is None else pos_weight.astype(cdt))
    if weight is not None:
        loss = times_weight(loss, weight)
    return reduce(loss, reduction, dtype=out_dtype)


def binary_cross_entropy_with_logits(
    input: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
    pos_weight: ArrayLike | None = None,
) -> jax.Array:
    r"""Binary cross entropy on logits, computed stably through :math:`\log\sigma`.

    Equals ``torch.nn.functional.binary_cross_entropy_with_logits`` (2.13) in
    value and gradient; stable for logits of any magnitude (tested to
    :math:`|x| = 10^4`). There is no clamp.

    .. math::
        \ell_i = w_i \left[ (1 - t_i)\, x_i - \bigl(1 + (q_i - 1)\, t_i\bigr) \log \sigma(x_i) \right],

    i.e. :math:`-w_i [q_i t_i \log\sigma(x_i) + (1 - t_i) \log(1 - \sigma(x_i))]`, with
    :math:`q` = ``pos_weight`` (1 when absent). ``"mean"`` divides
    :math:`\sum_i \ell_i` by the number of elements, ``"sum"`` is the sum.

    Args:
      input: logits :math:`x`, any shape (``()``, ``(N,)``, ``(N, *, C)``), floating.
      target: targets :math:`t` of the input's shape, floating (usually in [0, 1]).
      weight: optional rescaling weight that broadcasts to the input's shape
        (floating, integer or bool; a product, so a ``False`` weight on an infinite
        or NaN loss gives NaN, as in torch).
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``; torch's
        deprecated ``"elementwise_mean"`` is taken as ``"mean"``, with its warning.
      pos_weight: optional weight of the positive term, broadcast against the input
        from the last dimension: usually ``(C,)``, one per class (the last axis);
        any shape that broadcasts to the input's shape is accepted, as in torch.

    Returns:
      ``"none"``: the loss per element, shaped like ``input``; ``"mean"``/``"sum"``: a
      scalar. The dtype is ``target``'s, as in torch (``weight`` and
      ``pos_weight`` do not change it).

    Raises:
      TypeError: a non-floating ``input`` or ``target``, a ``weight`` that is neither
        floating, integer nor bool, or a ``pos_weight`` that is neither floating nor
        integer (torch rejects a bool one too).
      ValueError: ``target`` of another shape, ``weight`` or ``pos_weight`` that
        does not broadcast to the input, or an unknown ``reduction``.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x = jnp.array([[2.0, -1.0, 0.0], [1e4, -1e4, 3.0]])
      >>> t = jnp.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.5]])
      >>> loss = jaxloss.binary_cross_entropy_with_logits(
      ...     x, t, pos_weight=jnp.array([1.0, 2.0, 3.0]), reduction="none")
      >>> [[round(float(v), 4) for v in row] for row in loss]
      [[0.1269, 0.3133, 2.0794], [10000.0, 20000.0, 1.5972]]

    .. note::
       ``weight`` and ``pos_weight`` are differentiable here (torch implements no
       gradient for them). bf16/f16 losses are computed in float32 and rounded
       once, so they differ from torch's by torch's low-precision rounding
       (jaxloss is the closer to float64). The input and target gradients are
       torch's expressions, :math:`w_i((q_i t_i + 1 - t_i)\sigma(x_i) - q_i t_i)` and
       :math:`w_i(\log\sigma(-x_i) - q_i \log\sigma(x_i))` (:math:`-w_i x_i` without
       ``pos_weight``), so infinite weights, ``pos_weight`` entries or inputs give
       torch's infinities and NaNs.
    """
    input = V.as_array("input", input)
    target = V.as_array("target", target)
    V.require_floating("input", input)
    reduction = check_reduction(reduction, elementwise_mean=True)
    _check_float_target(target, input)
    weight = _check_broadcast_weight("weight", weight, input.shape)
    pos_weight = _check_broadcast_weight("pos_weight", pos_weight, input.shape, allow_bool=False)
    # torch builds the loss in place in a tensor of target's dtype.
    out_dtype = np.dtype(target.dtype)
    return _binary_cross_entropy_with_logits(
        input, target, weight, pos_weight, reduction=reduction, out_dtype=out_dtype
    )
