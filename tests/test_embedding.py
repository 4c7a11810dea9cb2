"""cosine_embedding_loss, triplet_margin_loss, triplet_margin_with_distance_loss, pairwise_distance:
torch parity, transformations, dtypes, traced hyper-parameters and bad input."""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import jaxloss
from tests import _checks
from jaxloss._elementwise import pow_scalar
from tests._fixtures import JIT_DTYPE, _cosine_distance, assert_parity, case_params


def _vecs(seed, *shapes):
    r = np.random.default_rng(seed)
    return [r.standard_normal(s).astype(np.float32) for s in shapes]


def _signs(seed, n):
    return np.where(np.random.default_rng(seed).uniform(size=n) < 0.5, -1, 1).astype(np.int32)


@pytest.mark.parametrize("case", case_params("embedding"))
def test_fixture_parity(case):
    assert_parity(case)


@pytest.mark.parametrize("case", case_params("embedding", dtype=JIT_DTYPE))
def test_fixture_parity_under_jit(case):
    assert_parity(case, transform=jax.jit)


# ---- jit / vmap ----


def test_jit_matches_eager():
    a, p, n = _vecs(0, (6, 4), (6, 4), (6, 4))
    y = _signs(0, 6)
    _checks.assert_jit_matches_eager(jaxloss.cosine_embedding_loss, a, p, y, margin=-0.2)
    _checks.assert_jit_matches_eager(jaxloss.triplet_margin_loss, a, p, n, p=3.0, swap=True)
    _checks.assert_jit_matches_eager(jaxloss.triplet_margin_with_distance_loss, a, p, n, swap=True)
    _checks.assert_jit_matches_eager(jaxloss.pairwise_distance, a, p, p=1.0)


def test_vmap_matches_none():
    a, p, n = _vecs(1, (6, 4), (6, 4), (6, 4))
    y = _signs(1, 6)
    # per example: unbatched (D,) inputs with a 0-d target
    _checks.assert_vmap_matches_none(jaxloss.cosine_embedding_loss, (a, p, y), (0, 0, 0), margin=-0.3)
    _checks.assert_vmap_matches_none(jaxloss.triplet_margin_loss, (a, p, n), (0, 0, 0), margin=2.0, swap=True)
    _checks.assert_vmap_matches_none(jaxloss.triplet_margin_loss, (a, p, n), (0, 0, 0), margin=2.0, p=1.5)
    _checks.assert_vmap_matches_none(jaxloss.triplet_margin_with_distance_loss, (a, p, n), (0, 0, 0), margin=2.0)
    _checks.assert_vmap_matches_none(
        jaxloss.triplet_margin_with_distance_loss, (a, p, n), (0, 0, 0), distance_function=_cosine_distance, swap=True
    )


def test_vmap_over_a_batch_of_batches():
    a, p, n = _vecs(2, (3, 5, 4), (3, 5, 4), (3, 5, 4))
    got = jax.vmap(lambda x, y, z: jaxloss.triplet_margin_loss(x, y, z, margin=2.0, reduction="none"))(a, p, n)
    np.testing.assert_allclose(got, jaxloss.triplet_margin_loss(a, p, n, margin=2.0, reduction="none"), rtol=1e-6)


# ---- gradients ----


def test_check_grads_cosine():
    x1, x2 = _vecs(3, (4, 3), (4, 3))
    y = _signs(3, 4)
    # margin -1.5: cos - margin >= 0.5, away from the clamp; order 2 is smooth there.
    _checks.assert_grads_float64(
        lambda a, b: jaxloss.cosine_embedding_loss(a, b, y, margin=-1.5, reduction="none"), (x1, x2), order=2
    )
    _checks.assert_grads_float64(lambda a, b: jaxloss.cosine_embedding_loss(a, b, y), (x1, x2), order=1, modes=("rev",))


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, 1.5, 0.7, -1.5, math.inf])
def test_check_grads_triplet(p):
    a, pos, neg = _vecs(4, (3, 3), (3, 3), (3, 3))
    # margin 10: the clamp is inactive; no zero differences, no max ties, no swap ties.
    f = functools.partial(jaxloss.triplet_margin_loss, margin=10.0, p=p, swap=p == 2.0, reduction="none")
    _checks.assert_grads_float64(f, (a, pos, neg), order=2)


