"""Margin losses with torch.nn.functional's semantics.

hinge_embedding_loss, margin_ranking_loss, soft_margin_loss,
multilabel_soft_margin_loss, multi_margin_loss and multilabel_margin_loss.
(cosine_embedding_loss and the triplet losses live in ``_embedding.py``.)

Kinks follow torch's subgradients: ``hinge_embedding_loss`` and
``margin_ranking_loss`` clamp with ``clamp_min(0)``, which passes the gradient
where the clamped value is exactly 0; ``multi_margin_loss`` and
``multilabel_margin_loss`` only count terms that are strictly positive, so the
gradient there is 0.
"""

from __future__ import annotations

import functools
from numbers import Real

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxloss import _sharding as S
from jaxloss import _validation as V
from jaxloss._dtypes import compute_dtype, result_dtype, tensor_result_dtype
from jaxloss._elementwise import clamp_min0 as _clamp_min0
from jaxloss._elementwise import log_sigmoid_, softplus_
from jaxloss._elementwise import times_weight
from jaxloss._reduction import check_reduction, reduce


# --------------------------------------------------------------------------- helpers


def _broadcast_shape(names: tuple[str, ...], arrays: tuple[jax.Array, ...]) -> tuple[int, ...]:
    """The broadcast shape of ``arrays`` (torch broadcasts these), or a ``ValueError``."""
    shapes = [tuple(a.shape) for a in arrays]
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        got = ", ".join(f"{n} {s}" for n, s in zip(names, shapes))
        raise ValueError(f"{names[-1]}: shapes do not broadcast together: {got}") from None


def _require_real_target(name: str, x: jax.Array, *, allow_bool: bool) -> None:
    """A target of any real dtype torch accepts (floating, integer and, where torch takes it, bool)."""
    if not V.is_real(x, allow_bool=allow_bool):
        kinds = "floating, integer or bool" if allow_bool else "floating or integer"
        raise TypeError(f"{name}: expected a {kinds} array, got dtype {x.dtype}")


def _floating(*arrays) -> list:
    """The dtypes of the floating arrays among ``arrays`` (integer targets do not promote)."""
    return [a.dtype for a in arrays if a is not None and jnp.issubdtype(a.dtype, jnp.floating)]


def _equals(t: jax.Array, value: int) -> jax.Array:
    """``t == value`` without wrapping ``value`` into an unsigned dtype."""
    if value < 0 and (t.dtype == jnp.bool_ or jnp.issubdtype(t.dtype, jnp.unsignedinteger)):
        return jnp.zeros(t.shape, bool)
    if t.dtype == jnp.bool_:
        t = t.astype(jnp.int32)
    return t == value


def _positive_part(z: jax.Array) -> jax.Array:
    """``max(z, 0)`` counting only ``z > 0`` (gradient 0 at the kink), as torch's margin kernels do."""
    return jnp.where(z > 0, z, jnp.zeros_like(z))


def _as_index(t: jax.Array) -> jax.Array:
    """Integer labels of any integer dtype as int32, keeping every out-of-range value out of range.

    Comparing, say, a uint8 or int64 array with -1 or with C directly can wrap or
    overflow; values beyond int32 saturate (no class index is that large).
    """
    info = jnp.iinfo(t.dtype)
    if info.bits < 32 or (info.bits == 32 and info.min < 0):
        return t.astype(jnp.int32)
    lo = max(int(info.min), -(2**31))
    hi = min(int(info.max), 2**31 - 1)
    return jnp.clip(t, np.array(lo, t.dtype), np.array(hi, t.dtype)).astype(jnp.int32)


def _check_margin(margin) -> None:
    V.check_scalar("margin", margin)


# --------------------------------------------------------------------------- hinge_embedding_loss


@functools.partial(jax.jit, static_argnames=("reduction", "out_dtype"))
def _hinge_embedding_loss(x, target, margin, *, reduction, out_dtype):
    cdt = compute_dtype(out_dtype)
    x = x.astype(cdt)
    m = jnp.asarray(margin, cdt)
    x, target = jnp.broadcast_arrays(x, target)
    zeros = jnp.zeros_like(x)
    # torch: where(t != 1, clamp_min(margin - x, 0), 0) + where(t != -1, x, 0); a target that is
    # neither 1 nor -1 takes both terms.
    loss = jnp.where(_equals(target, 1), zeros, _clamp_min0(m - x)) + jnp.where(_equals(target, -1), zeros, x)
    return reduce(loss, reduction, dtype=out_dtype)


