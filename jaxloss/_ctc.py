"""ctc_loss with torch.nn.functional's semantics.

The negative log-likelihood is the CTC forward (alpha) recursion in log space, a
``lax.scan`` over time vectorised over the batch and the extended label sequence
(blank, l_1, blank, l_2, ..., blank) of length 2S+1. Its derivative is given by a
``custom_jvp`` rule built from the forward-backward (alpha-beta) occupancies, so
forward mode, reverse mode and higher orders all work; the rule is linear in the
tangent, so reverse mode computes alpha and beta once and the transpose is a
product.
"""

from __future__ import annotations

import functools
from numbers import Integral

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxloss import _sharding as S
from jaxloss import _validation as V
from jaxloss._dtypes import compute_dtype, result_dtype
from jaxloss._reduction import check_reduction, reduce

_NEG_INF = -jnp.inf


def _lse(*xs: jax.Array) -> jax.Array:
    """Element-wise log(sum(exp(x))) over ``xs`` that is -inf, with zero gradients, when all are -inf.

    The max carries no gradient (the result is exactly independent of it at every
    order); the log only ever sees a positive sum, so a state that no path
    reaches gets a zero (not NaN) gradient at every order. A ``+inf`` max is kept,
    as in torch's recursion: ``inf - inf`` makes the state NaN (a ``+inf`` log-prob,
    or a likelihood that overflows).
    """
    m = functools.reduce(jnp.maximum, xs)
    m = jax.lax.stop_gradient(jnp.where(m == _NEG_INF, 0, m))
    s = functools.reduce(jnp.add, [jnp.exp(x - m) for x in xs])
    # "no path" is s == 0 exactly: a NaN log-prob stays NaN (as in torch), not -inf
    dead = s == 0
    return jnp.where(dead, _NEG_INF, jnp.log(jnp.where(dead, 1, s)) + m)


# The recursions carry their state with two -inf columns on the side they shift from,
# so that "state s - 1" and "s - 2" (or s + 1, s + 2) are plain slices and each step
# is written back in place: XLA on CPU vectorises that step, where shifting by
# concatenating -inf columns made it an element-by-element loop (measured: the
# alpha scan 2.3x faster at N=32 and 128).
_PAD = 2


def _alpha_step(ap, e_t, skip):
    """alpha_t(s) = e_t(s) + lse(alpha_{t-1}(s), alpha_{t-1}(s-1), [skip(s)] alpha_{t-1}(s-2)),
    from ``ap`` = alpha_{t-1} after two -inf columns."""
    S2 = ap.shape[-1] - _PAD
    return _lse(ap[:, 2:], ap[:, 1 : S2 + 1], jnp.where(skip, ap[:, :S2], _NEG_INF)) + e_t


def _padded(x):
    """``x`` after two -inf columns (the recursions' carry)."""
    return jnp.concatenate([jnp.full(x.shape[:-1] + (_PAD,), _NEG_INF, x.dtype), x], axis=-1)


def _alpha_init(e0):
    s = jnp.arange(e0.shape[-1])
    return jnp.where(s < 2, e0, _NEG_INF)


def _final_loglik(alpha_last, il, L):
    """log p(target | input) from alpha at t = input_length - 1: states 2L and 2L-1 (if L > 0).

    An empty target reads state 0 alone, as torch does (no log-sum-exp): a likelihood
    that overflows to ``+inf`` on the last frame gives a loss of ``-inf`` there, and
    NaN with a target (``inf - inf`` in the log-sum-exp), as in torch."""
    S2 = alpha_last.shape[-1]
    idx_end = jnp.clip(2 * L, 0, S2 - 1)
    idx_lab = jnp.clip(2 * L - 1, 0, S2 - 1)
    a_end = jnp.take_along_axis(alpha_last, idx_end[:, None], axis=1)[:, 0]
    a_lab = jnp.take_along_axis(alpha_last, idx_lab[:, None], axis=1)[:, 0]
    ll = jnp.where(L > 0, _lse(a_end, a_lab), a_end)
    # No frames: the empty target has probability 1, any other 0.
    return jnp.where(il > 0, ll, jnp.where(L == 0, 0.0, _NEG_INF).astype(ll.dtype))