def test_check_grads_triplet_with_distance():
    a, pos, neg = _vecs(5, (3, 3), (3, 3), (3, 3))
    f = functools.partial(jaxloss.triplet_margin_with_distance_loss, margin=10.0, swap=True, reduction="none")
    _checks.assert_grads_float64(f, (a, pos, neg), order=2)
    f = functools.partial(
        jaxloss.triplet_margin_with_distance_loss, distance_function=_cosine_distance, margin=3.0, reduction="none"
    )
    _checks.assert_grads_float64(f, (a, pos, neg), order=2)


def test_zero_distance_and_zero_vector_gradients_are_finite():
    # torch: a zero norm has gradient 0 (pairwise_distance) and a zero vector a finite
    # cosine gradient (the fixtures hold torch's numbers); here every p and bf16 too.
    a = jnp.array([[1.0, -2.0, 0.5]])
    for p in (0.5, 2.0, math.inf, -1.0):  # the fixtures hold torch's gradients for the others
        g = jax.grad(lambda x: jaxloss.triplet_margin_loss(x, a, a + 1, p=p, eps=0.0, margin=5.0))(a)
        assert bool(jnp.all(jnp.isfinite(g))), p
    z = jnp.zeros((1, 3))
    g = jax.grad(lambda x, y: jaxloss.cosine_embedding_loss(x, y, jnp.array([1])), argnums=(0, 1))(z, z)
    np.testing.assert_array_equal(g[0], 0.0)  # hand-derivable: prod = 0 and d prod/dx = y = 0
    np.testing.assert_array_equal(g[1], 0.0)


# ---- dtypes ----


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision(dtype):
    a, p, n = (jnp.asarray(v, dtype) for v in _vecs(6, (6, 4), (6, 4), (6, 4)))
    y = _signs(6, 6)
    _checks.assert_low_precision(jaxloss.cosine_embedding_loss, (a, p, y), dtype, margin=-0.5)
    _checks.assert_low_precision(jaxloss.triplet_margin_loss, (a, p, n), dtype, margin=3.0, swap=True)
    _checks.assert_low_precision(jaxloss.triplet_margin_with_distance_loss, (a, p, n), dtype, margin=3.0)
    _checks.assert_low_precision(jaxloss.pairwise_distance, (a, p), dtype)
    g = jax.grad(lambda x: jaxloss.triplet_margin_loss(x, p, n, margin=3.0).astype(jnp.float32))(a)
    assert g.dtype == dtype and bool(jnp.all(jnp.isfinite(g.astype(jnp.float32))))


def test_cosine_zero_vector_in_float16_is_the_float32_result():
    # Hand-derivable: a zero vector has cos = 0, so the loss is 1 - 0 = 1 for y = 1 and
    # max(0, 0 - margin) = 0 for y = -1 at margin 0. torch adds its 1e-12 to the squared
    # norms in float16, where it rounds to 0, and gives NaN (checked below when torch is
    # installed); jaxloss computes in float32, as documented.
    x1 = jnp.zeros((2, 3), jnp.float16)
    x2 = jnp.asarray([[1.5, 0.25, -2.0], [0.5, 1.0, 3.0]], jnp.float16)
    y = jnp.array([1, -1])
    out = jaxloss.cosine_embedding_loss(x1, x2, y, reduction="none")
    assert out.dtype == jnp.float16
    np.testing.assert_array_equal(np.asarray(out, np.float32), [1.0, 0.0])
    torch = pytest.importorskip("torch")
    t = torch.nn.functional.cosine_embedding_loss(
        torch.zeros(2, 3, dtype=torch.float16), torch.tensor(np.asarray(x2)), torch.tensor([1, -1]), reduction="none"
    )
    assert bool(torch.isnan(t).all())


