"""kl_div, poisson_nll_loss and gaussian_nll_loss against torch's golden fixtures and JAX's transformations."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import jaxloss as L
from tests import _checks
from tests._fixtures import JIT_DTYPE, assert_close, case_params, run_jax

KL = L.kl_div
POISSON = L.poisson_nll_loss
GAUSS = L.gaussian_nll_loss


def _torch_nan_at_zero_target(case, arg: str) -> np.ndarray | None:
    """Where torch's gradient is NaN and jaxloss deliberately gives a finite one.

    kl_div (log_target=False) and poisson_nll_loss (full=True) differentiate 0 * log 0
    in torch's backward, so torch's target gradient is NaN where the target is 0
    (documented in each docstring). Only those entries may differ; ``None`` if
    torch's gradient has no NaN this explains.
    """
    if arg != "target":
        return None
    if case.fn == "kl_div" and not case.kwargs.get("log_target", False):
        pass
    elif case.fn == "poisson_nll_loss" and case.kwargs.get("full", False):
        pass
    else:
        return None
    target = case.args["target"]
    nan = np.isnan(case.grads[arg])
    assert np.array_equal(nan, target == 0), f"{case.id}: torch's NaN target gradient is not where target == 0"
    return nan


def _assert_parity(case, transform=None):
    """``tests._fixtures.assert_parity``, except for the documented NaN target gradients."""
    out, dtype, grads = run_jax(case, transform)
    assert str(dtype) == case.out_dtype, f"{case.id}: output dtype {dtype}, torch gives {case.out_dtype}"
    assert_close(out, case.out, case.dtype, f"{case.id}: value")
    for k, want in case.grads.items():
        got = grads[k]
        nan = _torch_nan_at_zero_target(case, k)
        if nan is not None:
            assert np.all(np.isfinite(got[nan])), f"{case.id}: gradient w.r.t. {k} not finite at target == 0"
            got, want = np.where(nan, 0.0, got), np.where(nan, 0.0, want)
        assert_close(got, want, case.dtype, f"{case.id}: gradient w.r.t. {k}")


# ------------------------------------------------------------------ torch parity


@pytest.mark.parametrize("case", case_params("divergence"))
def test_fixture_parity(case):
    _assert_parity(case)


@pytest.mark.parametrize("case", case_params("divergence", dtype=JIT_DTYPE))
def test_fixture_parity_under_jit(case):
    _assert_parity(case, transform=jax.jit)


def _data(shape=(4, 5), seed=0):
    r = np.random.default_rng(seed)
    if shape:
        x = jax.nn.log_softmax(jnp.asarray(r.standard_normal(shape), jnp.float32))
        t = jax.nn.softmax(jnp.asarray(r.standard_normal(shape), jnp.float32))
    else:
        x = jnp.log(jnp.asarray(r.uniform(0.1, 0.9), jnp.float32))
        t = jnp.asarray(r.uniform(0.1, 0.9), jnp.float32)
    counts = jnp.asarray(r.integers(2, 7, shape), jnp.float32)
    var = jnp.asarray(r.uniform(0.2, 2.0, shape), jnp.float32)
    return x, t, counts, var


# ------------------------------------------------------------------ kl_div semantics


def test_kl_zero_target_contributes_exactly_zero_with_finite_gradients():
    x, t, _, _ = _data()
    t = t.at[0, :2].set(0.0)
    loss, (gx, gt) = jax.value_and_grad(lambda x, t: KL(x, t, reduction="sum"), argnums=(0, 1))(x, t)
    none = KL(x, t, reduction="none")
    np.testing.assert_array_equal(np.asarray(none[0, :2]), 0.0)
    np.testing.assert_array_equal(np.asarray(gx[0, :2]), 0.0)  # d/dx = -t
    # torch: NaN here; jaxloss: the gradient of -t x alone, -x (hand-derived)
    np.testing.assert_allclose(np.asarray(gt[0, :2]), -np.asarray(x[0, :2]), rtol=1e-6)
    assert np.isfinite(float(loss))


def test_kl_reductions_by_hand():
    x, t, _, _ = _data((4, 5))
    total = float(KL(x, t, reduction="sum"))
    np.testing.assert_allclose(float(KL(x, t, reduction="batchmean")), total / 4, rtol=1e-6)
    np.testing.assert_allclose(float(KL(x, t, reduction="mean")), total / 20, rtol=1e-6)
    # a 0-d input: batchmean is the sum (torch does not divide)
    np.testing.assert_allclose(float(KL(x[0, 0], t[0, 0], reduction="batchmean")), float(KL(x[0, 0], t[0, 0], reduction="sum")))


def test_poisson_full_target_gradient_at_zero_is_finite():
    r = np.random.default_rng(3)
    x = jnp.asarray(r.uniform(0.5, 2.0, 4), jnp.float32)
    t = jnp.array([0.0, 0.5, 1.0, 3.0], jnp.float32)
    for log_input, want0 in ((True, -x[0]), (False, -jnp.log(x[0] + 1e-8))):
        g = jax.grad(lambda t: POISSON(x, t, log_input=log_input, full=True, reduction="sum"))(t)
        assert np.all(np.isfinite(np.asarray(g)))
        np.testing.assert_allclose(float(g[0]), float(want0), rtol=1e-6)  # torch: NaN


def test_poisson_full_nan_target_has_nan_gradient():
    # torch masks Stirling's term where target <= 1, which a NaN is not: the NaN
    # reaches the term and its gradient, as it does in torch (a mask of "t > 1" once
    # left the other terms' finite gradient)
    x = jnp.array([0.3, 0.3])
    t = jnp.array([jnp.nan, 3.0])
    for log_input in (True, False):
        loss = lambda t: POISSON(x, t, log_input=log_input, full=True, reduction="sum")  # noqa: E731
        g = np.asarray(jax.grad(loss)(t))
        assert np.isnan(float(loss(t))) and np.isnan(g[0]) and np.isfinite(g[1])


def test_gaussian_var_clamp_is_straight_through():
    # Hand-derived: with v = max(var, eps), d/dvar = 0.5 (1/v - (x - t)^2 / v^2) even below eps.
    with jax.enable_x64(True):
        x, t = jnp.array([0.3, 0.3]), jnp.array([0.1, 0.1])
        var = jnp.array([1e-9, 0.5])
        eps = 1e-6
        g = jax.grad(lambda v: GAUSS(x, t, v, eps=eps, reduction="sum"))(var)
        v = np.array([eps, 0.5])
        np.testing.assert_allclose(np.asarray(g), 0.5 * (1 / v - 0.04 / v**2), rtol=1e-12)


# ------------------------------------------------------------------ transformations


def test_jit_matches_eager():
    x, t, counts, var = _data()
    _checks.assert_jit_matches_eager(KL, x, t, reduction="batchmean")
    _checks.assert_jit_matches_eager(POISSON, x, counts, full=True)
    _checks.assert_jit_matches_eager(GAUSS, x, t, var[:, 0], full=True)


def test_vmap_over_batch_equals_reduction_none():
    x, t, counts, var = _data((5, 4))
    _checks.assert_vmap_matches_none(KL, (x, t), (0, 0))
    _checks.assert_vmap_matches_none(KL, (x, jnp.log(t)), (0, 0), log_target=True)
    _checks.assert_vmap_matches_none(POISSON, (jnp.exp(x), counts), (0, 0), log_input=False, full=True)
    _checks.assert_vmap_matches_none(GAUSS, (x, t, var), (0, 0, 0))
    _checks.assert_vmap_matches_none(GAUSS, (x, t, var[:, 0]), (0, 0, 0))  # var one dimension short


def test_check_grads_float64_second_order():
    # One check_grads call over the sum of every configuration (each call compiles many
    # derivative programs); an error in any term changes the sum's derivatives.
    x, t, counts, var = _data((3, 4), seed=1)

    def total(x, t, log_t, c, rate, v, v_col):
        return (
            KL(x, t, reduction="batchmean")
            + KL(x, log_t, reduction="sum", log_target=True)
            # Stirling's term is smooth away from t = 1; these counts are >= 2.
            + POISSON(x, c, full=True)
            + POISSON(rate, c, log_input=False, full=True)
            + GAUSS(x, t, v, full=True)
            + GAUSS(x, t, v_col, reduction="sum")
        )

    _checks.assert_grads_float64(total, (x, t, jnp.log(t), counts, jnp.exp(x) + 0.5, var, var[:, :1]), order=2)


# ------------------------------------------------------------------ dtypes, traced hyper-parameters, shapes


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision(dtype):
    x, t, counts, var = _data()
    c = lambda a: a.astype(dtype)
    _checks.assert_low_precision(KL, (c(x), c(t)), dtype, reduction="batchmean")
    _checks.assert_low_precision(POISSON, (c(x), c(counts)), dtype, full=True)
    _checks.assert_low_precision(GAUSS, (c(x), c(t), c(var)), dtype)
    _checks.assert_low_precision(GAUSS, (c(x), c(t)), dtype, var=0.5)


def test_mixed_and_integer_dtypes_follow_torch():
    x, t, counts, var = _data()
    assert KL(x.astype(jnp.bfloat16), t.astype(jnp.float16)).dtype == jnp.float32
    assert POISSON(x.astype(jnp.bfloat16), counts.astype(jnp.int32)).dtype == jnp.bfloat16
    assert GAUSS(x.astype(jnp.float16), counts.astype(jnp.int8), 0.5).dtype == jnp.float16
    assert GAUSS(x.astype(jnp.bfloat16), t.astype(jnp.bfloat16), var).dtype == jnp.float32
    np.testing.assert_allclose(
        float(POISSON(x, counts.astype(jnp.int32), full=True)), float(POISSON(x, counts, full=True)), rtol=1e-6
    )


def test_eps_is_traced_without_retracing():
    x, t, counts, var = _data()
    rate = jnp.exp(x)
    _checks.assert_hyperparameter_is_traced(lambda e: POISSON(rate, counts, log_input=False, eps=e), [1e-8, 0.1, 0.5])
    tiny = var.at[:, 0].set(1e-7)
    _checks.assert_hyperparameter_is_traced(lambda e: GAUSS(x, t, tiny, eps=e), [1e-6, 1e-2, 0.5])


def test_scalar_var_is_traced_without_retracing():
    x, t, _, _ = _data((6,))
    # a 1-D input takes a 0-d var (one dimension short); a Python float var broadcasts anywhere
    _checks.assert_hyperparameter_is_traced(lambda v: GAUSS(x, t, v), [0.5, 1.0, 2.0])


def test_python_scalar_var_through_jit_and_grad_is_the_python_number():
    # jax.jit and jax.grad turn a Python float var into a weakly typed 0-d tracer; it must
    # mean what the Python float means (one variance for every element), for inputs of any
    # rank, while a 0-d array of a fixed dtype keeps torch's shape rule.
    x, t, _, _ = _data((4, 5))
    for v in (0.7, 2):
        eager = GAUSS(x, t, v, reduction="none")
        np.testing.assert_allclose(jax.jit(functools.partial(GAUSS, reduction="none"))(x, t, v), eager, rtol=1e-6)
        np.testing.assert_allclose(GAUSS(x, t, jnp.asarray(v), reduction="none"), eager, rtol=1e-6)
        assert jax.jit(GAUSS)(x, t, v).dtype == x.dtype  # a Python number does not promote
    # hand-derivable: d/dv mean(0.5 (log v + d^2 / v)) = 0.5 (1/v - mean(d^2) / v^2)
    d2 = float(jnp.mean((x - t) ** 2))
    want = 0.5 * (1 / 0.7 - d2 / 0.7**2)
    np.testing.assert_allclose(jax.grad(lambda v: GAUSS(x, t, v))(0.7), want, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(jax.grad(lambda v: GAUSS(x, t, v)))(0.7), want, rtol=1e-5)
    assert np.isnan(float(jax.jit(lambda v: GAUSS(x, t, v))(-0.5)))  # traced: NaN, not an error
    with pytest.raises(ValueError, match="var: has negative entry/entries"):
        GAUSS(x, t, jnp.asarray(-0.5))
    with pytest.raises(ValueError, match=r"var: expected a float, the input's shape \(4, 5\).*got shape \(\)"):
        GAUSS(x, t, jnp.float32(0.7))
    with pytest.raises(ValueError, match=r"var: expected a float, the input's shape \(4, 5\).*got shape \(\)"):
        jax.jit(GAUSS)(x, t, jnp.zeros((), jnp.float32))


@pytest.mark.parametrize("shape", [(), (6,), (4, 5), (2, 3, 4)])
def test_output_shapes(shape):
    x, t, counts, var = _data(shape)
    for reduction in ("none", "mean", "sum", "batchmean"):
        chex.assert_shape(KL(x, t, reduction=reduction), shape if reduction == "none" else ())
    for reduction in ("none", "mean", "sum"):
        want = shape if reduction == "none" else ()
        chex.assert_shape(POISSON(x, counts, reduction=reduction), want)
        chex.assert_shape(GAUSS(x, t, var, reduction=reduction), want)
        chex.assert_shape(GAUSS(x, t, 0.5, reduction=reduction), want)
    if shape:
        chex.assert_shape(GAUSS(x, t, var[..., 0], reduction="none"), shape)


def test_broadcast_shapes_follow_torch():
    x, t, counts, var = _data((4, 5))
    chex.assert_shape(KL(x, t[0], reduction="none"), (4, 5))
    chex.assert_shape(POISSON(x[0], counts, reduction="none"), (4, 5))
    chex.assert_shape(GAUSS(x, t[0], var[:, :1], reduction="none"), (4, 5))
    chex.assert_shape(GAUSS(x, t, var[:1], reduction="none"), (4, 5))


# ------------------------------------------------------------------ bad input


def test_unknown_reduction():
    x, t, counts, var = _data()
    with pytest.raises(ValueError, match="reduction: expected one of 'none', 'batchmean', 'mean', 'sum', got 'avg'"):
        KL(x, t, reduction="avg")
    with pytest.raises(ValueError, match="reduction: expected one of 'none', 'mean', 'sum', got 'batchmean'"):
        POISSON(x, counts, reduction="batchmean")
    with pytest.raises(ValueError, match="reduction: expected one of 'none', 'mean', 'sum'"):
        GAUSS(x, t, var, reduction="Mean")


def test_shapes_that_do_not_broadcast():
    x, t, counts, var = _data((4, 5))
    with pytest.raises(ValueError, match=r"target: shape \(4,\) does not broadcast with input shape \(4, 5\)"):
        KL(x, t[:, 0])
    with pytest.raises(ValueError, match=r"target: shape \(3, 5\) does not broadcast"):
        POISSON(x, counts[:3])
    with pytest.raises(ValueError, match=r"target: shape \(5, 4\) does not broadcast"):
        jax.jit(lambda x, t: GAUSS(x, t, 1.0))(x, t.T)  # at trace time


@pytest.mark.parametrize("var_shape", [(5,), (1, 1), (4, 5, 1), (2, 5), (3, 5)])
def test_gaussian_var_of_an_impossible_shape(var_shape):
    x, t, _, _ = _data((4, 5))
    with pytest.raises(ValueError, match=r"var: expected a float, the input's shape \(4, 5\)"):
        GAUSS(x, t, jnp.ones(var_shape))


def test_gaussian_negative_var():
    x, t, _, var = _data()
    with pytest.raises(ValueError, match="var: has negative entry/entries"):
        GAUSS(x, t, -0.5)
    with pytest.raises(ValueError, match="var: has negative entry/entries"):
        GAUSS(x, t, var.at[1, 2].set(-1e-3))
    # inside jit: NaN where var < 0 (never the clamped, finite value), and checkify catches it
    bad = var.at[1, 2].set(-1e-3)
    out = np.asarray(jax.jit(lambda x, t, v: GAUSS(x, t, v, reduction="none"))(x, t, bad))
    assert np.isnan(out[1, 2]) and np.isfinite(np.delete(out.reshape(-1), 7)).all()
    # a traced scalar var is a 0-d array: torch's shape rules allow it for a 1-D input
    assert np.isnan(float(jax.jit(lambda v: GAUSS(x[0], t[0], v))(-0.5)))
    err, _ = checkify.checkify(jax.jit(GAUSS))(x, t, bad)
    with pytest.raises(checkify.JaxRuntimeError, match="var: has negative"):
        err.throw()


def test_wrong_types():
    x, t, counts, var = _data()
    with pytest.raises(TypeError, match="target: expected a floating-point array"):
        KL(x, counts.astype(jnp.int32))
    with pytest.raises(TypeError, match="input: expected a floating-point array"):
        POISSON(counts.astype(jnp.int32), counts)
    with pytest.raises(TypeError, match="log_target: expected a bool"):
        KL(x, t, log_target=1)
    with pytest.raises(TypeError, match="full: expected a bool"):
        POISSON(x, counts, full="yes")
    with pytest.raises(TypeError, match="eps: expected a real scalar"):
        POISSON(x, counts, eps=jnp.ones(2))
    with pytest.raises(TypeError, match="var: expected a float or a floating-point array, got bool"):
        GAUSS(x, t, True)
    with pytest.raises(TypeError, match="var: expected a floating-point array"):
        GAUSS(x, t, jnp.ones((4, 5), jnp.int32))
    # complex targets: torch computes a complex loss (full=False) or raises (Poisson's
    # full=True); jaxloss asks for a real target either way
    for full in (False, True):
        with pytest.raises(TypeError, match="target: expected a real array .*complex64"):
            POISSON(x, counts.astype(jnp.complex64), full=full)
        with pytest.raises(TypeError, match="target: expected a real array, got dtype complex64"):
            GAUSS(x, t.astype(jnp.complex64), var, full=full)


def test_exp_of_plus_inf_with_full_optimisation():
    """XLA:CPU's vectorised exp inside a fused loop gives a finite exp(+inf) (the suite
    otherwise compiles with most optimisations off, where it does not): found by fuzzing,
    poisson_nll_loss(log_input=True) gave inf - 2 * inf = -inf where torch gives NaN.
    Expected values are IEEE arithmetic: inf - t * inf is NaN for t >= 0 (0 * inf is
    NaN) and inf for t < 0; the derivatives exp(inf) - t and -exp(inf) are +-inf."""
    prev = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    jax.clear_caches()
    try:
        x = jnp.full(8, jnp.inf, jnp.float32)
        t = jnp.array([2.0, 0.0, 0.5, -1.0] * 2, jnp.float32)
        got = L.poisson_nll_loss(x, t, reduction="none")
        np.testing.assert_array_equal(got, np.where(np.asarray(t) < 0, np.inf, np.nan))
        g = jax.grad(lambda x: L.poisson_nll_loss(x, t, reduction="sum"))(x)
        np.testing.assert_array_equal(g, np.full(8, np.inf))
        zeros = jnp.zeros(8, jnp.float32)
        np.testing.assert_array_equal(L.kl_div(zeros, x, log_target=True, reduction="none"), np.full(8, np.inf))
        g = jax.grad(lambda z: L.kl_div(z, x, log_target=True, reduction="sum"))(zeros)
        np.testing.assert_array_equal(g, np.full(8, -np.inf))
    finally:
        jax.config.update("jax_disable_most_optimizations", prev)
        jax.clear_caches()