def _forward(e, skip, il, L):
    """Run the alpha recursion; return the log-likelihood (N,).

    ``alpha`` is frozen once t >= input_length, so the carry at the end holds
    alpha at t = input_length - 1 for every sample.
    """
    T = e.shape[0]

    def step(ap, xs):
        e_t, t = xs
        alpha = jnp.where((t < il)[:, None], _alpha_step(ap, e_t, skip), ap[:, _PAD:])
        return jax.lax.dynamic_update_slice_in_dim(ap, alpha, _PAD, axis=1), None

    ts = jnp.arange(1, T)
    ap, _ = jax.lax.scan(step, _padded(_alpha_init(e[0])), (e[1:], ts))
    return _final_loglik(ap[:, _PAD:], il, L)


def _alphas_and_betas(e, skip, il, L):
    """Both recursions in one scan (half the loop iterations of two): (alphas, betas), each (T, N, 2S+1).

    alpha_t(s) includes the emission at t; beta_t(s) = log p(the rest of the path
    after t | state s at t) excludes it, and is -inf for t >= input_length. Step k
    emits alpha_k and beta_{T-1-k}, then advances alpha to t = k + 1 and beta down
    to t = T - 2 - k (the T-th step's advance is discarded).
    """
    T, N, S2 = e.shape
    s = jnp.arange(S2)
    ends = (s == 2 * L[:, None]) | ((s == 2 * L[:, None] - 1) & (L[:, None] > 0))
    beta_end = jnp.where(ends, 0.0, _NEG_INF).astype(e.dtype)
    # transition s -> s+2 allowed (skip is indexed by the destination state)
    skip_next = jnp.concatenate([skip[:, 2:], jnp.zeros((N, min(2, S2)), bool)], axis=1)

    # beta runs over the states in reverse order (r = 2S - s), where its recursion has
    # the alpha step's form: "s + 1, s + 2" become "r - 1, r - 2", slices of a carry
    # padded on the left, written back in place like alpha's (measured faster on CPU
    # than the mirror-image update, which XLA did not write in place as cheaply).
    beta_end_r = jnp.flip(beta_end, axis=1)
    skip_r = jnp.flip(skip_next, axis=1)

    def beta_at(t, rec):
        last = (t == il - 1)[:, None]
        before = (t < il - 1)[:, None]
        return jnp.where(last, beta_end_r, jnp.where(before, rec, _NEG_INF))

    alpha0 = _alpha_init(e[0])
    beta_last = beta_at(T - 1, jnp.full((N, S2), _NEG_INF, e.dtype))  # state-reversed

    # The step reads its frames from ``e`` by index and emits the states it starts
    # from, so the scan's outputs are alphas and (reversed) betas whole. Slicing
    # ``e[1:]`` and a reversed copy of ``e`` as the scan's inputs, and concatenating
    # the first alpha and last beta to its outputs, made XLA on CPU copy the
    # (T, N, 2S+1) arrays and fuse the concatenations into the occupancies' loop:
    # value_and_grad took 0.66x-0.88x the time without them at nine of ten shapes
    # and 1.02x at one (side by side, T from 100 to 2000, N from 4 to 128, C from
    # 30 to 1000, S from 20 to 60; same bits).
    def step(carry, k):
        # padded alpha_k; padded, state-reversed beta_{T-1-k} + e_{T-1-k}; beta_{T-1-k}
        ap, bp, beta_prev = carry
        ta = k + 1
        tb = T - 2 - k
        e_a = jax.lax.dynamic_index_in_dim(e, ta, 0, keepdims=False)  # clamped at k = T - 1
        e_b = jnp.flip(jax.lax.dynamic_index_in_dim(e, tb, 0, keepdims=False), axis=-1)
        alpha = jnp.where((ta < il)[:, None], _alpha_step(ap, e_a, skip), ap[:, _PAD:])
        beta = beta_at(tb, _alpha_step(bp, 0, skip_r))
        out = (ap[:, _PAD:], beta_prev)
        ap = jax.lax.dynamic_update_slice_in_dim(ap, alpha, _PAD, axis=1)
        bp = jax.lax.dynamic_update_slice_in_dim(bp, beta + e_b, _PAD, axis=1)
        return (ap, bp, beta), out

    init = (_padded(alpha0), _padded(beta_last + jnp.flip(e[T - 1], axis=-1)), beta_last)
    _, (alphas, betas) = jax.lax.scan(step, init, jnp.arange(T))
    betas = jnp.flip(betas, axis=(0, 2))
    return alphas, betas