# torch 2.13: mixed inputs promote; cosine's target dtype does not change the result's.
@pytest.mark.parametrize(
    "fn, dtypes, expected",
    [
        ("triplet_margin_loss", (jnp.bfloat16, jnp.float32, jnp.float32), jnp.float32),
        ("triplet_margin_with_distance_loss", (jnp.bfloat16, jnp.float16, jnp.bfloat16), jnp.float32),
        ("cosine_embedding_loss", (jnp.bfloat16, jnp.float32), jnp.float32),
        ("cosine_embedding_loss", (jnp.float16, jnp.float16), jnp.float16),
    ],
)
def test_mixed_dtypes_follow_torch(fn, dtypes, expected):
    arrays = [jnp.asarray(v, d) for v, d in zip(_vecs(7, (3, 4), (3, 4), (3, 4)), dtypes)]
    if fn == "cosine_embedding_loss":
        arrays.append(jnp.array([1.0, -1.0, 1.0], jnp.float32))
    assert getattr(jaxloss, fn)(*arrays).dtype == expected


# ---- traced hyper-parameters ----


def test_traced_hyperparameters_do_not_retrace():
    a, p, n = _vecs(8, (6, 4), (6, 4), (6, 4))
    y = _signs(8, 6)
    _checks.assert_hyperparameter_is_traced(lambda m: jaxloss.cosine_embedding_loss(a, p, y, margin=m), [-0.5, 0.0, 0.4])
    _checks.assert_hyperparameter_is_traced(lambda m: jaxloss.triplet_margin_loss(a, p, n, margin=m), [0.5, 1.0, 3.0])
    _checks.assert_hyperparameter_is_traced(lambda e: jaxloss.triplet_margin_loss(a, p, n, eps=e), [0.0, 0.1, 0.5])
    _checks.assert_hyperparameter_is_traced(
        lambda m: jaxloss.triplet_margin_with_distance_loss(a, p, n, margin=m), [0.5, 1.0, 3.0]
    )
    _checks.assert_hyperparameter_is_traced(lambda e: jaxloss.pairwise_distance(a, p, eps=e), [0.0, 0.1])


def test_same_distance_function_compiles_once():
    a, p, n = _vecs(9, (6, 4), (6, 4), (6, 4))
    chex.clear_trace_counter()

    @chex.assert_max_traces(n=2)  # traced for d(a, p) and d(a, n) in the one compilation
    def dist(x, y):
        return jnp.sum(jnp.abs(x - y), axis=-1)

    first = jaxloss.triplet_margin_with_distance_loss(a, p, n, distance_function=dist)
    second = jaxloss.triplet_margin_with_distance_loss(a + 1, p, n, distance_function=dist)
    assert float(first) != float(second)


# ---- shapes ----


def test_shapes_per_reduction():
    a, p, n = _vecs(10, (6, 4), (6, 4), (6, 4))
    y = _signs(10, 6)
    for reduction, batched in (("none", (6,)), ("mean", ()), ("sum", ())):
        chex.assert_shape(jaxloss.cosine_embedding_loss(a, p, y, reduction=reduction), batched)
        chex.assert_shape(jaxloss.triplet_margin_loss(a, p, n, reduction=reduction), batched)
        chex.assert_shape(jaxloss.triplet_margin_with_distance_loss(a, p, n, reduction=reduction), batched)
    chex.assert_shape(jaxloss.cosine_embedding_loss(a[0], p[0], y[0], reduction="none"), ())
    chex.assert_shape(jaxloss.cosine_embedding_loss(a, p[:1], y[:1], reduction="none"), (6,))
    chex.assert_shape(jaxloss.triplet_margin_loss(a[0], p[0], n[0], reduction="none"), ())
    chex.assert_shape(jaxloss.triplet_margin_loss(a[None], p[None], n[None], reduction="none"), (1, 6))
    chex.assert_shape(jaxloss.triplet_margin_loss(a, p[:1], n, reduction="none"), (6,))
    chex.assert_shape(jaxloss.pairwise_distance(a, p), (6,))
    chex.assert_shape(jaxloss.pairwise_distance(a, p, keepdim=True), (6, 1))
    chex.assert_shape(jaxloss.pairwise_distance(a[0], p), (6,))


# ---- value semantics not in the fixtures ----


