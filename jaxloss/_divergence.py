"""kl_div, poisson_nll_loss and gaussian_nll_loss with torch.nn.functional's semantics."""

from __future__ import annotations

import functools
import math
from numbers import Real

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxloss import _validation as V
from jaxloss._dtypes import compute_dtype, tensor_result_dtype
from jaxloss._elementwise import exp_ as _exp
from jaxloss._reduction import check_reduction, reduce

KL_REDUCTIONS: tuple[str, ...] = ("none", "batchmean", "mean", "sum")


def _check_broadcast_target(target: jax.Array, input: jax.Array) -> tuple[int, ...]:
    """torch broadcasts ``input`` and ``target`` in these losses; return the result shape."""
    try:
        return tuple(np.broadcast_shapes(tuple(input.shape), tuple(target.shape)))
    except ValueError:
        raise ValueError(
            f"target: shape {tuple(target.shape)} does not broadcast with input shape {tuple(input.shape)}"
        ) from None


# ----------------------------------------------------------------------------- kl_div


@functools.partial(jax.jit, static_argnames=("reduction", "log_target", "out_dtype"))
def _kl_div(x, t, *, reduction, log_target, out_dtype):
    cdt = compute_dtype(out_dtype)
    batch = x.shape[0] if x.ndim else None
    x = x.astype(cdt)
    t = t.astype(cdt)
    if log_target:
        loss = _exp(t) * (t - x)
    else:
        # xlogy(t, t) - t x: a zero target contributes exactly 0. The log never sees the
        # zero, so the target gradient there is finite (-x) where torch's is NaN (0/0).
        zero = t == 0
        loss = jnp.where(zero, 0, t * jnp.log(jnp.where(zero, 1, t))) - t * x
    if reduction == "batchmean":
        if batch is None:  # torch: a 0-d input's batchmean is the sum
            return reduce(loss, "sum", dtype=out_dtype)
        return reduce(loss, "mean", denominator=jnp.asarray(batch, cdt), dtype=out_dtype)
    return reduce(loss, reduction, dtype=out_dtype)


def kl_div(
    input: ArrayLike,
    target: ArrayLike,
    *,
    reduction: str = "mean",
    log_target: bool = False,
) -> jax.Array:
    r"""Kullback-Leibler divergence of ``target`` from log-probabilities ``input``.

    Equals ``torch.nn.functional.kl_div`` (2.13) in value and gradient.

    .. math::
        \ell_i = t_i (\log t_i - x_i) \quad (0 \text{ where } t_i = 0), \qquad
        \ell_i = e^{t_i} (t_i - x_i) \quad \text{with } \texttt{log\_target=True}.

    Reductions: ``"sum"`` is :math:`\sum_i \ell_i`; ``"batchmean"`` is the sum
    divided by ``input.shape[0]`` (the KL divergence per sample; a 0-d input gives
    the sum); ``"mean"`` divides by the number of elements of the result (torch
    warns that this is not the KL divergence).

    Args:
      input: log-probabilities :math:`x`, any shape (``(N, *)``, ``()``), floating.
      target: probabilities :math:`t` (log-probabilities with ``log_target``),
        floating, of a shape that broadcasts with ``input`` (as in torch).
      reduction: ``"none"`` | ``"batchmean"`` | ``"mean"`` | ``"sum"``; torch's
        deprecated ``"elementwise_mean"`` is taken as ``"mean"``, with its warning.
      log_target: whether ``target`` is given in log space.

    Returns:
      ``"none"``: the loss per element, of the broadcast shape of ``input`` and
      ``target``; otherwise a scalar. The dtype is the promoted dtype of ``input``
      and ``target``.

    Raises:
      TypeError: a non-floating ``input`` or ``target``, or ``log_target`` not a bool.
      ValueError: shapes that do not broadcast, or an unknown ``reduction``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxloss
      >>> logp = jax.nn.log_softmax(jnp.array([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]]))
      >>> t = jnp.array([[0.2, 0.8, 0.0], [0.1, 0.1, 0.8]])
      >>> round(float(jaxloss.kl_div(logp, t, reduction="batchmean")), 5)
      0.10993

    .. note::
       With ``log_target=False`` torch's gradient with respect to ``target`` is NaN
       where ``target == 0`` (0/0 in ``xlogy``'s backward); jaxloss gives
       :math:`-x_i` there (the gradient of :math:`-t_i x_i`, the ``t log t`` term
       contributing 0), and torch's value everywhere else. torch warns for
       ``reduction="mean"``; jaxloss does not.
    """
    input = V.as_array("input", input)
    target = V.as_array("target", target)
    V.require_floating("input", input)
    V.require_floating("target", target)
    reduction = check_reduction(reduction, KL_REDUCTIONS, elementwise_mean=True)
    log_target = V.require_static_bool("log_target", log_target)
    _check_broadcast_target(target, input)
    out_dtype = tensor_result_dtype(input, target)  # a 0-d target does not promote: torch's rule
    return _kl_div(input, target, reduction=reduction, log_target=log_target, out_dtype=out_dtype)