def _emissions(lp, ext, *, per_element: bool = False):
    """The log-probs of the extended labels, e_t(s) = lp[t, n, ext[n, s]]: (T, N, 2S+1).

    The gather takes whole columns of frames (time as a slice of the gather), and XLA
    on CPU lays its result out with time as the minor axis, which the scans then copy
    back to time-major. ``per_element`` gathers with an index per element instead,
    which comes out time-major: it is what the gradient's recursions read. (Measured
    side by side, ``value_and_grad``: 0.80x-0.82x the time at T=1000, N=32, C=30,
    S=40; 0.93x-0.99x at seven other shapes and 1.02x-1.03x at two, within this
    machine's noise. The value alone was slower with it at six of ten shapes,
    1.03x-1.20x, and keeps the column gather.)
    """
    idx = jnp.broadcast_to(ext[None], (lp.shape[0],) + ext.shape) if per_element else ext[None]
    return jnp.take_along_axis(lp, idx, axis=2)


@functools.partial(jax.custom_jvp, nondiff_argnums=(5,))
def _ctc_loglik(lp, ext, skip, il, L, zero_infinity):
    """log p(target | input) per sample from the log-probs ``lp`` (T, N, C) and the
    extended labels ``ext`` (N, 2S+1).

    ``zero_infinity`` only changes the derivative: without it, an impossible
    alignment gets NaN tangents (as torch); with it, zero ones. A NaN likelihood
    gets NaN tangents either way.
    """
    return _forward(_emissions(lp, ext), skip, il, L)


@_ctc_loglik.defjvp
def _ctc_loglik_jvp(zero_infinity, primals, tangents):
    lp, ext, skip, il, L = primals
    e = _emissions(lp, ext, per_element=True)
    alphas, betas = _alphas_and_betas(e, skip, il, L)
    ll = _final_loglik(alphas[-1], il, L)  # alpha is frozen after input_length
    # Occupancy gamma_t(s) = alpha_t(s) beta_t(s) / p: d log p / d e_t(s). The forms
    # below keep every masked entry finite so no NaN leaks through a zero cotangent.
    finite = jnp.isfinite(ll)
    ll_safe = jnp.where(finite, ll, 0.0)
    log_gamma = alphas + betas - ll_safe[None, :, None]
    live = jnp.isfinite(log_gamma) & finite[None, :, None]
    gamma = jnp.where(live, jnp.exp(jnp.where(live, log_gamma, 0.0)), 0.0)
    # An impossible alignment (p = 0) has no derivative: NaN for its frames t <
    # input_length, as torch gives (zero_infinity masks it out afterwards). A NaN
    # likelihood (a NaN log-prob) has none either, with zero_infinity too (torch
    # zeroes only +inf losses).
    t = jnp.arange(e.shape[0])[:, None, None]
    undefined = (jnp.isnan(ll) if zero_infinity else ~finite)[None, :, None] & (t < il[None, :, None])
    gamma = jnp.where(undefined, jnp.nan, gamma)
    # Linear in the tangent; reverse mode transposes this gather into a scatter-add of
    # gamma (the column gather's scatter: one with an index per element was 1.3x-1.5x slower).
    de = _emissions(tangents[0], ext)
    return ll, jnp.sum(gamma * de, axis=(0, 2))


