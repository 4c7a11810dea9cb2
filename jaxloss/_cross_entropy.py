"""cross_entropy and nll_loss with torch.nn.functional's semantics."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike

from jaxloss import _sharding as S
from jaxloss import _validation as V
from jaxloss._dtypes import compute_dtype, result_dtype
from jaxloss._reduction import check_reduction, reduce


def _class_axis(x: jax.Array) -> int:
    return 0 if x.ndim == 1 else 1


def _check_class_target(fn: str, input: jax.Array, target: jax.Array) -> jax.Array:
    """Checks class-index ``target`` against ``input``; returns it, with torch's one
    reshape: unbatched ``(C,)`` input takes a ``(1,)`` target as the scalar ``()``."""
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
    if fn == "cross_entropy" and target.shape == input.shape:
        raise TypeError(
            f"target: class probabilities must be floating, got dtype {target.dtype} with the input's "
            f"shape {tuple(input.shape)}; class indices have shape {tuple(expected)}"
        )
    if input.ndim == 1 and target.shape == (1,):
        return target.reshape(())
    V.require_shape("target", target, expected, context=f"for input {tuple(input.shape)}")
    return target


def _check_class_weight(weight, num_classes: int) -> jax.Array | None:
    if weight is None:
        return None
    weight = V.as_array("weight", weight)
    V.require_floating("weight", weight)
    V.require_shape("weight", weight, (num_classes,), context=f"(one per class, C={num_classes})")
    return S.replicate(weight)  # (explicitly sharded: gathered, see _sharding)


def _check_indices_in_range(target, num_classes: int, ignore_index: int) -> None:
    V.check_values(
        "target",
        target,
        lambda t: ((t >= 0) & (t < num_classes)) | _is_ignored(t, ignore_index),
        f"class indices must be in [0, {num_classes}) or equal ignore_index={ignore_index}",
    )


# XLA:CPU (jaxlib 0.10.2) reduces rows longer than 32768 elements several times slower
# than the same data in rows of at most 32768 (measured on 128 MiB of float32: a sum of
# exponentials 54-81 ms against 11 ms, a max 10.5 ms against 3.9 ms), so class axes
# longer than this are reduced in two stages.
LONG_ROW = 32768
MIN_PIECE = 4096


def _pieces(n: int) -> int | None:
    """The number of equal pieces a class axis of length ``n`` is reduced in (the smallest
    that brings them to at most ``LONG_ROW``, if each is still ``MIN_PIECE`` long), or
    None for one stage."""
    if n <= LONG_ROW:  # (also C = 0)
        return None
    return next((k for k in range(-(-n // LONG_ROW), n // MIN_PIECE + 1) if n % k == 0), None)


def _split(v: jax.Array, ax: int, pieces: int) -> jax.Array:
    """``v`` with axis ``ax`` split into ``(pieces, n // pieces)``; a kept (size 1) axis
    becomes ``(1, 1)``."""
    n = v.shape[ax]
    inner = (pieces, n // pieces) if n > 1 else (1, 1)
    return v.reshape(v.shape[:ax] + inner + v.shape[ax + 1 :])


def _second_stage(reducer, part: jax.Array, ax: int) -> jax.Array:
    # An optimisation barrier stops XLA from merging the two stages back into one long
    # reduction; it is differentiable, so every derivative still works.
    return reducer(jax.lax.optimization_barrier(part), axis=ax, keepdims=True)


# XLA:CPU (jaxlib 0.10.2) reduces over a class axis that is not the last one
# (K-dimensional logits ``(N, C, d_1, ..., d_K)``) slowly once the trailing axes are long:
# at (1, 150, 256, 256) float32 a plain max or sum took 31-66 ms and cross_entropy's value
# 98-130 ms (4.3x torch's time), against 10-14 ms with the classes last; with element-wise
# work fused into the reduction (the smoothing sum of ``x - r``) it was slow from 21
# classes (29 ms against 2.9 ms for a plain sum at (8, 21, 256, 256)). There the
# reductions are a halving tree of slices, combined element-wise over the trailing axes,
# down to at most ``_TREE_LEAVES`` slices that one reduction combines. That last
# reduction is what XLA writes out: a tree of element-wise ops alone was fused into
# every reader of its result and recomputed there (cross_entropy's value 2x slower at
# (8, 21, 256, 256) with an ``ignore_index`` among the classes). Taken with at least
# ``SLICED_REDUCE_MIN`` trailing elements (at 16384, (N, C, 128, 128), an element-wise
# tree was slower than XLA's reductions) and at most ``SLICED_REDUCE_MAX_CLASSES``
# classes (the range measured); the log-normaliser's and the probability targets' sums
# from ``SLICED_NORMALISER_MIN_CLASSES`` classes (below, at 19-40 classes, XLA's were as
# fast), the smoothing sums from 5. See the README's performance section.
SLICED_REDUCE_MIN = 32768
SLICED_REDUCE_MAX_CLASSES = 256
_TREE_LEAVES = 4
SLICED_NORMALISER_MIN_CLASSES = 64


def _sliced(v: jax.Array, ax: int, min_classes: int = _TREE_LEAVES + 1) -> bool:
    """Whether a reduction of ``v`` over ``ax`` is taken as a tree of slices."""
    return (
        ax < v.ndim - 1
        and min_classes <= v.shape[ax] <= SLICED_REDUCE_MAX_CLASSES
        and math.prod(v.shape[ax + 1 :]) >= SLICED_REDUCE_MIN
        and not S.is_sharded(v, ax)  # slices of a sharded axis would move data between devices
    )


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 2))
def _tree_reduce(reducer, v: jax.Array, ax: int) -> jax.Array:
    """``reducer(v, axis=ax, keepdims=True)`` (``jnp.sum`` or ``jnp.max``): pairs of slices
    combined element-wise, halving the axis down to at most ``_TREE_LEAVES`` slices, which
    one ``reducer`` call combines with the odd slices left over on the way (pairwise: a
    sum's rounding error bound grows with log C, not C). The tangent is ``reducer``'s
    own, so every derivative is unchanged."""
    combine = jnp.add if reducer is jnp.sum else jnp.maximum
    left = []
    while v.shape[ax] > _TREE_LEAVES:
        n, h = v.shape[ax], v.shape[ax] // 2
        if n % 2:
            left.append(jax.lax.slice_in_dim(v, n - 1, n, axis=ax))
        v = combine(jax.lax.slice_in_dim(v, 0, h, axis=ax), jax.lax.slice_in_dim(v, h, 2 * h, axis=ax))
    return reducer(jnp.concatenate([v, *left], axis=ax), axis=ax, keepdims=True)


@_tree_reduce.defjvp
def _tree_reduce_jvp(reducer, ax, primals, tangents):
    (v,), (dv,) = primals, tangents
    _, dout = jax.jvp(functools.partial(reducer, axis=ax, keepdims=True), (v,), (dv,))
    return _tree_reduce(reducer, v, ax), dout


def _axis_reduce(
    reducer, v: jax.Array, ax: int, keepdims: bool = False, min_classes: int = _TREE_LEAVES + 1
) -> jax.Array:
    """``reducer(v, axis=ax, keepdims=keepdims)``, as a tree of slices where ``_sliced``
    with ``min_classes``."""
    if not _sliced(v, ax, min_classes):
        return reducer(v, axis=ax, keepdims=keepdims)
    out = _tree_reduce(reducer, v, ax)
    return out if keepdims else out.squeeze(ax)


def _class_reduce(reducer, v: jax.Array, ax: int) -> jax.Array:
    """``reducer(v, axis=ax, keepdims=True)`` (``jnp.sum`` or ``jnp.max``), in two stages when
    the axis is longer than ``LONG_ROW`` (see ``_pieces``): over the pieces, then over
    their results."""
    pieces = _pieces(v.shape[ax])
    if pieces is None:
        return _axis_reduce(reducer, v, ax, keepdims=True, min_classes=SLICED_NORMALISER_MIN_CLASSES)
    return _second_stage(reducer, reducer(_split(v, ax, pieces), axis=ax + 1), ax)


def _exp_sum(x: jax.Array, m: jax.Array, ax: int) -> jax.Array:
    """The sum of ``exp(x - m)`` along ``ax`` (kept), ``x`` widened to ``m``'s dtype (``m`` has
    the class axis kept), for callers that do not keep the exponentials. On a long class
    axis they are taken in the split shape, with ``m`` broadcast over the pieces there:
    taken in the unsplit shape and fused into the reduction of the pieces, XLA:CPU's
    sum was 3.8x slower (44 against 11.7 ms for a (256, 131072) float32 block). (Where
    the exponentials are kept, they are written out in ``x``'s shape and reduced by
    ``_class_reduce``: a gradient written in place of them needs that shape.)"""
    pieces = _pieces(x.shape[ax])
    if pieces is None:
        e = jnp.exp(x.astype(m.dtype) - m)
        return _axis_reduce(jnp.sum, e, ax, keepdims=True, min_classes=SLICED_NORMALISER_MIN_CLASSES)
    e = jnp.exp(_split(x, ax, pieces).astype(m.dtype) - _split(m, ax, pieces))
    return _second_stage(jnp.sum, jnp.sum(e, axis=ax + 1), ax)


def _softmax_from(x: jax.Array, m: jax.Array, s: jax.Array) -> jax.Array:
    """The softmax ``exp(x - (m + s))`` from ``logsumexp = m + s`` (``x`` already in
    ``m``'s dtype), with the rounding error of ``m + s`` taken off as well (TwoSum), so
    that it is as precise as torch's ``exp((x - m) - s)``: where ``m`` is far larger
    than ``s`` the sum loses ``s`` (two logits tied at 1e20 had a softmax of 1 each;
    float32 logits near 1e4 were off by 2e-4). Written with ``m + s`` rather than
    ``x - m``: a second reader of the broadcast ``m`` (the sum of exponentials
    reads it) made XLA:CPU write it out at full ``x`` shape. Where the error is not
    finite (non-finite ``m`` or ``s``) it is 0, the plain formula's semantics."""
    lse = m + s
    b = lse - m
    err = (m - (lse - b)) + (s - b)
    return jnp.exp((x - lse) - jnp.where(jnp.isfinite(err), err, 0))


def _row_max(x: jax.Array, ax: int) -> jax.Array:
    """The row max in the compute dtype (taken in ``x``'s own dtype, where it is exact); 0 where
    it is -inf (a row of -inf: its sum of exponentials is then 0). A +inf max is kept, so
    that the row's ``x - m`` is NaN at the +inf entries, as torch's log_softmax is."""
    m = _class_reduce(jnp.max, x, ax).astype(compute_dtype(x.dtype))
    return jnp.where(m == -jnp.inf, 0, m)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _log_normaliser(x: jax.Array, ax: int) -> tuple[jax.Array, jax.Array]:
    """(m, s) with logsumexp(x) = m + s along ``ax`` (kept dims, compute dtype), m the row max.

    Every loss below uses ``m`` only in combinations that are exactly
    independent of its value (``(m - x_c) + s``), so ``m`` carries a zero
    tangent and ``s`` the tangent of the full log-normaliser,
    :math:`\\sum_c p_c\\,dx_c`. Writing ``lse - x_c`` as ``(m - x_c) + s`` keeps
    full precision for huge logits.

    The rule is a ``custom_jvp`` rather than autodiff of ``log(sum(exp))``: its
    tangent is linear in ``dx`` with the transpose ``p * g`` (element-wise), so
    under ``jit`` XLA computes the whole input gradient in one fused sweep over
    the logits, with no scatter. Forward mode and higher orders work because the
    rule is itself differentiable.
    """
    m = _row_max(x, ax)
    s = jnp.log(_exp_sum(x, m, ax))
    return m, s


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _widen_again(x: jax.Array, dtype) -> jax.Array:
    """``x.astype(dtype)`` for a narrow float ``x``, written so that XLA cannot merge it
    with another convert of ``x``: bf16 by its bits (exact: a bf16 is the top half
    of a float32), other dtypes through an optimisation barrier. Differentiable
    as the convert it is (the bit operations alone would have a zero tangent)."""
    if x.dtype == jnp.bfloat16 and dtype == jnp.float32:
        bits = jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32) << 16
        return jax.lax.bitcast_convert_type(bits, jnp.float32)
    return jax.lax.optimization_barrier(x).astype(dtype)


@_widen_again.defjvp
def _widen_again_jvp(dtype, primals, tangents):
    return _widen_again(primals[0], dtype), tangents[0].astype(dtype)


@_log_normaliser.defjvp
def _log_normaliser_jvp(ax, primals, tangents):
    (x,), (dx,) = primals, tangents
    # The primal is recomputed here (not by calling _log_normaliser) so that the
    # softmax can share exp(x - m) with s. m is stopped so that differentiating this
    # rule again (second order) sees the same zero tangent for m.
    m = jax.lax.stop_gradient(_row_max(x, ax))
    xc = x.astype(m.dtype)
    e = jnp.exp(xc - m)
    z = _class_reduce(jnp.sum, e, ax)
    s = jnp.log(z)
    if xc.dtype == x.dtype:
        # XLA keeps exp(x - m) for the backward and writes the gradient into it in place.
        p = e / z
    else:
        # A narrower input (bf16/f16): recompute exp in the backward sweep rather than
        # keep an (N, C) float32 buffer alive. The backward widens x by other means
        # than the forward's convert: a convert with two users would be materialised
        # as an (N, C) float32 copy (measured: +0.1 s at N=4096, C=32768).
        p = _softmax_from(_widen_again(x, m.dtype), m, s)
    return (m, s), (jnp.zeros_like(m), jnp.sum(p * dx.astype(m.dtype), axis=ax, keepdims=True))


def _max_normaliser(x: jax.Array, ax: int) -> tuple[jax.Array, jax.Array]:
    """:func:`_log_normaliser`'s ``(m, s)`` written for autodiff, for rules whose second
    derivatives differentiate a formula: ``m`` stopped, ``s`` the log of the sum of
    ``exp(x - m)``."""
    m = jax.lax.stop_gradient(_row_max(x, ax))
    return m, jnp.log(_exp_sum(x, m, ax))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _pick(x: jax.Array, idx: jax.Array, ax: int, finite_cotangent: bool = False) -> jax.Array:
    """``x[..., idx, ...]`` along ``ax`` (a gather), for in-range ``idx``.

    Its tangent is written as a one-hot masked sum, whose transpose is an
    element-wise select: the gradient needs no scatter and fuses with the rest
    of the backward sweep.

    ``finite_cotangent=True`` (linear_cross_entropy's chunks, differentiated with a
    unit cotangent) masks by multiplying with the one-hot instead: its transpose
    needs no full-shape zeros, which XLA would hoist out of the chunk loop as a
    materialised ``(chunk, C)`` buffer. A select is kept otherwise, so that a
    non-finite cotangent (a mean over zero total weight) leaves exact zeros off
    the target.
    """
    if S.is_sharded(x, ax):
        # Explicitly sharded along the classes: the masked sum of the tangent below, a
        # reduction across the shards (a gather would need every shard's slice of x).
        return jnp.sum(jnp.where(_one_hot(idx, x.shape[ax], x.ndim, ax), x, jnp.zeros((), x.dtype)), axis=ax)
    if x.dtype.itemsize < 4:
        # Gather the bits of a narrow float: XLA would otherwise rewrite
        # convert(gather(x)) as gather(convert(x)) and materialise a float32 copy of
        # the whole input (measured on CPU: 4.5x the time of the forward pass).
        bits = jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{8 * x.dtype.itemsize}"))
        picked = jnp.take_along_axis(bits, jnp.expand_dims(idx, ax), axis=ax).squeeze(ax)
        return jax.lax.bitcast_convert_type(picked, x.dtype)
    return jnp.take_along_axis(x, jnp.expand_dims(idx, ax), axis=ax).squeeze(ax)


@_pick.defjvp
def _pick_jvp(ax, finite_cotangent, primals, tangents):
    x, idx = primals
    dx = tangents[0]
    hit = _one_hot(idx, x.shape[ax], x.ndim, ax)
    masked = dx * hit.astype(dx.dtype) if finite_cotangent else jnp.where(hit, dx, 0)
    return _pick(x, idx, ax, finite_cotangent), jnp.sum(masked, axis=ax)


def _one_hot(idx: jax.Array, num_classes: int, ndim: int, ax: int) -> jax.Array:
    """Boolean ``class == idx`` along axis ``ax`` of an ``ndim``-dimensional array.

    Compared in int32: an iota in a narrow target dtype (uint8, int8) would wrap for
    C > 255. The class ids are a 1-D iota behind an optimisation barrier, broadcast
    inside the compare: a full-shape iota would be a loop invariant inside
    linear_cross_entropy's scan, which XLA hoists out of the loop as a materialised
    (chunk, C) buffer.
    """
    classes = jax.lax.optimization_barrier(jnp.arange(num_classes, dtype=jnp.int32))
    return _class_weight_view(classes, ndim, ax) == jnp.expand_dims(idx.astype(jnp.int32), ax)


def _holds(dtype, value: int) -> bool:
    """Whether the integer ``dtype`` can represent ``value``."""
    info = np.iinfo(dtype)
    return info.min <= value <= info.max


def _is_ignored(target, ignore_index: int):
    """``target == ignore_index``, all False where ``ignore_index`` lies outside the target's
    integer dtype (e.g. ``2**31`` with int32 targets: no target can equal it, as in torch)."""
    if not _holds(target.dtype, ignore_index):
        return jnp.zeros(target.shape, bool)
    return target == ignore_index


def _wide_index(target: jax.Array) -> jax.Array:
    """Class indices as at least int32, so that comparing them with ``C`` or a
    negative ``ignore_index`` cannot wrap around in a narrow dtype (uint8, int8)."""
    return target.astype(jnp.int32) if target.dtype.itemsize < 4 else target


def _class_weight_view(weight: jax.Array, ndim: int, ax: int) -> jax.Array:
    return weight.reshape((-1,) + (1,) * (ndim - ax - 1))


def _smoothing_sum(x, m, s, picked, weight, ax):
    """:math:`\\sum_c w_c (-\\log p_c)` per sample (:math:`w \\equiv 1` without weight).

    It equals :math:`W (m + s - r) - \\sum_c w_c (x_c - r)`, :math:`W = \\sum_c w_c`,
    for any per-row shift :math:`r`. The shift and the way of summing are chosen
    so that XLA reads the logits without materialising another ``(N, C)`` buffer
    (measured on CPU, see issue 6):

    - float32/64 input: :math:`r` is the picked logit (when finite), which keeps
      the sum precise for huge, close logits: a reduction of the shifted ``x``,
      except with a class weight on the last axis, where the sum is a mat-vec (a
      broadcast weight would be materialised) and the shift comes after it.
    - bf16/f16 input: :math:`r = m`. The sum reads ``x`` without a float32 copy:
      a class-weighted bf16 sum is :func:`_bf16_weighted_class_sum`'s mat-vec;
      otherwise ``x`` is widened behind a barrier, apart from the normaliser's
      convert (XLA materialises a convert that has two readers: 512 MiB at
      N=4096, C=32768).

    :math:`r` carries no gradient: its terms cancel exactly. An infinite :math:`W`
    (an infinite class weight) gives :math:`W` itself, not :math:`\\infty - \\infty`.
    """
    cdt = m.dtype
    wc = jnp.ones((x.shape[ax],), cdt) if weight is None else weight.astype(cdt)
    total = jnp.sum(wc)
    if x.dtype != cdt:
        r = m
        if weight is not None and x.dtype == jnp.bfloat16:
            wsum = _bf16_weighted_class_sum(x, wc, ax)
        else:
            xc = jax.lax.optimization_barrier(x).astype(cdt)
            wsum = _axis_reduce(jnp.sum, xc if weight is None else _class_weight_view(wc, x.ndim, ax) * xc, ax)
        wsum = wsum - r * total
    else:
        r = jax.lax.stop_gradient(jnp.where(jnp.isfinite(picked), picked, m))
        if ax == x.ndim - 1 and weight is not None:
            # With a class weight on the last axis, a mat-vec is the cheap read of x on
            # CPU: a weighted shifted sum materialises the broadcast product (measured
            # 1.7x the plain call's time, against 1.05x). The shift is applied after the
            # sum, so logits sharing a large offset lose precision to cancellation
            # (about 2e-4 relative at an offset of 1e4 in float32; see the docstring).
            wsum = jnp.matmul(x, wc, precision=jax.lax.Precision.HIGHEST) - r * total
        else:
            shifted = x - jnp.expand_dims(r, ax)
            shifted = shifted if weight is None else _class_weight_view(wc, x.ndim, ax) * shifted
            wsum = _axis_reduce(jnp.sum, shifted, ax)
    if weight is None:
        return total * ((m - r) + s) - wsum
    return _scaled_minus(total, (m - r) + s, wsum)


@jax.custom_jvp
def _scaled_minus(total, a, b):
    r""":math:`W a - b`, except that an infinite :math:`W` (an infinite class weight)
    gives :math:`W`, not :math:`\infty - \infty`: every term :math:`w_c (-\log p_c)`
    of the smoothing sum is then infinite, as in torch. The tangent is the product
    rule's (:math:`\dot W a + W \dot a - \dot b`), so that gradients are torch's
    (infinite, NaN for the infinite class) rather than NaN throughout."""
    return jnp.where(jnp.isinf(total), total, total * a - b)


@_scaled_minus.defjvp
def _scaled_minus_jvp(primals, tangents):
    (total, a, b), (t_total, t_a, t_b) = primals, tangents
    return _scaled_minus(total, a, b), t_total * a + total * t_a - t_b


@jax.custom_jvp
def _zero_times(z, a):
    r""":math:`z a`, but exactly 0 where :math:`z` is 0 even if :math:`a` is infinite, with
    the product rule's tangent :math:`\dot z a + z \dot a`. For a factor that is 0 in
    value where the other may be infinite:

    - the smoothing term :math:`(\varepsilon / C) S`: torch computes none at
      ``label_smoothing=0``, and ``-inf`` logits (masked classes) make :math:`S`
      infinite, so a traced zero smoothing gave :math:`0 \cdot \infty`, NaN. The
      derivative with respect to the smoothing at 0 stays :math:`S / C` (one-sided);
    - linear_cross_entropy's exact zero that carries the log-normaliser's derivative,
      times an infinite total class weight.

    Symbolic zeros: an undifferentiated factor's zero tangent times the other's
    infinite value would put NaN in the tangent."""
    prod = z * a
    return jnp.where(z == 0, jnp.zeros_like(prod), prod)


def _zero_times_jvp(primals, tangents):
    (z, a), (t_z, t_a) = primals, tangents
    out = _zero_times(z, a)
    tangent = jnp.zeros_like(out)
    if not isinstance(t_z, SymbolicZero):
        tangent = tangent + t_z * a
    if not isinstance(t_a, SymbolicZero):
        tangent = tangent + z * t_a
    return out, tangent


_zero_times.defjvp(_zero_times_jvp, symbolic_zeros=True)


def _bf16_split_matvec(x: jax.Array, w: jax.Array, ax: int) -> jax.Array:
    """:math:`\\sum_c w_c x_c` along ``ax`` for bf16 ``x`` and float32 ``w``, in float32:
    one bf16 mat-vec accumulating in float32, against ``w`` split into three bf16
    terms (hi + mid + lo equals ``w`` to float32 precision: bf16 has float32's
    exponent range). Linear in ``x``. A zero term (any ``w_c`` that bf16 holds
    exactly) times an infinite ``x_c`` is NaN: see :func:`_bf16_weighted_class_sum`.

    Each term is rounded with ``reduce_precision``, not by a round trip through bf16:
    XLA on GPU drops float32 -> bf16 -> float32 conversion pairs (its excess-precision
    simplification), which made the remainders zero and the sum bf16-accurate."""
    info = jnp.finfo(x.dtype)
    terms = []
    for _ in range(3):
        term = jax.lax.reduce_precision(w, exponent_bits=info.nexp, mantissa_bits=info.nmant)
        terms.append(term.astype(x.dtype))  # exact: the term is a bf16 value
        w = w - term
    # The terms are the dot's first operand: measured on CPU (XLA 0.10, bf16 x of
    # (4096, 32768)), (3, C) . x^T took 18 ms and x . (C, 3) 49 ms, the same sums.
    prod = jax.lax.dot_general(jnp.stack(terms), x, (((1,), (ax,)), ((), ())), preferred_element_type=w.dtype)
    return jnp.sum(prod, axis=0)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _bf16_weighted_class_sum(x: jax.Array, w: jax.Array, ax: int) -> jax.Array:
    """:math:`\\sum_c w_c x_c` along ``ax`` for bf16 ``x`` and float32 ``w``, in float32.

    :func:`_bf16_split_matvec`: a broadcast weight times a widened ``x`` would be
    materialised as a float32 ``x``-sized buffer (in cross_entropy's program XLA
    shares the broadcast weight with the gradient's term; measured on CPU at
    N=4096, C=32768: 512 MiB of temp, and, with the two kept apart, the weighted
    reduction took 410 ms where alone it takes 17). Where that gives NaN (an infinite
    logit meets a zero split term, or a NaN logit), the sum is taken again the plain
    way, which gives IEEE's answer: ``-inf`` for a ``-inf`` logit with a positive
    weight, NaN with a zero weight, as torch's ``weight * log_softmax``. The check is
    a ``lax.cond`` on the ``(N,)`` result, so the plain sum runs only then (under
    ``vmap`` both run). The rule differentiates ``w`` in float32 (the mat-vec's
    transpose would round its cotangent to bf16).
    """
    out = _bf16_split_matvec(x, w, ax)
    return jax.lax.cond(jnp.any(jnp.isnan(out)), lambda: _widened_weighted_sum(x, w, ax), lambda: out)


def _widened_weighted_sum(x: jax.Array, w: jax.Array, ax: int) -> jax.Array:
    """:math:`\\sum_c w_c x_c` along ``ax`` with ``x`` widened to ``w``'s dtype (materialises
    the broadcast product: for the rare path and for tangents of ``w``)."""
    return jnp.sum(x.astype(w.dtype) * _class_weight_view(w, x.ndim, ax), axis=ax)


def _bf16_weighted_class_sum_jvp(ax, primals, tangents):
    (x, w), (tx, tw) = primals, tangents
    out = _bf16_weighted_class_sum(x, w, ax)
    t = jnp.zeros_like(out)
    if not isinstance(tx, SymbolicZero):
        t = t + _bf16_split_matvec(tx, w, ax)
    if not isinstance(tw, SymbolicZero):
        t = t + _widened_weighted_sum(x, tw, ax)
    return out, t


_bf16_weighted_class_sum.defjvp(_bf16_weighted_class_sum_jvp, symbolic_zeros=True)


# Per-sample building blocks: cross_entropy and nll_loss reduce them over the whole
# batch; linear_cross_entropy evaluates them chunk by chunk and reduces the chunks
# itself.


def _class_index_weights(target, weight, num_classes: int, ignore_index: int, dtype):
    """``(active, in_range, safe, w_t)`` for class-index targets.

    ``w_t`` is what each sample contributes to the ``"mean"`` denominator:
    ``weight[target]`` (1 without ``weight``), 0 where ``target == ignore_index``.
    ``safe`` is the target clamped to a valid index for gathering.
    """
    target = _wide_index(target)
    active = ~_is_ignored(target, ignore_index)
    in_range = (target >= 0) & (target < num_classes)
    V.debug_check(
        jnp.all(in_range | ~active), f"target: class index out of range [0, {num_classes}) (and not ignore_index)"
    )
    safe = jnp.where(active & in_range, target, 0)
    if weight is None:
        w_t = jnp.ones(target.shape, dtype)
    elif num_classes == 0:  # nothing to gather: every target is ignored or out of range
        w_t = jnp.zeros(target.shape, dtype)
    else:
        w_t = S.take_rows(weight.astype(dtype), safe)
    return active, in_range, safe, jnp.where(active, w_t, 0)


def _class_index_logit_grad(p, target, weight, eps, ax: int, *, ignore_index: int, scale=None):
    """The gradient of ``scale`` times the sum of the class-index losses with respect to
    the logits, written out from their softmax ``p`` (compute dtype).

    With :math:`w` the class weights, :math:`\\varepsilon` the smoothing and :math:`C`
    the number of classes, for a kept, in-range target :math:`y`:
    :math:`a\\,p_c - b\\,[c = y] - g\\,w_c` with :math:`b = (1-\\varepsilon) w_y`,
    :math:`g = \\varepsilon / C`, :math:`a = b + g \\sum_c w_c`; exactly zero for
    ignored or out-of-range targets (whose loss is 0 or NaN). ``scale`` (a scalar,
    e.g. a mean's ``1 / sum(w_y)``, possibly inf) multiplies the per-row coefficients.
    The one-hot term multiplies rather than selects (``b`` is a row coefficient): a
    select against 0 would bring a full-shape zeros buffer, which XLA hoists out of
    linear_cross_entropy's chunk loop.
    """
    cdt = p.dtype
    C = p.shape[ax]
    active, in_range, safe, w_t = _class_index_weights(target, weight, C, ignore_index, cdt)
    kept = jnp.expand_dims(active & in_range, ax)
    b = jnp.where(kept, jnp.expand_dims(w_t if scale is None else w_t * scale, ax), 0)
    hit = _one_hot(safe, C, p.ndim, ax).astype(cdt)
    if eps is None:
        return (p - hit) * b
    e = jnp.asarray(eps, cdt)
    b = b * (1 - e)
    g = jnp.where(kept, e / C if scale is None else (e / C) * scale, jnp.zeros((), cdt))
    wsum = C if weight is None else jnp.sum(weight.astype(cdt))
    return p * (b + g * wsum) - hit * b - (g if weight is None else g * _class_weight_view(weight.astype(cdt), p.ndim, ax))


def _class_index_losses(
    x, target, weight, label_smoothing, *, ignore_index: int, finite_cotangent: bool = False, normaliser=None
):
    """Per-sample cross_entropy losses (class-index targets), before reduction.

    ``x`` may be low precision (the normaliser accumulates in float32 and no
    float32 copy of ``x`` is kept). Returns ``(loss, w_t)``; ``loss``
    is NaN where a target that is not ignored is out of range, and ignored
    samples are selected away (exactly-zero gradients). ``normaliser``: ``x``'s
    ``_log_normaliser`` if the caller has computed it already.
    """
    ax = _class_axis(x)
    C = x.shape[ax]
    m, s = _log_normaliser(x, ax) if normaliser is None else normaliser
    m, s = m.squeeze(ax), s.squeeze(ax)
    active, in_range, safe, w_t = _class_index_weights(target, weight, C, ignore_index, m.dtype)
    picked = _pick(x, safe, ax, finite_cotangent).astype(m.dtype)
    loss = w_t * ((m - picked) + s)
    if label_smoothing is not None:
        eps = jnp.asarray(label_smoothing, m.dtype)
        loss = (1 - eps) * loss + _zero_times(eps / C, _smoothing_sum(x, m, s, picked, weight, ax))
    return jnp.where(active, jnp.where(in_range, loss, jnp.nan), 0), w_t


def _probability_losses(x, target, weight, label_smoothing, *, normaliser=None):
    """Per-sample cross_entropy losses (class-probability targets), before reduction.

    ``x`` and ``target`` must already be in the compute dtype. ``normaliser``:
    ``x``'s ``_log_normaliser`` if the caller has computed it already.
    """
    ax = _class_axis(x)
    C = x.shape[ax]
    t = target
    if label_smoothing is not None:
        eps = jnp.asarray(label_smoothing, x.dtype)
        t = t * (1 - eps) + eps / C
    m, s = _log_normaliser(x, ax) if normaliser is None else normaliser
    if weight is not None:
        t = t * _class_weight_view(weight.astype(x.dtype), x.ndim, ax)
    return -_axis_reduce(jnp.sum, t * (x - m - s), ax, min_classes=SLICED_NORMALISER_MIN_CLASSES)


def _indices_total(x, target, weight, label_smoothing, *, ignore_index, reduction, out_dtype, normaliser=None):
    loss, w_t = _class_index_losses(x, target, weight, label_smoothing, ignore_index=ignore_index, normaliser=normaliser)
    return reduce(loss, reduction, denominator=jnp.sum(w_t), dtype=out_dtype)


@functools.partial(jax.jit, static_argnames=("ignore_index", "reduction", "out_dtype"))
def _cross_entropy_indices(x, target, weight, label_smoothing, *, ignore_index, reduction, out_dtype):
    if reduction != "none" and x.dtype == jnp.bfloat16:
        return _bf16_total((ignore_index, reduction, out_dtype), x, target, weight, label_smoothing)
    if reduction != "none" and x.dtype == compute_dtype(x.dtype) and _takes_picked_shift(x):
        return _picked_total((ignore_index, reduction, out_dtype), x, target, weight, label_smoothing)
    return _indices_total(
        x, target, weight, label_smoothing, ignore_index=ignore_index, reduction=reduction, out_dtype=out_dtype
    )


@jax.custom_jvp
def _round_to_bf16(f: jax.Array) -> jax.Array:
    """float32 ``f`` rounded to bf16 (to nearest, ties to even) by its bits; NaN stays
    NaN. The same values as ``f.astype(bfloat16)``, in integer operations that XLA
    on CPU vectorises (its own float32-to-bf16 convert took 40 ms more per 2**27
    elements). Differentiable as the convert it is."""
    b = jax.lax.bitcast_convert_type(f, jnp.uint32)
    r = (b + (0x7FFF + ((b >> 16) & 1))) >> 16
    r = jnp.where(jnp.isnan(f), (b >> 16) | 0x40, r)
    return jax.lax.bitcast_convert_type(r.astype(jnp.uint16), jnp.bfloat16)


@_round_to_bf16.defjvp
def _round_to_bf16_jvp(primals, tangents):
    return _round_to_bf16(primals[0]), tangents[0].astype(jnp.bfloat16)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _bf16_total(static, x, target, weight, label_smoothing):
    """cross_entropy's ``"mean"``/``"sum"`` of bf16 logits with class-index targets.

    The value is :func:`_indices_total`'s. The rule writes the gradient with respect
    to ``x`` out (softmax minus the smoothed one-hot, with the class weights and the
    reduction's scale, as ``linear_cross_entropy``'s fused path does), rounds it to
    bf16 once by its bits, and returns its inner product with the tangent of ``x``.
    Reverse mode transposes that product: with the unit cotangent of
    ``value_and_grad``, XLA drops the multiply and the widen-and-narrow round trip,
    so the bf16 gradient is what the rule computed, in one pass with no float32
    convert (measured on CPU at N=4096, C=32768: 168 ms against 218 ms for autodiff
    of the losses). Another cotangent ``c`` gives ``bf16(c * g)``, a second
    rounding (within 1.5 bf16 ulp of the exact product, against 0.5 for ``c = 1``).
    Tangents of ``weight`` and ``label_smoothing`` are autodiff's. Second
    derivatives differentiate the formula. From 2048 classes (see
    :func:`_takes_picked_shift`) the normaliser is :func:`_picked_normaliser`'s,
    which saves the pass for the row max.
    """
    ignore_index, reduction, out_dtype = static
    return _indices_total(
        x, target, weight, label_smoothing, ignore_index=ignore_index, reduction=reduction, out_dtype=out_dtype,
        normaliser=_picked_normaliser(x, target, _class_axis(x)) if _takes_picked_shift(x) else None,
    )


def _bf16_total_jvp(static, primals, tangents):
    ignore_index, reduction, out_dtype = static
    x, target, weight, eps = primals
    tx, _, tw, te = tangents
    ax = _class_axis(x)
    C = x.shape[ax]
    if _takes_picked_shift(x):
        # shifted by the picked logit: no pass for the row max (191 against 200 ms at
        # N=4096, C=32768, side by side)
        m, s = _picked_normaliser(x, target, ax)
    else:
        m, s = _max_normaliser(x, ax)
    cdt = m.dtype
    kw = {"ignore_index": ignore_index, "reduction": reduction, "out_dtype": out_dtype}
    total = _indices_total(x, target, weight, eps, normaliser=(m, s), **kw)
    out = jnp.zeros((), out_dtype)
    if not isinstance(tx, SymbolicZero):
        _, _, _, w_t = _class_index_weights(target, weight, C, ignore_index, cdt)
        scale = 1 / jnp.sum(w_t) if reduction == "mean" else None
        p = _softmax_from(_widen_again(x, cdt), m, s)
        dz = _class_index_logit_grad(p, target, weight, eps, ax, ignore_index=ignore_index, scale=scale)
        grad = _round_to_bf16(dz)
        out = out + jnp.sum(grad.astype(cdt) * tx.astype(cdt)).astype(out_dtype)
    return total, out + _weight_and_smoothing_tangent(kw, x, target, weight, eps, tw, te)


def _weight_and_smoothing_tangent(kw, x, target, weight, eps, tw, te):
    """Autodiff's tangent of :func:`_indices_total` (keywords ``kw``) for ``weight`` and
    ``label_smoothing`` (symbolic zeros for those not perturbed), for the rules that
    write the logits' tangent out."""
    if all(v is None or isinstance(t, SymbolicZero) for v, t in ((weight, tw), (eps, te))):
        return jnp.zeros((), kw["out_dtype"])
    dense = lambda v, t: None if v is None else (jnp.zeros_like(v) if isinstance(t, SymbolicZero) else t)  # noqa: E731
    value = lambda w, e: _indices_total(x, target, w, e, **kw)  # noqa: E731
    return jax.jvp(value, (weight, eps), (dense(weight, tw), dense(eps, te)))[1].astype(kw["out_dtype"])


_bf16_total.defjvp(_bf16_total_jvp, symbolic_zeros=True)


def _unless(ok: jax.Array, fast, slow):
    """``fast`` (a pytree of arrays) where the boolean scalar ``ok`` holds, else ``slow()``,
    which is evaluated only then.

    A ``while_loop`` of at most one trip rather than a ``lax.cond``: under ``vmap`` a
    cond with a batched predicate is turned into a select that evaluates both branches
    for every example, where the loop runs its body only if some example needs it (and
    keeps ``fast`` for the others). The loop is not reverse-differentiable: callers
    keep it out of every tangent's path.
    """
    return jax.lax.while_loop(lambda c: jnp.logical_not(c[0]), lambda c: (jnp.ones((), bool), slow()), (ok, fast))[1]


# The class counts from which float32/64 logits (_picked_total) and bf16 logits (_bf16_total)
# take the picked-logit shift, class axis last and otherwise. Measured on a 2-core CPU in
# float32 (value_and_grad, side by side): with fewer classes the gather of the picked logits
# costs more than the row max it saves (21 classes: 3.0 against 2.2 ms at N=65536;
# (16, 512, 32, 16): 16 against 10 ms), with more the shift saves 4-10% (256 class-last:
# 19.7 against 21.6 ms; (8, 8192, 256): 45 against 47 ms). bf16 logits, class axis last, from
# 2048 classes: below, the gradient was slower (256 classes: 5.1 against 4.6 ms at
# N=16384); from 2048 on within the noise or faster (C=32768: 198 against 207 ms), and the
# value alone 10-20% faster.
PICKED_MIN_CLASSES_LAST = 256
PICKED_MIN_CLASSES_LAST_BF16 = 2048
PICKED_MIN_CLASSES_OTHER = 4096
# On a GPU the fallback loop (_unless) copies its predicate to the host before its first
# trip, a fixed cost the saved pass over the logits must repay. Measured on an H100 (jax
# 0.11.2; float32 and bf16, value and value_and_grad, with and without smoothing, side by
# side against the row-max shift): below 64 MiB of logits the shift took 0.99x-1.25x the
# time (1024 x 8192 float32, value: 0.365 against 0.305 ms); at 64-128 MiB 0.89x-1.06x;
# from 256 MiB 0.63x-1.04x, 22 of 24 cases under 0.94x (16384 x 32768 float32, value:
# 1.15 against 1.83 ms).
PICKED_MIN_BYTES_GPU = 64 << 20


def _takes_picked_shift(x: jax.Array) -> bool:
    """Whether ``x`` has the classes for the picked-logit shift. Not for logits
    explicitly sharded along the classes: their picked logit is a masked sum over the
    classes (:func:`_pick`), a pass as long as the row max's, so nothing would be saved.
    On a GPU (the platform ``x`` is traced for: :func:`_sharding.platform`) only from
    ``PICKED_MIN_BYTES_GPU`` bytes of logits."""
    if S.platform(x) in S.GPU_PLATFORMS and x.size * x.dtype.itemsize < PICKED_MIN_BYTES_GPU:
        return False
    ax = _class_axis(x)
    if S.is_sharded(x, ax):
        return False
    if ax != x.ndim - 1:
        return x.shape[ax] >= PICKED_MIN_CLASSES_OTHER
    return x.shape[ax] >= (PICKED_MIN_CLASSES_LAST_BF16 if x.dtype == jnp.bfloat16 else PICKED_MIN_CLASSES_LAST)


def _picked_shift(x: jax.Array, target: jax.Array, ax: int) -> jax.Array:
    """Each row's logit of its target class (class 0's where the target is ignored or
    out of range), kept dims, in the compute dtype: a shift that is one of the row's
    own logits, so that the row's sum of ``exp(x - shift)`` is at least 1 (it holds
    ``exp(0)``) wherever it is finite."""
    t = _wide_index(target)
    safe = jnp.where((t >= 0) & (t < x.shape[ax]), t, 0)
    return jnp.expand_dims(_pick(x, safe, ax), ax).astype(compute_dtype(x.dtype))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _picked_normaliser(x: jax.Array, target: jax.Array, ax: int) -> tuple[jax.Array, jax.Array]:
    """(r, s) with logsumexp(x) = r + s along ``ax`` (kept dims, compute dtype), as
    :func:`_log_normaliser` but in one read of ``x``: ``r`` is the picked logit
    (:func:`_picked_shift`) rather than the row max, which needs a pass of its own.
    Where any row's sum overflows (a logit more than about 88 above the target's in
    float32) or is not finite, every row takes :func:`_log_normaliser`'s ``(m, s)``
    instead, so non-finite logits behave exactly as there.

    Its tangents are :func:`_log_normaliser`'s (zero for ``r``, that of the
    log-normaliser for ``s``; callers use ``r`` only where its value cancels), so that
    no tangent goes through the fallback's loop (see :func:`_unless`)."""
    r = _picked_shift(x, target, ax)
    z = _exp_sum(x, r, ax)
    return _unless(jnp.all(jnp.isfinite(z)), (r, jnp.log(z)), lambda: _log_normaliser(x, ax))


@_picked_normaliser.defjvp
def _picked_normaliser_jvp(ax, primals, tangents):
    x, target = primals
    _, dms = jax.jvp(lambda x: _log_normaliser(x, ax), (x,), (tangents[0],))
    return _picked_normaliser(x, target, ax), dms


def _grad_from(p, normaliser, static, x, target, weight, eps):
    """(total, gradient of the total with respect to ``x``) of the class-index losses,
    from the softmax ``p`` and the normaliser it came from."""
    ignore_index, reduction, out_dtype = static
    ax = _class_axis(x)
    total = _indices_total(
        x, target, weight, eps, ignore_index=ignore_index, reduction=reduction, out_dtype=out_dtype, normaliser=normaliser
    )
    _, _, _, w_t = _class_index_weights(target, weight, x.shape[ax], ignore_index, p.dtype)
    scale = 1 / jnp.sum(w_t) if reduction == "mean" else None
    return total, _class_index_logit_grad(p, target, weight, eps, ax, ignore_index=ignore_index, scale=scale)


def _max_shift_total_and_grad(static, x, target, weight, eps):
    """:func:`_picked_total_and_grad` shifted by the row max and written as a formula that
    autodiff can differentiate (the softmax is recomputed from ``x``)."""
    m, s = _max_normaliser(x, _class_axis(x))
    return _grad_from(_softmax_from(x, m, s), (m, s), static, x, target, weight, eps)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _picked_total_and_grad(static, x, target, weight, eps):
    """(total, its gradient with respect to ``x``) for float32/64 logits, in two sweeps
    over them: ``e = exp(x - r)`` written once and summed, with ``r`` the picked logit
    (:func:`_picked_shift`, so no pass for the row max), then the gradient
    ``e / sum(e)`` minus the (smoothed, weighted, scaled) one-hot written over ``e``.
    Where any row's sum is not finite, every row is recomputed shifted by the row max
    (:func:`_max_shift_total_and_grad`, which never overflows and keeps non-finite
    logits' semantics), in a loop that runs only then (:func:`_unless`).

    Its own derivatives (second order) are those of the max-shifted formula, so that
    no tangent goes through the loop."""
    ax = _class_axis(x)
    r = _picked_shift(x, target, ax)
    e = jnp.exp(x - r)
    z = _class_reduce(jnp.sum, e, ax)
    fast = _grad_from(e / z, (r, jnp.log(z)), static, x, target, weight, eps)
    return _unless(jnp.all(jnp.isfinite(z)), fast, lambda: _max_shift_total_and_grad(static, x, target, weight, eps))


@_picked_total_and_grad.defjvp
def _picked_total_and_grad_jvp(static, primals, tangents):
    return jax.jvp(functools.partial(_max_shift_total_and_grad, static), primals, tangents)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _picked_total(static, x, target, weight, label_smoothing):
    """cross_entropy's ``"mean"``/``"sum"`` of float32/64 logits with class-index targets.

    The value is :func:`_indices_total`'s, normalised by :func:`_picked_normaliser`
    (one read of the logits, no row max). The rule takes the value and the gradient
    with respect to ``x`` from :func:`_picked_total_and_grad` (two sweeps, against
    three with the row max: measured side by side on a 2-core CPU at N=4096,
    C=32768, 259 ms against 278 ms for the max-shifted rule and 279 ms for optax;
    the value alone 51 against 69 ms) and returns the gradient's inner
    product with the tangent of ``x``; reverse mode transposes it to the gradient
    times the cotangent. Tangents of ``weight`` and ``label_smoothing`` are
    autodiff's.
    """
    ignore_index, reduction, out_dtype = static
    normaliser = _picked_normaliser(x, target, _class_axis(x))
    return _indices_total(
        x, target, weight, label_smoothing, ignore_index=ignore_index, reduction=reduction, out_dtype=out_dtype,
        normaliser=normaliser,
    )


def _picked_total_jvp(static, primals, tangents):
    ignore_index, reduction, out_dtype = static
    x, target, weight, eps = primals
    tx, _, tw, te = tangents
    kw = {"ignore_index": ignore_index, "reduction": reduction, "out_dtype": out_dtype}
    if isinstance(tx, SymbolicZero):
        total, out = _picked_total(static, x, target, weight, eps), jnp.zeros((), out_dtype)
    else:
        total, grad = _picked_total_and_grad(static, x, target, weight, eps)
        out = jnp.sum(grad * tx.astype(grad.dtype)).astype(out_dtype)
    return total, out + _weight_and_smoothing_tangent(kw, x, target, weight, eps, tw, te)


_picked_total.defjvp(_picked_total_jvp, symbolic_zeros=True)


@functools.partial(jax.jit, static_argnames=("reduction", "out_dtype"))
def _cross_entropy_probs(x, target, weight, label_smoothing, *, reduction, out_dtype):
    cdt = compute_dtype(out_dtype)
    loss = _probability_losses(x.astype(cdt), target.astype(cdt), weight, label_smoothing)
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

    Equals ``torch.nn.functional.cross_entropy`` (torch 2.13) in value and in the
    gradient with respect to ``input`` (and ``target`` and ``weight`` for
    probability targets).

    With class-index targets :math:`y_n` and smoothing :math:`\varepsilon`, per
    sample :math:`n` (a position in ``(N, d_1, ..., d_K)``):

    .. math::
        \ell_n = (1-\varepsilon)\, w_{y_n} (-\log p_{n,y_n})
                 + \frac{\varepsilon}{C} \sum_{c=1}^{C} w_c (-\log p_{n,c}),
        \qquad p_{n,c} = \operatorname{softmax}(x_n)_c,

    with :math:`w \equiv 1` without ``weight``, and :math:`\ell_n = 0` where
    :math:`y_n` = ``ignore_index``. Reductions:

    .. math::
        \text{none: } (\ell_n)_n, \qquad \text{sum: } \sum_n \ell_n, \qquad
        \text{mean: } \frac{\sum_n \ell_n}{\sum_{n:\, y_n \ne \text{ignore\_index}} w_{y_n}},

    so the weighted mean divides by the weights of the targets that take part (the
    number of them without ``weight``), in both terms; if every target is ignored
    the mean is NaN (0/0), the sum is 0 and the gradient is zero. If the kept
    targets' weights sum to 0, the mean is NaN as in torch (also with smoothing,
    whose own term is positive), with NaN gradients on the kept samples and zeros
    on the ignored ones.

    With probability targets :math:`t_{n,c}`, smoothed to
    :math:`(1-\varepsilon)\, t_{n,c} + \varepsilon / C`:

    .. math::
        \ell_n = -\sum_{c=1}^{C} w_c\, t_{n,c} \log p_{n,c},

    and ``"mean"`` divides :math:`\sum_n \ell_n` by the number of samples
    :math:`N d_1 \cdots d_K` (not by the weights).

    :math:`-\log p_{n,c}` is computed as :math:`(m_n - x_{n,c}) + \log\sum_c
    e^{x_{n,c} - m_n}` with :math:`m_n` the row maximum, in at least float32, so
    logits of any magnitude are exact to rounding. float32/64 and bf16 logits with
    class indices, ``"mean"``/``"sum"`` and at least 256 classes (bf16: 2048; 4096
    where the class axis is not last) take :math:`m_n` to be the target's logit instead, which
    saves the pass over the logits for the maximum (the sum is then
    at least 1); if any row's sum overflows (a logit more than about 88 above the
    target's, in float32) or is not finite, every row is recomputed with the row
    maximum, so values, and NaN and inf where they arise, are the same.

    One exception to the exactness: ``weight`` with ``label_smoothing`` on
    class-last logits sharing a large offset, where the weighted sum is a mat-vec
    shifted afterwards: about 2e-4 relative at an offset of 1e4 in float32, 2e-13
    at 1e4 and 3e-9 at 1e8 in float64; the same sum makes an infinite class weight
    give NaN there, where torch gives inf.

    Nothing of shape ``input`` but the gradient is materialised: the gradient
    ``softmax - one_hot`` is a single fused pass (custom JVP rules; forward mode,
    ``jax.hessian`` and higher orders work).

    Args:
      input: logits of shape ``(C,)``, ``(N, C)`` or ``(N, C, d_1, ..., d_K)``
        (the class axis is 0 for 1-D input, else 1); any floating dtype.
      target: class indices of shape ``()``, ``(N,)`` or ``(N, d_1, ..., d_K)``
        (``input`` without the class axis; for ``(C,)`` input also ``(1,)``, read as
        ``()`` as torch's forward does), of any integer dtype, each in
        ``[0, C)`` or equal to ``ignore_index``; or class probabilities of
        ``input``'s shape, floating (not checked to sum to 1, as in torch).
      weight: optional class weights of shape ``(C,)``, floating.
      ignore_index: a class-index value whose targets contribute nothing (any
        int, negative included, or a concrete 0-d integer array). With
        probability targets only a negative value is accepted, and has no effect
        (as in torch).
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``; torch's
        deprecated ``"elementwise_mean"`` is taken as ``"mean"``, with its warning.
      label_smoothing: :math:`\varepsilon \in [0, 1]`, a float or a traced
        scalar: changing it does not recompile (a literal ``0.0`` compiles a path
        without the smoothing term). A bool raises ``TypeError`` (torch reads
        ``True`` as 1.0).

    Returns:
      ``"none"``: the per-sample losses, of shape ``input`` without the class
      axis (``()`` for a ``(C,)`` input); ``"mean"`` and ``"sum"``: a scalar. The
      dtype is torch's: the promoted floating dtype of ``input``, ``weight`` and
      probability targets (bf16 in, bf16 out).

    Sharded inputs: ``input`` may be sharded along the batch and along the
    classes, also with explicit shardings (a mesh of ``AxisType.Explicit`` axes):
    the picked logit of class-sharded logits is a one-hot masked sum, so the
    logits are never gathered; a sharded ``weight`` is replicated. See the README,
    "Sharded inputs".

    Raises:
      TypeError: ``input`` not floating; ``target`` of the wrong kind (floating
        where class indices are expected, integer where probabilities are);
        ``weight`` not floating; ``ignore_index`` not an int.
      ValueError: a ``target`` or ``weight`` shape that does not fit ``input``, an
        unknown ``reduction``, ``label_smoothing`` outside [0, 1], ``ignore_index``
        set with probability targets, or (concrete arrays only) a class index out
        of range.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> logits = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
      >>> print(f"{jaxloss.cross_entropy(logits, jnp.array([0, 2])):.4f}")
      0.1755
      >>> print(f"{jaxloss.cross_entropy(logits, jnp.array([0, -100])):.4f}")
      0.2413
      >>> per_sample = jaxloss.cross_entropy(logits, jnp.array([0, 2]), reduction="none")
      >>> print([f"{v:.4f}" for v in per_sample])
      ['0.2413', '0.1096']
      >>> w = jnp.array([1.0, 2.0, 0.5])
      >>> print(f"{jaxloss.cross_entropy(logits, jnp.array([0, 2]), weight=w, label_smoothing=0.1):.4f}")
      0.4938
      >>> probs = jnp.array([[0.8, 0.2, 0.0], [0.0, 0.5, 0.5]])
      >>> print(f"{jaxloss.cross_entropy(logits, probs):.4f}")
      1.0255

    .. note::
       Out-of-range class indices: on concrete arrays jaxloss raises
       ``ValueError`` (torch raises ``IndexError``). Inside ``jax.jit`` values
       cannot raise: the affected loss entries (and so the mean and sum) are NaN,
       never a silently wrong number. To get the error inside ``jit``, use
       ``jax.experimental.checkify.checkify(jax.jit(jaxloss.cross_entropy))``.

    .. note::
       Deliberate differences from torch: jaxloss accepts class indices of any
       integer dtype (torch only int64 and uint8); promotes mixed floating dtypes
       of ``input``, ``weight`` and probability targets (torch's kernel refuses
       them); rejects a negative ``label_smoothing`` (torch silently accepts it);
       and differentiates ``weight`` for class-index targets as well (torch
       implements no gradient there).
    """
    input = V.as_array("input", input)
    target = V.as_array("target", target)
    V.require_floating("input", input)
    reduction = check_reduction(reduction, elementwise_mean=True)
    ignore_index = V.require_static_index("ignore_index", ignore_index)
    V.check_scalar("label_smoothing", label_smoothing, lo=0.0, hi=1.0)
    V.require_ndim("input", input, range(1, 1 << 30), what="(C,), (N, C) or (N, C, d_1, ..., d_K)")
    ax = _class_axis(input)
    C = input.shape[ax]
    if C == 0:  # torch returns NaN (0 for "sum") here
        raise ValueError(f"input: expected at least one class, got shape {tuple(input.shape)}")
    smoothing = None if (isinstance(label_smoothing, (int, float)) and label_smoothing == 0) else label_smoothing
    if jnp.issubdtype(target.dtype, jnp.floating) and target.shape == input.shape:
        if ignore_index >= 0:  # torch rejects these only (a negative one has no effect)
            raise ValueError(
                f"ignore_index: only applies to class-index targets, got ignore_index={ignore_index} "
                "with probability targets (a negative value is accepted and has no effect, as in torch)"
            )
        weight = _check_class_weight(weight, C)
        out_dtype = result_dtype(input.dtype, target.dtype, None if weight is None else weight.dtype)
        return _cross_entropy_probs(input, target, weight, smoothing, reduction=reduction, out_dtype=out_dtype)
    target = _check_class_target("cross_entropy", input, target)
    weight = _check_class_weight(weight, C)
    _check_indices_in_range(target, C, ignore_index)
    out_dtype = result_dtype(input.dtype, None if weight is None else weight.dtype)
    return _cross_entropy_indices(
        input, target, weight, smoothing, ignore_index=ignore_index, reduction=reduction, out_dtype=out_dtype
    )


@functools.partial(jax.jit, static_argnames=("ignore_index", "reduction", "out_dtype"))
def _nll_loss(x, target, weight, *, ignore_index, reduction, out_dtype):
    ax = _class_axis(x)
    x = x.astype(compute_dtype(x.dtype))
    active, in_range, safe, w_t = _class_index_weights(target, weight, x.shape[ax], ignore_index, x.dtype)
    picked = _pick(x, safe, ax)
    loss = jnp.where(active, jnp.where(in_range, -w_t * picked, jnp.nan), 0)
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

    Equals ``torch.nn.functional.nll_loss`` (torch 2.13) in value and in the
    gradient with respect to ``input``. Per sample :math:`n` (a position in
    ``(N, d_1, ..., d_K)``):

    .. math::
        \ell_n = -w_{y_n}\, x_{n, y_n}, \qquad \ell_n = 0 \text{ where } y_n = \text{ignore\_index},

    with :math:`w \equiv 1` without ``weight``. Reductions:

    .. math::
        \text{none: } (\ell_n)_n, \qquad \text{sum: } \sum_n \ell_n, \qquad
        \text{mean: } \frac{\sum_n \ell_n}{\sum_{n:\, y_n \ne \text{ignore\_index}} w_{y_n}};

    if every target is ignored the mean is NaN (0/0), the sum is 0 and the
    gradient is zero. ``nll_loss(log_softmax(x), y)`` equals
    ``cross_entropy(x, y)``. As in torch, zero classes are accepted (with or
    without a zero-length ``weight``) when every target is ignored or there are no
    samples; ``cross_entropy`` rejects them.

    Args:
      input: log-probabilities (any real numbers are accepted, as in torch) of
        shape ``(C,)``, ``(N, C)`` or ``(N, C, d_1, ..., d_K)``; floating.
      target: class indices of shape ``()``, ``(N,)`` or ``(N, d_1, ..., d_K)``
        (for ``(C,)`` input also ``(1,)``, read as ``()`` as torch's forward does),
        of any integer dtype, each in ``[0, C)`` or equal to ``ignore_index``.
      weight: optional class weights of shape ``(C,)``, floating.
      ignore_index: a target value that contributes nothing (any int).
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``; torch's
        deprecated ``"elementwise_mean"`` is taken as ``"mean"``, with its warning.

    Returns:
      ``"none"``: per-sample losses shaped like ``target``; ``"mean"`` and
      ``"sum"``: a scalar; in the promoted floating dtype of ``input`` and
      ``weight`` (bf16 in, bf16 out).

    Raises:
      TypeError: ``input``/``weight`` not floating, ``target`` not integer,
        ``ignore_index`` not an int.
      ValueError: a ``target`` or ``weight`` shape that does not fit ``input``, an
        unknown ``reduction``, or (concrete arrays only) a class index out of range.

    Example:
      >>> import jax, jax.numpy as jnp, jaxloss
      >>> logp = jax.nn.log_softmax(jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]]))
      >>> print(f"{jaxloss.nll_loss(logp, jnp.array([0, 2])):.4f}")
      0.1755
      >>> print(f"{jaxloss.nll_loss(logp, jnp.array([0, 2]), weight=jnp.array([1.0, 2.0, 0.5])):.4f}")
      0.1974

    .. note::
       Out-of-range class indices raise ``ValueError`` on concrete arrays (torch
       raises ``IndexError``) and make the affected entries NaN inside
       ``jax.jit``; ``checkify.checkify`` reports them as errors. Deliberate
       differences from torch: any integer dtype for ``target`` (torch: int64 and
       uint8), mixed floating dtypes are promoted, and ``weight`` is
       differentiable (torch implements no gradient for it).
    """
    input = V.as_array("input", input)
    target = V.as_array("target", target)
    V.require_floating("input", input)
    reduction = check_reduction(reduction, elementwise_mean=True)
    ignore_index = V.require_static_index("ignore_index", ignore_index)
    target = _check_class_target("nll_loss", input, target)
    C = input.shape[_class_axis(input)]
    weight = _check_class_weight(weight, C)
    _check_indices_in_range(target, C, ignore_index)
    out_dtype = result_dtype(input.dtype, None if weight is None else weight.dtype)
    return _nll_loss(input, target, weight, ignore_index=ignore_index, reduction=reduction, out_dtype=out_dtype)
