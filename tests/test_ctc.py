"""ctc_loss against torch's golden fixtures, JAX's transformations and bad inputs."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import jaxloss
from jaxloss import _ctc
from tests import _checks
from tests._fixtures import JIT_DTYPE, assert_parity, case_params


@pytest.mark.parametrize("case", case_params("ctc"))
def test_fixture_parity(case):
    assert_parity(case)


@pytest.mark.parametrize("case", case_params("ctc", dtype=JIT_DTYPE))
def test_fixture_parity_under_jit(case):
    assert_parity(case, transform=jax.jit)


def _batch(T=9, N=3, C=5, S=3, seed=0):
    """log_probs (T, N, C), padded targets with a repeat, lengths below the maxima."""
    r = np.random.default_rng(seed)
    lp = jax.nn.log_softmax(jnp.asarray(r.standard_normal((T, N, C)), jnp.float32))
    targets = jnp.asarray(r.integers(1, C, (N, S)))
    targets = targets.at[0, 1].set(targets[0, 0])  # a repeated label
    il = jnp.asarray([T, T - 2, T - 1][:N], jnp.int32)
    tl = jnp.asarray([S, S - 1, 1][:N], jnp.int32)
    return lp, targets, il, tl


def test_jit_matches_eager():
    lp, targets, il, tl = _batch()
    for reduction in ("none", "mean", "sum"):
        _checks.assert_jit_matches_eager(jaxloss.ctc_loss, lp, targets, il, tl, reduction=reduction)


def test_vmap_over_batches_matches_none():
    # vmap over a leading axis of K independent unbatched problems (T, C) each.
    K, T, C, S = 4, 8, 5, 3
    r = np.random.default_rng(1)
    lp = jax.nn.log_softmax(jnp.asarray(r.standard_normal((T, K, C)), jnp.float32))
    targets = jnp.asarray(r.integers(1, C, (K, S)))
    il = jnp.asarray([8, 7, 6, 8], jnp.int32)
    tl = jnp.asarray([3, 2, 3, 0], jnp.int32)
    # Each vmapped call sees (T, C) log-probs, a padded (1, S) target and 0-d lengths.
    _checks.assert_vmap_matches_none(
        lambda x, t, i, l, reduction: jaxloss.ctc_loss(x, t if t.ndim == 2 else t[None], i, l, reduction=reduction),
        (lp, targets, il, tl),
        (1, 0, 0, 0),
    )


def test_vmap_of_the_gradient_equals_the_batched_gradient():
    lp, targets, il, tl = _batch()
    batched = jax.grad(lambda x: jaxloss.ctc_loss(x, targets, il, tl, reduction="sum"))(lp)
    per = jax.vmap(
        jax.grad(lambda x, t, i, l: jaxloss.ctc_loss(x, t[None], i, l, reduction="sum")),
        in_axes=(1, 0, 0, 0),
        out_axes=1,
    )(lp, targets, il, tl)
    np.testing.assert_allclose(per, batched, rtol=1e-5, atol=1e-6)


def test_check_grads_float64_forward_and_reverse():
    # The custom_jvp rule in forward and reverse mode, and differentiated once more.
    lp, targets, il, tl = _batch(T=7, N=3, C=4, S=2)
    x = np.asarray(lp, np.float64)
    _checks.assert_grads_float64(
        lambda x: jaxloss.ctc_loss(jax.nn.log_softmax(x), targets, il, tl, reduction="none"), (x,), order=2
    )


def test_gradient_is_the_true_derivative_wrt_log_probs():
    # Unnormalised log_probs: jaxloss differentiates the loss itself, so a finite
    # difference (hand-derivable check, no torch) must match; torch's rule would not.
    lp, targets, il, tl = _batch(T=6, N=2, C=4, S=2)
    with jax.enable_x64(True):
        x = jnp.asarray(lp, jnp.float64) + 0.3
        f = lambda x: jaxloss.ctc_loss(x, targets[:2], il[:2], tl[:2], reduction="sum")
        g = jax.grad(f)(x)
        d = jnp.asarray(np.random.default_rng(3).standard_normal(x.shape))
        eps = 1e-6
        fd = (f(x + eps * d) - f(x - eps * d)) / (2 * eps)
        np.testing.assert_allclose(float(jnp.sum(g * d)), float(fd), rtol=1e-6)
        # The frames past input_length get exactly zero gradient.
        assert np.all(np.asarray(g)[int(il[1]) :, 1] == 0)


def test_autodiff_through_the_scan_agrees_with_the_custom_rule():
    lp, targets, il, tl = _batch()
    f = lambda ad: jax.grad(
        lambda x: _ctc._ctc_loss_checked(
            x, targets, il, tl, blank=0, reduction="mean", zero_infinity=False, autodiff=ad
        )
    )(lp)
    np.testing.assert_allclose(f(True), f(False), rtol=1e-4, atol=1e-6)


def test_zero_infinity_gradient_is_exactly_zero_and_finite():
    lp, _, _, _ = _batch(T=4, N=2)
    targets = jnp.asarray([[1, 1, 1], [2, 3, 0]])
    il = jnp.asarray([4, 4])  # 1,1,1 needs 5 frames
    tl = jnp.asarray([3, 2])
    for mode in ("rev", "fwd"):
        f = lambda x: jaxloss.ctc_loss(x, targets, il, tl, reduction="sum", zero_infinity=True)
        g = jax.grad(f)(lp) if mode == "rev" else jax.jacfwd(f)(lp)
        assert np.all(np.isfinite(g))
        assert np.all(np.asarray(g)[:, 0] == 0)
        assert np.any(np.asarray(g)[:, 1] != 0)
    none = jaxloss.ctc_loss(lp, targets, il, tl, reduction="none")
    assert np.isinf(none[0]) and np.isfinite(none[1])


def test_long_sequence_is_finite_and_matches_the_autodiff_path():
    T, N, C, S = 2000, 2, 6, 30
    r = np.random.default_rng(4)
    lp = jax.nn.log_softmax(jnp.asarray(r.standard_normal((T, N, C)), jnp.float32))
    targets = jnp.asarray(r.integers(1, C, (N, S)))
    il = jnp.asarray([T, T - 500])
    tl = jnp.asarray([S, S - 5])
    loss, g = jax.value_and_grad(lambda x: jaxloss.ctc_loss(x, targets, il, tl, reduction="sum"))(lp)
    assert np.isfinite(loss) and np.all(np.isfinite(g))
    assert float(loss) > 1000  # -log p over 2000 frames of near-uniform 6-way choices
    # Through log_softmax each frame's logit gradient sums to 0 (the occupancies sum to 1).
    row = jax.grad(lambda x: jaxloss.ctc_loss(jax.nn.log_softmax(x), targets, il, tl, reduction="sum"))(lp)
    np.testing.assert_allclose(np.asarray(row).sum(-1), 0, atol=1e-4)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision(dtype):
    lp, targets, il, tl = _batch()
    for reduction in ("none", "mean"):
        _checks.assert_low_precision(
            jaxloss.ctc_loss, (lp.astype(dtype), targets, il, tl), dtype, reduction=reduction
        )
    g = jax.grad(lambda x: jaxloss.ctc_loss(x, targets, il, tl).astype(jnp.float32))(lp.astype(dtype))
    assert g.dtype == dtype and bool(jnp.all(jnp.isfinite(g.astype(jnp.float32))))


def test_output_shapes_and_dtypes():
    lp, targets, il, tl = _batch()
    chex.assert_shape(jaxloss.ctc_loss(lp, targets, il, tl, reduction="none"), (3,))
    chex.assert_shape(jaxloss.ctc_loss(lp, targets, il, tl, reduction="mean"), ())
    chex.assert_shape(jaxloss.ctc_loss(lp, targets, il, tl, reduction="sum"), ())
    chex.assert_shape(jaxloss.ctc_loss(lp[:, 0], targets[0], il[0], tl[0], reduction="none"), ())
    with jax.enable_x64(True):
        out = jaxloss.ctc_loss(lp.astype(jnp.float64), targets, il, tl)
        assert out.dtype == jnp.float64


def test_reductions_relate_as_torch_documents():
    # "mean" = mean over the batch of loss_n / max(L_n, 1): hand-derivable from "none".
    lp, targets, il, tl = _batch()
    tl = tl.at[2].set(0)
    none = np.asarray(jaxloss.ctc_loss(lp, targets, il, tl, reduction="none"), np.float64)
    mean = float(jaxloss.ctc_loss(lp, targets, il, tl, reduction="mean"))
    total = float(jaxloss.ctc_loss(lp, targets, il, tl, reduction="sum"))
    np.testing.assert_allclose(mean, np.mean(none / np.maximum(np.asarray(tl), 1)), rtol=1e-6)
    np.testing.assert_allclose(total, none.sum(), rtol=1e-6)


def test_layouts_agree_padded_concatenated_tuple_lists():
    lp, targets, il, tl = _batch()
    ref = jaxloss.ctc_loss(lp, targets, il, tl, reduction="none")
    concat = jnp.concatenate([targets[n, : int(tl[n])] for n in range(3)])
    np.testing.assert_allclose(jaxloss.ctc_loss(lp, concat, il, tl, reduction="none"), ref, rtol=1e-6)
    as_tuples = (tuple(int(v) for v in il), tuple(int(v) for v in tl))
    np.testing.assert_allclose(jaxloss.ctc_loss(lp, targets, *as_tuples, reduction="none"), ref, rtol=1e-6)
    # Concatenated targets with traced lengths (padded to targets.shape[0] inside jit).
    traced = jax.jit(lambda i, l: jaxloss.ctc_loss(lp, concat, i, l, reduction="none"))(il, tl)
    np.testing.assert_allclose(traced, ref, rtol=1e-6)


def test_blank_is_static_and_changes_the_result():
    lp, targets, il, tl = _batch()
    a = jaxloss.ctc_loss(lp, targets, il, tl, blank=0)
    b = jaxloss.ctc_loss(lp, jnp.where(targets == 4, 0, targets), il, tl, blank=4)
    assert np.isfinite(a) and np.isfinite(b) and not np.isclose(a, b)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"log_probs": np.zeros((4,), np.float32)}, ValueError, r"log_probs: expected 2 or 3 dimensions"),
        ({"log_probs": np.zeros((4, 2, 3, 1), np.float32)}, ValueError, r"log_probs: expected 2 or 3"),
        ({"log_probs": np.zeros((0, 3, 5), np.float32)}, ValueError, r"log_probs: must not be empty"),
        ({"log_probs": np.zeros((9, 3, 5), np.int32)}, TypeError, r"log_probs: expected a floating"),
        ({"targets": np.ones((3, 3), np.float32)}, TypeError, r"targets: expected integer labels"),
        ({"targets": np.ones((3, 3, 1), np.int32)}, ValueError, r"targets: expected 1 or 2 dimensions"),
        ({"targets": np.ones((2, 3), np.int32)}, ValueError, r"targets: expected 3 rows"),
        ({"targets": np.array([[1, 2, 5], [1, 2, 3], [1, 2, 3]])}, ValueError, r"targets: labels must be in \[0, C\)"),
        ({"targets": np.array([[1, 2, -1], [1, 2, 3], [1, 2, 3]])}, ValueError, r"targets: labels must be in"),
        ({"targets": np.array([[1, 2, 0], [1, 2, 3], [1, 2, 3]])}, ValueError, r"targets: labels must not be the blank"),
        ({"targets": np.array([1, 2, 3, 1, 2])}, ValueError, r"target_lengths: concatenated targets of length 5"),
        ({"input_lengths": (9, 9, 10)}, ValueError, r"input_lengths: expected values in \[0, T\] = \[0, 9\]"),
        ({"input_lengths": (9, -1, 9)}, ValueError, r"input_lengths: expected values in"),
        ({"input_lengths": (9, 9)}, ValueError, r"input_lengths: expected one length per sample, shape \(3,\)"),
        ({"input_lengths": np.ones((3, 1), np.int32)}, ValueError, r"input_lengths: expected one length per sample"),
        ({"input_lengths": (9.0, 9.0, 9.0)}, TypeError, r"input_lengths: expected integer lengths"),
        ({"input_lengths": np.ones(3, np.float32)}, TypeError, r"input_lengths: expected an integer array"),
        ({"target_lengths": (4, 1, 1)}, ValueError, r"target_lengths: expected values in \[0, S\] = \[0, 3\]"),
        ({"target_lengths": (3, -1, 1)}, ValueError, r"target_lengths: expected values in"),
        ({"target_lengths": (3, 1, 1, 1)}, ValueError, r"target_lengths: expected one length per sample"),
        ({"blank": 5}, ValueError, r"blank: expected a value in \[0, C\) = \[0, 5\), got 5"),
        ({"blank": -1}, ValueError, r"blank: expected a value in"),
        ({"blank": 1.0}, TypeError, r"blank: expected a Python int"),
        ({"reduction": "batchmean"}, ValueError, r"reduction: expected one of"),
        ({"zero_infinity": 1}, TypeError, r"zero_infinity: expected a bool"),
    ],
)
def test_bad_inputs(kwargs, exc, match):
    lp, targets, il, tl = _batch()
    args = {"log_probs": lp, "targets": targets, "input_lengths": il, "target_lengths": tl, **kwargs}
    opts = {k: args.pop(k) for k in ("blank", "reduction", "zero_infinity") if k in args}
    with pytest.raises(exc, match=match):
        jaxloss.ctc_loss(*args.values(), **opts)


def test_unbatched_1d_target_must_be_the_whole_target():
    # torch treats a 1-D target as concatenated: its size must equal the target length.
    lp, targets, il, tl = _batch()
    with pytest.raises(ValueError, match=r"target_lengths: concatenated targets of length 3"):
        jaxloss.ctc_loss(lp[:, 0], targets[0], 9, 2)
    with pytest.raises(ValueError, match=r"input_lengths: expected one length per sample, shape \(\) or \(1,\)"):
        jaxloss.ctc_loss(lp[:, 0], targets[0], (9, 9), 3)


def test_traced_bad_values_give_nan_and_checkify_reports_them():
    lp, targets, il, tl = _batch()
    f = jax.jit(lambda i, l, t: jaxloss.ctc_loss(lp, t, i, l, reduction="none"))
    out = np.asarray(f(il.at[1].set(10), tl, targets))  # input_length > T
    assert np.isnan(out[1]) and np.isfinite(out[0]) and np.isfinite(out[2])
    out = np.asarray(f(il, tl.at[2].set(4), targets))  # target_length > S
    assert np.isnan(out[2]) and np.isfinite(out[0])
    out = np.asarray(f(il, tl, targets.at[0, 0].set(7)))  # label >= C
    assert np.isnan(out[0]) and np.isfinite(out[1])
    out = np.asarray(f(il, tl, targets.at[0, 0].set(0)))  # the blank as a label
    assert np.isnan(out[0]) and np.isfinite(out[1])
    # Concatenated targets whose lengths do not sum to their size: every loss is NaN.
    concat = jnp.asarray([1, 2, 3, 4])
    g = jax.jit(lambda l: jaxloss.ctc_loss(lp, concat, il, l, reduction="none"))
    assert np.all(np.isnan(g(jnp.asarray([2, 1, 2]))))
    err, _ = checkify.checkify(f, errors=checkify.user_checks)(il.at[1].set(10), tl, targets)
    with pytest.raises(checkify.JaxRuntimeError, match="ctc_loss: input_lengths, target_lengths or targets"):
        err.throw()
    err, _ = checkify.checkify(f, errors=checkify.user_checks)(il, tl, targets)
    err.throw()  # valid values: no error


def test_jvp_forward_mode_matches_reverse_mode():
    lp, targets, il, tl = _batch()
    f = lambda x: jaxloss.ctc_loss(x, targets, il, tl)
    d = jnp.asarray(np.random.default_rng(5).standard_normal(lp.shape), jnp.float32)
    _, tangent = jax.jvp(f, (lp,), (d,))
    np.testing.assert_allclose(tangent, jnp.sum(jax.grad(f)(lp) * d), rtol=1e-4)


def test_benchmark_suite_builds_and_runs():
    from benchmarks.suites import ctc as suite

    sizes = [{"T": 6, "N": 2, "C": 5, "S": 2}]
    built = suite.cases(quick=True, sizes=sizes)
    impls = {c.impl for c in built}
    assert {"jaxloss", "optax"} <= impls
    assert {c.mode for c in built} == {"value", "value_and_grad"}
    results = {}
    for c in built:
        if c.compile is not None:
            c.compile()
        out = c.run()
        value = out[0] if isinstance(out, tuple) else out
        results[(c.impl, c.mode)] = float(np.asarray(value.detach() if hasattr(value, "detach") else value))
    # Every implementation computes the same summed loss on the same data.
    ref = results[("jaxloss", "value")]
    for key, v in results.items():
        np.testing.assert_allclose(v, ref, rtol=1e-4, err_msg=str(key))


def test_nan_log_prob_gives_nan_gradients_with_and_without_zero_infinity():
    """A NaN on frame 1 of a sample with input_length 3 (of T = 4), target [1]: the loss
    is NaN, not +inf, so zero_infinity leaves it and its gradient alone (torch zeroes
    +inf losses only). A NaN logit (class 2) through log_softmax: the gradient is NaN
    on every class of the frames t < input_length and 0 on the frame after. A NaN
    log-prob on the path (class 1) with respect to the log-probs directly: NaN in the
    blank's and the label's columns on those frames, 0 in the other (the note in
    ctc_loss's docstring). zero_infinity=True had given 0 everywhere: a finite
    gradient for a NaN loss."""
    logits = np.zeros((4, 1, 3), np.float32)
    logits[1, 0, 2] = np.nan
    lp = np.log(np.full((4, 1, 3), 1 / 3, np.float32))
    lp[1, 0, 1] = np.nan
    for zi in (False, True):
        def f(x, normalise):  # noqa: B023 (zi is read at once)
            x = jax.nn.log_softmax(x, axis=-1) if normalise else x
            return jaxloss.ctc_loss(x, jnp.array([[1]]), (3,), (1,), reduction="sum", zero_infinity=zi)

        assert np.isnan(float(f(logits, True))) and np.isnan(float(f(lp, False)))
        g = np.asarray(jax.grad(f)(jnp.asarray(logits), True))[:, 0]
        assert np.isnan(g[:3]).all() and (g[3] == 0).all(), (zi, g)
        g = np.asarray(jax.grad(f)(jnp.asarray(lp), False))[:, 0]
        assert np.isnan(g[:3, :2]).all() and (g[:3, 2] == 0).all() and (g[3] == 0).all(), (zi, g)


def test_nan_log_prob_on_a_path_gives_nan_and_zero_infinity_keeps_minus_inf():
    # A NaN that a path can use makes the loss NaN (torch: NaN); it used to drop the path.
    lp = np.log(np.full((4, 1, 3), 1 / 3, np.float32))
    lp[0, 0, 1] = np.nan
    for zi in (False, True):
        assert np.isnan(float(jaxloss.ctc_loss(jnp.asarray(lp), jnp.array([[1]]), (4,), (1,), zero_infinity=zi)))
    # A NaN on a frame after input_length is never read.
    lp2 = np.log(np.full((4, 1, 3), 1 / 3, np.float32))
    lp2[3, 0, 1] = np.nan
    assert np.isfinite(float(jaxloss.ctc_loss(jnp.asarray(lp2), jnp.array([[1]]), (3,), (1,))))
    # zero_infinity replaces +inf only (torch's res == inf): unnormalised log-probs of 3e38 per
    # frame give an empty target's likelihood that overflows to +inf on the last frame, a loss
    # of -inf, which stays (torch: -inf; the overflowing_log_probs fixtures pin it, and NaN
    # where the overflow meets the recursion's log-sum-exp).
    x = jnp.full((2, 1, 3), 3e38, jnp.float32)
    out = jaxloss.ctc_loss(x, jnp.array([[1]]), (2,), (0,), reduction="none", zero_infinity=True)
    assert float(out[0]) == -np.inf


def test_a_huge_finite_loss_leaves_the_other_samples_gradients_alone():
    # Sample 1 has an empty target and its blank masked at -1e6 on frame 5: its only path
    # takes that log-prob, so its loss is about 1e6 (finite) and its own gradient is only as
    # good as float32 allows (the note in ctc_loss's docstring). Sample 0's loss and gradient
    # must be the same as when it is alone in the batch.
    r = np.random.default_rng(3)
    x = r.standard_normal((12, 2, 5)).astype(np.float32)
    x[5, 1, 0] = -1e6
    targets, il, tl = jnp.array([[1, 2, 3], [1, 1, 1]]), jnp.array([12, 12]), jnp.array([3, 0])

    def f(x, targets, il, tl):
        return jaxloss.ctc_loss(jax.nn.log_softmax(x, axis=-1), targets, il, tl, reduction="none")

    out, vjp = jax.vjp(lambda x: f(x, targets, il, tl), jnp.asarray(x))
    assert 9e5 < float(out[1]) < np.inf
    (g,) = vjp(jnp.array([1.0, 0.0]))
    alone, vjp0 = jax.vjp(lambda x: f(x, targets[:1], il[:1], tl[:1]), jnp.asarray(x[:, :1]))
    (g0,) = vjp0(jnp.ones(1))
    np.testing.assert_allclose(out[0], alone[0], rtol=1e-6)
    np.testing.assert_allclose(g[:, 0], g0[:, 0], rtol=0, atol=1e-7)
    np.testing.assert_array_equal(g[:, 1], 0.0)  # zero cotangent on the huge sample