def _ctc_loglik_autodiff(lp, ext, skip, il, L, zero_infinity):
    """The same log-likelihood differentiated by autodiff through the scan (for comparison)."""
    return _forward(_emissions(lp, ext), skip, il, L)


def _padded_labels(targets, tl, *, concatenated: bool, width: int, blank: int, C: int):
    """(N, width) labels, blank beyond each target length; and a per-sample 'bad label' flag."""
    N = tl.shape[0]
    pos = jnp.arange(width)[None, :]
    valid = pos < tl[:, None]
    if width == 0:
        labels = jnp.zeros((N, 0), jnp.int32)
    elif concatenated:
        # (the cumulative sum runs over the whole batch: an explicitly sharded tl is gathered)
        offsets = jnp.cumsum(S.replicate(tl)) - tl
        idx = jnp.clip(offsets[:, None] + pos, 0, max(targets.shape[0] - 1, 0))
        labels = S.take_rows(targets, idx) if targets.shape[0] > 0 else jnp.zeros((N, width), targets.dtype)
    else:
        labels = targets[:, :width]
    in_range = (labels >= 0) & (labels < C) & (labels != blank)
    bad = jnp.any(valid & ~in_range, axis=1)
    labels = jnp.where(valid & in_range, labels, blank).astype(jnp.int32)
    return labels, bad


@functools.partial(
    jax.jit,
    static_argnames=("blank", "reduction", "zero_infinity", "width", "batched", "out_dtype", "autodiff"),
)
def _ctc_loss(
    log_probs, targets, input_lengths, target_lengths, *, blank, reduction, zero_infinity, width, batched, out_dtype,
    autodiff=False,
):
    lp = log_probs if batched else log_probs[:, None, :]
    T, N, C = lp.shape
    lp = lp.astype(compute_dtype(lp.dtype))
    il = input_lengths.reshape(N).astype(jnp.int32)
    tl = target_lengths.reshape(N).astype(jnp.int32)
    concatenated = targets.ndim == 1
    labels, bad_label = _padded_labels(targets, tl, concatenated=concatenated, width=width, blank=blank, C=C)
    # (blank, l_1, blank, ..., l_S, blank), built from arrays shaped like the batch (no
    # scatter into fresh zeros), so that it keeps an explicitly sharded batch's sharding.
    ends = jnp.full_like(tl[:, None], blank)
    ext = jnp.concatenate([jnp.stack([jnp.full_like(labels, blank), labels], axis=2).reshape(N, 2 * width), ends], 1)
    # torch's rule: s -> s+2 is allowed when the extended labels differ (never for blanks).
    skip = jnp.concatenate([jnp.zeros_like(ext[:, :2], bool), ext[:, 2:] != ext[:, :-2]], axis=1)
    loglik = (_ctc_loglik_autodiff if autodiff else _ctc_loglik)(lp, ext, skip, il, tl, zero_infinity)
    nll = -loglik
    if zero_infinity:  # torch zeroes +inf only
        nll = jnp.where(nll == jnp.inf, jnp.zeros_like(nll), nll)
    # Lengths and labels that torch rejects (only reachable with traced values): NaN.
    max_tl = targets.shape[0] if concatenated else targets.shape[1]
    bad = bad_label | (il < 0) | (il > T) | (tl < 0) | (tl > max_tl)
    if concatenated:
        bad = bad | (jnp.sum(tl) != targets.shape[0])
    V.debug_check(
        ~jnp.any(bad),
        "ctc_loss: input_lengths, target_lengths or targets out of range (see the ctc_loss docstring)",
    )
    nll = jnp.where(bad, jnp.nan, nll)
    if reduction == "mean":
        per = nll / jnp.maximum(tl, 1).astype(nll.dtype)
        return reduce(per, "mean", dtype=out_dtype)
    if reduction == "none" and not batched:
        nll = nll[0]
    return reduce(nll, reduction, dtype=out_dtype)


