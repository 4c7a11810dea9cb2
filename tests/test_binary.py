"""binary_cross_entropy and binary_cross_entropy_with_logits against torch's golden fixtures and JAX's transformations."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import jaxloss as L
from tests import _checks
from tests._fixtures import JIT_DTYPE, assert_parity, case_params

BCE = L.binary_cross_entropy
BCEL = L.binary_cross_entropy_with_logits


def _data(shape=(4, 3), seed=0):
    r = np.random.default_rng(seed)
    p = jnp.asarray(r.uniform(0.05, 0.95, shape), jnp.float32)
    t = jnp.asarray(r.uniform(0.0, 1.0, shape), jnp.float32)
    x = jnp.asarray(3 * r.standard_normal(shape), jnp.float32)
    w = jnp.asarray(r.uniform(0.0, 2.0, shape[-1:]), jnp.float32)
    return p, t, x, w


# ------------------------------------------------------------------ torch parity


@pytest.mark.parametrize("case", case_params("binary"))
def test_fixture_parity(case):
    assert_parity(case)


@pytest.mark.parametrize("case", case_params("binary", dtype=JIT_DTYPE))
def test_fixture_parity_under_jit(case):
    assert_parity(case, transform=jax.jit)


# ------------------------------------------------------------------ transformations


def test_jit_matches_eager():
    p, t, x, w = _data()
    _checks.assert_jit_matches_eager(BCE, p, t, weight=w)
    _checks.assert_jit_matches_eager(BCEL, x, t, weight=w[None, :1], pos_weight=w)


def test_vmap_over_batch_equals_reduction_none():
    p, t, x, w = _data((5, 4))
    _checks.assert_vmap_matches_none(BCE, (p, t), (0, 0), weight=w)
    _checks.assert_vmap_matches_none(BCEL, (x, t), (0, 0), weight=w, pos_weight=2 * w)


def test_check_grads_float64_second_order():
    # Interior p, where p(1 - p) > 1e-12: torch's BCE rule is the exact derivative there.
    # One check_grads call over the sum of both losses (each call compiles many programs).
    p, t, x, w = _data((3, 4), seed=1)

    def total(p, t, w, x, q):
        return BCE(p, t, weight=w) + BCEL(x, t, weight=w[None, :], pos_weight=q, reduction="sum")

    _checks.assert_grads_float64(total, (p, t, w, x, 3 * w), order=2)


def test_bce_gradient_at_p_0_and_1_is_torchs_finite_rule_in_both_modes():
    # torch: d/dp = (p - t) / max(p (1 - p), 1e-12) (hand-derivable at these points), its
    # 1e-12 a float32 constant also in float64 (9.99999996e-13: torch's float64 gradient at
    # p = 0, t = 1 is -1.000000004e12); d/dt = -logit(p) = -+inf at p = 0, 1.
    with jax.enable_x64(True):
        p = jnp.array([0.0, 0.0, 1.0, 1.0, 0.25])
        t = jnp.array([0.0, 1.0, 0.0, 1.0, 0.5])
        eps = float(np.float32(1e-12))
        want_p = np.array([0.0, -1 / eps, 1 / eps, 0.0, (0.25 - 0.5) / (0.75 * 0.25)])
        f = lambda p, t: BCE(p, t, reduction="sum")
        gp, gt = jax.grad(f, argnums=(0, 1))(p, t)
        np.testing.assert_allclose(gp, want_p, rtol=1e-12)
        np.testing.assert_array_equal(gt[:4], [np.inf, np.inf, -np.inf, -np.inf])
        # forward mode (custom_jvp): the Jacobian column by column equals reverse mode
        fwd_p = jax.jacfwd(lambda p: BCE(p, t, reduction="none"))(p)
        np.testing.assert_allclose(np.diag(fwd_p), want_p, rtol=1e-12)
        # the target direction, where -logit(p) is finite (p = 0.25)
        _, jvp_t = jax.jvp(lambda t4: f(p[4:], t.at[4].set(t4)[4:]), (t[4],), (1.0,))
        np.testing.assert_allclose(jvp_t, gt[4], rtol=1e-12)
        # second order through the rule: finite at the clamp
        hess = jax.hessian(lambda p: f(p, t))(p)
        assert np.all(np.isfinite(hess))


def test_bce_with_logits_huge_logits_are_exact():
    # Hand-derivable: softplus(1e4) = 1e4 and softplus(-1e4) = 0 to every digit.
    x = jnp.array([1e4, -1e4, 1e4, -1e4], jnp.float32)
    t = jnp.array([0.0, 1.0, 1.0, 0.0], jnp.float32)
    loss, grad = jax.value_and_grad(lambda x: BCEL(x, t, pos_weight=jnp.float32(2.0), reduction="sum"))(x)
    np.testing.assert_allclose(float(loss), 1e4 + 2e4, rtol=1e-7)
    np.testing.assert_allclose(np.asarray(grad), [1.0, -2.0, 0.0, 0.0], atol=0)


# ------------------------------------------------------------------ dtypes and shapes


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision(dtype):
    p, t, x, w = _data()
    _checks.assert_low_precision(BCE, (p.astype(dtype), t.astype(dtype)), dtype, weight=w)
    _checks.assert_low_precision(BCEL, (x.astype(dtype), t.astype(dtype)), dtype, pos_weight=w)


def test_mixed_dtypes_follow_torch():
    p, t, x, w = _data()
    # torch: BCE-with-logits returns target's dtype; weight/pos_weight never promote.
    assert BCEL(x.astype(jnp.bfloat16), t).dtype == jnp.float32
    assert BCEL(x, t.astype(jnp.bfloat16)).dtype == jnp.bfloat16
    assert BCEL(x.astype(jnp.bfloat16), t.astype(jnp.bfloat16), weight=w, pos_weight=w).dtype == jnp.bfloat16
    assert BCE(p.astype(jnp.bfloat16), t.astype(jnp.bfloat16), weight=w).dtype == jnp.bfloat16
    # torch refuses mixed input/target dtypes for BCE; jaxloss promotes (documented).
    assert BCE(p.astype(jnp.bfloat16), t).dtype == jnp.float32


@pytest.mark.parametrize("shape", [(), (7,), (4, 5), (2, 3, 4)])
def test_output_shapes(shape):
    p, t, x, _ = _data(shape)
    for fn, a in ((BCE, p), (BCEL, x)):
        chex.assert_shape(fn(a, t, reduction="none"), shape)
        chex.assert_shape(fn(a, t, reduction="mean"), ())
        chex.assert_shape(fn(a, t, reduction="sum"), ())


# ------------------------------------------------------------------ bad input


def test_target_shape_must_equal_input_shape():
    p, t, x, _ = _data((4, 3))
    with pytest.raises(ValueError, match=r"target: expected shape \(4, 3\)"):
        BCE(p, t[:, :1])
    with pytest.raises(ValueError, match=r"target: expected shape \(4, 3\)"):
        BCEL(x, t[None])
    with pytest.raises(ValueError, match=r"target: expected shape \(4, 3\)"):  # at trace time, too
        jax.jit(lambda p, t: BCE(p, t))(p, t[:2])


def test_wrong_dtypes():
    p, t, x, _ = _data()
    with pytest.raises(TypeError, match="target: expected a floating-point array"):
        BCE(p, t.astype(jnp.int32))
    with pytest.raises(TypeError, match="target: expected a floating-point array"):
        BCEL(x, t > 0.5)
    with pytest.raises(TypeError, match="input: expected a floating-point array"):
        BCEL(x.astype(jnp.int32), t)
    # integer and bool weights are accepted, as torch accepts them (fixtures), but not a bool
    # pos_weight (torch: "Subtraction ... with a bool tensor is not supported")
    with pytest.raises(TypeError, match="pos_weight: expected a floating-point array"):
        BCEL(x, t, pos_weight=jnp.ones(3, bool))
    with pytest.raises(TypeError, match="weight: expected a floating-point array"):
        BCE(p, t, weight=jnp.ones(3, jnp.complex64))


def test_weights_that_do_not_broadcast_to_the_input():
    p, t, x, _ = _data((4, 3))
    with pytest.raises(ValueError, match=r"weight: shape \(4,\) does not broadcast to \(4, 3\)"):
        BCE(p, t, weight=jnp.ones(4))
    with pytest.raises(ValueError, match=r"weight: shape \(2, 4, 3\) does not broadcast to \(4, 3\)"):
        BCEL(x, t, weight=jnp.ones((2, 4, 3)))
    with pytest.raises(ValueError, match=r"pos_weight: shape \(4,\) does not broadcast to \(4, 3\)"):
        BCEL(x, t, pos_weight=jnp.ones(4))


def test_unknown_reduction():
    p, t, x, _ = _data()
    with pytest.raises(ValueError, match="reduction: expected one of 'none', 'mean', 'sum', got 'batchmean'"):
        BCE(p, t, reduction="batchmean")
    with pytest.raises(ValueError, match="reduction: expected one of"):
        BCEL(x, t, reduction=None)


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_probabilities_outside_0_1_raise_when_concrete(bad):
    p, t, _, _ = _data((3,))
    with pytest.raises(ValueError, match="input: all elements of input should be between 0 and 1"):
        BCE(p.at[1].set(bad), t)
    with pytest.raises(ValueError, match="target: all elements of target should be between 0 and 1"):
        BCE(p, t.at[1].set(bad))


def test_probabilities_outside_0_1_are_nan_under_jit_and_caught_by_checkify():
    p, t, _, _ = _data((3,))
    bad = p.at[1].set(1.5)
    out = jax.jit(lambda p, t: BCE(p, t, reduction="none"))(bad, t)
    out = np.asarray(out)
    assert np.isnan(out[1]) and np.all(np.isfinite(out[[0, 2]]))
    assert np.isnan(jax.jit(BCE)(bad, t))
    assert np.isnan(jax.jit(BCE)(p.at[0].set(-0.2), t))
    assert np.isnan(jax.jit(BCE)(p, t.at[2].set(2.0)))  # finite formula, but torch refuses: NaN
    err, _ = checkify.checkify(jax.jit(BCE))(bad, t)
    with pytest.raises(checkify.JaxRuntimeError, match="between 0 and 1"):
        err.throw()
    err, _ = checkify.checkify(jax.jit(BCE))(p, t)
    err.throw()  # valid input: no error
