"""linear_cross_entropy: cross_entropy of a linear layer's logits, without the logits.

``linear_cross_entropy(x, W, y, linear_bias=b)`` equals
``cross_entropy(x @ W.T + b, y)`` (torch 2.13's ``F.linear_cross_entropy``), but
the ``(N, C)`` logits are never held at once: the tokens (rows of ``x``) are
processed in chunks of ``chunk_size`` rows by a ``lax.scan``, so working memory is
bounded by a ``(chunk_size, C)`` block however large ``N`` is.

Two chunked implementations (``method=``):

``"fused"`` (for ``"mean"``/``"sum"``)
    A ``jax.custom_jvp`` whose rule computes the loss and its gradients in one
    pass over the chunks (three matmuls per chunk: logits, ``dL/dx``,
    ``dL/dW``; 6·N·D·C FLOPs for a value and gradient). The last two run in
    one loop over blocks of about 2048 weight rows, so ``dL/dW`` is updated in
    place (no second weight-sized buffer) and no contraction spans the whole
    vocabulary. When only ``input``, ``linear_weight`` and ``linear_bias``
    are differentiated (the training case), each chunk's gradient of the logits
    is a written-out formula (softmax minus the smoothed one-hot) that XLA
    writes in place of the logits: one ``(chunk, C)`` buffer per chunk;
    otherwise it is JAX's autodiff of the per-sample losses. The tangent is the
    inner product of those gradients with the input tangents, so reverse mode (its
    transpose) reuses them without recomputing the logits, and forward mode
    (``jax.jvp``, ``jacfwd``) works too. Gradients of arguments that are not
    differentiated are not computed (symbolic zeros). Second derivatives
    differentiate the chunked gradient computation, whose chunk body is
    rematerialised (``jax.checkpoint``).

``"checkpoint"``
    The plain chunked forward, a ``lax.scan`` whose body is
    ``jax.checkpoint``-ed: JAX's own autodiff, with each chunk's logits
    recomputed in the backward pass (8·N·D·C FLOPs for a value and gradient).
    Every transformation works at every order.

``"tiled"``
    Chunks of rows cut into tiles of classes, so that working memory is one
    ``(rows, classes)`` tile however large the vocabulary. A row's gradient needs
    its log-normaliser, which needs every class, so each chunk takes two passes
    over its tiles: the first computes the log-normaliser (a running max and a
    rescaled sum of exponentials), the second recomputes each tile's logits and
    computes the loss terms and gradients from them. That is 8·N·D·C FLOPs for
    a value and gradient (one logits matmul more than ``"fused"``), and the weight
    gradient is updated once per chunk of rows (``TILED_ROWS`` rows by default,
    against ``"fused"``'s 256 at 131072 classes). With ``"mean"``/``"sum"`` it is
    ``"fused"``'s ``custom_jvp`` with tiled chunks; where a class weight, the
    smoothing or a probability target is differentiated too, the chunks' logits
    are computed whole (JAX's autodiff, as in ``"fused"``). With ``"none"`` it is
    ``"checkpoint"``'s loop with tiled chunks, each tile rematerialised. A weight
    sharded along the classes is not tiled (each device computes its shard's
    logits of a chunk whole).

``"auto"`` (default) is ``"fused"`` for ``"mean"``/``"sum"`` and
``"checkpoint"`` for ``"none"`` (a per-sample cotangent cannot be applied to
precomputed gradients, so there is nothing to fuse).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike

from jaxloss import _sharding as S
from jaxloss import _validation as V
from jaxloss._cross_entropy import (
    _check_class_weight,
    _check_indices_in_range,
    _class_index_logit_grad,
    _class_index_losses,
    _class_index_weights,
    _class_weight_view,
    _exp_sum,
    _holds,
    _is_ignored,
    _one_hot,
    _probability_losses,
    _softmax_from,
    _wide_index,
    _row_max,
    _scaled_minus,
    _zero_times,
)
from jaxloss._dtypes import compute_dtype, result_dtype
from jaxloss._reduction import check_reduction, reduce

METHODS: tuple[str, ...] = ("auto", "fused", "checkpoint", "tiled")

# Default chunking, measured on a 2-core AVX-512 CPU (value_and_grad, float32,
# N=2048, D=1024, V=32768; seconds relative to the best): 128 rows 1.45x, 256 rows
# 1.32x, 512 and 1024 rows 1.0x, one chunk of 2048 rows 1.26x. At N=1024,
# V=131072 (since the in-place weight-gradient update and the split sums of
# exponentials), 64 rows take 1.5x the time of 256 rows, 128 rows 1.2x, and 512 rows
# 1.03x while holding twice the logits. A chunk's logits block is kept near
# CHUNK_ELEMENTS elements (64 MiB in float32), but never fewer than MIN_CHUNK_ROWS
# rows, below which the matmuls starve.
CHUNK_ELEMENTS = 1 << 24
MIN_CHUNK_ROWS = 256
# On a GPU, measured on an H100 (value_and_grad, float32, TF32 matmuls; ms): at
# N=8192, V=32768, 512 / 1024 / 2048 / 4096 rows took 21.9 / 9.0 / 7.9 / 7.4 against
# 7.3 with materialised logits; at N=4096, V=131072, 256 / 512 / 1024 / 2048 rows
# took 60 / 40 / 29 / 23 against 14. Small chunks leave the input gradient's matmul
# too few output tiles. There the block is about GPU_CHUNK_ELEMENTS elements (512 MiB
# in float32) with at least GPU_MIN_CHUNK_ROWS rows. (TPUs: not measured; they get
# the CPU rule.)
GPU_CHUNK_ELEMENTS = 1 << 27
GPU_MIN_CHUNK_ROWS = 2048


def default_chunk_size(num_tokens: int, num_logits: int, platform: str | None = None) -> int:
    """The default number of rows per chunk for ``num_tokens`` rows of ``num_logits`` logits.

    ``num_logits`` is ``C * d_1 * ... * d_K``. The chunk's ``(rows, num_logits)``
    block is about ``CHUNK_ELEMENTS`` elements, with at least ``MIN_CHUNK_ROWS``
    rows and at most ``num_tokens`` (one chunk when everything fits). On a GPU
    (``platform`` ``"gpu"``, ``"cuda"`` or ``"rocm"``) the block is about
    ``GPU_CHUNK_ELEMENTS`` elements with at least ``GPU_MIN_CHUNK_ROWS`` rows.
    ``platform=None`` means JAX's default backend.
    """
    if platform is None:
        platform = jax.default_backend()
    elements, least = (
        (GPU_CHUNK_ELEMENTS, GPU_MIN_CHUNK_ROWS) if platform in S.GPU_PLATFORMS else (CHUNK_ELEMENTS, MIN_CHUNK_ROWS)
    )
    rows = max(least, elements // max(num_logits, 1))
    return max(1, min(int(num_tokens), rows))


# method="tiled": tiles of TILED_ROWS rows (at most) by about TILE_ELEMENTS / rows
# classes. Measured on a 2-core AVX2 CPU (value_and_grad, float32, N=1024, D=1024,
# V=131072, one chunk of 1024 rows): 512, 1024 and 2048 classes per tile took the
# same time (6.9 s, the four matmuls' time); 512 kept the peak RSS growth within the
# gradients plus 27 MB. Near-square tiles balance the input gradient's traffic
# (its (rows, D) accumulator is read and written once per tile) against the weight
# gradient's (read and written once per chunk of rows).
TILE_ELEMENTS = 1 << 19
TILED_ROWS = 1024


def default_tile_size(num_rows: int, num_classes: int, positions: int = 1) -> int:
    """The default number of classes per tile of ``method="tiled"``: about
    ``TILE_ELEMENTS`` logits per ``(num_rows, classes, positions)`` tile, preferably a
    divisor of ``num_classes`` (down to a quarter of that), at most ``num_classes``."""
    return _divisor_near(num_classes, max(1, TILE_ELEMENTS // max(1, num_rows * positions)))


def _divisor_near(total: int, target: int) -> int:
    """``target`` (capped at ``total``), or the largest divisor of ``total`` between a
    quarter of it and it: blocks that divide ``total`` are a free reshape."""
    target = max(1, min(total, target))
    for b in range(target, max(1, target // 4) - 1, -1):
        if total % b == 0:
            return b
    return target


class _Core(NamedTuple):
    """Static description of the chunked computation (hashable: a jit/custom_jvp static)."""

    probs: bool  # class-probability targets (else class indices)
    C: int
    P: int  # d_1 * ... * d_K (1 without K-dimensional weights)
    ignore_index: int
    chunk: int
    precision: object = None  # every matmul's ``precision`` (see _check_precision)
    tile: int = 0  # classes per tile (method "tiled"); 0: a chunk's logits are computed whole
    # Masked rows (a short last chunk's overlap) get their logit gradient by a select,
    # not a product: set where a class weight meets smoothing or probability targets,
    # whose masked rows' zero coefficients times an infinite class weight are NaN.
    guard: bool = False


class _Spec(NamedTuple):
    core: _Core
    reduction: str
    method: str
    out_dtype: np.dtype


def _dot(a, b, contract, precision, out_sharding=None):
    kw = {} if out_sharding is None else {"out_sharding": out_sharding}
    return jax.lax.dot_general(a, b, (contract, ((), ())), precision=precision, preferred_element_type=a.dtype, **kw)


_PRECISIONS = ", ".join(repr(p) for p in ("default", "high", "highest", "bfloat16", "tensorfloat32", "float32"))


# (Dot algorithms arrived in jax 0.4.36; older versions take precisions only.)
_ALGORITHMS = tuple(getattr(jax.lax, n) for n in ("DotAlgorithm", "DotAlgorithmPreset") if hasattr(jax.lax, n))


def _check_precision(precision):
    """``precision`` as ``jax.lax.dot_general`` takes it (hashable: a jit static):
    ``None``, a ``jax.lax.Precision`` or its name, a pair of those (one per operand),
    or a ``jax.lax.DotAlgorithm``/``DotAlgorithmPreset``."""
    if precision is None or isinstance(precision, _ALGORITHMS):
        return precision

    def one(p):
        if isinstance(p, jax.lax.Precision):
            return p
        if isinstance(p, str):
            try:
                return jax.lax.Precision(p)
            except ValueError:
                raise ValueError(f"precision: expected one of {_PRECISIONS}, got {p!r}") from None
        raise TypeError(
            "precision: expected None, a jax.lax.Precision or its name, a pair of them, or a "
            f"jax.lax.DotAlgorithmPreset, got {type(p).__name__} {p!r}"
        )

    if isinstance(precision, (tuple, list)):
        if len(precision) != 2:
            raise ValueError(f"precision: a sequence must hold two precisions (one per operand), got {precision!r}")
        return tuple(one(p) for p in precision)
    return one(precision)


def _logits(core: _Core, x_c, W2, b2):
    """``(rows, C, P)`` logits of one chunk: ``x_c @ W2.T + b2`` with the class axis at 1."""
    z = _dot(x_c, W2, ((1,), (1,)), core.precision)
    if b2 is not None:
        z = z + b2
    return z.reshape(x_c.shape[0], core.C, core.P)


def _row_mask(mask, ndim: int):
    """A per-row ``mask`` shaped to broadcast against an ``ndim``-dimensional array
    whose first axis is the rows."""
    return mask.reshape((-1,) + (1,) * (ndim - 1))


def _losses_from_logits(core: _Core, z, cw, eps, t_c, valid_c, finite_cotangent=False):
    """Per-sample losses ``(rows, P)`` of one chunk, zero on masked rows (``valid_c`` false).

    ``finite_cotangent``: the losses are differentiated with a finite cotangent
    (the fused path's unit one), which lets the picked-logit gradient avoid a
    loop-invariant zeros buffer (see ``_pick``)."""
    rows = z.shape[0]
    if core.P == 1:  # (rows, C) logits: cross_entropy's class-last layout
        z = z.reshape(rows, core.C)
        t_c = t_c.reshape((rows, core.C) if core.probs else (rows,))
    if core.probs:
        # A masked row's logits may be infinite: its smoothed targets times -inf
        # log-probabilities would have infinite partials, and the select below would
        # turn the weight gradient into 0 * inf = NaN. Zero logits on the masked rows
        # give them finite partials. (A clamp to per-row bounds would avoid the
        # select's full-shape zeros, but halves the gradient of a -inf logit at the
        # bound.)
        z = jnp.where(_row_mask(valid_c, z.ndim), z, 0)
        loss = _probability_losses(z, t_c, cw, eps)
    else:
        z = _guarded(core, z, valid_c)
        loss, _ = _class_index_losses(
            z, t_c, cw, eps, ignore_index=core.ignore_index, finite_cotangent=finite_cotangent
        )
    return jnp.where(valid_c[:, None], loss.reshape(rows, core.P), 0)


def _guarded(core: _Core, z, valid_c):
    """``z`` whose masked rows (``valid_c`` false) pass no derivative on, under
    ``core.guard``: their losses' gradient is 0 times an infinite class weight, NaN,
    and the select (its transpose a select too) keeps it from the weight and bias
    gradients. (Probability targets zero those rows' logits instead.)"""
    if not core.guard:
        return z
    return jnp.where(_row_mask(valid_c, z.ndim), z, jax.lax.stop_gradient(z))


def _masked_rows_zeroed(core: _Core, dz, valid_c, row=None):
    """``dz`` with the masked rows' gradient zeroed by a select, under ``core.guard``
    (elsewhere their coefficients are zero and the product is exact). ``row``: a
    per-row statistic computed in the loop around this code, broadcastable to
    ``dz``, from which the select's zeros are made: zeros that do not depend on the
    loop are a full-shape constant that XLA hoists out of it, one more ``(rows, C)``
    buffer (16 MiB more temp memory for the fused path at 256 rows by 16384
    classes). A tile's only row statistics are the chunk's, constant over the tile
    loop; there a scalar zero cost least."""
    if not core.guard:
        return dz
    zero = jnp.zeros((), dz.dtype)
    if row is not None:
        zero = jnp.minimum(jnp.abs(jnp.where(jnp.isfinite(row), row, 0)), 0).astype(dz.dtype)
    return jnp.where(_row_mask(valid_c, dz.ndim), dz, zero)


def _loss_and_logit_grad(core: _Core, z, cw, eps, t_c, valid_c):
    """``(sum of the chunk's losses, d(sum)/dz)``, the gradient written out.

    With :math:`p` the softmax over the classes, :math:`w` the class weights,
    :math:`\\varepsilon` the smoothing and :math:`C` the number of classes:

    - class indices: :func:`~jaxloss._cross_entropy._class_index_logit_grad`
      (softmax minus the smoothed, weighted one-hot; zero for ignored or
      out-of-range targets).
    - class probabilities :math:`t`: with :math:`q_c = w_c ((1-\\varepsilon) t_c +
      \\varepsilon / C)`, :math:`\\partial\\ell/\\partial z_c = p_c \\sum_k q_k - q_c`.

    It is one element-wise pass over the logits that XLA writes in place of them,
    so a chunk needs one ``(rows, C)`` buffer, not the two that autodiff of the
    per-sample losses keeps (the logits and their exponentials). The value is
    the same per-sample function cross_entropy uses. Both are differentiable
    (second derivatives differentiate this formula).
    """
    rows = z.shape[0]
    if core.P == 1:  # (rows, C) logits: cross_entropy's class-last layout
        z = z.reshape(rows, core.C)
        t_c = t_c.reshape((rows, core.C) if core.probs else (rows,))
    ax = 1
    # The logits are read by four passes (the max, the sum of exponentials, the
    # picked logit and the gradient), each with its own arithmetic, so that XLA
    # keeps no shifted copy of them and writes the gradient in place of them: one
    # (rows, C) buffer in all. m carries no derivative (the losses are exactly
    # shift-invariant), at every order.
    m = jax.lax.stop_gradient(_row_max(z, ax))
    s = jnp.log(_exp_sum(z, m, ax))
    cdt = s.dtype
    C = core.C
    if core.probs:
        loss = _probability_losses(z, t_c, cw, eps, normaliser=(m, s))
    else:
        loss, _ = _class_index_losses(
            z, t_c, cw, eps, ignore_index=core.ignore_index, normaliser=(m, s), finite_cotangent=True
        )
    total, s = _value_first(loss, valid_c, s)
    p = _softmax_from(z, m, s)
    if core.probs:
        wc = None if cw is None else _class_weight_view(cw.astype(cdt), z.ndim, ax)
        e = None if eps is None else jnp.asarray(eps, cdt)
        q = t_c if e is None else t_c * (1 - e) + e / C
        # (Masked rows are zeroed by a product: a select against 0 would bring a
        # full-shape zeros buffer that XLA hoists out of the chunk loop.)
        q = q * _row_mask(valid_c, z.ndim).astype(cdt)
        q = q if wc is None else q * wc
        dz = p * jnp.sum(q, axis=ax, keepdims=True) - q
    else:
        dz = _class_index_logit_grad(p, t_c, cw, eps, ax, ignore_index=core.ignore_index)
    return total, _masked_rows_zeroed(core, dz, valid_c, s).reshape(rows, core.C * core.P)


def _value_first(loss, valid_c, s):
    """``(sum of the valid rows' losses, s)``, with ``s`` (a row statistic the gradient
    reads) made to depend on the losses by a term that is exactly 0. Through it XLA
    computes the losses (which read the picked logits) before the gradient, so that
    the gradient is the logits' last reader and is written into their buffer: one
    ``(rows, C)`` buffer per chunk, not two. (An optimisation barrier does not order
    them: XLA on CPU removes barriers before it schedules; a data dependency is what
    the scheduler follows.)"""
    loss = jnp.where(_row_mask(valid_c, loss.ndim), loss, 0)
    zero = jnp.minimum(jnp.abs(jnp.where(jnp.isfinite(loss), loss, 0)), 0)
    return jnp.sum(loss), s + jnp.expand_dims(zero, 1)


# --- "tiled": tiles of rows by classes, two passes over the classes -------------------


def _scan_blocks(body, carry, n: int, block: int, per_row):
    """``carry = body(carry, lo, size, *slices)`` for each block of ``block`` rows of
    ``n`` (``lo`` its first row, ``size`` its length; ``slices``: rows
    ``lo * k:(lo + size) * k`` of each ``(array, k)`` in ``per_row``, None for a None
    array): one scan over the whole blocks, the arrays' blocks its xs (a free reshape),
    then one call for the last, shorter block.

    Slicing the blocks inside a fori_loop instead makes JAX's partial evaluation stack
    every slice (a second weight-sized buffer). ``lo`` is unsigned, so that no slice
    normalises it for negative values: JAX's partial evaluation hoists the index
    arithmetic out of the loops, one array per use, and with differently normalised
    index arrays XLA could not see that a gradient's slice and its update are the same
    rows; it copied the slice first (8 MiB per block of the weight gradient). With one
    index, reading, adding and writing a block is one in-place loop (4-5% of the time
    at N=1024, D=1024, V=131072)."""
    n_full, tail = divmod(n, block)

    def cut(lo, hi, blocks=None):
        out = []
        for a, k in per_row:
            a = None if a is None else jax.lax.slice_in_dim(a, lo * k, hi * k)
            out.append(a if a is None or blocks is None else a.reshape((blocks, block * k) + a.shape[1:]))
        return out

    if n_full == 1:
        carry = body(carry, 0, block, *cut(0, block))
    elif n_full > 1:
        xs = cut(0, n_full * block, n_full)

        def step(c, inp):
            i, *blocks = inp
            return body(c, i * block, block, *blocks), None

        carry, _ = jax.lax.scan(step, carry, (jnp.arange(n_full, dtype=jnp.uint32), *xs))
    if tail:
        lo = n_full * block
        carry = body(carry, lo, tail, *cut(lo, n))
    return carry


def _tile_scan(core: _Core, W2, b2, cw, body, carry, remat: bool = False):
    """``carry = body(carry, lo, size, W_t, b_t, cw_t)`` for each tile of ``core.tile``
    classes (``lo`` its first class; ``W_t`` its ``size * P`` weight rows, ``b_t`` and
    ``cw_t`` its bias and class weights or None), by ``_scan_blocks``.
    ``remat``: each tile's body is rematerialised (``jax.checkpoint``), so that
    differentiating the loop keeps its carries per tile, not its logits."""
    if remat:
        body = jax.checkpoint(body, prevent_cse=False, static_argnums=(2,))
    P = core.P
    return _scan_blocks(body, carry, core.C, core.tile, ((W2, P), (b2, P), (cw, 1)))


def _tile_logits(core: _Core, x_c, W_t, b_t, v_c, size: int):
    """One tile's logits, ``(rows, size)`` (P = 1) or ``(rows, size, P)``: the class axis
    is 1. With probability targets a masked row's logits are zero (as in
    ``_losses_from_logits``); with class targets they are ``_guarded``."""
    z = _dot(x_c, W_t, ((1,), (1,)), core.precision)
    if b_t is not None:
        z = z + b_t
    if core.P != 1:
        z = z.reshape(x_c.shape[0], size, core.P)
    if core.probs:
        return jnp.where(_row_mask(v_c, z.ndim), z, 0)
    return _guarded(core, z, v_c)


def _tile_hit(safe, lo, size, ndim):
    """Boolean ``class == target`` over one tile's classes (``safe``: clamped targets)."""
    return _one_hot(safe.astype(jnp.int32) - jnp.asarray(lo).astype(jnp.int32), size, ndim, 1)


def _tiled_normaliser(core: _Core, x_c, v_c, W2, b2, safe, remat: bool):
    """The first pass over the classes: ``(m, s, picked)`` per row (and position), with
    ``logsumexp = m + s``, ``m`` the row max (0 where it is -inf, as ``_row_max``), by
    the running max and rescaled sum of exponentials; ``picked`` the target's logit
    (class-index targets, else None). ``m`` carries no derivative."""
    rows = x_c.shape[0]
    shape = (rows,) if core.P == 1 else (rows, core.P)
    cdt = x_c.dtype

    def body(c, lo, size, W_t, b_t, _):
        m, s, picked = c
        z = _tile_logits(core, x_c, W_t, b_t, v_c, size)
        new = jax.lax.stop_gradient(jnp.maximum(m, jnp.max(z, axis=1, initial=-jnp.inf)))
        shift_old, shift = (jnp.where(a == -jnp.inf, 0, a) for a in (m, new))
        # exponent <= 0 except after rows of -inf only (shift_old 0, s 0): clamped there.
        s = s * jnp.exp(jnp.minimum(shift_old - shift, 0)) + jnp.sum(jnp.exp(z - jnp.expand_dims(shift, 1)), axis=1)
        if picked is not None:
            hit = _tile_hit(safe, lo, size, z.ndim)
            picked = picked + jnp.sum(jnp.where(hit, z, jnp.zeros((), cdt)), axis=1)
        return new, s, picked

    init = (
        S.zeros_like(x_c, shape=shape) - jnp.inf,
        S.zeros_like(x_c, shape=shape),
        None if core.probs else S.zeros_like(x_c, shape=shape),
    )
    m, s, picked = _tile_scan(core, W2, b2, None, body, init, remat)
    return jnp.where(m == -jnp.inf, 0, m), jnp.log(s), picked


def _finite_tangent_total(q_total, q, cw, kept_rows):
    """``q_total`` (the rows' total of ``q``, the smoothed probability targets, weighted) in
    value, with the derivative it would have with the infinite class weights taken
    as 0. It multiplies an exact zero that carries the log-normaliser's derivative:
    through an infinite weight, the transpose of that zero product (a zero cotangent
    times the weight) would make the target's and weight's gradients NaN where they
    are infinite. The zero does not depend on the targets or weights, so its product
    has no derivative through them: this changes only the mixed second derivatives
    (targets or weights with the linear layer's arguments) of an infinite weight's
    class, from inf or NaN to 0."""
    if cw is None:
        return q_total
    w = cw.astype(q_total.dtype)
    w = jnp.where(jnp.isfinite(w), w, jnp.zeros((), w.dtype))
    q_fin = jnp.sum(q * _class_weight_view(w, q.ndim, 1) * kept_rows, axis=1)
    return jax.lax.stop_gradient(q_total) + (q_fin - jax.lax.stop_gradient(q_fin))


def _tiled_chunk(
    core: _Core, need: _Need | None, x_c, t_c, v_c, W2, b2, cw, eps, gW=None, gb=None, differentiable: bool = False
):
    """One chunk of rows, tiled: ``(per-row losses, gW, gx, gb)``.

    The first pass gives each row's log-normaliser (``_tiled_normaliser``); the
    second recomputes each tile's logits and, from them, the tile's part of the
    losses (smoothing and probability-target sums) and, where ``need`` asks, its
    gradient of the logits (``_loss_and_logit_grad``'s formula), then ``dL/dx`` (an
    ``(rows, D)`` accumulator), the tile's rows of ``dL/dW`` (updated in place) and
    of ``dL/db``. Working memory is one tile's logits. ``need=None``: the losses
    only (the second pass runs only for smoothing or probability targets). The
    losses are those of ``_losses_from_logits``, zero on masked rows.

    ``differentiable`` (with ``need=None``): the losses are to be differentiated by
    JAX (the checkpoint loop of "none"). The first pass is then behind a
    stop_gradient, and the second pass carries the whole derivative: it picks the
    target's logit again and adds to the log-normaliser the exact zero
    :math:`\\ell - \\mathrm{sg}(\\ell)`, with :math:`\\ell = \\log \\sum_c e^{z_c - m}`
    summed again over the tiles, whose derivatives at every order are the
    log-normaliser's. (The zero :math:`\\sum_c p_c (z_c - \\mathrm{sg}(z_c))` had its
    first derivative only: its HVPs were wrong.) So each tile's logits get one
    cotangent, contracted with the weight once, as on materialised logits: through
    two matmuls, a -inf weight entry times a class's zero softmax would add NaN to
    the input gradient where torch's is infinite."""
    rows = x_c.shape[0]
    C, P = core.C, core.P
    cdt = x_c.dtype
    if P == 1:
        t_c = t_c.reshape((rows, C) if core.probs else (rows,))
    shape = (rows,) if P == 1 else (rows, P)
    grads = need is not None
    e = None if eps is None else jnp.asarray(eps, cdt)
    wc_total = None if cw is None else jnp.sum(cw.astype(cdt))
    vshape = (rows,) + (1,) * (len(shape) - 1)
    valid = v_c.reshape(vshape)
    kept_rows = v_c.reshape(vshape[:1] + (1,) + vshape[1:]).astype(cdt)  # over the class axis
    def expand(a):  # a row statistic, broadcast over a tile's classes
        return jnp.expand_dims(a, 1)

    if core.probs:
        safe = None
        m, s, _ = _tiled_normaliser(core, x_c, v_c, W2, b2, None, not grads)
        m, s = (jax.lax.stop_gradient(a) for a in (m, s)) if differentiable else (m, s)
        # q = w (t (1 - eps) + eps / C), and its row sum, for the gradient p * sum(q) - q
        q_t = t_c if e is None else t_c * (1 - e) + e / C
        q_all = q_t if cw is None else q_t * _class_weight_view(cw.astype(cdt), q_t.ndim, 1)
        q_total = jnp.sum(q_all * kept_rows, axis=1)
    else:
        active, in_range, safe, w_t = _class_index_weights(t_c, cw, C, core.ignore_index, cdt)
        m, s, picked = _tiled_normaliser(core, x_c, v_c, W2, b2, safe, not grads)
        if differentiable:
            m, s, picked = (jax.lax.stop_gradient(a) for a in (m, s, picked))
        kept = active & in_range
        b = jnp.where(kept, w_t, 0)
        if e is not None:
            r = jax.lax.stop_gradient(jnp.where(jnp.isfinite(picked), picked, m))
            b = b * (1 - e)
            g = jnp.where(kept, e / C, jnp.zeros((), cdt))
            a = b + g * (C if cw is None else wc_total)
    second = grads or core.probs or e is not None or differentiable

    def body(c, lo, size, W_t, b_t, cw_t):
        c = dict(c)
        z = _tile_logits(core, x_c, W_t, b_t, v_c, size)
        wv = None if cw_t is None else _class_weight_view(cw_t.astype(cdt), z.ndim, 1)
        if core.probs:
            t_t = jax.lax.dynamic_slice_in_dim(t_c, lo, size, axis=1)
            q = t_t if e is None else t_t * (1 - e) + e / C
            q = q if wv is None else q * wv
            c["acc"] = c["acc"] + jnp.sum(q * ((z - expand(m)) - expand(s)), axis=1)
        elif e is not None:
            shifted = z - expand(r)
            c["acc"] = c["acc"] + jnp.sum(shifted if wv is None else wv * shifted, axis=1)
        if differentiable:
            c["sumexp"] = c["sumexp"] + jnp.sum(jnp.exp(z - expand(m)), axis=1)
            if not core.probs:
                hit = _tile_hit(safe, lo, size, z.ndim)
                c["picked"] = c["picked"] + jnp.sum(jnp.where(hit, z, jnp.zeros((), cdt)), axis=1)
        if not grads:
            return c
        p = _softmax_from(z, expand(m), expand(s))
        if core.probs:
            # (Masked rows are zeroed by a product, as in _loss_and_logit_grad.)
            dz = p * expand(q_total) - q * kept_rows
        else:
            hit = _tile_hit(safe, lo, size, z.ndim).astype(cdt)
            if e is None:
                dz = (p - hit) * expand(b)
            else:
                dz = p * expand(a) - hit * expand(b) - (expand(g) if wv is None else expand(g) * wv)
        dz = _masked_rows_zeroed(core, dz, v_c).reshape(rows, size * P)
        if need.b:
            c["b"] = _add_rows(c["b"], lo * P, jnp.sum(dz, axis=0))
        if need.W:
            c["W"] = _add_rows(c["W"], lo * P, _dot(dz, x_c, ((0,), (0,)), core.precision))
        if need.x:
            c["x"] = c["x"] + _dot(dz, W_t, ((1,), (0,)), core.precision)
        return c

    carry = {}
    if core.probs or e is not None:
        carry["acc"] = S.zeros_like(x_c, shape=shape)
    if differentiable:
        carry["sumexp"] = S.zeros_like(x_c, shape=shape)
        if not core.probs:
            carry["picked"] = S.zeros_like(x_c, shape=shape)
    if grads:
        for k, v in (("W", gW), ("b", gb)):
            if getattr(need, k):
                carry[k] = v
        if need.x:
            carry["x"] = S.zeros_like(x_c)
    if second:
        carry = _tile_scan(core, W2, b2, cw, body, carry, not grads)
    if differentiable:  # (values unchanged: the correction is 0, the picked logits equal)
        ell = jnp.log(carry["sumexp"])
        corr = ell - jax.lax.stop_gradient(ell)
        s = s + corr
        picked = None if core.probs else carry["picked"]
    if core.probs:
        loss = -carry["acc"]
        if differentiable:  # (an infinite q_total, from an infinite class weight, times 0)
            loss = loss + _zero_times(corr, _finite_tangent_total(q_total, q_t, cw, kept_rows))
    else:
        loss = w_t * ((m - picked) + s)
        if e is not None:
            total = jnp.asarray(C, cdt) if cw is None else wc_total
            smooth = (total * ((m - r) + s) - carry["acc"]) if cw is None else _scaled_minus(total, (m - r) + s, carry["acc"])
            loss = (1 - e) * loss + _zero_times(e / C, smooth)
        loss = jnp.where(active, jnp.where(in_range, loss, jnp.nan), 0)
    loss = jnp.where(valid, loss, 0).reshape(rows, P)
    return loss, carry.get("W"), carry.get("x"), carry.get("b")


# --- "checkpoint": the chunked forward under jax.checkpoint, JAX's autodiff --------


def _chunked_losses(core: _Core, xs, W2, b2, cw, eps, ts, valid):
    """Per-sample losses ``(n_chunks, chunk, P)``; each chunk's logits are rematerialised."""

    @functools.partial(jax.checkpoint, prevent_cse=False)
    def chunk(x_c, t_c, v_c, W2, b2, cw, eps):
        if core.tile:
            return _tiled_chunk(core, None, x_c, t_c, v_c, W2, b2, cw, eps, differentiable=True)[0]
        return _losses_from_logits(core, _logits(core, x_c, W2, b2), cw, eps, t_c, v_c)

    def step(carry, inp):
        x_c, t_c, v_c = inp
        return carry, chunk(x_c, t_c, v_c, W2, b2, cw, eps)

    _, ys = jax.lax.scan(step, None, (xs, ts, valid))
    return ys.reshape(ys.shape[:2] + (core.P,))


# --- "fused": value and gradients in one chunked pass, as a custom_jvp ---------------


class _Need(NamedTuple):
    x: bool
    W: bool
    b: bool
    cw: bool
    eps: bool
    t: bool


# dL/dW is accumulated in blocks of this many weight rows (8 MiB at D=1024 in
# float32): the block's product is the only temporary, so no weight-sized buffer
# besides the gradient itself is needed.
W_BLOCK_ELEMENTS = 1 << 21


def _weight_block(CP: int, D: int) -> int:
    """Rows per weight block: about ``W_BLOCK_ELEMENTS`` elements, preferably a divisor
    of ``CP`` (between a quarter of that and all of it), so that the blocks are a free
    reshape of the weight; otherwise the remainder is a separate last block (and
    the weight's leading full blocks are sliced, a copy)."""
    return _divisor_near(CP, W_BLOCK_ELEMENTS // max(D, 1))


def _add_rows(a, lo, upd):
    """``a`` with ``upd`` added to its rows ``lo:lo + len(upd)``: read, add and write back
    with one start index, which XLA updates in place (see ``_scan_blocks``)."""
    return jax.lax.dynamic_update_slice_in_dim(a, jax.lax.dynamic_slice_in_dim(a, lo, upd.shape[0]) + upd, lo, 0)


def _backprop_chunk(gW, dz, x_c, W2, need_x: bool, precision):
    """``(gW + dz.T @ x_c, dz @ W2)`` (either may be skipped: ``gW=None``, ``need_x=False``).

    One loop over blocks of the weight's rows: per block, the slice of ``dz`` is
    used for both products, the weight gradient is updated in place (the block's
    product is the only temporary, so no second weight-sized buffer exists), and
    ``dz @ W2`` is accumulated over blocks (measured on CPU: a contraction over
    2048 classes at a time runs 1.3x faster than one over all 131072).
    """
    CP, D = W2.shape
    rows = dz.shape[0]
    # Explicitly sharded rows or classes: the products over them are sums across the
    # devices, and their results take the sharding of what they are added to.
    w_sharding = S.sharding_of(W2) or S.replicated_on_mesh_of(x_c) if S.is_sharded(x_c, 0) else None
    if S.is_sharded(W2, 0):
        # A vocabulary-sharded weight: whole products (its row blocks would be slices
        # of a sharded axis); the weight gradient's update is a temporary of the
        # weight's (per-device) size.
        gx = _dot(dz, W2, ((1,), (0,)), precision, S.sharding_of(x_c)) if need_x else None
        if gW is not None:
            gW = gW + _dot(dz, x_c, ((0,), (0,)), precision, w_sharding)
        return gW, gx

    def update(carry, lo, size, W_b):
        gW, gx = carry
        dz_b = jax.lax.dynamic_slice_in_dim(dz, lo, size, axis=1)
        if gW is not None:
            gW = _add_rows(gW, lo, _dot(dz_b, x_c, ((0,), (0,)), precision, w_sharding))
        if gx is not None:
            gx = gx + _dot(dz_b, W_b, ((1,), (0,)), precision)
        return gW, gx

    carry = (gW, S.zeros_like(dz, shape=(rows, D)) if need_x else None)
    return _scan_blocks(update, carry, CP, _weight_block(CP, D), ((W2, 1),))


def _fused_grads(core: _Core, need: _Need, xs, W2, b2, cw, eps, ts, valid):
    """The summed loss and its gradients w.r.t. the arguments flagged in ``need``.

    One scan over the token chunks. Per chunk: logits, the per-chunk loss and its
    gradient with respect to the logits (``_loss_and_logit_grad``'s formula, or
    the vjp of the per-sample losses where a class weight, the smoothing or a
    probability target is differentiated too), then ``dL/dx`` for the chunk's
    rows and the chunk's contribution to ``dL/dW``, added to the carried
    ``(C*P, D)`` gradient in row blocks so that no second weight-sized buffer is
    needed.
    """
    n_chunks, rows, D = xs.shape
    CP = W2.shape[0]

    @functools.partial(jax.checkpoint, prevent_cse=False)
    def chunk(x_c, t_c, v_c, W2, b2, cw, eps):
        z = _logits(core, x_c, W2, b2)
        if not (need.cw or need.eps or need.t):
            s, dz = _loss_and_logit_grad(core, z, cw, eps, t_c, v_c)
            return s, dz, (jnp.sum(dz, axis=0) if need.b else None), {}
        fixed = {"cw": cw, "eps": eps, "t": t_c}
        wrt = {k: fixed[k] for k in ("cw", "eps", "t") if getattr(need, k)}

        def total(z, wrt):
            a = {**fixed, **wrt}
            return jnp.sum(_losses_from_logits(core, z, a["cw"], a["eps"], a["t"], v_c, finite_cotangent=True))

        s, vjp = jax.vjp(total, z, wrt)
        dz, dwrt = vjp(jnp.ones_like(s))
        dz = dz.reshape(rows, CP)
        gb = jnp.sum(dz, axis=0) if need.b else None
        return s, dz, gb, dwrt

    def tiled_step(carry, inp):
        x_c, t_c, v_c = inp
        loss, gW, gx, gb = _tiled_chunk(core, need, x_c, t_c, v_c, W2, b2, cw, eps, carry.get("W"), carry.get("b"))
        acc = dict(carry, s=carry["s"] + jnp.sum(loss))
        if need.W:
            acc["W"] = gW
        if need.b:
            acc["b"] = gb
        return acc, (gx, None)

    def step(carry, inp):
        x_c, t_c, v_c = inp
        s, dz, gb, dwrt = chunk(x_c, t_c, v_c, W2, b2, cw, eps)
        acc = dict(carry)
        acc["s"] = carry["s"] + s
        gW, gx = _backprop_chunk(carry["W"] if need.W else None, dz, x_c, W2, need.x, core.precision)
        if need.W:
            acc["W"] = gW
        if need.b:
            acc["b"] = carry["b"] + gb
        for k in ("cw", "eps"):
            if k in dwrt:
                acc[k] = carry[k] + dwrt[k]
        return acc, (gx, dwrt.get("t"))

    # (S.zeros_like: accumulators keep an explicit mesh in their type, see _sharding.)
    init = {"s": S.zeros_like(xs, shape=())}
    if need.W:
        init["W"] = S.zeros_like(W2)
    if need.b:
        init["b"] = S.zeros_like(b2)
    if need.cw:
        init["cw"] = S.zeros_like(cw)
    if need.eps:
        init["eps"] = S.zeros_like(eps)
    # method="tiled" tiles the chunks where only the linear layer's arguments are
    # differentiated; a class weight, smoothing or probability target differentiated
    # too takes JAX's autodiff of a chunk's whole logits (above).
    tiled = core.tile and not (need.cw or need.eps or need.t)
    acc, (gx, gt) = jax.lax.scan(tiled_step if tiled else step, init, (xs, ts, valid))
    grads = {k: v for k, v in acc.items() if k != "s"}
    if need.x:
        grads["x"] = gx
    if need.t:
        grads["t"] = gt
    return acc["s"], grads


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _fused_sum(core: _Core, xs, W2, b2, cw, eps, ts, valid):
    """Sum of the per-sample losses (the value only: one matmul per chunk)."""

    def step(total, inp):
        x_c, t_c, v_c = inp
        if core.tile:
            return total + jnp.sum(_tiled_chunk(core, None, x_c, t_c, v_c, W2, b2, cw, eps)[0]), None
        z = _logits(core, x_c, W2, b2)
        return total + jnp.sum(_losses_from_logits(core, z, cw, eps, t_c, v_c)), None

    total, _ = jax.lax.scan(step, S.zeros_like(xs, shape=()), (xs, ts, valid))
    return total


def _perturbed(primal, tangent) -> bool:
    return primal is not None and not isinstance(tangent, SymbolicZero)


def _fused_sum_jvp(core: _Core, primals, tangents):
    xs, W2, b2, cw, eps, ts, valid = primals
    txs, tW2, tb2, tcw, teps, tts, _ = tangents
    need = _Need(
        x=_perturbed(xs, txs),
        W=_perturbed(W2, tW2),
        b=_perturbed(b2, tb2),
        cw=_perturbed(cw, tcw),
        eps=_perturbed(eps, teps),
        t=core.probs and _perturbed(ts, tts),
    )
    total, grads = _fused_grads(core, need, xs, W2, b2, cw, eps, ts, valid)
    pairs = {"x": txs, "W": tW2, "b": tb2, "cw": tcw, "eps": teps, "t": tts}
    out = jnp.zeros_like(total)
    # Exact zeros where no kept target contributes, even under the NaN cotangent of a
    # mean over zero total class weight (torch: 0 there, NaN elsewhere); 0 * NaN would
    # be NaN. The selects are their transposes' masks. (A masked row of the last chunk
    # repeats a row of the chunk before it behind a stop_gradient: its tangent is
    # zero, and its product with the gradient, NaN if the gradient is, is selected
    # away too.)
    kept = None if core.probs else valid[..., None] & ~_is_ignored(ts, core.ignore_index).reshape(valid.shape + (core.P,))
    for k, g in grads.items():
        if k in ("x", "t"):
            # an input row: kept if any of its (K-dimensional) positions is
            row = valid if kept is None else jnp.any(kept, axis=-1)
            prod = jnp.where(row.reshape(row.shape + (1,) * (g.ndim - 2)), g * pairs[k], 0)
        elif kept is not None and k in ("W", "b") and core.P > 1:
            # a weight or bias row (class c, position q) of a K-dimensional weight: kept
            # if some sample keeps position q. (With P = 1 a position no sample keeps
            # means every target is ignored, and the gradient is zero already.)
            rows = jnp.tile(jnp.any(kept, axis=(0, 1)), core.C)
            prod = jnp.where(_row_mask(rows, g.ndim), g * pairs[k], 0)
        else:
            prod = g * pairs[k]
        out = out + jnp.sum(prod).astype(total.dtype)
    return total, out


_fused_sum.defjvp(_fused_sum_jvp, symbolic_zeros=True)


# --- the jitted implementation and the public wrapper --------------------------------


@functools.partial(jax.jit, static_argnames=("spec",))
def _linear_cross_entropy(x, W2, b2, cw, target, eps, *, spec: _Spec):
    core = spec.core
    cdt = compute_dtype(spec.out_dtype)
    N, D = x.shape
    x = x.astype(cdt)
    W2 = W2.astype(cdt)
    b2 = None if b2 is None else b2.astype(cdt)
    eps = None if eps is None else jnp.asarray(eps).astype(cdt)
    if core.probs:
        target = target.astype(cdt)
        denominator = None
        none_active = N * core.P == 0  # no losses at all: the mean is NaN, its gradient 0
    else:
        target = _wide_index(target)  # int32 or wider: int64 indices beyond int32 (x64) stay whole
        # (_class_index_weights also carries the checkify check of the index range.)
        active, _, _, w_t = _class_index_weights(target, cw, core.C, core.ignore_index, cdt)
        denominator = jnp.sum(w_t)
        none_active = ~jnp.any(active)

    method = spec.method
    if method == "auto":
        method = "checkpoint" if spec.reduction == "none" else "fused"
    per_row = spec.reduction == "none" or method == "checkpoint"
    if core.tile and S.is_sharded(W2, 0):
        # A weight sharded along the classes: its tiles would be slices of a sharded
        # axis; each device's chunk logits are its shard's, computed whole.
        core = core._replace(tile=0)
    shards = S.row_shards(x)
    if shards > 1 and not S.is_sharded(W2, 0):
        # Rows explicitly sharded, the weight whole: each device runs the chunk loop over
        # its own rows inside a shard_map, and the sums meet in one psum after it (the
        # weight's gradient is summed across the devices once, by shard_map's transpose;
        # under sharding propagation it was all-reduced in every chunk).
        axes = S.row_axes(x)
        rows, whole = jax.sharding.PartitionSpec(axes), jax.sharding.PartitionSpec()
        b2, cw = S.replicate(b2), S.replicate(cw)

        def local(x, W2, b2, cw, target, eps):
            # Typed as varying with the rows, so that autodiff sums their gradients
            # across the devices once, here, and not in every chunk of its loops.
            W2, b2, cw, eps = S.vary_like((W2, b2, cw, eps), x)
            out = _chunked(x, W2, b2, cw, target, eps, core=core, per_row=per_row)
            return out if per_row else jax.lax.psum(out, axes)

        out = jax.shard_map(
            local,
            mesh=S.mesh_of(x),
            in_specs=(rows, whole, whole, whole, rows, whole),
            out_specs=rows if per_row else whole,
        )(x, W2, b2, cw, target, eps)
    else:
        # Otherwise one chunk loop under sharding propagation. With a weight sharded
        # along the vocabulary (and rows sharded or not) the logits are sharded along
        # the classes, their max and sum of exponentials are reductions across the
        # shards, and sharded rows are laid out so that each device computes its own
        # rows of every chunk (see _chunked).
        out = _chunked(x, W2, b2, cw, target, eps, core=core, per_row=per_row, shards=shards)
    if per_row:
        return reduce(out, spec.reduction, denominator=denominator, dtype=spec.out_dtype)
    if denominator is None:  # probability targets: "mean" divides by the number of samples
        denominator = jnp.asarray(N * core.P, cdt)
    # Every target ignored: torch's NaN mean has a zero gradient. reduce() sends a
    # NaN cotangent to the sum then, which must not meet the (zero) gradients.
    # (Targets kept with zero total class weight get torch's NaN gradient.)
    total = jnp.where(none_active, jax.lax.stop_gradient(out), out)
    return reduce(total, spec.reduction, denominator=denominator, dtype=spec.out_dtype)


def _chunked(x, W2, b2, cw, target, eps, *, core: _Core, per_row: bool, shards: int = 1):
    """The chunk loop over ``x``'s rows: per-row losses ``(N, P)`` (``per_row``: the
    checkpoint method) or the sum of the losses (the fused method).

    ``x``'s rows are in ``shards`` equal blocks, one per device where they are
    explicitly sharded. Each chunk takes ``rows`` rows of every block, so that
    under explicit sharding every device computes its own rows' part of every
    chunk and nothing is gathered; ``rows`` is at most ``core.chunk``.
    """
    N, D = x.shape
    n = N // shards  # rows per block
    # Chunks of `rows` rows per block. Where they do not divide the block, its last
    # chunk is its last `rows` rows, overlapping the chunk before it, and the rows it
    # shares with that chunk are masked (`valid` false, the target ignored or zero)
    # and behind a stop_gradient, so that nothing of them reaches the rows they
    # repeat (their zero logit gradient times an infinite weight entry is NaN in
    # dz @ W). They are real rows: zero rows padding the last chunk had logits
    # b + 0 * W, NaN wherever W is infinite, and the NaN reached the weight gradient.
    # Where a class weight meets smoothing or probability targets, their logit
    # gradient is zeroed by a select (core.guard): their zero coefficients times an
    # infinite class weight are NaN, and reached the weight and bias gradients.
    rows = max(1, min(core.chunk, n))
    n_full, tail = divmod(n, rows)
    n_chunks = n_full + (tail > 0)
    lead = n_full * rows  # rows of a block before its last, overlapping chunk
    if tail and cw is not None and (core.probs or eps is not None):
        core = core._replace(guard=True)  # (see _Core.guard)

    # Blocks are a leading axis (of `shards`) where there are several; with one, the
    # rows stay one axis (a unit axis changed XLA's code for the overlap's gradient).
    ax = 1 if shards > 1 else 0  # the axis of a block's rows

    def blocks(a):  # (N, ...) -> (shards, n, ...)
        return a.reshape((shards, n) + a.shape[1:]) if shards > 1 else a

    def take(a, lo, hi):  # rows lo:hi of every block
        return jax.lax.slice_in_dim(a, lo, hi, axis=ax)

    def overlap(a):
        return jnp.concatenate([take(a, 0, lead), jax.lax.stop_gradient(take(a, n - rows, lead)), take(a, lead, n)], ax)

    def chunks(a):  # (shards, n_chunks * rows, ...) -> (n_chunks, shards * rows, ...)
        if shards == 1:
            return a.reshape((n_chunks, rows) + a.shape[1:])
        a = jnp.moveaxis(a.reshape((shards, n_chunks, rows) + a.shape[2:]), 1, 0)
        return a.reshape((n_chunks, shards * rows) + a.shape[3:])

    x, target = blocks(x), blocks(target)
    if tail:
        x, target = overlap(x), overlap(target)
    i = jnp.arange(n_chunks * rows)
    valid = (i < lead) | (i >= lead + rows - tail)
    fill = 0 if core.probs else core.ignore_index
    keep = valid.reshape((1,) * ax + (-1,) + (1,) * (target.ndim - 1 - ax))
    target = jnp.where(keep, target, jnp.asarray(fill, target.dtype))
    xs, ts = chunks(x), chunks(target)
    valid = chunks(jnp.broadcast_to(valid, (shards, n_chunks * rows)) if shards > 1 else valid)

    if not per_row:
        return _fused_sum(core, xs, W2, b2, cw, eps, ts, valid)
    loss = _chunked_losses(core, xs, W2, b2, cw, eps, ts, valid)  # (n_chunks, shards * rows, P)
    loss = loss.reshape(n_chunks, shards, rows, core.P)
    if shards > 1:
        loss = jnp.moveaxis(loss, 0, 1)
    loss = loss.reshape(shards, n_chunks * rows, core.P)
    if tail:  # the per-row results without the overlap's
        loss = jnp.concatenate([loss[:, :lead], loss[:, lead + rows - tail :]], axis=1)
    return loss.reshape(N, core.P)


def _chunk_size_from_options(options, chunk_size):
    """``chunk_size``, or the rows per chunk that torch's ``options`` asks for."""
    if options is None:
        return chunk_size
    if not hasattr(options, "batch_chunk_size"):
        raise TypeError(
            "options: expected None or a torch.nn.LinearCrossEntropyOptions (an object with a "
            f"batch_chunk_size attribute), got {type(options).__name__} {options!r}; jaxloss's own "
            "chunk_size= and method= choose its chunks"
        )
    rows = options.batch_chunk_size
    if rows is None:
        return chunk_size
    rows = V.require_static_int("options.batch_chunk_size", rows)
    if rows < 1:
        raise ValueError(f"options.batch_chunk_size: expected a positive int or None, got {rows}")
    given = chunk_size[0] if isinstance(chunk_size, (tuple, list)) and chunk_size else chunk_size
    if given is None:
        return rows
    if given != rows:
        raise ValueError(
            f"options: batch_chunk_size={rows} disagrees with chunk_size={chunk_size!r}; give the rows per "
            "chunk once"
        )
    return chunk_size


def linear_cross_entropy(
    input: ArrayLike,
    linear_weight: ArrayLike,
    target: ArrayLike,
    *,
    linear_bias: ArrayLike | None = None,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float | ArrayLike = 0.0,
    options=None,
    chunk_size: int | None = None,
    method: str = "auto",
    precision=None,
) -> jax.Array:
    r"""Cross entropy of the logits of a linear layer, computed in chunks.

    Equals ``torch.nn.functional.linear_cross_entropy`` (2.13) in value and
    gradient: ``cross_entropy(input @ linear_weight.T + linear_bias, target, ...)``,
    without ever holding the ``(N, C)`` logits. With logits
    :math:`z_{n,c} = x_n \cdot W_c + b_c` and :math:`p_n = \operatorname{softmax}(z_n)`,
    class-index targets :math:`y_n` and smoothing :math:`\varepsilon`:

    .. math::
        \ell_n = (1-\varepsilon)\, w_{y_n} (-\log p_{n,y_n})
                 + \frac{\varepsilon}{C} \sum_c w_c (-\log p_{n,c}),

    :math:`\ell_n = 0` where :math:`y_n` = ``ignore_index``; ``"mean"`` divides
    :math:`\sum_n \ell_n` by :math:`\sum_n w_{y_n}` over the targets that are not
    ignored (NaN if all are). With probability targets :math:`t_{n,c}`, smoothed
    to :math:`(1-\varepsilon) t_{n,c} + \varepsilon / C`:

    .. math::
        \ell_n = -\sum_c w_c\, t_{n,c} \log p_{n,c},

    and ``"mean"`` divides by the number of samples. With a K-dimensional
    ``linear_weight`` of shape ``(C, d_1, ..., d_K, D)`` the logits are
    ``(N, C, d_1, ..., d_K)`` (each position has its own ``C`` weight rows) and
    the loss is :func:`cross_entropy`'s K-dimensional loss.

    Args:
      input: ``(N, D)`` or unbatched ``(D,)``; floating.
      linear_weight: ``(C, D)`` or ``(C, d_1, ..., d_K, D)`` (K-dimensional loss,
        batched input only); floating.
      target: class indices of shape ``(N,)`` / ``(N, d_1, ..., d_K)`` / ``()``
        (unbatched; ``(1,)`` is read as ``()``, as in torch's forward), any
        integer dtype, each in ``[0, C)`` or ``ignore_index``; or
        class probabilities with the logits' shape ``(N, C)`` /
        ``(N, C, d_1, ..., d_K)`` / ``(C,)``, floating.
      linear_bias: optional ``(C,)``, or ``(C, d_1, ..., d_K)`` for a
        K-dimensional ``linear_weight``.
      weight: optional class weights of shape ``(C,)``.
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``; torch's
        deprecated ``"elementwise_mean"`` is taken as ``"mean"``, with its warning.
      ignore_index: a class-index target value that contributes nothing;
        ``None`` means -100. Must be ``None`` with probability targets.
      label_smoothing: :math:`\varepsilon \in [0, 1]`; traced (changing it does
        not recompile). A bool raises ``TypeError`` (torch reads ``True`` as 1.0).
      options: torch's keyword, so that torch calls port unchanged: ``None`` or a
        ``torch.nn.LinearCrossEntropyOptions`` (any object with a
        ``batch_chunk_size`` attribute). jaxloss always chunks; a
        ``batch_chunk_size`` that is not ``None`` is the ``chunk_size`` (rows per
        chunk). The other fields choose torch's own kernels and are ignored.
      chunk_size: rows (tokens) per chunk; static. ``None`` picks
        :func:`default_chunk_size` from the shapes and the platform: a
        ``(chunk, C·d_1⋯d_K)`` logits block of about 64 MiB in float32 and at
        least 256 rows on CPUs (and TPUs), about 512 MiB and at least 2048 rows
        on GPUs (the platform of ``input``'s device, or under ``jit`` the
        default device's). If it
        does not divide N, the last chunk is the last ``chunk_size`` rows,
        its rows shared with the chunk before masked (no row is padded).
        With ``method="tiled"``: ``rows`` or a ``(rows, classes)`` pair, the
        classes per tile (``None``: ``TILED_ROWS`` = 1024 rows and
        :func:`default_tile_size` classes, about 2 MiB of float32 logits per
        tile); a shorter last tile takes the classes left.
      method: ``"auto"`` | ``"fused"`` | ``"checkpoint"`` | ``"tiled"`` (see the
        module documentation): ``"fused"`` computes gradients in the forward
        pass (fastest first-order path, forward mode supported);
        ``"checkpoint"`` rematerialises each chunk under JAX's own autodiff;
        ``"tiled"`` cuts each chunk into tiles of classes, so that working
        memory does not grow with the vocabulary, at the cost of a second
        logits matmul (measured on CPU at N=1024, D=1024, C=131072: 1.13x-1.16x
        ``"fused"``'s time, peak memory the gradients plus about 30 MB, against
        ``"fused"``'s 170 MB). ``"auto"`` is ``"fused"`` for ``"mean"``/``"sum"``
        and ``"checkpoint"`` for ``"none"`` (``"fused"`` with ``"none"`` also runs
        the checkpoint path). All support every transformation; forward mode
        needs no switch.
      precision: the matmuls' precision, as ``jnp.matmul`` and
        ``jax.lax.dot_general`` take it (``None``, ``"highest"``, a
        ``jax.lax.Precision``, a pair of them or a ``jax.lax.DotAlgorithmPreset``);
        static, and used by every matmul of every transformation. ``None`` is
        JAX's default, which ``jax.default_matmul_precision`` sets. On CPU a
        float32 matmul is full float32 at any setting. On an NVIDIA GPU JAX's
        default float32 matmul may run in TF32 (10-bit mantissa), while torch's
        default there is full float32 (``torch.backends.cuda.matmul.allow_tf32``
        is False); pass ``"highest"`` for torch's float32 numbers (measured on
        an H100: TF32 moved the gradients by about 4e-4 of their largest entry,
        and ``"highest"`` took about twice the time).

    Returns:
      ``"none"``: per-sample losses of shape ``(N,)``, ``(N, d_1, ..., d_K)`` or
      ``()`` (unbatched); ``"mean"``/``"sum"``: a scalar. The dtype is the
      promoted floating dtype of the floating arguments (bf16 in, bf16 out);
      the math runs in at least float32.

    Sharded inputs (a mesh of ``AxisType.Explicit`` axes): rows of ``input``
    sharded (and divided evenly) with a whole weight run a chunk loop on each
    device over its rows (a ``shard_map``; the sums and the weight gradient are
    summed across the devices once); a ``linear_weight`` (and ``linear_bias``)
    sharded along the classes stays sharded, its logits reduced across the
    shards (vocabulary-parallel), with the rows sharded or not. ``chunk_size``
    then counts rows per device. A class ``weight`` and other shardings are
    replicated first. With ``Auto`` axes the compiler decides, and gathers the
    rows. The gradients keep their inputs' shardings. See the README, "Sharded
    inputs".

    Raises:
      TypeError: an argument of the wrong kind (floating class indices, integer
        probabilities, non-floating input/weights, a non-int ``chunk_size``, a
        ``precision`` that is not a precision).
      ValueError: shapes that do not fit (as torch rejects them), an unknown
        ``reduction``/``method``/``precision`` name, ``label_smoothing`` outside [0, 1],
        ``ignore_index`` with probability targets, or (concrete arrays) a class
        index out of range.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x = jnp.array([[1.0, -0.5], [0.3, 0.8], [-1.2, 0.4]])
      >>> W = jnp.array([[0.5, -1.0], [1.5, 0.2], [-0.3, 0.7], [0.0, 1.0]])
      >>> y = jnp.array([1, 3, -100])
      >>> round(float(jaxloss.linear_cross_entropy(x, W, y)), 4)
      0.8449
      >>> round(float(jaxloss.linear_cross_entropy(x, W, y, label_smoothing=0.1, chunk_size=2)), 4)
      0.9239

    .. note::
       torch requires every floating argument to share one dtype; jaxloss
       promotes them (like :func:`cross_entropy`). Class ``weight`` and a traced
       ``label_smoothing`` are differentiable here. torch accepts only int64 (or
       uint8) class indices; jaxloss takes any integer dtype.

    .. note::
       Inside ``jax.jit`` an out-of-range class index makes the result NaN (never
       a silently wrong number); wrap the call in
       ``jax.experimental.checkify.checkify`` to get the error instead.
    """
    input = V.as_array("input", input)
    linear_weight = V.as_array("linear_weight", linear_weight)
    target = V.as_array("target", target)
    V.require_floating("input", input)
    V.require_floating("linear_weight", linear_weight)
    reduction = check_reduction(reduction, elementwise_mean=True)
    V.require_choice("method", method, METHODS)
    precision = _check_precision(precision)
    V.check_scalar("label_smoothing", label_smoothing, lo=0.0, hi=1.0)
    if ignore_index is not None:
        ignore_index = V.require_static_index("ignore_index", ignore_index)
    chunk_size = _chunk_size_from_options(options, chunk_size)
    tile_size = None
    if isinstance(chunk_size, (tuple, list)):
        if method != "tiled":
            raise ValueError(
                f"chunk_size: a (rows, classes) pair is for method='tiled', got {tuple(chunk_size)!r} with "
                f"method={method!r}; other methods take rows only"
            )
        if len(chunk_size) != 2:
            raise ValueError(f"chunk_size: expected an int or a (rows, classes) pair, got {tuple(chunk_size)!r}")
        chunk_size, tile_size = chunk_size
        tile_size = V.require_static_int("chunk_size", tile_size)
        if tile_size < 1:
            raise ValueError(f"chunk_size: expected a positive number of classes per tile, got {tile_size}")
    if chunk_size is not None:
        chunk_size = V.require_static_int("chunk_size", chunk_size)
        if chunk_size < 1:
            raise ValueError(f"chunk_size: expected a positive int or None, got {chunk_size}")

    V.require_ndim("input", input, (1, 2), what="((in_features,) or (N, in_features))")
    V.require_ndim(
        "linear_weight", linear_weight, range(2, 1 << 30), what="((C, in_features) or (C, d_1, ..., d_K, in_features))"
    )
    D = input.shape[-1]
    if linear_weight.shape[-1] != D:
        raise ValueError(
            f"linear_weight: expected in_features={D} as the last dimension (input has shape "
            f"{tuple(input.shape)}), got shape {tuple(linear_weight.shape)}"
        )
    C = linear_weight.shape[0]
    if C == 0:  # torch returns NaN (0 for "sum") here
        raise ValueError(f"linear_weight: expected at least one class, got shape {tuple(linear_weight.shape)}")
    out_features = tuple(linear_weight.shape[1:-1])
    P = math.prod(out_features)
    batched = input.ndim == 2
    if out_features and not batched:
        raise ValueError(
            f"input: a K-dimensional linear_weight {tuple(linear_weight.shape)} needs batched input "
            f"(N, {D}), got unbatched shape {tuple(input.shape)}"
        )
    if linear_bias is not None:
        linear_bias = V.as_array("linear_bias", linear_bias)
        V.require_floating("linear_bias", linear_bias)
        V.require_shape(
            "linear_bias", linear_bias, (C, *out_features), context=f"for linear_weight {tuple(linear_weight.shape)}"
        )
    N = input.shape[0] if batched else 1
    logits_shape = ((N,) if batched else ()) + (C, *out_features)
    class_shape = ((N,) if batched else ()) + out_features
    probs = tuple(target.shape) == logits_shape
    weight = _check_class_weight(weight, C)
    if probs:
        if not jnp.issubdtype(target.dtype, jnp.floating):
            raise TypeError(
                f"target: class probabilities (the logits' shape {logits_shape}) must be floating, got dtype "
                f"{target.dtype}"
            )
        if ignore_index is not None:
            raise ValueError(
                f"ignore_index: cannot be specified when target contains class probabilities, got "
                f"ignore_index={ignore_index}"
            )
        ignore_index = -100
        # (No trailing unit axis when P == 1: XLA would copy the whole target to give
        # the chunked view of (N, C, 1) its default layout.)
        t = target.reshape((N, C, P) if P != 1 else (N, C))
        floats = (input, linear_weight, linear_bias, weight, target)
    else:
        if jnp.issubdtype(target.dtype, jnp.floating):
            raise TypeError(
                f"target: class-index targets must be integers, got dtype {target.dtype} with shape "
                f"{tuple(target.shape)}; floating targets (class probabilities) must have the logits' shape "
                f"{logits_shape}"
            )
        V.require_integer("target", target, "class indices")
        if not batched and target.shape == (1,):
            target = target.reshape(())  # as torch: unbatched input takes a (1,) target as ()
        V.require_shape(
            "target",
            target,
            class_shape,
            context=f"for input {tuple(input.shape)} and linear_weight {tuple(linear_weight.shape)}",
        )
        ignore_index = -100 if ignore_index is None else ignore_index
        _check_indices_in_range(target, C, ignore_index)
        t = target.reshape(N, P)
        widest = jax.dtypes.canonicalize_dtype(np.int64)
        if not _holds(widest, ignore_index):
            # No target can equal it (e.g. 2**31 without x64); the masked rows of the
            # last chunk still need a value marked ignored: the smallest int.
            ignore_index = int(np.iinfo(widest).min)
        if not _holds(t.dtype, ignore_index):
            # The masked rows are filled with ignore_index: a dtype that holds it.
            t = t.astype(widest)
        floats = (input, linear_weight, linear_bias, weight)
    out_dtype = result_dtype(*(a.dtype if a is not None else None for a in floats))
    smoothing = None if (isinstance(label_smoothing, (int, float)) and label_smoothing == 0) else label_smoothing
    tile = 0
    if method == "tiled":
        chunk = chunk_size if chunk_size is not None else max(1, min(N, TILED_ROWS))
        tile = min(C, tile_size) if tile_size is not None else default_tile_size(min(N, chunk), C, P)
    else:
        chunk = chunk_size if chunk_size is not None else default_chunk_size(N, C * P, S.platform(input))
    spec = _Spec(_Core(probs, C, P, ignore_index, chunk, precision, tile), reduction, method, out_dtype)
    # Explicitly sharded arrays are replicated first (all-gathered; their gradients come
    # back with their own shardings), except the input's rows and the weight's (and
    # bias's) classes, which _linear_cross_entropy partitions. See the README, "Sharded
    # inputs".
    x = S.keep_rows(input.reshape(N, D))
    rows = S.row_axes(x)
    W2 = S.keep_rows(linear_weight.reshape(C * P, D))
    b2 = None if linear_bias is None else S.keep_rows(linear_bias.reshape(C * P))
    cw, eps = S.keep_rows(weight), S.replicate(smoothing)
    t = S.replicate(t) if rows is None else S.shard_rows(t, rows, S.mesh_of(x))
    if D == 1:
        # One input feature: XLA makes the matmul a product and fuses it into each of
        # its readers (the row max, the sum of exponentials), which round it
        # differently (one contracts it into the subtraction of the max: a fused
        # multiply-add). z - max(z) was then not 0 at the max but up to half an ulp
        # of z, and logits of 4e9 gave a sum of exponentials of inf. A zero second
        # feature keeps it a matmul, computed once (an optimisation barrier did not:
        # XLA removes barriers before it fuses).
        x, W2 = (jnp.pad(a, ((0, 0), (0, 1))) for a in (x, W2))
    out = _linear_cross_entropy(x, W2, b2, cw, t, eps, spec=spec)
    if reduction == "none":
        out = out.reshape(class_shape)
    return out