def hinge_embedding_loss(
    input: ArrayLike,
    target: ArrayLike,
    *,
    margin: float | ArrayLike = 1.0,
    reduction: str = "mean",
) -> jax.Array:
    r"""Hinge embedding loss for targets in :math:`\{1, -1\}`.

    Equals ``torch.nn.functional.hinge_embedding_loss`` (2.13) in value and gradient.

    .. math::
        \ell_i = \begin{cases}
            x_i & y_i = 1, \\
            \max(0, \Delta - x_i) & y_i = -1, \\
            x_i + \max(0, \Delta - x_i) & \text{any other } y_i \text{ (as torch computes it)},
        \end{cases}

    with :math:`\Delta` = ``margin``. ``"mean"`` averages over all elements,
    ``"sum"`` adds them. At :math:`x_i = \Delta` (with :math:`y_i \ne 1`) the
    gradient is torch's: :math:`-1` from the clamp.

    Args:
      input: any shape, floating.
      target: any shape that broadcasts with ``input`` (the result has the
        broadcast shape, as in torch); floating, integer or bool.
      margin: :math:`\Delta`; traced, so changing it does not recompile.
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``; torch's
        deprecated ``"elementwise_mean"`` is taken as ``"mean"``, with its warning.

    Returns:
      ``"none"``: the element-wise loss in the broadcast shape; otherwise a scalar.
      The dtype is ``input``'s (torch ignores the target's dtype here).

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x = jnp.array([0.3, 2.0, -0.5, 1.2])
      >>> y = jnp.array([1.0, -1.0, -1.0, 1.0])
      >>> round(float(jaxloss.hinge_embedding_loss(x, y)), 4)
      0.75

    .. note::
       bf16/f16 losses are computed in float32 and rounded once. torch rounds
       :math:`\Delta - x_i` and :math:`x_i` each to the input's dtype before adding
       them for a target other than 1 or -1, so with bf16 ``x = -660`` and target 2
       torch gives 0 where jaxloss gives float64's 1.
    """
    input = V.as_array("input", input)
    target = V.as_array("target", target)
    V.require_floating("input", input)
    _require_real_target("target", target, allow_bool=True)
    reduction = check_reduction(reduction, elementwise_mean=True)
    _check_margin(margin)
    _broadcast_shape(("input", "target"), (input, target))
    return _hinge_embedding_loss(input, target, margin, reduction=reduction, out_dtype=np.dtype(input.dtype))


# --------------------------------------------------------------------------- margin_ranking_loss


@functools.partial(jax.jit, static_argnames=("reduction", "out_dtype"))
def _margin_ranking_loss(x1, x2, target, margin, *, reduction, out_dtype):
    cdt = compute_dtype(out_dtype)
    z = -target.astype(cdt) * (x1.astype(cdt) - x2.astype(cdt)) + jnp.asarray(margin, cdt)
    return reduce(_clamp_min0(z), reduction, dtype=out_dtype)