def test_cosine_other_target_values_inside_jit_give_torchs_zero():
    x1, x2 = _vecs(11, (3, 4), (3, 4))
    # torch gives 0 for a target that is neither 1 nor -1 (measured); the eager call raises.
    out = jax.jit(lambda t: jaxloss.cosine_embedding_loss(x1, x2, t, reduction="none"))(jnp.array([0, 2, 1]))
    np.testing.assert_array_equal(out[:2], 0.0)
    assert float(out[2]) > 0
    err, _ = checkify.checkify(jax.jit(lambda t: jaxloss.cosine_embedding_loss(x1, x2, t)))(jnp.array([0, 1, 1]))
    with pytest.raises(checkify.JaxRuntimeError, match="target"):
        err.throw()


def test_traced_margin_not_positive_gives_nan_or_checkify_error():
    a, p, n = _vecs(12, (3, 4), (3, 4), (3, 4))
    assert bool(jnp.isnan(jax.jit(lambda m: jaxloss.triplet_margin_loss(a, p, n, margin=m))(0.0)))
    assert bool(jnp.isnan(jax.jit(lambda m: jaxloss.triplet_margin_with_distance_loss(a, p, n, margin=m))(-1.0)))
    err, _ = checkify.checkify(jax.jit(lambda m: jaxloss.triplet_margin_loss(a, p, n, margin=m)))(-1.0)
    with pytest.raises(checkify.JaxRuntimeError, match="margin"):
        err.throw()


def test_pairwise_distance_default_is_triplet_default():
    a, p, n = _vecs(13, (6, 4), (6, 4), (6, 4))
    np.testing.assert_array_equal(
        jaxloss.triplet_margin_with_distance_loss(a, p, n, distance_function=jaxloss.pairwise_distance, reduction="none"),
        jaxloss.triplet_margin_loss(a, p, n, reduction="none"),
    )


# ---- bad input (issue 3) ----


@pytest.mark.parametrize("fn", ["triplet_margin_loss", "triplet_margin_with_distance_loss"])
@pytest.mark.parametrize("margin", [0.0, -1.0])
def test_triplet_margin_must_be_positive(fn, margin):
    a = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match=r"margin: expected a value in \(0.0, inf\]"):
        getattr(jaxloss, fn)(a, a, a, margin=margin)


@pytest.mark.parametrize("fn", ["triplet_margin_loss", "triplet_margin_with_distance_loss"])
def test_triplet_inputs_of_different_ranks(fn):
    a = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match=r"positive: expected 2 dimensions like anchor \(shape \(2, 3\)\), got shape \(3,\)"):
        getattr(jaxloss, fn)(a, a[0], a)
    with pytest.raises(ValueError, match=r"negative: expected 2 dimensions like anchor"):
        getattr(jaxloss, fn)(a, a, a[None])


def test_triplet_shapes_that_do_not_broadcast():
    a = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match=r"negative: shape \(2, 4\) does not broadcast with anchor shape \(2, 3\)"):
        jaxloss.triplet_margin_loss(a, a, jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"positive: shape \(3, 3\) does not broadcast with anchor shape \(2, 3\)"):
        jaxloss.triplet_margin_with_distance_loss(a, jnp.zeros((3, 3)), a)


def test_triplet_distance_function_is_called_every_time():
    """The distance function is called on every call, as torch calls it: one that reads
    state sees the state's current value (a cached compilation would keep the first),
    and an unhashable callable works (a static argument must hash)."""
    a, pos, neg = jnp.zeros((2, 3)), jnp.full((2, 3), 2.0), jnp.ones((2, 3))

    class Scaled:  # unhashable: it defines __eq__ without __hash__
        def __init__(self, k):
            self.k = k

        def __eq__(self, other):
            return isinstance(other, Scaled) and other.k == self.k

        def __call__(self, x, y):
            return self.k * jnp.sum(jnp.abs(x - y), axis=-1)

    d = Scaled(1.0)
    # margin + k * (6 - 3): 1 + 3k per row
    for k in (1.0, 10.0, 0.5):
        d.k = k
        got = jaxloss.triplet_margin_with_distance_loss(a, pos, neg, distance_function=d, reduction="none")
        np.testing.assert_allclose(np.asarray(got), [1 + 3 * k] * 2, rtol=1e-6)
    # under the caller's jit it is traced with the rest
    f = jax.jit(lambda a: jaxloss.triplet_margin_with_distance_loss(a, pos, neg, distance_function=Scaled(2.0)))
    np.testing.assert_allclose(float(f(a)), 7.0, rtol=1e-6)


