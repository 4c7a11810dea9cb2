"""l1_loss, mse_loss, huber_loss, smooth_l1_loss: torch parity, transformations, dtypes, bad input."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import jaxloss
from tests import _checks
from tests._fixtures import JIT_DTYPE, assert_parity, case_params

# torch warns (and broadcasts) when target's shape differs from input's; jaxloss does
# the same. The fixture cases exercise that on purpose; test_broadcast_warns checks it.
pytestmark = pytest.mark.filterwarnings("ignore:.*different to the input size:UserWarning")

FNS = ("l1_loss", "mse_loss", "huber_loss", "smooth_l1_loss")
WEIGHTED = ("l1_loss", "mse_loss", "huber_loss")


def _fn(name):
    return getattr(jaxloss, name)


def _pair(seed=0, shape=(4, 5)):
    """Errors with |d| in [0.2, 0.7] or [1.4, 2.5]: away from 0 and from delta = beta = 1."""
    r = np.random.default_rng(seed)
    x = r.standard_normal(shape)
    mag = np.where(r.uniform(size=shape) < 0.5, r.uniform(0.2, 0.7, shape), r.uniform(1.4, 2.5, shape))
    sign = np.where(r.uniform(size=shape) < 0.5, -1.0, 1.0)
    return x.astype(np.float32), (x + sign * mag).astype(np.float32)


@pytest.mark.parametrize("case", case_params("regression"))
def test_fixture_parity(case):
    assert_parity(case)


@pytest.mark.parametrize("case", case_params("regression", dtype=JIT_DTYPE))
def test_fixture_parity_under_jit(case):
    assert_parity(case, transform=jax.jit)


@pytest.mark.parametrize("name", FNS)
def test_jit_matches_eager(name):
    x, t = _pair(1)
    _checks.assert_jit_matches_eager(_fn(name), x, t)


@pytest.mark.parametrize("name", FNS)
def test_vmap_matches_none(name):
    x, t = _pair(2)
    _checks.assert_vmap_matches_none(_fn(name), (x, t), (0, 0))


@pytest.mark.parametrize("name", WEIGHTED)
def test_vmap_matches_none_weighted(name):
    x, t = _pair(3)
    w = np.random.default_rng(3).uniform(0, 2, x.shape).astype(np.float32)
    none = _fn(name)(x, t, weight=w, reduction="none")
    per_row = jax.vmap(lambda a, b, c: _fn(name)(a, b, weight=c, reduction="sum"))(x, t, w)
    np.testing.assert_allclose(per_row, np.asarray(none).sum(axis=1), rtol=1e-6)


@pytest.mark.parametrize("name", FNS)
def test_check_grads_float64(name):
    x, t = _pair(4, (3, 4))
    # input and target both differentiable; second order is exact away from the kinks.
    # "none" checks every element's derivative; "mean" adds the division.
    _checks.assert_grads_float64(_fn(name), (x, t), order=2, reduction="none")
    _checks.assert_grads_float64(_fn(name), (x, t), order=1, modes=("rev",), reduction="mean")


@pytest.mark.parametrize("name", WEIGHTED)
def test_check_grads_float64_weighted(name):
    x, t = _pair(5, (3, 4))
    w = np.random.default_rng(5).uniform(0.5, 2, x.shape)
    fn = lambda a, b, c: _fn(name)(a, b, weight=c)  # noqa: E731
    _checks.assert_grads_float64(fn, (x, t, w), order=2)


def test_check_grads_float64_hyperparameters():
    x, t = _pair(6, (3, 4))
    _checks.assert_grads_float64(jaxloss.huber_loss, (x, t), order=2, delta=0.9, reduction="none")
    _checks.assert_grads_float64(jaxloss.smooth_l1_loss, (x, t), order=2, beta=0.9, reduction="none")
    _checks.assert_grads_float64(jaxloss.smooth_l1_loss, (x, t), order=2, beta=0.0, reduction="none")


@pytest.mark.parametrize("name", FNS)
def test_gradient_at_zero_error_is_zero(name):
    # torch's sgn(0) = 0 (hand-derivable: every loss here is flat or kinked at d = 0;
    # JAX's own abs would give 1). The fixtures check the same against torch.
    x = jnp.array([0.5, -1.0, 2.0])
    g_in, g_t = jax.grad(lambda a, b: _fn(name)(a, b, reduction="sum"), argnums=(0, 1))(x, x)
    np.testing.assert_array_equal(g_in, 0.0)
    np.testing.assert_array_equal(g_t, 0.0)


def test_smooth_l1_beta_zero_is_l1():
    x, t = _pair(7)
    t[0, :2] = x[0, :2]  # exact zero errors too
    for reduction in ("none", "mean"):
        f0 = lambda a, b: jaxloss.smooth_l1_loss(a, b, beta=0.0, reduction=reduction).sum()  # noqa: E731
        f1 = lambda a, b: jaxloss.l1_loss(a, b, reduction=reduction).sum()  # noqa: E731
        np.testing.assert_array_equal(f0(x, t), f1(x, t))
        for a, b in zip(jax.grad(f0, (0, 1))(x, t), jax.grad(f1, (0, 1))(x, t)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", FNS)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision(name, dtype):
    x, t = _pair(8)
    _checks.assert_low_precision(_fn(name), (jnp.asarray(x, dtype), jnp.asarray(t, dtype)), dtype)
    g = jax.grad(lambda a: _fn(name)(a, jnp.asarray(t, dtype)).astype(jnp.float32))(jnp.asarray(x, dtype))
    assert g.dtype == dtype and bool(jnp.all(jnp.isfinite(g.astype(jnp.float32))))


# Output dtypes for mixed inputs, measured with torch 2.13: huber keeps input's dtype
# (its kernel writes into an input-dtype array); the others promote like torch.
@pytest.mark.parametrize(
    "name, in_dtype, target_dtype, weight_dtype, expected",
    [
        ("l1_loss", jnp.bfloat16, jnp.float32, None, jnp.float32),
        ("mse_loss", jnp.bfloat16, jnp.float16, None, jnp.float32),
        ("smooth_l1_loss", jnp.bfloat16, jnp.float32, None, jnp.float32),
        ("huber_loss", jnp.bfloat16, jnp.float32, None, jnp.bfloat16),
        ("huber_loss", jnp.bfloat16, jnp.float16, None, jnp.bfloat16),
        ("mse_loss", jnp.bfloat16, jnp.int32, None, jnp.bfloat16),
        ("mse_loss", jnp.bfloat16, jnp.bfloat16, jnp.float32, jnp.float32),
        ("huber_loss", jnp.float16, jnp.float16, jnp.float32, jnp.float32),
        ("l1_loss", jnp.float32, jnp.float32, jnp.int32, jnp.float32),
    ],
)
def test_mixed_dtypes_follow_torch(name, in_dtype, target_dtype, weight_dtype, expected):
    x, t = _pair(9)
    kw = {} if weight_dtype is None else {"weight": jnp.ones(x.shape, weight_dtype)}
    out = _fn(name)(jnp.asarray(x, in_dtype), jnp.asarray(t * 2, target_dtype), **kw)
    assert out.dtype == expected
    assert bool(jnp.isfinite(out.astype(jnp.float32)))


def test_mse_accepts_bool_target_like_torch():
    x = jnp.array([0.5, -1.0])
    # hand-derivable: ((0.5 - 1)^2 + (-1 - 0)^2) / 2 = 0.625
    np.testing.assert_allclose(jaxloss.mse_loss(x, jnp.array([True, False])), 0.625)


def test_huber_delta_is_traced():
    x, t = _pair(10)
    _checks.assert_hyperparameter_is_traced(lambda d: jaxloss.huber_loss(x, t, delta=d), [0.5, 1.0, 2.0])


def test_smooth_l1_beta_is_traced():
    x, t = _pair(11)
    _checks.assert_hyperparameter_is_traced(lambda b: jaxloss.smooth_l1_loss(x, t, beta=b), [0.0, 0.5, 2.0])


@pytest.mark.parametrize("name", FNS)
def test_shapes_per_reduction(name):
    x, t = _pair(12, (3, 4))
    chex.assert_shape(_fn(name)(x, t, reduction="none"), (3, 4))
    chex.assert_shape(_fn(name)(x, t[0], reduction="none"), (3, 4))
    chex.assert_shape(_fn(name)(x[:, :1], t[:1], reduction="none"), (3, 4))
    chex.assert_shape(_fn(name)(x, t, reduction="mean"), ())
    chex.assert_shape(_fn(name)(x, t, reduction="sum"), ())
    chex.assert_shape(_fn(name)(x[0, 0], t[0, 0], reduction="none"), ())


@pytest.mark.parametrize("name", FNS)
def test_broadcast_warns_like_torch(name):
    x, t = _pair(13, (3, 4))
    with pytest.warns(UserWarning, match=r"target size \(4,\) that is different to the input size \(3, 4\)") as seen:
        _fn(name)(x, t[0])
    # attributed to the line that called the loss, as torch's is; inside the user's
    # own jit too
    assert [w.filename for w in seen] == [__file__]
    with pytest.warns(UserWarning, match="different to the input size") as seen:
        jax.jit(lambda a, b: _fn(name)(a, b))(x, t[0])
    assert [w.filename for w in seen] == [__file__]


def test_traced_bad_delta_and_beta_give_nan_or_checkify_error():
    x, t = _pair(15)
    assert bool(jnp.isnan(jax.jit(lambda d: jaxloss.huber_loss(x, t, delta=d))(0.0)))
    assert bool(jnp.isnan(jax.jit(lambda b: jaxloss.smooth_l1_loss(x, t, beta=b))(-1.0)))
    err, _ = checkify.checkify(jax.jit(lambda d: jaxloss.huber_loss(x, t, delta=d)))(-1.0)
    with pytest.raises(checkify.JaxRuntimeError, match="delta"):
        err.throw()


# ---- bad input (issue 3) ----


@pytest.mark.parametrize("name", FNS)
def test_target_that_does_not_broadcast(name):
    x = jnp.zeros((3, 4))
    with pytest.raises(ValueError, match=r"target: shape \(3,\) does not broadcast with input shape \(3, 4\)"):
        _fn(name)(x, jnp.zeros(3))


@pytest.mark.parametrize("name", WEIGHTED)
@pytest.mark.parametrize("wshape", [(4,), (1, 4), (3, 4, 1)])
def test_weight_must_have_input_shape(name, wshape):
    # torch raises "Weights and input must have the same size." even when it would broadcast.
    with pytest.raises(ValueError, match=r"weight: expected shape \(3, 4\)"):
        _fn(name)(jnp.zeros((3, 4)), jnp.ones((3, 4)), weight=jnp.ones(wshape))


def test_smooth_l1_takes_no_weight():
    with pytest.raises(TypeError, match="weight"):
        jaxloss.smooth_l1_loss(jnp.zeros(3), jnp.ones(3), weight=jnp.ones(3))


@pytest.mark.parametrize("name", FNS)
def test_unknown_reduction(name):
    with pytest.raises(ValueError, match="reduction: expected one of 'none', 'mean', 'sum', got 'avg'"):
        _fn(name)(jnp.zeros(3), jnp.ones(3), reduction="avg")


@pytest.mark.parametrize("delta", [0.0, -1.0])
def test_huber_delta_must_be_positive(delta):
    with pytest.raises(ValueError, match=r"delta: expected a value in \(0.0, inf\]"):
        jaxloss.huber_loss(jnp.zeros(3), jnp.ones(3), delta=delta)


def test_smooth_l1_beta_must_be_non_negative():
    with pytest.raises(ValueError, match=r"beta: expected a value in \[0.0, inf\]"):
        jaxloss.smooth_l1_loss(jnp.zeros(3), jnp.ones(3), beta=-0.5)


@pytest.mark.parametrize("name", FNS)
def test_wrong_dtypes(name):
    with pytest.raises(TypeError, match="input: expected a floating-point array, got dtype int32"):
        _fn(name)(jnp.zeros(3, jnp.int32), jnp.ones(3))
    with pytest.raises(TypeError, match="target: expected a floating or integer"):
        _fn(name)(jnp.zeros(3), jnp.ones(3, jnp.complex64))
    with pytest.raises(TypeError, match="input: expected an array, got None"):
        _fn(name)(None, jnp.ones(3))


def test_l1_refuses_bool_target_like_torch():
    with pytest.raises(TypeError, match="target: expected a floating or integer array for l1_loss, got dtype bool"):
        jaxloss.l1_loss(jnp.zeros(3), jnp.ones(3, bool))


@pytest.mark.parametrize("name", WEIGHTED)
def test_weight_dtype(name):
    with pytest.raises(TypeError, match="weight: expected a real array"):
        _fn(name)(jnp.zeros(3), jnp.ones(3), weight=jnp.ones(3, jnp.complex64))