def margin_ranking_loss(
    input1: ArrayLike,
    input2: ArrayLike,
    target: ArrayLike,
    *,
    margin: float | ArrayLike = 0.0,
    reduction: str = "mean",
) -> jax.Array:
    r"""Margin ranking loss: is ``input1`` ranked above ``input2`` (``target`` 1) or below (-1)?

    Equals ``torch.nn.functional.margin_ranking_loss`` (2.13) in value and
    gradient (with respect to ``input1``, ``input2`` and a floating ``target``).

    .. math::
        \ell_i = \max(0, -y_i (x^{(1)}_i - x^{(2)}_i) + \Delta),

    with :math:`\Delta` = ``margin``; where the bracket is exactly 0 the gradient
    is torch's (the clamp passes it). ``"mean"`` averages over all elements,
    ``"sum"`` adds them.

    Args:
      input1, input2: floating arrays.
      target: floating or integer, usually in :math:`\{1, -1\}`.
      margin: :math:`\Delta`; traced, so changing it does not recompile.
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``; torch's
        deprecated ``"elementwise_mean"`` is taken as ``"mean"``, with its warning.

    The three arrays must have the same number of dimensions (torch refuses
    otherwise); their shapes broadcast, and the result has the broadcast shape.

    Returns:
      ``"none"``: the element-wise loss; otherwise a scalar. The dtype is the
      promoted floating dtype of the three arguments (an integer ``target`` does
      not promote).

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> a = jnp.array([0.5, 1.0, -0.2])
      >>> b = jnp.array([0.1, 1.5, 0.3])
      >>> y = jnp.array([1.0, 1.0, -1.0])
      >>> round(float(jaxloss.margin_ranking_loss(a, b, y, margin=0.2)), 4)
      0.2333
    """
    input1 = V.as_array("input1", input1)
    input2 = V.as_array("input2", input2)
    target = V.as_array("target", target)
    V.require_floating("input1", input1)
    V.require_floating("input2", input2)
    _require_real_target("target", target, allow_bool=False)
    reduction = check_reduction(reduction, elementwise_mean=True)
    _check_margin(margin)
    if not input1.ndim == input2.ndim == target.ndim:
        odd = "input2" if input2.ndim != input1.ndim else "target"
        raise ValueError(
            f"{odd}: input1, input2 and target must have the same number of dimensions, got shapes "
            f"input1 {tuple(input1.shape)}, input2 {tuple(input2.shape)}, target {tuple(target.shape)}"
        )
    _broadcast_shape(("input1", "input2", "target"), (input1, input2, target))
    out_dtype = result_dtype(*_floating(input1, input2, target))
    return _margin_ranking_loss(input1, input2, target, margin, reduction=reduction, out_dtype=out_dtype)


# --------------------------------------------------------------------------- soft_margin_loss


@functools.partial(jax.jit, static_argnames=("reduction", "out_dtype"))
def _soft_margin_loss(x, target, *, reduction, out_dtype):
    cdt = compute_dtype(out_dtype)
    loss = softplus_(-target.astype(cdt) * x.astype(cdt))  # log(1 + exp(-y x))
    return reduce(loss, reduction, dtype=out_dtype)


def soft_margin_loss(input: ArrayLike, target: ArrayLike, *, reduction: str = "mean") -> jax.Array:
    r"""Two-class logistic loss with targets in :math:`\{1, -1\}`.

    Equals ``torch.nn.functional.soft_margin_loss`` (2.13) in value and gradient
    wherever torch's result is finite.

    .. math::
        \ell_i = \log(1 + \exp(-y_i x_i)),

    ``"mean"`` averages over all elements, ``"sum"`` adds them.

    Args:
      input: any shape, floating.
      target: ``input``'s shape, or one that broadcasts to it (it may not grow
        the result, as in torch); floating, integer or bool.
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``; torch's
        deprecated ``"elementwise_mean"`` is taken as ``"mean"``, with its warning.

    Returns:
      ``"none"``: the element-wise loss, shaped like ``input``; otherwise a
      scalar. The dtype is ``input``'s.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x = jnp.array([0.3, -2.0, 1.5])
      >>> y = jnp.array([1.0, -1.0, -1.0])
      >>> round(float(jaxloss.soft_margin_loss(x, y)), 4)
      0.7942

    .. note::
       torch evaluates ``log1p(exp(-y x))`` literally, which overflows to ``inf``
       (with a NaN gradient) once :math:`-y x` exceeds about 88 in float32 or 709
       in float64. jaxloss uses a stable softplus and returns the finite value
       :math:`\approx -y x` with gradient :math:`-y` there. ``target`` is
       differentiable here; torch refuses a gradient for it.
    """
    input = V.as_array("input", input)
    target = V.as_array("target", target)
    V.require_floating("input", input)
    _require_real_target("target", target, allow_bool=True)
    reduction = check_reduction(reduction, elementwise_mean=True)
    V.require_broadcastable("target", target.shape, input.shape, context="(the input's shape)")
    return _soft_margin_loss(input, target, reduction=reduction, out_dtype=np.dtype(input.dtype))