def test_triplet_static_options():
    a = jnp.zeros((2, 3))
    with pytest.raises(TypeError, match="p: expected a Python number"):
        jaxloss.triplet_margin_loss(a, a, a, p=jnp.array(2.0))
    with pytest.raises(ValueError, match="p: expected a number, got nan"):
        jaxloss.triplet_margin_loss(a, a, a, p=float("nan"))
    with pytest.raises(TypeError, match="swap: expected a bool"):
        jaxloss.triplet_margin_loss(a, a, a, swap=1)
    with pytest.raises(TypeError, match="eps: expected a real scalar"):
        jaxloss.triplet_margin_loss(a, a, a, eps=jnp.ones(2))
    with pytest.raises(TypeError, match="anchor: expected a floating-point array, got dtype int32"):
        jaxloss.triplet_margin_loss(jnp.zeros((2, 3), jnp.int32), a, a)


@pytest.mark.parametrize(
    "fn, args",
    [
        ("triplet_margin_loss", 3),
        ("triplet_margin_with_distance_loss", 3),
        ("cosine_embedding_loss", 2),
    ],
)
def test_unknown_reduction(fn, args):
    a = jnp.ones((2, 3))
    extra = [jnp.array([1, -1])] if fn == "cosine_embedding_loss" else []
    with pytest.raises(ValueError, match="reduction: expected one of 'none', 'mean', 'sum', got 'batchmean'"):
        getattr(jaxloss, fn)(*([a] * args + extra), reduction="batchmean")


def test_distance_function_errors():
    a = jnp.zeros((2, 3))
    with pytest.raises(TypeError, match="distance_function: expected a callable or None, got str"):
        jaxloss.triplet_margin_with_distance_loss(a, a, a, distance_function="euclidean")
    with pytest.raises(TypeError, match="distance_function: expected it to return a floating array, got dtype int32"):
        jaxloss.triplet_margin_with_distance_loss(
            a, a, a, distance_function=lambda x, y: jnp.sum(x != y, axis=-1, dtype=jnp.int32)
        )


def test_cosine_bad_shapes():
    x = jnp.ones((3, 4))
    with pytest.raises(ValueError, match=r"target: expected 0 or 1 dimensions"):
        jaxloss.cosine_embedding_loss(x, x, jnp.ones((3, 1)))
    with pytest.raises(ValueError, match=r"input1: expected 2 dimensions \(N, D\) with a 1-d target, got shape \(4,\)"):
        jaxloss.cosine_embedding_loss(x[0], x[0], jnp.array([1]))
    with pytest.raises(ValueError, match=r"input2: expected 1 dimensions \(D,\) with a 0-d target, got shape \(3, 4\)"):
        jaxloss.cosine_embedding_loss(x[0], x, jnp.array(1))
    with pytest.raises(ValueError, match=r"input2: shape \(3, 5\) does not broadcast with input1 shape \(3, 4\)"):
        jaxloss.cosine_embedding_loss(x, jnp.ones((3, 5)), jnp.ones(3))
    with pytest.raises(ValueError, match=r"target: shape \(2,\) does not broadcast with the inputs' batch shape \(3,\)"):
        jaxloss.cosine_embedding_loss(x, x, jnp.ones(2))


def test_cosine_bad_target():
    x = jnp.ones((3, 4))
    with pytest.raises(ValueError, match="target: expected every value to be 1 or -1"):
        jaxloss.cosine_embedding_loss(x, x, jnp.array([1, 0, -1]))
    with pytest.raises(TypeError, match="target: expected an integer or floating array of 1 and -1, got dtype bool"):
        jaxloss.cosine_embedding_loss(x, x, jnp.array([True, False, True]))
    with pytest.raises(TypeError, match="input1: expected a floating-point array"):
        jaxloss.cosine_embedding_loss(jnp.ones((3, 4), jnp.int32), x, jnp.array([1, 1, 1]))