# ----------------------------------------------------------------------------- poisson_nll_loss


@functools.partial(jax.jit, static_argnames=("log_input", "full", "reduction", "out_dtype"))
def _poisson_nll_loss(x, t, eps, *, log_input, full, reduction, out_dtype):
    cdt = compute_dtype(out_dtype)
    x = x.astype(cdt)
    t = t.astype(cdt)
    if log_input:
        loss = _exp(x) - t * x
    else:
        loss = x - t * jnp.log(x + jnp.asarray(eps, cdt))
    if full:
        # Stirling's approximation of log(t!), added except where t <= 1 (torch masks
        # those); the masked entries never reach the log, so their gradient is 0. A NaN
        # target is not masked, as in torch: its gradient is NaN, not the other terms'.
        big = ~(t <= 1)
        ts = jnp.where(big, t, 2)
        stirling = ts * jnp.log(ts) - ts + 0.5 * jnp.log(2 * math.pi * ts)
        loss = loss + jnp.where(big, stirling, 0)
    return reduce(loss, reduction, dtype=out_dtype)


def poisson_nll_loss(
    input: ArrayLike,
    target: ArrayLike,
    *,
    log_input: bool = True,
    full: bool = False,
    eps: float | ArrayLike = 1e-8,
    reduction: str = "mean",
) -> jax.Array:
    r"""Negative log-likelihood of ``target`` under a Poisson distribution.

    Equals ``torch.nn.functional.poisson_nll_loss`` (2.13) in value and gradient.

    .. math::
        \ell_i = e^{x_i} - t_i x_i \quad (\texttt{log\_input=True}), \qquad
        \ell_i = x_i - t_i \log(x_i + \varepsilon) \quad (\texttt{log\_input=False}),

    plus, with ``full=True``, Stirling's term
    :math:`t_i \log t_i - t_i + \tfrac12 \log(2\pi t_i)` where :math:`t_i > 1`
    (nothing where :math:`t_i \le 1`). ``"mean"`` divides :math:`\sum_i \ell_i`
    by the number of elements, ``"sum"`` is the sum.

    Args:
      input: the rate's log (``log_input=True``) or the rate, any shape, floating.
      target: counts :math:`t`, floating or integer, of a shape that broadcasts
        with ``input`` (as in torch).
      log_input: whether ``input`` is :math:`\log \lambda`.
      full: add Stirling's approximation of :math:`\log(t!)`.
      eps: :math:`\varepsilon`, added to the rate before the log when
        ``log_input=False``; traced, so changing it does not recompile.
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Returns:
      ``"none"``: the loss per element, of the broadcast shape of ``input`` and
      ``target``; otherwise a scalar. The dtype is the promoted floating dtype of
      ``input`` and ``target`` (an integer target does not promote it).

    Raises:
      TypeError: a non-floating ``input``, a non-numeric ``target``, non-bool
        ``log_input``/``full`` or non-scalar ``eps``.
      ValueError: shapes that do not broadcast, or an unknown ``reduction``.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> log_rate = jnp.array([0.5, -1.0, 2.0])
      >>> counts = jnp.array([1.0, 0.0, 6.0])
      >>> round(float(jaxloss.poisson_nll_loss(log_rate, counts)), 5)
      -1.03145
      >>> round(float(jaxloss.poisson_nll_loss(log_rate, counts, full=True)), 5)
      1.15701

    .. note::
       With ``full=True`` torch's gradient with respect to ``target`` is NaN where
       ``target <= 0`` (its masked Stirling term still differentiates
       :math:`t \log t` there: :math:`0 \cdot (\log 0 + 1/0)` at 0, the log of a
       negative number below); jaxloss gives the finite gradient of the unmasked
       terms there, and torch's value everywhere else.
    """
    input = V.as_array("input", input)
    target = V.as_array("target", target)
    V.require_floating("input", input)
    if not V.is_real(target):
        raise TypeError(f"target: expected a real array (counts), got dtype {target.dtype}")
    check_reduction(reduction)
    log_input = V.require_static_bool("log_input", log_input)
    full = V.require_static_bool("full", full)
    V.check_scalar("eps", eps)
    _check_broadcast_target(target, input)
    out_dtype = tensor_result_dtype(input, target)  # a 0-d target does not promote: torch's rule
    return _poisson_nll_loss(input, target, eps, log_input=log_input, full=full, reduction=reduction, out_dtype=out_dtype)