# --------------------------------------------------------------------------- multilabel_soft_margin_loss


@functools.partial(jax.jit, static_argnames=("reduction", "out_dtype"))
def _multilabel_soft_margin_loss(x, target, weight, *, reduction, out_dtype):
    cdt = compute_dtype(out_dtype)
    x = x.astype(cdt)
    t = target.astype(cdt)
    loss = -(t * log_sigmoid_(x) + (1 - t) * log_sigmoid_(-x))
    if weight is not None:
        loss = times_weight(loss, weight)
    C = x.shape[-1]
    loss = jnp.sum(loss, axis=-1) / C
    return reduce(loss, reduction, dtype=out_dtype)


def multilabel_soft_margin_loss(
    input: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    r"""Multi-label one-versus-all logistic loss, averaged over the classes.

    Equals ``torch.nn.functional.multilabel_soft_margin_loss`` (2.13) in value
    and gradient (with respect to ``input``, ``target`` and ``weight``).

    .. math::
        \ell_n = -\frac{1}{C} \sum_{c} w_c \big(y_{n,c} \log \sigma(x_{n,c})
                 + (1 - y_{n,c}) \log \sigma(-x_{n,c})\big).

    The mean over the classes always happens; then ``"mean"`` averages
    :math:`\ell_n` over the samples and ``"sum"`` adds them.

    Args:
      input: ``(C,)``, ``(N, C)`` or ``(N, ..., C)`` (classes last), floating.
      target: ``input``'s shape or one that broadcasts to it; floating or integer,
        usually in :math:`\{0, 1\}`.
      weight: optional, any shape that broadcasts to ``input``'s (usually
        ``(C,)``), floating, integer or bool; multiplies each class term before
        the class mean (as a product: a ``False`` weight times an infinite term
        is NaN, as in torch).
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Returns:
      ``"none"``: the per-sample loss, ``input``'s shape without the last axis
      (a scalar for ``(C,)``); otherwise a scalar. The dtype is the promoted
      floating dtype of the arguments.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x = jnp.array([[0.3, -2.0, 1.5], [1.0, 0.0, -0.5]])
      >>> y = jnp.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
      >>> round(float(jaxloss.multilabel_soft_margin_loss(x, y)), 4)
      0.5605

    .. note::
       torch lets ``target`` and ``weight`` broadcast *beyond* ``input``'s shape,
       after which it sums over an axis that is no longer the class axis. jaxloss
       raises ``ValueError`` unless they broadcast to ``input``'s shape.
    """
    input = V.as_array("input", input)
    target = V.as_array("target", target)
    V.require_floating("input", input)
    _require_real_target("target", target, allow_bool=False)
    check_reduction(reduction)
    V.require_ndim("input", input, range(1, 1 << 30), what="(C,) or (N, C) with the classes last")
    V.require_broadcastable("target", target.shape, input.shape, context="(the input's shape)")
    if weight is not None:
        weight = V.as_array("weight", weight)
        _require_real_target("weight", weight, allow_bool=True)
        V.require_broadcastable("weight", weight.shape, input.shape, context="(the input's shape; usually (C,))")
    # torch: the losses of input and target, times weight; a 0-d target or weight
    # does not promote an input with dimensions (torch's rule for 0-d tensors).
    losses = (tensor_result_dtype(input, target), max(input.ndim, target.ndim))
    out_dtype = tensor_result_dtype(losses, weight)
    return _multilabel_soft_margin_loss(input, target, weight, reduction=reduction, out_dtype=out_dtype)


# --------------------------------------------------------------------------- multi_margin_loss


def _frames(input: jax.Array) -> tuple[int, int]:
    """(number of samples, number of classes) of a ``()``, ``(C,)`` or ``(N, C)`` input."""
    if input.ndim == 2:
        return input.shape[0], input.shape[1]
    return 1, (input.shape[0] if input.ndim == 1 else 1)


def _check_margin_input(input: jax.Array, fn: str) -> None:
    V.require_ndim("input", input, (0, 1, 2), what=f"((C,) or (N, C)) for {fn}")
    if input.ndim >= 1 and input.shape[-1] == 0:
        raise ValueError(f"input: expected at least one class, got shape {tuple(input.shape)}")


def _check_p(p) -> int:
    if V.is_traced(p):
        raise TypeError(
            f"p: expected a Python int (1 or 2; it is static), got a traced {p!r}; pass it as a static argument"
        )
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (Real, np.integer, np.floating)) or p not in (1, 2):
        raise ValueError(f"p: only p == 1 and p == 2 are supported, got {p!r}")
    return int(p)