def test_pairwise_distance_bad_input():
    with pytest.raises(ValueError, match=r"x2: shape \(2, 4\) does not broadcast with x1 shape \(2, 3\)"):
        jaxloss.pairwise_distance(jnp.ones((2, 3)), jnp.ones((2, 4)))
    with pytest.raises(TypeError, match="keepdim: expected a bool"):
        jaxloss.pairwise_distance(jnp.ones((2, 3)), jnp.ones((2, 3)), keepdim=1)


@pytest.mark.parametrize(
    "call",
    [
        lambda a: jaxloss.pairwise_distance(a, jnp.zeros((1, 2))),
        lambda a: jaxloss.pairwise_distance(a, jnp.zeros((1, 2)), p=3.0),
        lambda a: jaxloss.pairwise_distance(a, jnp.zeros((1, 2)), p=0.5),
        lambda a: jaxloss.pairwise_distance(a, jnp.zeros((1, 2)), p=-1.0),
        lambda a: jaxloss.triplet_margin_loss(a, jnp.zeros((1, 2)), jnp.ones((1, 2)), reduction="none"),
        lambda a: jaxloss.triplet_margin_with_distance_loss(a, jnp.zeros((1, 2)), jnp.ones((1, 2)), reduction="none"),
        lambda a: jaxloss.cosine_embedding_loss(a, jnp.ones((1, 2)), jnp.array([-1]), reduction="none"),
        lambda a: jaxloss.margin_ranking_loss(a[0, :1], jnp.zeros(1), jnp.ones(1), reduction="none"),
        lambda a: jaxloss.hinge_embedding_loss(a[0, :1], jnp.array([-1.0]), reduction="none"),
    ],
    ids=["pd2", "pd3", "pd0.5", "pd-1", "triplet", "triplet_dist", "cosine", "ranking", "hinge"],
)
def test_nan_input_gives_nan(call):
    # torch propagates a NaN through every clamp and norm here; a select on "> 0" would
    # turn it into a finite (wrong) loss
    a = jnp.array([[jnp.nan, 3.0]])
    assert bool(jnp.all(jnp.isnan(call(a))))
    assert bool(jnp.all(jnp.isfinite(call(jnp.array([[1.0, 3.0]])))))


def test_pairwise_distance_empty_last_axis_and_0d_keepdim():
    # torch: the p < 0 and +-inf norms of an empty axis raise; p > 0 gives 0
    for p in (-1.0, math.inf, -math.inf):
        with pytest.raises(ValueError, match="x1: the p=.* norm of an empty last axis"):
            jaxloss.pairwise_distance(jnp.zeros((3, 0)), jnp.zeros((3, 0)), p=p)
    np.testing.assert_array_equal(jaxloss.pairwise_distance(jnp.zeros((3, 0)), jnp.zeros((3, 0))), np.zeros(3))
    # and triplet_margin_loss's norms, which torch computes the same way (NaN here once)
    for p in (-1.0, math.inf, -math.inf):
        with pytest.raises(ValueError, match="anchor: the p=.* norm of an empty last axis"):
            jaxloss.triplet_margin_loss(jnp.zeros((3, 0)), jnp.zeros((3, 0)), jnp.zeros((3, 0)), p=p)
    # p > 0: every distance is 0, the loss is the margin (torch: 1.0)
    assert float(jaxloss.triplet_margin_loss(jnp.zeros((3, 0)), jnp.zeros((3, 0)), jnp.zeros((3, 0)))) == 1.0
    # torch: 0-d inputs give a 0-d distance, keepdim or not
    assert jaxloss.pairwise_distance(jnp.array(1.0), jnp.array(3.0), keepdim=True).shape == ()
    assert jaxloss.pairwise_distance(jnp.ones(2), jnp.ones(2), keepdim=True).shape == (1,)