# ----------------------------------------------------------------------------- gaussian_nll_loss


def _is_python_scalar(x: jax.Array) -> bool:
    """A weakly typed 0-d float or int: a Python number, traced or wrapped by ``jnp.asarray``."""
    return x.ndim == 0 and bool(x.weak_type) and V.is_real(x, allow_bool=False)


def _gaussian_var_shape(var_shape: tuple[int, ...], in_shape: tuple[int, ...]) -> tuple[int, ...]:
    """torch's accepted ``var`` shapes; return the shape ``var`` is viewed as."""
    if var_shape == in_shape:
        return var_shape
    if in_shape and in_shape[:-1] == var_shape:  # one dimension short: homoscedastic last axis
        return var_shape + (1,)
    if len(var_shape) == len(in_shape) and sum(v for i, v in zip(in_shape, var_shape) if i != v) == 1:
        # a single mismatched dimension, of size 1 in var (e.g. (N, 1) or (N, 1, H, W))
        return var_shape
    raise ValueError(
        f"var: expected a float, the input's shape {in_shape}, that shape without its last dimension "
        f"{in_shape[:-1]}, or the input's shape with one dimension of size 1, got shape {var_shape}"
    )


@jax.custom_jvp
def _clamp_min_straight_through(var, eps):
    """``max(var, eps)`` whose derivative passes straight through to ``var`` as if it were
    not clamped, at every order: torch clamps ``var`` under ``no_grad``. Written as a
    rule rather than ``sg(max(var, eps)) + (var - sg(var))``, which is NaN for an
    infinite ``var`` (torch: an infinite variance gives an infinite loss)."""
    return jnp.maximum(var, eps)


@_clamp_min_straight_through.defjvp
def _clamp_min_straight_through_jvp(primals, tangents):
    var, eps = primals
    out = _clamp_min_straight_through(var, eps)
    return out, jnp.broadcast_to(tangents[0], out.shape)


@functools.partial(jax.jit, static_argnames=("var_shape", "full", "reduction", "out_dtype"))
def _gaussian_nll_loss(x, t, var, eps, *, var_shape, full, reduction, out_dtype):
    cdt = compute_dtype(out_dtype)
    x = x.astype(cdt)
    t = t.astype(cdt)
    var = jnp.reshape(jnp.asarray(var, cdt), var_shape)
    eps = jnp.asarray(eps, cdt)
    negative = var < 0
    V.debug_check(~jnp.any(negative), "var: has negative entry/entries")
    v = _clamp_min_straight_through(var, eps)
    loss = 0.5 * (jnp.log(v) + (x - t) ** 2 / v)
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    loss = jnp.where(negative, jnp.nan, loss)
    return reduce(loss, reduction, dtype=out_dtype)