@functools.partial(jax.jit, static_argnames=("p", "reduction", "out_dtype"))
def _multi_margin_loss(x, target, weight, margin, *, p, reduction, out_dtype):
    cdt = compute_dtype(out_dtype)
    nframe, C = (x.shape[0], x.shape[1]) if x.ndim == 2 else (1, x.size)
    out_shape = target.shape
    # An explicitly class-sharded x is gathered along the classes (see _sharding).
    x = S.replicate_axis(x.astype(cdt).reshape(nframe, C), 1)
    t = _as_index(target).reshape(nframe)
    in_range = (t >= 0) & (t < C)
    safe = jnp.where(in_range, t, 0).astype(jnp.int32)
    x_y = jnp.take_along_axis(x, safe[:, None], axis=1)
    other = jnp.arange(C)[None, :] != safe[:, None]
    # The target's own term is 0 before the hinge, not masked after it: with an infinite
    # margin its p=2 derivative is infinite, and a mask times that is NaN (torch: -inf
    # for x_y, as from the other terms alone).
    z = jnp.where(other, jnp.asarray(margin, cdt) - x_y + x, jnp.zeros((), cdt))  # (nframe, C)
    h = _positive_part(z)
    if p == 2:
        h = h * h
    if weight is not None:
        # As torch, the weight multiplies only the positive terms of the other classes:
        # an infinite or NaN w_y times a zero term is 0, not NaN (value and gradient).
        w_y = S.take_rows(weight.astype(cdt), safe)[:, None]
        h = h * jnp.where(other & (z > 0), w_y, jnp.zeros((), cdt))
    loss = jnp.sum(h, axis=1) / C
    V.debug_check(jnp.all(in_range), f"target: class index out of range [0, {C})")
    loss = jnp.where(in_range, loss, jnp.nan).reshape(out_shape)
    return reduce(loss, reduction, dtype=out_dtype)