@pytest.mark.parametrize("p", [math.inf, -math.inf])
@pytest.mark.parametrize("shape", [(2, 3), (256, 256)])
def test_infinity_norm_of_a_row_holding_nan_is_nan(p, shape):
    # torch's +-inf norm is NaN on a row holding a NaN. (256, 256) is large enough for
    # XLA:CPU (jax 0.10) to run the row max/min as a YNNPACK reduction, which drops NaN:
    # jnp.max alone gave a finite distance there.
    a = np.ones(shape, np.float32)
    a[0, 1] = np.nan
    a[1, 2] = np.inf
    b = np.zeros(shape, np.float32)
    d = np.asarray(jaxloss.pairwise_distance(a, b, p=p))
    assert np.isnan(d[0])
    assert d[1] == (np.inf if p > 0 else pytest.approx(1.0, rel=1e-5))
    assert np.all(np.isfinite(d[2:]))
    assert np.isnan(jaxloss.triplet_margin_loss(a, b, b + 1, p=p))
    assert np.isnan(jaxloss.triplet_margin_loss(a, b, b + 1, p=p, reduction="sum"))


# torch's Tensor.pow(Scalar) writes these exponents out (x * x, 1 / (x * x), ...; 0.5 and
# -0.5 as square roots, whose rounding differs: XLA takes 1 / sqrt(x) as rsqrt(x)).
_WRITTEN_OUT = [0.0, 1.0, 2.0, 3.0, -1.0, -2.0]


def test_pow_scalar_leaves_the_float_range_as_torch_does():
    # Hand-derivable: 1e20 * 1e20 overflows float32 to inf, and 1 / inf is 0, where a
    # rounded pow gives the subnormal 1e-40 (kept by XLA:GPU, flushed by XLA:CPU).
    # torch's p = -1 norm gradient at |d| = 1e20 is then 0 * inf = NaN on either device.
    big = jnp.float32(1e20)
    assert float(jax.jit(lambda x: pow_scalar(x, -2.0))(big)) == 0.0
    assert float(jax.jit(lambda x: pow_scalar(x, 2.0))(big)) == math.inf
    d = jnp.array([[1e20]], jnp.float32)
    g = jax.grad(lambda d: jaxloss.pairwise_distance(d, jnp.zeros_like(d), p=-1.0, eps=0.0).sum())(d)
    assert np.isnan(np.asarray(g)).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("e", [*_WRITTEN_OUT, 0.5, -0.5, 1.5, -3.0, 0.25])
def test_pow_scalar_is_torch_pow(e, dtype):
    torch = pytest.importorskip("torch")
    f = np.finfo(dtype)
    x = np.array(
        [0.0, -0.0, f.tiny, 1e-20, 1.7e-13, 0.3, 1.0, 3.3, 7.123456, 1e13, 1e20, f.max, np.inf, -2.5, np.nan], dtype
    )
    want = torch.as_tensor(x).pow(e).numpy()
    with jax.enable_x64(dtype == np.float64):
        got = np.asarray(jax.jit(lambda x: pow_scalar(x, e))(x))
    assert got.dtype == want.dtype
    # XLA:CPU flushes subnormal results to zero (a documented difference), so where
    # torch's result is subnormal jaxloss's is it or a zero.
    sub = (want != 0) & (np.abs(want) < f.tiny)
    assert np.all((got[sub] == want[sub]) | (got[sub] == 0)), (x[sub], got[sub], want[sub])
    if e in (-1.0, -2.0) and dtype == np.float32 and jax.default_backend() == "gpu":
        # XLA:GPU's float32 division is PTX's div.full (XLA sets -nvptx-prec-divf32=1:
        # within 2 ulps, not rounded to nearest), torch's the rounded one: 0, inf and
        # NaN exactly, the rest within 2 ulps.
        special = ~np.isfinite(want) | (want == 0)
        np.testing.assert_array_equal(got[special & ~sub], want[special & ~sub])
        np.testing.assert_allclose(got[~special & ~sub], want[~special & ~sub], rtol=2 * f.eps, atol=0)
    elif e in _WRITTEN_OUT:  # the same arithmetic: bit for bit
        np.testing.assert_array_equal(got[~sub], want[~sub])
    else:  # torch's pow (and its CPU sqrt, for +-0.5) against XLA's: within a few ulps
        np.testing.assert_allclose(got[~sub], want[~sub], rtol=8 * f.eps, atol=0)
        num = ~np.isnan(want)  # (a NaN's sign bit means nothing)
        assert np.array_equal(np.signbit(got[num]), np.signbit(want[num]))  # sqrt(-0.0) = -0.0, 1 / sqrt(-0.0) = -inf