def gaussian_nll_loss(
    input: ArrayLike,
    target: ArrayLike,
    var: ArrayLike | float,
    *,
    full: bool = False,
    eps: float | ArrayLike = 1e-6,
    reduction: str = "mean",
) -> jax.Array:
    r"""Negative log-likelihood of ``target`` under a Gaussian with mean ``input`` and variance ``var``.

    Equals ``torch.nn.functional.gaussian_nll_loss`` (2.13) in value and gradient.

    .. math::
        \ell_i = \tfrac12 \left( \log v_i + \frac{(x_i - t_i)^2}{v_i} \right)
                 \;\bigl(+ \tfrac12 \log 2\pi \text{ with } \texttt{full}\bigr),
        \qquad v_i = \max(\mathrm{var}_i, \varepsilon),

    where the clamp passes the gradient straight through to ``var`` (torch clamps
    under ``no_grad``). ``"mean"`` divides :math:`\sum_i \ell_i` by the number of
    elements, ``"sum"`` is the sum.

    Args:
      input: the means :math:`x`, any shape ``(N, *)`` or ``()``, floating.
      target: samples :math:`t`, floating or integer, of a shape that broadcasts
        with ``input`` (as in torch).
      var: the variances: a Python float (the same for every element; traced, so
        changing it does not recompile), an array of the input's shape, of the
        input's shape without its last dimension (one variance per row), or of the
        input's shape with exactly one dimension of size 1 (e.g. ``(N, 1)``). A
        Python number that ``jax.jit``, ``jax.grad`` or ``jnp.asarray`` has made a
        weakly typed 0-d array is still taken as a Python number, so
        ``jax.jit(gaussian_nll_loss)(x, t, 0.5)`` works; a 0-d array of a fixed
        dtype (``jnp.float32(0.5)``) follows torch's rule for a 0-d tensor.
      full: add the constant :math:`\tfrac12 \log 2\pi`.
      eps: :math:`\varepsilon`, the floor under ``var``; traced.
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Returns:
      ``"none"``: the loss per element, of the broadcast shape of ``input``,
      ``target`` and ``var``; otherwise a scalar. The dtype is the promoted floating
      dtype of the arrays (a Python float ``var`` does not promote it).

    Raises:
      TypeError: non-floating ``input`` or ``var``, non-bool ``full``, non-scalar ``eps``.
      ValueError: ``var`` of another shape, a ``target`` that does not broadcast,
        an unknown ``reduction``, or (concrete values) a negative ``var``.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> mean = jnp.array([[0.5, 1.0], [2.0, -1.0]])
      >>> y = jnp.array([[0.0, 1.5], [2.5, -1.0]])
      >>> round(float(jaxloss.gaussian_nll_loss(mean, y, jnp.array([0.5, 2.0]))), 5)
      0.14062
      >>> round(float(jaxloss.gaussian_nll_loss(mean, y, 1.0, full=True)), 5)
      1.01269

    .. note::
       A negative ``var`` raises ``ValueError`` when it is concrete, as in torch;
       inside ``jax.jit`` the losses where it is negative are NaN (wrap the call in
       ``jax.experimental.checkify.checkify`` to get the error). torch accepts only
       a Python ``float`` as a scalar ``var``; jaxloss also takes a Python ``int``.
    """
    input = V.as_array("input", input)
    target = V.as_array("target", target)
    V.require_floating("input", input)
    if not V.is_real(target):
        raise TypeError(f"target: expected a real array, got dtype {target.dtype}")
    full = V.require_static_bool("full", full)
    V.check_scalar("eps", eps)
    check_reduction(reduction)
    _check_broadcast_target(target, input)
    if isinstance(var, bool):
        raise TypeError("var: expected a float or a floating-point array, got bool")
    if isinstance(var, Real):
        if var < 0:
            raise ValueError(f"var: has negative entry/entries (var={var})")
        var_shape: tuple[int, ...] = ()
        var_dtype = None
    elif _is_python_scalar(var := V.as_array("var", var)):
        # JAX's mark of a Python scalar: a float or int passed through jax.jit (or
        # jnp.asarray(0.5)) is taken as the Python number it was, not as a 0-d array. A
        # 0-d array of a fixed dtype keeps torch's shape rule (torch rejects a 0-d tensor
        # var for an input of two or more dimensions).
        V.check_values("var", var, lambda v: ~(v < 0), "has negative entry/entries")
        var_shape = ()
        var_dtype = None
    else:
        V.require_floating("var", var)
        var_shape = _gaussian_var_shape(tuple(var.shape), tuple(input.shape))
        V.require_broadcastable("var", var_shape, input.shape, context="(the shape of input)")
        V.check_values("var", var, lambda v: ~(v < 0), "has negative entry/entries")
        var_dtype = var.dtype
    # torch: 0.5 * (log(var) + (input - target) ** 2 / var), var one dimension short
    # unsqueezed; a 0-d operand does not promote one with dimensions.
    diff = (tensor_result_dtype(input, target), max(input.ndim, target.ndim))
    out_dtype = tensor_result_dtype(diff, None if var_dtype is None else (var_dtype, len(var_shape)))
    return _gaussian_nll_loss(
        input, target, var, eps, var_shape=var_shape, full=full, reduction=reduction, out_dtype=out_dtype
    )