def _lengths(name: str, x, N: int, batched: bool) -> jax.Array:
    if isinstance(x, (tuple, list)):
        if not all(isinstance(v, Integral) and not isinstance(v, bool) for v in x):
            raise TypeError(f"{name}: expected integer lengths, got {list(x)!r}")
        x = np.asarray(x, dtype=np.int64)
    arr = V.as_array(name, x)
    V.require_integer(name, arr, "lengths")
    if arr.ndim > 1 or arr.size != N:
        want = f"({N},)" if batched else "() or (1,)"
        raise ValueError(
            f"{name}: expected one length per sample, shape {want} for N={N}, got shape {tuple(arr.shape)}"
        )
    return arr


def ctc_loss(
    log_probs: ArrayLike,
    targets: ArrayLike,
    input_lengths: ArrayLike | tuple[int, ...],
    target_lengths: ArrayLike | tuple[int, ...],
    *,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> jax.Array:
    r"""Connectionist temporal classification loss.

    Equals ``torch.nn.functional.ctc_loss`` (2.13) in value, and in gradient
    through a ``log_softmax`` (see the first note).

    For sample :math:`n` with log-probabilities :math:`x_{t,c}` over
    :math:`T_n` = ``input_lengths[n]`` frames and target :math:`l` of length
    :math:`L_n` = ``target_lengths[n]``:

    .. math::
        \ell_n = -\log \sum_{\pi \in \mathcal{B}^{-1}(l)} \prod_{t=1}^{T_n} \exp x_{t, \pi_t},

    where :math:`\mathcal{B}` removes repeated symbols and then blanks. It is
    :math:`+\infty` when no alignment exists (:math:`T_n` shorter than
    :math:`L_n` plus the number of adjacent repeats), and 0 instead with
    ``zero_infinity=True``. ``"mean"`` is
    :math:`\frac{1}{N}\sum_n \ell_n / \max(L_n, 1)`; ``"sum"`` is
    :math:`\sum_n \ell_n`.

    Args:
      log_probs: log-probabilities of shape ``(T, N, C)``, or ``(T, C)`` for one
        unbatched sample; any floating dtype (computed in at least float32).
      targets: integer labels (any integer dtype), padded ``(N, S)`` (entries past
        each target length are ignored), or the targets of every sample
        concatenated, ``(sum(target_lengths),)``. For unbatched ``log_probs`` a
        1-D ``targets`` is that one sample's target (its length must equal the
        target length) and ``(1, S)`` is padded. Labels are in ``[0, C)``.
      input_lengths: frames per sample, shape ``(N,)`` (``()`` or ``(1,)``
        unbatched): an integer array or a tuple of ints, each in ``[0, T]``
        (``(N, 1)`` raises ``ValueError``; torch flattens it).
      target_lengths: target length per sample, same shapes, each in
        ``[0, S]`` for padded targets; summing to ``targets.shape[0]`` for
        concatenated ones.
      blank: the blank label, in ``[0, C)``.
      reduction: ``"none"`` | ``"mean"`` | ``"sum"``; torch's
        deprecated ``"elementwise_mean"`` is taken as ``"mean"``, with its warning.
      zero_infinity: replace losses of ``+inf`` (impossible alignments) and their NaN
        gradients by zero (a loss of ``-inf``, from unnormalised inputs, stays, as in torch;
        so do a NaN loss, from a NaN log-prob, and its NaN gradient).

    Returns:
      ``"none"``: the per-sample losses ``(N,)`` (a scalar unbatched);
      ``"mean"``/``"sum"``: a scalar; in ``log_probs``' dtype.

    Raises:
      TypeError: floating ``targets`` or lengths, non-integer ``blank``.
      ValueError: wrong ranks or counts, an unknown ``reduction``, ``blank``
        outside ``[0, C)``, empty ``log_probs``; and, when the values are
        concrete, lengths outside ``[0, T]``/``[0, S]``, concatenated target
        lengths that do not sum to ``targets.shape[0]``, labels outside ``[0, C)``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxloss
      >>> logits = jnp.array([[[2.0, 0.5, -1.0]], [[0.1, 0.2, 3.0]], [[1.0, 2.0, 0.0]]])
      >>> log_probs = jax.nn.log_softmax(logits)  # (T=3, N=1, C=3)
      >>> targets = jnp.array([[2, 1]])
      >>> round(float(jaxloss.ctc_loss(log_probs, targets, (3,), (2,), reduction="sum")), 4)
      0.7034
      >>> float(jaxloss.ctc_loss(log_probs, jnp.array([[1, 1]]), (2,), (2,), reduction="sum"))
      inf

    .. note::
       Gradients are the true derivative with respect to ``log_probs``. torch's
       backward instead returns :math:`\exp(x_{t,c}) - \gamma_{t,c}` (the
       derivative with respect to the logits of a ``log_softmax``, assuming the
       input is normalised). The two agree exactly for the composition
       ``ctc_loss(log_softmax(logits), ...)`` differentiated with respect to the
       logits, the way CTC is used; differentiating with respect to
       ``log_probs`` directly differs from torch by :math:`\exp(x_{t,c})` per frame.

    .. note::
       The derivative is a ``jax.custom_jvp`` rule built from the
       forward-backward (alpha-beta) occupancies, so ``jax.grad``, ``jax.jvp`` /
       ``jax.jacfwd`` and higher orders all work; reverse mode runs the alpha and
       beta recursions once, in one scan, and no autodiff residuals per time step
       are stored.

    .. note::
       An infinite loss (impossible alignment) has a NaN gradient on its frames
       ``t < input_length``; ``zero_infinity=True`` gives 0 and an exactly-zero
       gradient. With respect to ``log_probs`` directly, jaxloss's NaN is in the
       blank's and the target labels' columns (the others are 0) where torch's
       covers every class; through ``log_softmax`` both are NaN on those frames.
       A NaN in ``log_probs`` on a frame and class that a path can use makes the
       loss NaN, as in torch.

    .. note::
       Where torch's gradient is NaN but the derivative exists, jaxloss gives it:
       ``log_probs`` with ``-inf`` entries (masked classes) before
       ``input_length`` get finite gradients (torch's backward forms
       ``-inf + inf`` there, and ``log_softmax``'s backward spreads the NaN over
       the frame). The losses agree. Log-probs of ``+inf``, or that overflow
       (unnormalised input far out of range), give torch's values: NaN where the
       recursion meets ``inf - inf``, ``-inf`` for an empty target whose
       likelihood overflows only on the last frame.

    .. note::
       A sample whose loss is finite but huge (log-probs near ``-1e6`` that
       every path must take, e.g. a masked blank under an empty target) gets
       gradients only as good as its occupancies
       :math:`\exp(\alpha + \beta - \log p)`, whose exponent is a difference of
       numbers the size of the loss, from log-probs that keep about 7 digits in
       float32. Measured in float32 against float64, with torch's error on the
       same inputs in brackets: 1e-3 (2e-3) at a loss of 1e4, 3e-2 (4e-2) at 1e6,
       6 (300) at 1e9. The other samples of the batch are not affected.

    .. note::
       torch accepts floating ``targets`` and lengths given as tensors of any
       shape with N elements; jaxloss raises ``TypeError`` for floating targets
       and wants lengths of shape ``(N,)`` (or ``()``/``(1,)`` unbatched).
       torch's CPU kernel reads out of bounds for labels outside ``[0, C)``;
       jaxloss raises ``ValueError`` (concrete) or returns NaN for that sample
       (traced). torch CPU has no bf16/f16 kernel; jaxloss accepts them, computes
       in float32 and returns the input dtype.

    .. note::
       Inside ``jax.jit`` with traced lengths or targets, values cannot raise:
       lengths out of range, concatenated target lengths that do not sum to
       ``targets.shape[0]`` or labels outside ``[0, C)`` make the affected
       losses NaN (all of them for a wrong sum). Wrap the call in
       ``jax.experimental.checkify.checkify`` to get an error instead. With
       traced ``target_lengths`` and concatenated targets, the padded width is
       ``targets.shape[0]`` (concrete lengths use their maximum).
    """
    return _ctc_loss_checked(
        log_probs, targets, input_lengths, target_lengths, blank=blank, reduction=reduction,
        zero_infinity=zero_infinity, autodiff=False,
    )


def _ctc_loss_checked(log_probs, targets, input_lengths, target_lengths, *, blank, reduction, zero_infinity, autodiff):
    log_probs = V.as_array("log_probs", log_probs)
    V.require_floating("log_probs", log_probs)
    reduction = check_reduction(reduction, elementwise_mean=True)
    blank = V.require_static_int("blank", blank)
    zero_infinity = V.require_static_bool("zero_infinity", zero_infinity)
    V.require_ndim("log_probs", log_probs, (2, 3), what="((T, N, C) or unbatched (T, C))")
    if log_probs.size == 0:
        raise ValueError(f"log_probs: must not be empty, got shape {tuple(log_probs.shape)}")
    batched = log_probs.ndim == 3
    T, C = log_probs.shape[0], log_probs.shape[-1]
    N = log_probs.shape[1] if batched else 1
    if not 0 <= blank < C:
        raise ValueError(f"blank: expected a value in [0, C) = [0, {C}), got {blank}")

    targets = V.as_array("targets", targets)
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise TypeError(f"targets: expected integer labels, got dtype {targets.dtype}")
    V.require_ndim("targets", targets, (1, 2), what="(padded (N, S) or concatenated (sum(target_lengths),))")
    if targets.ndim == 2 and targets.shape[0] != N:
        raise ValueError(
            f"targets: expected {N} rows (one per sample) for log_probs {tuple(log_probs.shape)}, "
            f"got shape {tuple(targets.shape)}"
        )
    il = _lengths("input_lengths", input_lengths, N, batched)
    tl = _lengths("target_lengths", target_lengths, N, batched)

    V.check_values("input_lengths", il, lambda v: (v >= 0) & (v <= T), f"expected values in [0, T] = [0, {T}], got {_show(il)}")
    concatenated = targets.ndim == 1
    if concatenated:
        V.check_values("target_lengths", tl, lambda v: v >= 0, f"expected values >= 0, got {_show(tl)}")
        V.check_values(
            "target_lengths",
            tl,
            lambda v: v.sum() == targets.shape[0],
            f"concatenated targets of length {targets.shape[0]} need lengths that sum to it, got {_show(tl)}",
        )
        width = targets.shape[0] if V.is_traced(tl) else int(np.max(np.asarray(tl), initial=0))
    else:
        S = targets.shape[1]
        V.check_values("target_lengths", tl, lambda v: (v >= 0) & (v <= S), f"expected values in [0, S] = [0, {S}] (the padded width), got {_show(tl)}")
        width = S
    if not (V.is_traced(targets) or V.is_traced(tl)):
        t_np = np.asarray(targets).reshape(-1) if concatenated else np.asarray(targets)
        l_np = np.asarray(tl).reshape(-1)
        if concatenated:
            used = t_np
        else:
            used = t_np[np.arange(t_np.shape[1])[None, :] < l_np[:, None]]
        bad = used[(used < 0) | (used >= C)]
        if bad.size:
            raise ValueError(f"targets: labels must be in [0, C) = [0, {C}), got {bad[:5].tolist()}")
        if np.any(used == blank):
            raise ValueError(f"targets: labels must not be the blank label {blank}")
    out_dtype = result_dtype(log_probs.dtype)
    return _ctc_loss(
        log_probs, targets, il, tl, blank=blank, reduction=reduction, zero_infinity=zero_infinity, width=width,
        batched=batched, out_dtype=out_dtype, autodiff=autodiff,
    )


def _show(x) -> str:
    if V.is_traced(x):
        return "a traced value"
    return str(np.asarray(x).tolist())
