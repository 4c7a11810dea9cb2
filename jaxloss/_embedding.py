"""Embedding losses with torch.nn.functional's semantics: cosine_embedding_loss,
triplet_margin_loss, triplet_margin_with_distance_loss, and the distance they
share, pairwise_distance.

torch 2.13 behaviour reproduced here (measured against torch):

* ``pairwise_distance(x1, x2)`` is ``||x1 - x2 + eps||_p`` over the last axis
  (``eps`` is added to the difference, not to the norm), with torch's norm
  gradients: 0 where the norm is 0, ties of ``p = inf`` share the gradient, and
  for a general ``p`` torch's own formula (NaN on the zero differences of a row
  whose norm is NaN or infinite, where autodiff of the power sum gives 0).
* triplet losses clamp with ``clamp_min(margin + d(a, p) - d(a, n), 0)``, whose
  gradient passes at exactly 0; ``swap`` takes ``minimum(d(a, n), d(p, n))``,
  whose gradient is split in half on a tie.
* cosine_embedding_loss adds ``1e-12`` to each squared norm, so zero vectors give
  finite (large) gradients, not NaN.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from numbers import Real

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxloss import _validation as V
from jaxloss._dtypes import compute_dtype, result_dtype, tensor_result_dtype
from jaxloss._elementwise import abs_ as _abs
from jaxloss._elementwise import clamp_min0 as _clamp_min0
from jaxloss._elementwise import pow_scalar as _pow
from jaxloss._elementwise import sgn as _sgn
from jaxloss._reduction import check_reduction, reduce

_COSINE_EPS = float(np.float32(1e-12))  # torch's EPSILON in cosine_embedding_loss, a float32 constant


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _extreme_abs(d: jax.Array, largest: bool) -> jax.Array:
    """``max`` (``largest``) or ``min`` of ``|d|`` over the last axis: the +-inf norms.

    torch's gradient: ``sgn(d)`` shared evenly by the entries equal to the
    result, and 0 on a row whose result is NaN (no entry equals it; autodiff of
    ``jnp.max`` would give 0/0 = NaN there).

    A NaN entry makes the result NaN, as in torch. The added ``0 * sum(sign(|d|))``
    (0, or NaN on a row holding a NaN) makes sure of it: XLA:CPU's YNNPACK
    reductions (jax 0.10) drop NaN from ``max``/``min``, so ``jnp.max`` alone gave
    a finite norm for rows of a few hundred entries."""
    a = jnp.abs(d)
    extreme = jnp.max(a, axis=-1) if largest else jnp.min(a, axis=-1)
    return extreme + 0 * jnp.sum(jnp.sign(a), axis=-1)


@_extreme_abs.defjvp
def _extreme_abs_jvp(largest, primals, tangents):
    (d,), (t,) = primals, tangents
    out = _extreme_abs(d, largest)
    hit = (jnp.abs(d) == out[..., None]).astype(t.dtype)
    n = jnp.sum(hit, axis=-1, keepdims=True)
    share = hit / jnp.where(n == 0, 1, n)
    return out, jnp.sum(share * _sgn(d, t.dtype) * t, axis=-1)


def _norm_last(d: jax.Array, p: float) -> jax.Array:
    """torch's ``linalg_vector_norm(d, p, dim=-1)`` with its gradient, for a static ``p``."""
    if d.ndim == 0:
        d = d[None]
    if p == 0:
        return jax.lax.stop_gradient(jnp.sum((d != 0).astype(d.dtype), axis=-1))
    if p == math.inf or p == -math.inf:
        return _extreme_abs(d, p > 0)
    if p == 1:
        return jnp.sum(_abs(d), axis=-1)
    # The zero norm is selected by ``s == 0`` (not ``s > 0``) so that NaN stays NaN.
    if p == 2 and d.shape[-1] != 1:
        s = jnp.sum(d * d, axis=-1)
        zero = s == 0
        return jnp.where(zero, 0, jnp.sqrt(jnp.where(zero, 1, s)))
    return _p_norm(d, p)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _p_norm(d: jax.Array, p: float) -> jax.Array:
    """The p-norm over the last axis for ``p`` not in {0, 1, 2, +-inf}, with torch's gradient.

    The derivative is torch's ``norm_backward`` formula (below), not autodiff of
    the sum of powers: they differ only on rows whose norm is NaN, infinite or
    tiny, where torch's gradient is NaN on the zero entries too (``0 * NaN``).

    Over one entry the norm is ``|d|``, exactly, as torch's (the sum of powers
    overflowed: 1e20 gave inf in float32); its gradient is still the formula's."""
    a = jnp.abs(d)
    if d.shape[-1] == 1:
        return a[..., 0]
    nz = a != 0  # (NaN counts as nonzero: it stays NaN)
    # |0|^p is 0 for p > 0 and inf for p < 0 (then the norm is 0, as in torch).
    ap = jnp.where(nz, jnp.where(nz, a, 1) ** p, 0 if p > 0 else jnp.inf)
    s = jnp.sum(ap, axis=-1)
    if p < 0:
        # A sum of 0 here means every |d|^p underflowed (|d| infinite or huge): the
        # norm is 0^(1/p) = inf, and the gradient below is NaN, as torch's.
        return s ** (1 / p)
    zero = s == 0
    return jnp.where(zero, 0, jnp.where(zero, 1, s) ** (1 / p))