def multi_margin_loss(
    input: ArrayLike,
    target: ArrayLike,
    *,
    p: int = 1,
    margin: float | ArrayLike = 1.0,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    r"""Multi-class hinge loss (one target class per sample).

    Equals ``torch.nn.functional.multi_margin_loss`` (2.13) in value and gradient.

    .. math::
        \ell_n = \frac{1}{C} \sum_{i \ne y_n}
                 w_{y_n} \max(0, \Delta - x_{n,y_n} + x_{n,i})^p,

    with :math:`\Delta` = ``margin`` and :math:`p \in \{1, 2\}`. The sum divides by
    :math:`C` (not :math:`C - 1`); the weight of the *target* class scales every
    term. A term counts only when strictly positive, so at the kink the gradient
    is 0, as in torch. ``"mean"`` averages :math:`\ell_n` over the samples
    (not over the weights); ``"sum"`` adds them.

    Args:
      input: ``(N, C)``, unbatched ``(C,)`` (or ``()``, one class), floating.
      target: class indices in ``[0, C)``, any integer dtype: ``(N,)`` for
        ``(N, C)``, ``()`` for ``(C,)``. As in torch, any target with one entry per
        sample is accepted and ``"none"`` returns the target's shape.
      p: 1 or 2 (static).
      margin: :math:`\Delta`; traced, so changing it does not recompile.
      weight: optional class weights of shape ``(C,)``.
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``; torch's
        deprecated ``"elementwise_mean"`` is taken as ``"mean"``, with its warning.

    Returns:
      ``"none"``: the per-sample loss, shaped like ``target``; otherwise a scalar,
      in the promoted floating dtype of ``input`` and ``weight``.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x = jnp.array([[0.1, 0.2, 0.4, 0.8], [0.5, -0.3, 0.9, 0.0]])
      >>> y = jnp.array([3, 0])
      >>> round(float(jaxloss.multi_margin_loss(x, y)), 4)
      0.425
      >>> round(float(jaxloss.multi_margin_loss(x, y, p=2, margin=0.5)), 4)
      0.1025

    .. note::
       Out-of-range class indices raise ``ValueError`` on concrete arrays; inside
       ``jax.jit`` they make that sample's loss NaN (never a silently wrong number).
       Wrap the call in ``jax.experimental.checkify.checkify`` to get the error.

    .. note::
       Differences from torch: any integer target dtype is accepted (torch wants
       int64); ``weight`` may have another floating dtype than ``input`` (they
       promote; torch refuses) and is differentiable (torch implements no gradient
       for it); bf16/f16 inputs give bf16/f16 results (torch's CPU kernel has no
       bf16/f16 version); ``"mean"`` of zero samples is NaN (torch returns an
       uninitialised number).
    """
    input = V.as_array("input", input)
    target = V.as_array("target", target)
    V.require_floating("input", input)
    reduction = check_reduction(reduction, elementwise_mean=True)
    p = _check_p(p)
    _check_margin(margin)
    _check_margin_input(input, "multi_margin_loss")
    nframe, C = _frames(input)
    V.require_integer("target", target, "class indices")
    if target.ndim > 1 or target.size != nframe:
        want = f"({nframe},)" if input.ndim == 2 else "()"
        raise ValueError(
            f"target: expected shape {want} (one class index per sample) for input {tuple(input.shape)}, "
            f"got {tuple(target.shape)}"
        )
    if weight is not None:
        weight = V.as_array("weight", weight)
        V.require_floating("weight", weight)
        if weight.ndim != 1 or weight.shape[0] != C:
            raise ValueError(
                f"weight: expected a 1-D array of shape ({C},) (one per class, C={C}), got {tuple(weight.shape)}"
            )
    V.check_values("target", target, lambda t: (t >= 0) & (t < C), f"class indices must be in [0, {C})")
    out_dtype = result_dtype(input.dtype, None if weight is None else weight.dtype)
    return _multi_margin_loss(input, target, weight, margin, p=p, reduction=reduction, out_dtype=out_dtype)


# --------------------------------------------------------------------------- multilabel_margin_loss


# Target slots handled per step of multilabel_margin_loss's loop.
MULTILABEL_SLOTS = 8


def _multilabel_hinge_sums(x: jax.Array, t: jax.Array, with_grad: bool):
    r"""Per row, :math:`\sum_j \sum_{i \notin Y} \max(0, 1 - x_{y_j} + x_i)` (not yet
    divided by C) and, if ``with_grad``, its derivative with respect to ``x`` (else None).

    The target slots before each row's first -1 are visited ``MULTILABEL_SLOTS`` at a
    time, in a ``while_loop`` that stops after the longest list in the batch: the work
    is ``N x (longest list) x C``, as torch's loop over the listed targets, not the
    ``(N, C, C)`` of every pair. Each margin is torch's ``1 - x[y_j] + x[i]``, counted
    when strictly positive, so kinks are decided exactly as torch decides them. The
    derivative counts, per class, its appearances as ``+x_i`` less those as ``-x_{y_j}``.
    """
    n, C = x.shape
    B = min(MULTILABEL_SLOTS, C)
    blocks = -(-C // B)
    is_end = t == -1
    first_end = jnp.where(jnp.any(is_end, axis=1), jnp.argmax(is_end, axis=1), C)
    active = jnp.arange(C)[None, :] < first_end[:, None]
    safe = jnp.where(active & (t >= 0) & (t < C), t, 0)
    # A scatter per row (vmapped), into zeros shaped like the row: arrays built from the
    # batch keep an explicitly sharded batch's sharding (see the README, sharded inputs).
    scatter_row = lambda s, a: jnp.zeros((C,), jnp.int32).at[s].add(a)  # noqa: E731
    listed = jax.vmap(scatter_row)(safe, active.astype(jnp.int32)) > 0
    pad = ((0, 0), (0, blocks * B - C))
    act = jnp.pad(active, pad)
    slot_class = jnp.pad(safe, pad)
    x_slot = jnp.take_along_axis(x, slot_class, axis=1)  # (n, blocks * B): the listed classes' scores

    def body(carry):
        k, total, g = carry
        a = jax.lax.dynamic_slice_in_dim(act, k * B, B, axis=1)
        xs = jax.lax.dynamic_slice_in_dim(x_slot, k * B, B, axis=1)
        z = 1 - xs[:, :, None] + x[:, None, :]  # (n, B, C)
        hit = a[:, :, None] & ~listed[:, None, :] & (z > 0)
        total = total + jnp.sum(jnp.where(hit, z, 0), axis=(1, 2))
        if with_grad:
            # +1 for x_i per hit; -(the slot's hits) for its class x_{y_j}, through the
            # slot's one-hot (the same (n, B, C) shape as z: no scatter)
            h = hit.astype(x.dtype)
            cls = jax.lax.dynamic_slice_in_dim(slot_class, k * B, B, axis=1)
            onehot = (cls[:, :, None] == jnp.arange(C)).astype(x.dtype)
            g = g + jnp.sum(h, axis=1) - jnp.sum(jnp.sum(h, axis=2, keepdims=True) * onehot, axis=1)
        return k + 1, total, g

    longest = jnp.max(first_end, initial=0)
    init = (jnp.zeros((), jnp.int32), jnp.zeros_like(x[:, 0]), jnp.zeros_like(x) if with_grad else None)
    _, total, g = jax.lax.while_loop(lambda c: c[0] * B < longest, body, init)
    return total, g


@jax.custom_jvp
def _multilabel_hinge(x: jax.Array, t: jax.Array) -> jax.Array:
    """:func:`_multilabel_hinge_sums`'s value, differentiable to any order in either mode.

    The loss is piecewise linear in ``x``: its derivative is the count matrix of
    :func:`_multilabel_hinge_sums` (no loop is differentiated, so reverse mode works
    through the ``while_loop``), and every higher derivative is 0 (as torch's).
    """
    return _multilabel_hinge_sums(x, t, with_grad=False)[0]


@_multilabel_hinge.defjvp
def _multilabel_hinge_jvp(primals, tangents):
    x, t = primals
    dx = tangents[0]
    total, g = _multilabel_hinge_sums(jax.lax.stop_gradient(x), t, with_grad=True)
    # ``x - stop_gradient(x)`` is exactly 0: the value is ``total``, and a derivative
    # taken of this rule (forward over forward) sees the first derivative ``g``.
    out = total + jnp.sum(g * (x - jax.lax.stop_gradient(x)), axis=1)
    return out, jnp.sum(g * dx, axis=1)


@functools.partial(jax.jit, static_argnames=("reduction", "out_dtype"))
def _multilabel_margin_loss(x, target, *, reduction, out_dtype):
    cdt = compute_dtype(out_dtype)
    batched = x.ndim == 2
    nframe, C = (x.shape[0], x.shape[1]) if batched else (1, x.size)
    # Explicitly class-sharded inputs are gathered along the classes (see _sharding).
    x = S.replicate_axis(x.astype(cdt).reshape(nframe, C), 1)
    # The barrier keeps XLA from folding the target-only work (end of each list, the
    # listed-class mask) at compile time when ``jit`` closes over the target: its
    # interpreter took 27 s for a (4096, 1000) target, against 0.4 s compiled.
    t = jax.lax.optimization_barrier(S.replicate_axis(_as_index(target).reshape(nframe, C), 1))
    in_range = jnp.all((t >= -1) & (t < C), axis=1)
    loss = _multilabel_hinge(x, t) / C
    V.debug_check(jnp.all(in_range), f"target: labels must be in [-1, {C})")
    loss = jnp.where(in_range, loss, jnp.nan)
    loss = loss if batched else loss.reshape(())
    return reduce(loss, reduction, dtype=out_dtype)


def multilabel_margin_loss(input: ArrayLike, target: ArrayLike, *, reduction: str = "mean") -> jax.Array:
    r"""Multi-label hinge loss with the target classes listed first and ended by -1.

    Equals ``torch.nn.functional.multilabel_margin_loss`` (2.13) in value and gradient.

    .. math::
        \ell_n = \frac{1}{C} \sum_{j} \sum_{i \notin Y_n}
                 \max(0, 1 - (x_{n, y_{n,j}} - x_{n,i})),

    where :math:`y_{n,0}, y_{n,1}, \dots` are the entries of ``target[n]`` up to
    (not including) the first -1 and :math:`Y_n` is the set of them. Everything
    after the first -1 is ignored; a row starting with -1 (or full of -1) has
    loss 0; a label repeated before the -1 counts once per repetition. A term
    counts only when strictly positive (gradient 0 at the kink, as in torch).
    ``"mean"`` averages over the samples, ``"sum"`` adds them.

    Args:
      input: ``(N, C)`` or unbatched ``(C,)`` (or ``()``, one class), floating.
      target: ``input``'s shape, any integer dtype, every entry in ``[-1, C)``.
        With one class unbatched, ``()`` and ``(1,)`` are both taken, for either
        input layout (torch's check asks a 0-d or 1-d target for C entries).
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``; torch's
        deprecated ``"elementwise_mean"`` is taken as ``"mean"``, with its warning.

    Returns:
      ``"none"``: ``(N,)`` (a scalar when unbatched); otherwise a scalar. The dtype
      is ``input``'s.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x = jnp.array([[0.1, 0.2, 0.4, 0.8]])
      >>> y = jnp.array([[3, 0, -1, 1]])
      >>> round(float(jaxloss.multilabel_margin_loss(x, y)), 4)
      0.85

    .. note::
       Entries outside ``[-1, C)`` anywhere in ``target`` (torch checks the entries
       after the first -1 too) raise ``ValueError`` on concrete arrays; inside
       ``jax.jit`` they make that sample's loss NaN. Wrap the call in
       ``jax.experimental.checkify.checkify`` to get the error.

    .. note::
       Differences from torch: any integer target dtype is accepted (torch wants
       int64); bf16/f16 inputs give bf16/f16 results (torch's CPU kernel has no
       bf16/f16 version); ``"mean"`` of zero samples is NaN (torch returns an
       uninitialised number).

    .. note::
       jaxloss visits the listed targets eight slots at a time and stops after the
       longest list in the batch: :math:`O(N \cdot \max_n |Y_n| \cdot C)` time, as
       torch's loop, and never the :math:`(N, C, C)` pairwise margins (unless some
       row lists every class). Each margin is torch's :math:`1 - x_{y_j} + x_i`,
       so kinks are decided exactly as torch decides them. The derivative is a
       ``custom_jvp`` rule (the loss is piecewise linear): ``grad``, ``jvp``,
       ``vmap`` and higher orders (all 0, as torch's) work. A target that ``jit``
       closes over (a constant) is not evaluated by XLA at compile time: for a
       ``(4096, 1000)`` target that took 27 s, and compiling now takes 0.6 s
       (0.4 s with the target passed as an argument).
    """
    input = V.as_array("input", input)
    target = V.as_array("target", target)
    V.require_floating("input", input)
    reduction = check_reduction(reduction, elementwise_mean=True)
    _check_margin_input(input, "multilabel_margin_loss")
    V.require_integer("target", target, "class labels ended by -1")
    if input.ndim <= 1 and target.ndim <= 1 and target.size == input.size:
        # torch's unbatched check: a 0-d or 1-d target with C entries, so one class
        # may come as () or (1,) with either input layout.
        target = target.reshape(input.shape)
    V.require_shape("target", target, input.shape, context=f"(the input's shape) for input {tuple(input.shape)}")
    C = _frames(input)[1]
    V.check_values("target", target, lambda t: (t >= -1) & (t < C), f"labels must be in [-1, {C}) (-1 ends the list)")
    return _multilabel_margin_loss(input, target, reduction=reduction, out_dtype=np.dtype(input.dtype))
