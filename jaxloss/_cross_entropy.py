"""cross_entropy and nll_loss with torch.nn.functional's semantics."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxloss import _validation as V
from jaxloss._dtypes import compute_dtype, result_dtype
from jaxloss._reduction import check_reduction, reduce


def _class_axis(x: jax.Array) -> int:
    return 0 if x.ndim == 1 else 1


def _check_class_target(fn: str, input: jax.Array, target: jax.Array) -> None:
    """Class-index target: integer, and input's shape without the class axis."""
    V.require_ndim("input", input, range(1, 1 << 30), what=f"(C,), (N, C) or (N, C, d_1, ..., d_K) for {fn}")
    ax = _class_axis(input)
    expected = input.shape[:ax] + input.shape[ax + 1 :]
    if jnp.issubdtype(target.dtype, jnp.floating):
        raise TypeError(
            f"target: class-index targets must be integers, got dtype {target.dtype} with shape "
            f"{tuple(target.shape)}"
            + (
                "; floating targets (class probabilities) must have the input's shape "
                f"{tuple(input.shape)}"
                if fn == "cross_entropy"
                else "; nll_loss takes class indices only"
            )
        )
    V.require_integer("target", target, "class indices")
    V.require_shape("target", target, expected, context=f"for input {tuple(input.shape)}")


def _check_class_weight(weight, num_classes: int) -> jax.Array | None:
    if weight is None:
        return None
    weight = V.as_array("weight", weight)
    V.require_floating("weight", weight)
    V.require_shape("weight", weight, (num_classes,), context=f"(one per class, C={num_classes})")
    return weight


def _check_indices_in_range(target, num_classes: int, ignore_index: int) -> None:
    V.check_values(
        "target",
        target,
        lambda t: ((t >= 0) & (t < num_classes)) | (t == ignore_index),
        f"class indices must be in [0, {num_classes}) or equal ignore_index={ignore_index}",
    )