@_p_norm.defjvp
def _p_norm_jvp(p, primals, tangents):
    (d,), (t,) = primals, tangents
    norm = _p_norm(d, p)
    n = norm[..., None]
    a = jnp.abs(d)
    # torch 2.13's norm_backward for a general p, its masks included; the tangent
    # is the row sum of ``coef * t``, so reverse mode gets ``coef * cotangent``. Its
    # powers are Tensor.pow(Scalar), whose kernels write some exponents out
    # (``_pow``): with p = -1 and d = 1e20, |d|^-2 is 1 / inf = 0 and the
    # gradient 0 * inf = NaN, on a GPU too.
    if p < 1:
        # (0 < p < 1 and p < 0) sgn(d) |d|^(p-1), 0 where d = 0, times norm^(1-p).
        scaled = jnp.where(d == 0, 0, _sgn(d, d.dtype) * _pow(jnp.where(d == 0, 1, a), p - 1))
        coef = scaled * _pow(n, 1 - p)
    else:
        # (1 < p < 2) sgn(d) |d|^(p-1), (p > 2) d |d|^(p-2); over norm^(p-1), 0 where the norm is 0.
        scaled = _sgn(d, d.dtype) * _pow(a, p - 1) if p < 2 else d * _pow(a, p - 2)
        coef = scaled * jnp.where(n == 0, 0, 1 / _pow(jnp.where(n == 0, 1, n), p - 1))
    return norm, jnp.sum(coef * t, axis=-1)


def _distance(x1: jax.Array, x2: jax.Array, p: float, eps, cdt) -> jax.Array:
    return _norm_last(x1.astype(cdt) - x2.astype(cdt) + jnp.asarray(eps, cdt), p)


def _static_p(p) -> float:
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (Real, np.floating, np.integer)):
        raise TypeError(
            f"p: expected a Python number (the norm's order is static), got {type(p).__name__} {p!r}"
        )
    p = float(p)
    if p != p:
        raise ValueError("p: expected a number, got nan")
    return p


def _check_floating_arrays(**arrays) -> list[jax.Array]:
    out = []
    for name, x in arrays.items():
        x = V.as_array(name, x)
        V.require_floating(name, x)
        out.append(x)
    return out


