"""l1_loss, mse_loss, huber_loss and smooth_l1_loss with torch.nn.functional's semantics.

Shared torch 2.13 behaviour, measured against torch itself:

* ``input`` and ``target`` broadcast against each other (torch warns when their
  shapes differ, and so does jaxloss); shapes that do not broadcast raise.
* ``weight`` (l1/mse/huber) must have exactly ``input``'s shape (torch raises for
  anything else, even a broadcastable shape); it multiplies the per-element loss.
  l1/mse ``"mean"`` then divides by ``sum(weight)``; huber ``"mean"`` divides by
  the number of elements.
* Gradients: ``|d|`` has gradient 0 at ``d = 0`` (torch's ``sgn``), not JAX's 1.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxloss import _validation as V
from jaxloss._dtypes import compute_dtype, result_dtype, tensor_result_dtype
from jaxloss._elementwise import abs_ as _abs
from jaxloss._elementwise import times_weight
from jaxloss._reduction import check_reduction, reduce


def _check_pair(fn: str, input, target, *, bool_target: bool) -> tuple[jax.Array, jax.Array, tuple[int, ...]]:
    """Validate input/target; return them and the broadcast shape (warning like torch when it differs)."""
    input = V.as_array("input", input)
    target = V.as_array("target", target)
    V.require_floating("input", input)
    if not V.is_real(target, allow_bool=bool_target):
        allowed = "floating or integer" + (" or bool" if bool_target else "")
        raise TypeError(f"target: expected a {allowed} array for {fn}, got dtype {target.dtype}")
    try:
        shape = tuple(np.broadcast_shapes(tuple(input.shape), tuple(target.shape)))
    except ValueError:
        raise ValueError(
            f"target: shape {tuple(target.shape)} does not broadcast with input shape {tuple(input.shape)}"
        ) from None
    if target.shape != input.shape:
        # torch 2.13 warns with these words and then broadcasts.
        V.warn_at_caller(
            f"{fn}: using a target size {tuple(target.shape)} that is different to the input size "
            f"{tuple(input.shape)}. This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size."
        )
    return input, target, shape


def _check_weight(weight, input: jax.Array) -> jax.Array | None:
    if weight is None:
        return None
    weight = V.as_array("weight", weight)
    if not any(jnp.issubdtype(weight.dtype, k) for k in (jnp.floating, jnp.integer, jnp.bool_)):
        raise TypeError(f"weight: expected a real array, got dtype {weight.dtype}")
    V.require_shape("weight", weight, input.shape, context="(the input's shape; torch does not broadcast weight)")
    return weight


@functools.partial(jax.jit, static_argnames=("kind", "reduction", "out_dtype", "param_checked"))
def _pointwise(x, t, weight, param, *, kind, reduction, out_dtype, param_checked=False):
    cdt = compute_dtype(result_dtype(x.dtype, t.dtype, None if weight is None else weight.dtype))
    d = x.astype(cdt) - t.astype(cdt)
    if kind == "l1":
        loss = _abs(d)
    elif kind == "mse":
        loss = d * d
    elif kind == "huber":
        delta = jnp.asarray(param, cdt)
        z = _abs(d)
        # The quadratic branch reads an infinite error as 0: unselected, its
        # gradient would be inf * 0 = NaN where torch's is +-delta. A NaN error keeps
        # its NaN gradient, as in torch.
        dq = jnp.where(jnp.isinf(d), jnp.zeros_like(d), d)
        # Likewise the linear branch reads delta as 0 where it is not selected: with
        # delta = inf its gradient would be inf * 0 = NaN where torch's is d.
        quad = z < delta
        dl = jnp.where(quad, jnp.zeros_like(delta), delta)
        loss = jnp.where(quad, 0.5 * dq * dq, dl * (z - 0.5 * dl))
        if not param_checked:
            # Only a traced delta can be <= 0 here. A concrete one was checked > 0
            # before the cast, and one that underflows to 0 in the compute dtype
            # (1e-50 in float32) gives torch's 0, not NaN.
            V.debug_check(delta > 0, "delta: huber_loss needs delta > 0")
            loss = jnp.where(delta > 0, loss, jnp.nan)
    else:  # smooth_l1
        beta = jnp.asarray(param, cdt)
        z = _abs(d)
        # beta = 0: ``z < 0`` never holds, so this is exactly |d| (torch's l1 path,
        # whose gradient at a NaN error is 0); the safe divisor and the quadratic
        # branch's 0 for an infinite error (and for every error when beta = 0) keep
        # the unused branch's gradient finite. A NaN error with beta > 0 keeps its
        # NaN gradient, as in torch.
        safe_beta = jnp.where(beta == 0, jnp.ones_like(beta), beta)
        dq = jnp.where(jnp.isinf(d) | (beta == 0), jnp.zeros_like(d), d)
        loss = jnp.where(z < beta, 0.5 * dq * dq / safe_beta, z - 0.5 * beta)
        V.debug_check(beta >= 0, "beta: smooth_l1_loss needs beta >= 0")
        loss = jnp.where(beta >= 0, loss, jnp.nan)
    if weight is None:
        return reduce(loss, reduction, dtype=out_dtype)
    loss = times_weight(loss, weight)
    if kind == "huber" or reduction != "mean":
        return reduce(loss, reduction, dtype=out_dtype)  # huber's weighted mean divides by numel
    # torch divides plainly by sum(weight): every weight zero gives NaN in the value
    # and in every gradient (0/0), which this reproduces (the helper's denominator
    # guard is for masked losses whose gradient torch keeps finite).
    return (reduce(loss, "sum") / jnp.sum(weight.astype(cdt))).astype(out_dtype)


def _run(fn, kind, input, target, weight, param, reduction, *, bool_target=True):
    # ``param`` passed check_scalar before _run is called: a concrete value is in range.
    param_checked = param is not None and not V.is_traced(param)
    # torch's weighted losses take another code path, which rejects "elementwise_mean"
    reduction = check_reduction(reduction, elementwise_mean=weight is None)
    input, target, shape = _check_pair(fn, input, target, bool_target=bool_target)
    weight = _check_weight(weight, input)
    wdt = None if weight is None or not jnp.issubdtype(weight.dtype, jnp.floating) else weight.dtype
    # torch's huber kernel writes into an array of the input's dtype; the others
    # promote input and target. A weight then multiplies the (broadcast) losses:
    # a 0-d weight does not promote losses with dimensions (torch's rule for 0-d
    # tensors), except in l1/mse's weighted "mean", which divides two 0-d sums.
    tdt = target.dtype if kind != "huber" and jnp.issubdtype(target.dtype, jnp.floating) else None
    loss_dtype = result_dtype(input.dtype, tdt)
    if weight is None:
        out_dtype = loss_dtype
    elif kind != "huber" and reduction == "mean":
        out_dtype = result_dtype(loss_dtype, wdt)
    else:
        out_dtype = tensor_result_dtype((loss_dtype, len(shape)), weight)
    return _pointwise(
        input, target, weight, param, kind=kind, reduction=reduction, out_dtype=out_dtype, param_checked=param_checked
    )


def l1_loss(
    input: ArrayLike,
    target: ArrayLike,
    *,
    reduction: str = "mean",
    weight: ArrayLike | None = None,
) -> jax.Array:
    r"""Mean absolute error, as ``torch.nn.functional.l1_loss`` (2.13), values and gradients.

    .. math::
        \ell_i = w_i\, |x_i - y_i|

    with :math:`w_i = 1` without ``weight``. ``"mean"``: :math:`\sum_i \ell_i / n`
    (:math:`n` elements) without weight, :math:`\sum_i \ell_i / \sum_i w_i` with
    it; ``"sum"``: :math:`\sum_i \ell_i`. The gradient at :math:`x_i = y_i` is 0.

    Args:
      input: any shape ``(*)``, floating.
      target: broadcastable with ``input`` (torch warns when the shapes differ,
        and so does jaxloss); floating or integer.
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``; torch's
        deprecated ``"elementwise_mean"`` is taken as ``"mean"``, with its warning
        (without ``weight``: torch rejects it with one, and so does jaxloss).
      weight: optional per-element weights of exactly ``input``'s shape (floating,
        integer or bool; a product, so a ``False`` weight on a NaN or infinite loss
        gives NaN, as in torch).

    Returns:
      ``"none"``: the broadcast shape of ``input`` and ``target``; otherwise a
      scalar. dtype: ``input``'s promoted with floating ``target``/``weight``.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x, y = jnp.array([1.0, -2.0, 3.0]), jnp.array([0.5, 0.0, 3.5])
      >>> round(float(jaxloss.l1_loss(x, y)), 4)
      1.0
      >>> round(float(jaxloss.l1_loss(x, y, weight=jnp.array([1.0, 0.0, 3.0]))), 4)
      0.5

    .. note::
       torch also accepts an integer ``input`` with a floating ``target``; jaxloss
       requires a floating ``input``. Every weight zero: the mean and its
       gradients are NaN (0/0), as in torch.
    """
    return _run("l1_loss", "l1", input, target, weight, None, reduction, bool_target=False)


def mse_loss(
    input: ArrayLike,
    target: ArrayLike,
    *,
    reduction: str = "mean",
    weight: ArrayLike | None = None,
) -> jax.Array:
    r"""Mean squared error, as ``torch.nn.functional.mse_loss`` (2.13), values and gradients.

    .. math::
        \ell_i = w_i\, (x_i - y_i)^2

    with :math:`w_i = 1` without ``weight``. ``"mean"``: :math:`\sum_i \ell_i / n`
    without weight, :math:`\sum_i \ell_i / \sum_i w_i` with it; ``"sum"``:
    :math:`\sum_i \ell_i`.

    Args:
      input: any shape ``(*)``, floating.
      target: broadcastable with ``input`` (torch warns when the shapes differ,
        and so does jaxloss); floating, integer or bool.
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``; torch's
        deprecated ``"elementwise_mean"`` is taken as ``"mean"``, with its warning
        (without ``weight``: torch rejects it with one, and so does jaxloss).
      weight: optional per-element weights of exactly ``input``'s shape (floating,
        integer or bool; a product, so a ``False`` weight on a NaN or infinite loss
        gives NaN, as in torch).

    Returns:
      ``"none"``: the broadcast shape of ``input`` and ``target``; otherwise a
      scalar. dtype: ``input``'s promoted with floating ``target``/``weight``.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x, y = jnp.array([1.0, -2.0, 3.0]), jnp.array([0.5, 0.0, 3.5])
      >>> round(float(jaxloss.mse_loss(x, y)), 4)
      1.5
      >>> round(float(jaxloss.mse_loss(x, y, weight=jnp.array([1.0, 0.0, 3.0]))), 4)
      0.25

    .. note::
       torch also accepts an integer ``input`` with a floating ``target``; jaxloss
       requires a floating ``input``. Every weight zero: the mean and its
       gradients are NaN (0/0), as in torch.
    """
    return _run("mse_loss", "mse", input, target, weight, None, reduction)


def huber_loss(
    input: ArrayLike,
    target: ArrayLike,
    *,
    reduction: str = "mean",
    delta: float | ArrayLike = 1.0,
    weight: ArrayLike | None = None,
) -> jax.Array:
    r"""Huber loss, as ``torch.nn.functional.huber_loss`` (2.13), values and gradients.

    .. math::
        \ell_i = w_i \begin{cases}
            \tfrac12 (x_i - y_i)^2 & |x_i - y_i| < \delta \\
            \delta\,(|x_i - y_i| - \tfrac12 \delta) & \text{otherwise}
        \end{cases}

    ``"mean"``: :math:`\sum_i \ell_i / n` over the :math:`n` elements, **with or
    without** ``weight`` (unlike l1/mse); ``"sum"``: :math:`\sum_i \ell_i`.

    Args:
      input: any shape ``(*)``, floating.
      target: broadcastable with ``input`` (torch warns when the shapes differ,
        and so does jaxloss); floating, integer or bool.
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``; torch's
        deprecated ``"elementwise_mean"`` is taken as ``"mean"``, with its warning
        (without ``weight``: torch rejects it with one, and so does jaxloss).
      delta: :math:`\delta > 0`; traced (changing it does not recompile).
      weight: optional per-element weights of exactly ``input``'s shape (floating,
        integer or bool; a product, so a ``False`` weight on a NaN or infinite loss
        gives NaN, as in torch).

    Returns:
      ``"none"``: the broadcast shape; otherwise a scalar. dtype: ``input``'s
      (torch does not promote with ``target`` here), promoted with a floating
      ``weight``.

    Raises:
      ValueError: ``delta <= 0`` (a concrete value), shapes that do not fit, an
        unknown ``reduction``.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x, y = jnp.array([1.0, -2.0, 3.0]), jnp.array([0.5, 0.0, 3.5])
      >>> round(float(jaxloss.huber_loss(x, y)), 4)
      0.5833
      >>> round(float(jaxloss.huber_loss(x, y, delta=2.0)), 4)
      0.75

    .. note::
       A traced ``delta <= 0`` cannot raise inside ``jax.jit``: the result is NaN
       (wrap in ``jax.experimental.checkify.checkify`` to get the error). A
       traced positive ``delta`` that underflows to 0 in the compute dtype is
       NaN too; a concrete one (a Python float such as ``1e-50`` with float32
       input) gives torch's 0. Every element is computed in at least float32 and
       the result cast once.
    """
    V.check_scalar("delta", delta, lo=0.0, lo_open=True)
    return _run("huber_loss", "huber", input, target, weight, delta, reduction)


def smooth_l1_loss(
    input: ArrayLike,
    target: ArrayLike,
    *,
    reduction: str = "mean",
    beta: float | ArrayLike = 1.0,
) -> jax.Array:
    r"""Smooth L1 loss, as ``torch.nn.functional.smooth_l1_loss`` (2.13), values and gradients.

    .. math::
        \ell_i = \begin{cases}
            \tfrac12 (x_i - y_i)^2 / \beta & |x_i - y_i| < \beta \\
            |x_i - y_i| - \tfrac12 \beta & \text{otherwise}
        \end{cases}

    ``beta = 0`` is exactly :func:`l1_loss` (value and gradient). ``"mean"``:
    :math:`\sum_i \ell_i / n`; ``"sum"``: :math:`\sum_i \ell_i`.

    Args:
      input: any shape ``(*)``, floating.
      target: broadcastable with ``input`` (torch warns when the shapes differ,
        and so does jaxloss); floating, integer or bool.
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``; torch's
        deprecated ``"elementwise_mean"`` is taken as ``"mean"``, with its warning.
      beta: :math:`\beta \ge 0`; traced (changing it, to 0 included, does not
        recompile).

    Returns:
      ``"none"``: the broadcast shape; otherwise a scalar, in ``input``'s dtype
      promoted with a floating ``target``.

    Raises:
      ValueError: ``beta < 0`` (a concrete value), shapes that do not fit, an
        unknown ``reduction``.
      TypeError: a non-floating ``input``, a complex ``target``.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x, y = jnp.array([1.0, -2.0, 3.0]), jnp.array([0.5, 0.0, 3.5])
      >>> round(float(jaxloss.smooth_l1_loss(x, y)), 4)
      0.5833
      >>> round(float(jaxloss.smooth_l1_loss(x, y, beta=0.0)), 4)
      1.0

    .. note::
       A traced ``beta < 0`` cannot raise inside ``jax.jit``: the result is NaN
       (wrap in ``jax.experimental.checkify.checkify`` to get the error). torch
       also accepts an integer ``input``; jaxloss requires a floating ``input``
       (a ``TypeError`` naming it), as :func:`l1_loss` and :func:`mse_loss` do.
    """
    V.check_scalar("beta", beta, lo=0.0)
    return _run("smooth_l1_loss", "smooth_l1", input, target, None, beta, reduction)