def _log_normaliser(x: jax.Array, ax: int) -> tuple[jax.Array, jax.Array]:
    """(m, s) with logsumexp(x) = m + s, m the max along ``ax`` (kept dims).

    ``m`` carries no gradient: every expression below is exactly independent of
    the value of ``m``, so this is correct at every order. Writing ``lse - x_c``
    as ``(m - x_c) + s`` keeps full precision for huge logits.
    """
    m = jax.lax.stop_gradient(jnp.max(x, axis=ax, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, 0)
    s = jnp.log(jnp.sum(jnp.exp(x - m), axis=ax, keepdims=True))
    return m, s


def _pick(x: jax.Array, idx: jax.Array, ax: int) -> jax.Array:
    return jnp.take_along_axis(x, jnp.expand_dims(idx, ax), axis=ax).squeeze(ax)


def _class_weight_view(weight: jax.Array, ndim: int, ax: int) -> jax.Array:
    return weight.reshape((-1,) + (1,) * (ndim - ax - 1))


@functools.partial(jax.jit, static_argnames=("ignore_index", "reduction", "out_dtype"))
def _cross_entropy_indices(x, target, weight, label_smoothing, *, ignore_index, reduction, out_dtype):
    ax = _class_axis(x)
    C = x.shape[ax]
    x = x.astype(compute_dtype(x.dtype))
    m, s = _log_normaliser(x, ax)
    active = target != ignore_index
    in_range = (target >= 0) & (target < C)
    safe = jnp.where(active & in_range, target, 0)
    nll = (_pick(m - x, safe, ax) + s.squeeze(ax))  # -log p[target]
    w_t = jnp.ones_like(nll) if weight is None else weight.astype(x.dtype)[safe]
    w_t = jnp.where(active, w_t, 0)
    loss = w_t * nll
    if label_smoothing is not None:
        eps = jnp.asarray(label_smoothing, x.dtype)
        # sum_c w_c * (-log p_c) = sum_c w_c (m - x_c) + s * sum_c w_c
        if weight is None:
            smooth = jnp.sum(m - x, axis=ax) + C * s.squeeze(ax)
        else:
            wv = _class_weight_view(weight.astype(x.dtype), x.ndim, ax)
            smooth = jnp.sum(wv * (m - x), axis=ax) + jnp.sum(wv) * s.squeeze(ax)
        loss = (1 - eps) * loss + (eps / C) * jnp.where(active, smooth, 0)
    V.debug_check(jnp.all(in_range | ~active), f"target: class index out of range [0, {C}) (and not ignore_index)")
    loss = jnp.where(active & ~in_range, jnp.nan, loss)
    return reduce(loss, reduction, denominator=jnp.sum(w_t), dtype=out_dtype)


@functools.partial(jax.jit, static_argnames=("reduction", "out_dtype"))
def _cross_entropy_probs(x, target, weight, label_smoothing, *, reduction, out_dtype):
    ax = _class_axis(x)
    C = x.shape[ax]
    cdt = compute_dtype(out_dtype)
    x = x.astype(cdt)
    t = target.astype(cdt)
    if label_smoothing is not None:
        eps = jnp.asarray(label_smoothing, cdt)
        t = t * (1 - eps) + eps / C
    m, s = _log_normaliser(x, ax)
    logp = x - m - s
    if weight is not None:
        t = t * _class_weight_view(weight.astype(cdt), x.ndim, ax)
    loss = -jnp.sum(t * logp, axis=ax)
    return reduce(loss, reduction, dtype=out_dtype)


def cross_entropy(
    input: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float | ArrayLike = 0.0,
) -> jax.Array:
    r"""Cross entropy between unnormalised logits and class indices or class probabilities.

    Equals ``torch.nn.functional.cross_entropy`` (2.13) in value and gradient.

    With class-index targets :math:`y_n` and smoothing :math:`\varepsilon`:

    .. math::
        \ell_n = (1-\varepsilon)\, w_{y_n} (-\log p_{n,y_n})
                 + \frac{\varepsilon}{C} \sum_c w_c (-\log p_{n,c}),
        \qquad p_{n,c} = \operatorname{softmax}(x_n)_c,

    and :math:`\ell_n = 0` where :math:`y_n` = ``ignore_index``. ``"mean"``
    divides :math:`\sum_n \ell_n` by :math:`\sum_n w_{y_n}` over the targets that
    are not ignored (the number of them without ``weight``); if every target is
    ignored the mean is NaN, the sum is 0 and the gradient is zero.

    With probability targets :math:`t_{n,c}`, smoothed to
    :math:`(1-\varepsilon) t_{n,c} + \varepsilon / C`:

    .. math::
        \ell_n = -\sum_c w_c\, t_{n,c} \log p_{n,c},

    and ``"mean"`` divides by the number of samples :math:`N d_1 \cdots d_K`
    (not by the weights).

    Args:
      input: logits of shape ``(C,)``, ``(N, C)`` or ``(N, C, d_1, ..., d_K)``;
        any floating dtype (computed in at least float32).
      target: class indices of shape ``()``, ``(N,)`` or ``(N, d_1, ..., d_K)``,
        any integer dtype, each in ``[0, C)`` or equal to ``ignore_index``; or
        class probabilities with the input's shape, floating.
      weight: optional class weights of shape ``(C,)``.
      ignore_index: a class-index target value that contributes nothing (class
        targets only).
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
      label_smoothing: :math:`\varepsilon \in [0, 1]`; traced, so changing it does
        not recompile (a literal ``0.0`` compiles a path without the smoothing term).

    Returns:
      ``"none"``: the per-sample loss, shaped like the class-index target
      (``input`` without the class axis); ``"mean"``/``"sum"``: a scalar. The dtype
      is torch's: the promoted floating dtype of ``input`` (and of ``weight`` and
      probability targets).

    Raises:
      TypeError: ``target`` of the wrong kind (float where indices are expected).
      ValueError: shapes that do not fit, an unknown ``reduction``,
        ``label_smoothing`` outside [0, 1], ``ignore_index`` with probability
        targets, or (when the arrays are concrete) a class index out of range.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> logits = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
      >>> round(float(jaxloss.cross_entropy(logits, jnp.array([0, 2]))), 4)
      0.1755
      >>> round(float(jaxloss.cross_entropy(logits, jnp.array([0, -100]))), 4)
      0.2413

    .. note::
       Inside ``jax.jit`` values cannot raise: an out-of-range class index makes
       the result NaN (never a silently wrong number). Wrap the call in
       ``jax.experimental.checkify.checkify`` to get the error instead.

    .. note::
       torch ignores ``ignore_index`` when the targets are probabilities; jaxloss
       raises ``ValueError`` if it is set to anything but the default. torch
       requires ``weight`` to have the input's dtype; jaxloss promotes them.
       ``weight`` is differentiable here (torch implements no gradient for it
       with class-index targets).
    """
    input = V.as_array("input", input)
    target = V.as_array("target", target)
    V.require_floating("input", input)
    check_reduction(reduction)
    ignore_index = V.require_static_int("ignore_index", ignore_index)
    V.check_scalar("label_smoothing", label_smoothing, lo=0.0, hi=1.0)
    V.require_ndim("input", input, range(1, 1 << 30), what="(C,), (N, C) or (N, C, d_1, ..., d_K)")
    ax = _class_axis(input)
    C = input.shape[ax]
    smoothing = None if (isinstance(label_smoothing, (int, float)) and label_smoothing == 0) else label_smoothing
    if jnp.issubdtype(target.dtype, jnp.floating) and target.shape == input.shape:
        if ignore_index != -100:
            raise ValueError(
                f"ignore_index: only applies to class-index targets, got ignore_index={ignore_index} "
                "with probability targets"
            )
        weight = _check_class_weight(weight, C)
        out_dtype = result_dtype(input.dtype, target.dtype, None if weight is None else weight.dtype)
        return _cross_entropy_probs(input, target, weight, smoothing, reduction=reduction, out_dtype=out_dtype)
    _check_class_target("cross_entropy", input, target)
    weight = _check_class_weight(weight, C)
    _check_indices_in_range(target, C, ignore_index)
    out_dtype = result_dtype(input.dtype, None if weight is None else weight.dtype)
    return _cross_entropy_indices(
        input, target, weight, smoothing, ignore_index=ignore_index, reduction=reduction, out_dtype=out_dtype
    )


@functools.partial(jax.jit, static_argnames=("ignore_index", "reduction", "out_dtype"))
def _nll_loss(x, target, weight, *, ignore_index, reduction, out_dtype):
    ax = _class_axis(x)
    C = x.shape[ax]
    x = x.astype(compute_dtype(x.dtype))
    active = target != ignore_index
    in_range = (target >= 0) & (target < C)
    safe = jnp.where(active & in_range, target, 0)
    picked = _pick(x, safe, ax)
    w_t = jnp.ones_like(picked) if weight is None else weight.astype(x.dtype)[safe]
    w_t = jnp.where(active, w_t, 0)
    loss = jnp.where(active, -w_t * picked, 0)
    V.debug_check(jnp.all(in_range | ~active), f"target: class index out of range [0, {C}) (and not ignore_index)")
    loss = jnp.where(active & ~in_range, jnp.nan, loss)
    return reduce(loss, reduction, denominator=jnp.sum(w_t), dtype=out_dtype)


def nll_loss(
    input: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> jax.Array:
    r"""Negative log-likelihood of class indices under log-probabilities.

    Equals ``torch.nn.functional.nll_loss`` (2.13) in value and gradient.

    .. math::
        \ell_n = -w_{y_n} x_{n, y_n}, \qquad \ell_n = 0 \text{ where } y_n = \text{ignore\_index}.

    ``"mean"`` divides :math:`\sum_n \ell_n` by :math:`\sum_n w_{y_n}` over the
    targets that are not ignored (NaN if all are ignored, with a zero gradient).
    ``nll_loss(log_softmax(x), y) == cross_entropy(x, y)``.

    Args:
      input: log-probabilities of shape ``(C,)``, ``(N, C)`` or
        ``(N, C, d_1, ..., d_K)``.
      target: class indices of shape ``()``, ``(N,)`` or ``(N, d_1, ..., d_K)``,
        any integer dtype.
      weight: optional class weights of shape ``(C,)``.
      ignore_index: a target value that contributes nothing.
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Returns:
      ``"none"``: per-sample losses shaped like ``target``; otherwise a scalar,
      in the promoted floating dtype of ``input`` and ``weight``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxloss
      >>> logp = jax.nn.log_softmax(jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]]))
      >>> round(float(jaxloss.nll_loss(logp, jnp.array([0, 2]))), 4)
      0.1755

    .. note::
       Out-of-range class indices raise ``ValueError`` on concrete arrays and make
       the result NaN inside ``jax.jit`` (use ``checkify`` to get the error).
       ``weight`` is differentiable here; torch implements no gradient for it.
    """
    input = V.as_array("input", input)
    target = V.as_array("target", target)
    V.require_floating("input", input)
    check_reduction(reduction)
    ignore_index = V.require_static_int("ignore_index", ignore_index)
    _check_class_target("nll_loss", input, target)
    C = input.shape[_class_axis(input)]
    weight = _check_class_weight(weight, C)
    _check_indices_in_range(target, C, ignore_index)
    out_dtype = result_dtype(input.dtype, None if weight is None else weight.dtype)
    return _nll_loss(input, target, weight, ignore_index=ignore_index, reduction=reduction, out_dtype=out_dtype)


# Per-sample building blocks shared with linear_cross_entropy (which evaluates them
# chunk by chunk and reduces the chunks itself). They restate the math of
# _cross_entropy_indices / _cross_entropy_probs without the reduction; ``x`` and
# ``target`` (probabilities) must already be in the compute dtype.


def _class_index_weights(target, weight, num_classes: int, ignore_index: int, dtype):
    """``(active, in_range, safe, w_t)`` for class-index targets.

    ``w_t`` is what each sample contributes to the ``"mean"`` denominator:
    ``weight[target]`` (1 without ``weight``), 0 where ``target == ignore_index``.
    ``safe`` is the target clamped to a valid index for gathering.
    """
    active = target != ignore_index
    in_range = (target >= 0) & (target < num_classes)
    safe = jnp.where(active & in_range, target, 0)
    w_t = jnp.ones(target.shape, dtype) if weight is None else weight.astype(dtype)[safe]
    return active, in_range, safe, jnp.where(active, w_t, 0)


def _class_index_losses(x, target, weight, label_smoothing, *, ignore_index: int):
    """Per-sample cross_entropy losses (class-index targets), before reduction.

    Returns ``(loss, w_t)``; ``loss`` is NaN where a target that is not ignored is
    out of range (as in :func:`cross_entropy`).
    """
    ax = _class_axis(x)
    C = x.shape[ax]
    m, s = _log_normaliser(x, ax)
    active, in_range, safe, w_t = _class_index_weights(target, weight, C, ignore_index, x.dtype)
    loss = w_t * (_pick(m - x, safe, ax) + s.squeeze(ax))
    if label_smoothing is not None:
        eps = jnp.asarray(label_smoothing, x.dtype)
        if weight is None:
            smooth = jnp.sum(m - x, axis=ax) + C * s.squeeze(ax)
        else:
            wv = _class_weight_view(weight.astype(x.dtype), x.ndim, ax)
            smooth = jnp.sum(wv * (m - x), axis=ax) + jnp.sum(wv) * s.squeeze(ax)
        loss = (1 - eps) * loss + (eps / C) * jnp.where(active, smooth, 0)
    return jnp.where(active & ~in_range, jnp.nan, loss), w_t


def _probability_losses(x, target, weight, label_smoothing):
    """Per-sample cross_entropy losses (class-probability targets), before reduction."""
    ax = _class_axis(x)
    C = x.shape[ax]
    t = target
    if label_smoothing is not None:
        eps = jnp.asarray(label_smoothing, x.dtype)
        t = t * (1 - eps) + eps / C
    m, s = _log_normaliser(x, ax)
    if weight is not None:
        t = t * _class_weight_view(weight.astype(x.dtype), x.ndim, ax)
    return -jnp.sum(t * (x - m - s), axis=ax)