def _broadcast(names: tuple[str, str], shapes: tuple[tuple, tuple]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ValueError(
            f"{names[1]}: shape {tuple(shapes[1])} does not broadcast with {names[0]} shape {tuple(shapes[0])}"
        ) from None


@functools.partial(jax.jit, static_argnames=("p", "keepdim", "out_dtype"))
def _pairwise_distance(x1, x2, eps, *, p, keepdim, out_dtype):
    out = _distance(x1, x2, p, eps, compute_dtype(out_dtype))
    if keepdim and max(x1.ndim, x2.ndim) > 0:  # torch: 0-d inputs give a 0-d distance
        out = out[..., None]
    return out.astype(out_dtype)


def pairwise_distance(
    x1: ArrayLike,
    x2: ArrayLike,
    *,
    p: float = 2.0,
    eps: float | ArrayLike = 1e-6,
    keepdim: bool = False,
) -> jax.Array:
    r"""``torch.nn.functional.pairwise_distance`` (2.13): the p-norm of ``x1 - x2 + eps``.

    The default distance of :func:`triplet_margin_with_distance_loss` and the one
    :func:`triplet_margin_loss` uses; pass it (e.g. through ``functools.partial``
    with another ``p``) as a ``distance_function``.

    .. math::
        d(x_1, x_2) = \Big(\sum_j |x_{1,j} - x_{2,j} + \epsilon|^p\Big)^{1/p}

    over the last axis; ``p = inf`` is the max, ``p = 0`` counts non-zeros.
    Gradients follow torch's norm: 0 where the norm is 0; for ``p`` other than
    0, 1, 2 and +-inf they are torch's formula (:math:`\operatorname{sgn}(d)
    |d|^{p-1} / d(x_1, x_2)^{p-1}`, masked as torch masks it), so a row whose
    distance is NaN or infinite has NaN gradients on its zero differences too.

    Args:
      x1: ``(*, D)`` (or ``()``), floating.
      x2: broadcastable with ``x1``.
      p: the norm's order, a Python number (static: each value compiles once).
      eps: added to every difference (not to the norm); traced.
      keepdim: keep the reduced last axis with size 1.

    Returns:
      The broadcast shape without its last axis (with size 1 if ``keepdim``), in
      the promoted floating dtype of ``x1`` and ``x2``.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> a, b = jnp.array([[0.0, 0.0], [1.0, 1.0]]), jnp.array([[3.0, 4.0], [1.0, 1.0]])
      >>> jaxloss.pairwise_distance(a, b, eps=0.0)
      Array([5., 0.], dtype=float32)

    Raises:
      TypeError: non-floating ``x1``/``x2``, or a ``p`` that is not a Python number.
      ValueError: shapes that do not broadcast, ``p`` NaN (torch returns NaN), or an
        empty last axis with ``p < 0`` or ``p = +-inf`` (torch raises too).

    .. note::
       torch also accepts ``p``, ``eps`` and ``keepdim`` positionally; here they
       are keywords.
    """
    x1, x2 = _check_floating_arrays(x1=x1, x2=x2)
    p = _static_p(p)
    V.check_scalar("eps", eps)
    keepdim = V.require_static_bool("keepdim", keepdim)
    shape = _broadcast(("x1", "x2"), (x1.shape, x2.shape))
    _check_empty_norm("x1", shape, p)
    return _pairwise_distance(x1, x2, eps, p=p, keepdim=keepdim, out_dtype=tensor_result_dtype(x1, x2))


# ---------------------------------------------------------------- cosine_embedding_loss


@functools.partial(jax.jit, static_argnames=("reduction", "out_dtype"))
def _cosine_embedding(x1, x2, target, margin, *, reduction, out_dtype):
    cdt = compute_dtype(out_dtype)
    x1 = x1.astype(cdt)
    x2 = x2.astype(cdt)
    prod = jnp.sum(x1 * x2, axis=-1)
    mag1 = jnp.sum(x1 * x1, axis=-1) + _COSINE_EPS
    mag2 = jnp.sum(x2 * x2, axis=-1) + _COSINE_EPS
    cos = prod / jnp.sqrt(mag1 * mag2)
    pos = 1 - cos
    neg = _clamp_min0(cos - jnp.asarray(margin, cdt))
    V.debug_check(jnp.all((target == 1) | (target == -1)), "target: expected every value to be 1 or -1")
    # Any other target value contributes 0, as in torch.
    loss = jnp.where(target == 1, pos, 0) + jnp.where(target == -1, neg, 0)
    return reduce(loss, reduction, dtype=out_dtype)


def cosine_embedding_loss(
    input1: ArrayLike,
    input2: ArrayLike,
    target: ArrayLike,
    *,
    margin: float | ArrayLike = 0.0,
    reduction: str = "mean",
) -> jax.Array:
    r"""Cosine embedding loss, as ``torch.nn.functional.cosine_embedding_loss`` (2.13).

    With :math:`\cos_n = \dfrac{x_{1n} \cdot x_{2n}}
    {\sqrt{(\lVert x_{1n}\rVert^2 + 10^{-12})(\lVert x_{2n}\rVert^2 + 10^{-12})}}`:

    .. math::
        \ell_n = \begin{cases}
            1 - \cos_n & y_n = 1 \\
            \max(0, \cos_n - \text{margin}) & y_n = -1
        \end{cases}

    ``"mean"``: :math:`\sum_n \ell_n / N`; ``"sum"``: :math:`\sum_n \ell_n`.
    A zero vector has :math:`\cos = 0` and a finite gradient (torch's
    :math:`10^{-12}`); the clamp's gradient passes at exactly 0, as torch's.
    In float16 torch adds the :math:`10^{-12}` in float16, where it is 0, so a
    zero vector gives torch a NaN loss; jaxloss computes in float32 and gives
    the float32 result (bf16 keeps :math:`10^{-12}`, and agrees with torch).

    Args:
      input1: ``(N, D)`` or unbatched ``(D,)``, floating.
      input2: broadcastable with ``input1``, same number of dimensions.
      target: ``(N,)`` (or broadcastable to it, e.g. ``(1,)``) with batched inputs,
        ``()`` with unbatched ones; values 1 or -1, integer or floating.
      margin: traced; torch suggests :math:`[-1, 1]` (any value is accepted).
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``; torch's
        deprecated ``"elementwise_mean"`` is taken as ``"mean"``, with its warning.

    Returns:
      ``"none"``: ``(N,)`` (``()`` unbatched); otherwise a scalar, in the promoted
      floating dtype of ``input1`` and ``input2``.

    Raises:
      ValueError: wrong ranks or shapes, an unknown ``reduction``, or (on a
        concrete ``target``) a value other than 1 or -1.
      TypeError: non-floating inputs, a bool or complex ``target``.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x1 = jnp.array([[1.0, 0.0], [1.0, 1.0]])
      >>> x2 = jnp.array([[0.0, 1.0], [1.0, 0.0]])
      >>> round(float(jaxloss.cosine_embedding_loss(x1, x2, jnp.array([1, -1]))), 4)
      0.8536

    .. note::
       torch silently gives 0 for a target value other than 1 or -1 (e.g. a 0 from
       0/1 labels); jaxloss raises ``ValueError`` when ``target`` is concrete.
       Inside ``jax.jit`` it cannot raise and gives torch's 0 (wrap the call in
       ``jax.experimental.checkify.checkify`` to get the error). torch also
       accepts bool targets and integer inputs; jaxloss does not. bf16/f16 losses
       and gradients are computed in float32 and rounded once; torch's rounding
       in the input's dtype can differ from that by far more than one ulp where
       terms cancel (the gradient over one feature, about 0 in float64, is 1 in
       torch at some bf16 inputs).
    """
    reduction = check_reduction(reduction, elementwise_mean=True)
    x1, x2 = _check_floating_arrays(input1=input1, input2=input2)
    target = V.as_array("target", target)
    if not V.is_real(target, allow_bool=False):
        raise TypeError(f"target: expected an integer or floating array of 1 and -1, got dtype {target.dtype}")
    V.check_scalar("margin", margin)
    V.require_ndim("target", target, (0, 1), what="((N,) for batched inputs, () for unbatched)")
    want = 2 if target.ndim == 1 else 1
    layout = "(N, D) with a 1-d target" if want == 2 else "(D,) with a 0-d target"
    V.require_ndim("input1", x1, (want,), what=layout)
    V.require_ndim("input2", x2, (want,), what=layout)
    shape = _broadcast(("input1", "input2"), (x1.shape, x2.shape))
    _broadcast(("the inputs' batch", "target"), (shape[:-1], target.shape))
    V.check_values("target", target, lambda t: (t == 1) | (t == -1), "expected every value to be 1 or -1")
    return _cosine_embedding(
        x1, x2, target, margin, reduction=reduction, out_dtype=result_dtype(x1.dtype, x2.dtype)
    )


# ---------------------------------------------------------------- triplet losses


def _check_triplet(anchor, positive, negative, margin, swap, reduction, *, floating: bool, elementwise_mean: bool):
    reduction = check_reduction(reduction, elementwise_mean=elementwise_mean)
    V.check_scalar("margin", margin, lo=0.0, lo_open=True)
    swap = V.require_static_bool("swap", swap)
    if floating:
        arrays = _check_floating_arrays(anchor=anchor, positive=positive, negative=negative)
    else:
        arrays = [V.as_array(n, x) for n, x in (("anchor", anchor), ("positive", positive), ("negative", negative))]
    a, p, n = arrays
    for name, x in (("positive", p), ("negative", n)):
        if x.ndim != a.ndim:
            raise ValueError(
                f"{name}: expected {a.ndim} dimensions like anchor (shape {tuple(a.shape)}), "
                f"got shape {tuple(x.shape)} ({x.ndim} dimensions)"
            )
    return a, p, n, swap, reduction


def _triplet_tail(d_pos, d_neg, d_swap, margin, reduction, out_dtype):
    cdt = compute_dtype(out_dtype)
    d_pos, d_neg = d_pos.astype(cdt), d_neg.astype(cdt)
    if d_swap is not None:
        d_neg = jnp.minimum(d_neg, d_swap.astype(cdt))  # a tie splits the gradient, as torch.minimum
    m = jnp.asarray(margin, cdt)
    loss = _clamp_min0(m + d_pos - d_neg)
    V.debug_check(m > 0, "margin: expected a value > 0")
    loss = jnp.where(m > 0, loss, jnp.nan)
    return reduce(loss, reduction, dtype=out_dtype)


@functools.partial(jax.jit, static_argnames=("p", "swap", "reduction", "out_dtype"))
def _triplet_margin(a, pos, neg, margin, eps, *, p, swap, reduction, out_dtype):
    cdt = compute_dtype(out_dtype)
    d_pos = _distance(a, pos, p, eps, cdt)
    d_neg = _distance(a, neg, p, eps, cdt)
    d_swap = _distance(pos, neg, p, eps, cdt) if swap else None
    return _triplet_tail(d_pos, d_neg, d_swap, margin, reduction, out_dtype)


def triplet_margin_loss(
    anchor: ArrayLike,
    positive: ArrayLike,
    negative: ArrayLike,
    *,
    margin: float | ArrayLike = 1.0,
    p: float = 2.0,
    eps: float | ArrayLike = 1e-6,
    swap: bool = False,
    reduction: str = "mean",
) -> jax.Array:
    r"""Triplet margin loss, as ``torch.nn.functional.triplet_margin_loss`` (2.13).

    .. math::
        \ell_n = \max\big(0,\ \text{margin} + d(a_n, p_n) - d(a_n, n_n)\big),
        \qquad d(x, y) = \lVert x - y + \epsilon \rVert_p

    (:func:`pairwise_distance`, over the last axis). With ``swap=True``,
    :math:`d(a_n, n_n)` is replaced by :math:`\min(d(a_n, n_n), d(p_n, n_n))`.
    ``"mean"``: :math:`\sum_n \ell_n / N`; ``"sum"``: :math:`\sum_n \ell_n`.

    Args:
      anchor: ``(N, D)``, unbatched ``(D,)``, or more leading axes ``(*, D)``;
        floating.
      positive: the same number of dimensions as ``anchor``, broadcastable.
      negative: the same number of dimensions as ``anchor``, broadcastable.
      margin: :math:`> 0`; traced.
      p: the norm's order, any Python number (``inf`` included); static.
      eps: added to every difference inside the norm; traced.
      swap: the distance swap of Balntas et al.
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``; torch's
        deprecated ``"elementwise_mean"`` is taken as ``"mean"``, with its warning.

    Returns:
      ``"none"``: ``(N,)`` (the broadcast shape without the last axis; ``()``
      unbatched); otherwise a scalar, in the promoted floating dtype.

    Raises:
      ValueError: ``margin <= 0`` (concrete), inputs of different ranks or shapes
        that do not broadcast, an unknown ``reduction``.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> a = jnp.array([[0.0, 0.0], [1.0, 1.0]])
      >>> pos = jnp.array([[0.0, 1.0], [1.0, 2.0]])
      >>> neg = jnp.array([[3.0, 0.0], [1.0, 1.5]])
      >>> round(float(jaxloss.triplet_margin_loss(a, pos, neg)), 4)
      0.75

    .. note::
       A traced ``margin <= 0`` cannot raise inside ``jax.jit``: the result is NaN
       (wrap in ``jax.experimental.checkify.checkify`` to get the error). bf16/f16
       losses are computed in float32 and rounded once; torch rounds each
       distance to the input's dtype before subtracting them, which can move
       the loss by many ulps (12 bf16 ulps in one fuzzed case: torch 13.56,
       float64 14.34; jaxloss is within one ulp of float64).
    """
    a, pos, neg, swap, reduction = _check_triplet(
        anchor, positive, negative, margin, swap, reduction, floating=True, elementwise_mean=True
    )
    p = _static_p(p)
    V.check_scalar("eps", eps)
    _check_empty_norm("anchor", _broadcast(("anchor", "positive"), (a.shape, pos.shape)), p)
    _broadcast(("anchor", "negative"), (a.shape, neg.shape))
    if swap:
        _broadcast(("positive", "negative"), (pos.shape, neg.shape))
    out_dtype = result_dtype(a.dtype, pos.dtype, neg.dtype)
    return _triplet_margin(a, pos, neg, margin, eps, p=p, swap=swap, reduction=reduction, out_dtype=out_dtype)


def _check_empty_norm(name: str, shape, p: float) -> None:
    """torch's error for the ``p`` norm of an empty last axis: undefined for ``p < 0``
    and ``p = +-inf`` (a min or max over nothing)."""
    if shape and shape[-1] == 0 and (p < 0 or math.isinf(p)):
        # torch: "cannot compute the -1 norm on the dimension 1 because this dimension is empty"
        raise ValueError(f"{name}: the p={p:g} norm of an empty last axis is undefined (shape {tuple(shape)})")


def _default_distance(x1, x2):
    """torch's default: ``pairwise_distance(x1, x2)`` with p=2, eps=1e-6."""
    out_dtype = tensor_result_dtype(x1, x2)
    return _distance(x1, x2, 2.0, 1e-6, compute_dtype(out_dtype)).astype(out_dtype)


_default_distance_jit = jax.jit(_default_distance)
_triplet_tail_jit = jax.jit(_triplet_tail, static_argnames=("reduction", "out_dtype"))


def _distance_by(distance_function, x, y):
    """``distance_function(x, y)``, checked floating. It is called as it is (not
    compiled with the rest, and not a static argument): it may read state that
    changes between calls, or be unhashable, as torch allows. Under the caller's
    ``jax.jit`` it is traced with the rest."""
    d = jnp.asarray(distance_function(x, y))
    if not jnp.issubdtype(d.dtype, jnp.floating):
        raise TypeError(f"distance_function: expected it to return a floating array, got dtype {d.dtype}")
    return d


def triplet_margin_with_distance_loss(
    anchor: ArrayLike,
    positive: ArrayLike,
    negative: ArrayLike,
    *,
    distance_function: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    margin: float | ArrayLike = 1.0,
    swap: bool = False,
    reduction: str = "mean",
) -> jax.Array:
    r"""Triplet loss with any distance, as ``torch.nn.functional.triplet_margin_with_distance_loss`` (2.13).

    .. math::
        \ell_n = \max\big(0,\ \text{margin} + d(a_n, p_n) - d(a_n, n_n)\big)

    with ``d = distance_function`` (default: :func:`pairwise_distance`, p=2,
    eps=1e-6). With ``swap=True``, :math:`d(a_n, n_n)` is replaced by
    :math:`\min(d(a_n, n_n), d(p_n, n_n))`. ``"mean"``: :math:`\sum_n \ell_n / N`;
    ``"sum"``: :math:`\sum_n \ell_n`.

    Args:
      anchor: ``(N, *)`` or unbatched; what ``distance_function`` accepts.
      positive: the same number of dimensions as ``anchor``.
      negative: the same number of dimensions as ``anchor``.
      distance_function: any callable ``(x, y) -> distances`` on JAX arrays,
        returning a floating array (one distance per sample); ``None`` for the
        default. It is called on every call, as torch calls it (not cached: it
        may read state that changes, and need not be hashable); the rest of the
        loss is compiled. Under your own ``jax.jit`` it is traced with the rest
        (there, as for any jitted function, state it reads is fixed at tracing).
      margin: :math:`> 0`; traced.
      swap: the distance swap of Balntas et al.
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Returns:
      ``"none"``: the distances' shape (``(N,)``); otherwise a scalar, in the
      distances' dtype.

    Raises:
      ValueError: ``margin <= 0`` (concrete), inputs of different ranks, an
        unknown ``reduction``.
      TypeError: a ``distance_function`` that is not callable or does not return
        floating arrays.

    Example:
      >>> import functools, jax.numpy as jnp, jaxloss
      >>> a = jnp.array([[0.0, 0.0], [1.0, 1.0]])
      >>> pos = jnp.array([[0.0, 1.0], [1.0, 2.0]])
      >>> neg = jnp.array([[3.0, 0.0], [1.0, 1.5]])
      >>> round(float(jaxloss.triplet_margin_with_distance_loss(a, pos, neg)), 4)
      0.75
      >>> l1 = functools.partial(jaxloss.pairwise_distance, p=1.0)
      >>> round(float(jaxloss.triplet_margin_with_distance_loss(a, pos, neg, distance_function=l1)), 4)
      0.75

    .. note::
       A traced ``margin <= 0`` cannot raise inside ``jax.jit``: the result is NaN
       (wrap in ``jax.experimental.checkify.checkify`` to get the error). The
       distances are ``distance_function``'s outputs, in its dtype, as in torch:
       bf16 distances are rounded before they are subtracted (unlike
       :func:`triplet_margin_loss`, which computes them in float32).
    """
    if distance_function is not None and not callable(distance_function):
        raise TypeError(f"distance_function: expected a callable or None, got {type(distance_function).__name__}")
    a, pos, neg, swap, reduction = _check_triplet(  # torch rejects "elementwise_mean" here
        anchor, positive, negative, margin, swap, reduction, floating=distance_function is None, elementwise_mean=False
    )
    if distance_function is None:
        _broadcast(("anchor", "positive"), (a.shape, pos.shape))
        _broadcast(("anchor", "negative"), (a.shape, neg.shape))
        if swap:
            _broadcast(("positive", "negative"), (pos.shape, neg.shape))
        distance_function = _default_distance_jit
    d_pos, d_neg = _distance_by(distance_function, a, pos), _distance_by(distance_function, a, neg)
    d_swap = _distance_by(distance_function, pos, neg) if swap else None
    out_dtype = result_dtype(*(d for d in (d_pos, d_neg, d_swap) if d is not None))
    return _triplet_tail_jit(d_pos, d_neg, d_swap, margin, reduction=reduction, out_dtype=out_dtype)
