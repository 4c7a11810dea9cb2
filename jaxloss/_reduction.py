"""The one reduction helper every loss calls.

A loss computes its per-element values (already weighted, already adjusted for
anything family-specific such as kl_div's ``batchmean`` or ctc's per-target
length) and hands them here. ``"mean"`` divides by the number of elements, or by
an explicit ``denominator`` (torch's weighted means divide by the sum of the
weights that took part).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxloss._validation import warn_at_caller

REDUCTIONS: tuple[str, ...] = ("none", "mean", "sum")


def check_reduction(
    reduction: object, allowed: tuple[str, ...] = REDUCTIONS, *, elementwise_mean: bool = False
) -> str:
    """Return ``reduction`` if it is one of ``allowed``; raise ``ValueError`` otherwise.

    ``elementwise_mean``: also take torch's deprecated spelling of ``"mean"``,
    returning ``"mean"`` with torch's warning, where torch 2.13 takes it (every loss
    but ``poisson_nll_loss``, ``gaussian_nll_loss``, ``multilabel_soft_margin_loss``
    and ``triplet_margin_with_distance_loss``)."""
    if elementwise_mean and isinstance(reduction, str) and reduction == "elementwise_mean":
        warn_at_caller("reduction='elementwise_mean' is deprecated. Please use reduction='mean' instead.")
        return "mean"
    if not isinstance(reduction, str) or reduction not in allowed:
        raise ValueError(
            f"reduction: expected one of {', '.join(repr(r) for r in allowed)}, got {reduction!r}"
        )
    return reduction


def reduce(
    loss: jax.Array,
    reduction: str,
    *,
    denominator: jax.Array | None = None,
    dtype: jnp.dtype | None = None,
) -> jax.Array:
    """Reduce per-element ``loss`` as torch does and cast the result to ``dtype``.

    Args:
      loss: per-element losses, in the compute dtype (float32 or wider).
      reduction: ``"none"`` (returned unchanged), ``"sum"`` or ``"mean"``.
      denominator: for ``"mean"``, what to divide the sum by (e.g. the sum of the
        class weights that took part); ``None`` means the number of elements
        (``loss.mean()``, NaN for an empty array, like torch). A zero denominator
        gives NaN, as torch does even where the sum is not 0 (cross_entropy with
        label smoothing and kept targets of zero total class weight: torch's
        weighted NLL mean is 0/0 there). Its gradient, like torch's, is
        a NaN cotangent on every element of ``loss``: elements a loss selects
        away with ``jnp.where`` get exactly zero (cross_entropy's ignored
        targets), every other element NaN (the kept targets, even where the
        label smoothing term alone would give a finite times infinite gradient).
        The denominator gets no gradient where it is 0.
      dtype: the result dtype (torch's output dtype); ``None`` keeps ``loss.dtype``.
    """
    check_reduction(reduction)
    if reduction == "none":
        out = loss
    elif reduction == "sum":
        out = jnp.sum(loss)
    elif denominator is None:
        out = jnp.mean(loss)
    else:
        # The denominator itself gets no gradient where it is 0 (its -total/d**2
        # would be NaN), and the division that carries the gradient elsewhere never
        # sees 0. A zero denominator multiplies the sum by NaN rather than selecting
        # a NaN constant, so that ``loss`` gets a NaN cotangent rather than none.
        # (The factor is 1 where the branch is not taken: its zero cotangent times
        # NaN would be NaN.)
        total = jnp.sum(loss)
        zero = denominator == 0
        out = jnp.where(
            zero,
            total * jnp.where(zero, jnp.nan, 1).astype(total.dtype),
            total / jnp.where(zero, jnp.ones_like(denominator), denominator),
        )
    return out if dtype is None else out.astype(dtype)
