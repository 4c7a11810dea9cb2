"""Margin losses against torch's golden fixtures and JAX's transformations.

hinge_embedding_loss, margin_ranking_loss, soft_margin_loss,
multilabel_soft_margin_loss, multi_margin_loss, multilabel_margin_loss.
Values and gradients (kinks included) come from the torch fixtures; the rest
checks transformations, dtypes, traced margins, shapes and bad inputs.
"""

from __future__ import annotations

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import jaxloss as L
from tests._checks import (
    assert_grads_float64,
    assert_hyperparameter_is_traced,
    assert_jit_matches_eager,
    assert_low_precision,
    assert_vmap_matches_none,
)
from tests._fixtures import JIT_DTYPE, assert_parity, case_params

REDUCTIONS = ("none", "mean", "sum")
LOSSES = (
    "hinge_embedding_loss",
    "margin_ranking_loss",
    "soft_margin_loss",
    "multilabel_soft_margin_loss",
    "multi_margin_loss",
    "multilabel_margin_loss",
)


# ----------------------------------------------------------------------------- fixture parity


@pytest.mark.parametrize("case", case_params("margin"))
def test_fixture_parity(case):
    assert_parity(case)


@pytest.mark.parametrize("case", case_params("margin", dtype=JIT_DTYPE))
def test_fixture_parity_under_jit(case):
    assert_parity(case, transform=jax.jit)


def test_fixtures_cover_every_loss():
    covered = {c.values[0].fn for c in case_params("margin")}
    assert covered == set(LOSSES)


# ----------------------------------------------------------------------------- example inputs


def _signs(r, shape):
    return jnp.asarray(np.where(r.random(shape) < 0.5, -1.0, 1.0), jnp.float32)


def _multilabel_target(r, n, c):
    """Rows of distinct labels ended by -1 (one row full of -1), leftovers after the -1."""
    t = np.full((n, c), -1, np.int32)
    for i in range(n):
        k = i % (c + 1)
        t[i, :k] = r.permutation(c)[:k]
        if k + 1 < c:
            t[i, k + 1 :] = r.integers(0, c, c - k - 1)
    return jnp.asarray(t)


def _example(name: str, seed: int = 0, batch: int = 4, classes: int = 5):
    """(function, positional args, keyword args): a batched example of each loss."""
    r = np.random.default_rng(seed)
    x = jnp.asarray(r.standard_normal((batch, classes)), jnp.float32)
    if name == "hinge_embedding_loss":
        return L.hinge_embedding_loss, (x, _signs(r, (batch, classes))), {"margin": 0.7}
    if name == "margin_ranking_loss":
        x2 = jnp.asarray(r.standard_normal((batch, classes)), jnp.float32)
        return L.margin_ranking_loss, (x, x2, _signs(r, (batch, classes))), {"margin": 0.3}
    if name == "soft_margin_loss":
        return L.soft_margin_loss, (x, _signs(r, (batch, classes))), {}
    if name == "multilabel_soft_margin_loss":
        t = jnp.asarray(r.random((batch, classes)) < 0.4, jnp.float32)
        w = jnp.asarray(r.uniform(0.0, 2.0, classes), jnp.float32)
        return L.multilabel_soft_margin_loss, (x, t), {"weight": w}
    if name == "multi_margin_loss":
        t = jnp.asarray(r.integers(0, classes, batch))
        w = jnp.asarray(r.uniform(0.0, 2.0, classes), jnp.float32)
        return L.multi_margin_loss, (x, t), {"p": 2, "margin": 0.8, "weight": w}
    if name == "multilabel_margin_loss":
        return L.multilabel_margin_loss, (x, _multilabel_target(r, batch, classes)), {}
    raise KeyError(name)


# ----------------------------------------------------------------------------- transformations


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_jit_matches_eager(name, reduction):
    fn, args, kwargs = _example(name)
    assert_jit_matches_eager(fn, *args, reduction=reduction, **kwargs)


@pytest.mark.parametrize("name", LOSSES)
def test_vmap_over_batch_equals_none(name):
    # vmap of the per-example (unbatched) call over the leading axis equals reduction="none".
    fn, args, kwargs = _example(name, seed=1, batch=6)
    assert_vmap_matches_none(fn, args, (0,) * len(args), **kwargs)


def test_vmap_over_a_batch_of_batches():
    # Element-wise losses keep their (N, C) layout under vmap.
    r = np.random.default_rng(2)
    x = jnp.asarray(r.standard_normal((3, 4, 5)), jnp.float32)
    y = _signs(r, (3, 4, 5))
    assert_vmap_matches_none(L.hinge_embedding_loss, (x, y), (0, 0), margin=0.5)
    assert_vmap_matches_none(L.soft_margin_loss, (x, y), (0, 0))
    t = jnp.asarray(r.random((3, 4, 5)), jnp.float32)
    assert_vmap_matches_none(L.multilabel_soft_margin_loss, (x, t), (0, 0))


# ----------------------------------------------------------------------------- gradients


def _away_from(z, kink, gap=1e-2):
    """Shift ``z`` so no entry lies within ``gap`` of ``kink`` (finite differences must not cross it)."""
    z = np.asarray(z, np.float64)
    near = np.abs(z - kink) < gap
    return np.where(near, z + 3 * gap * np.sign(z - kink + 1e-300), z)


def test_check_grads_hinge_embedding():
    r = np.random.default_rng(3)
    margin = 0.6
    x = _away_from(r.standard_normal((3, 4)), margin)
    y = np.array([[1.0, -1.0, 0.0, -1.0]] * 3)  # 0: torch's "other target" branch
    # piecewise linear: first order (the fixtures hold torch's gradients for every reduction)
    assert_grads_float64(lambda x: L.hinge_embedding_loss(x, y, margin=margin, reduction="none"), [x], order=1)


def test_check_grads_margin_ranking():
    r = np.random.default_rng(4)
    x1 = r.standard_normal((3, 4))
    y = np.where(r.random((3, 4)) < 0.5, -1.0, 1.0)
    margin = 0.2
    # keep -y (x1 - x2) + margin away from 0 by adjusting x2
    d = _away_from(-y * x1 + margin, 0.0, gap=0.05)
    x2 = x1 + (d - margin) / y
    assert np.min(np.abs(-y * (x1 - x2) + margin)) > 0.01
    assert_grads_float64(
        lambda a, b, t: L.margin_ranking_loss(a, b, t, margin=margin, reduction="none"), [x1, x2, y], order=1
    )


def test_check_grads_second_order_smooth_losses():
    # One check_grads call over a sum of the smooth (or piecewise-quadratic) configurations: each
    # call compiles many derivative programs, and an error in any term changes the sum's
    # derivatives. Per-sample losses are weighted by fixed random coefficients so every element
    # matters. multi_margin p=2 is checked away from its kinks.
    r = np.random.default_rng(5)
    x1, y1 = 2 * r.standard_normal((3, 4)), r.uniform(-1, 1, (3, 4))
    x2, t2, w2 = r.standard_normal((3, 4)), r.random((3, 4)), r.uniform(0.1, 2, 4)
    margin, t3 = 0.9, np.array([0, 3, 1, 2, 4])
    x3 = r.standard_normal((5, 5))
    xy = x3[np.arange(5), t3][:, None]
    z = _away_from(margin - xy + x3, 0.0, gap=0.05)  # shift the non-target entries off the kink
    x3 = np.where(np.arange(5)[None, :] == t3[:, None], x3, z - margin + xy)
    w3 = r.uniform(0.1, 2.0, 5)
    c2, c3 = jnp.asarray(r.standard_normal(3)), jnp.asarray(r.standard_normal(5))

    def total(x1, y1, x2, t2, w2, x3, w3):
        return (
            L.soft_margin_loss(x1, y1)
            + jnp.sum(c2 * L.multilabel_soft_margin_loss(x2, t2, weight=w2, reduction="none"))
            + jnp.sum(c3 * L.multi_margin_loss(x3, t3, p=2, margin=margin, weight=w3, reduction="none"))
        )

    assert_grads_float64(total, [x1, y1, x2, t2, w2, x3, w3], order=2)


def test_check_grads_multi_margin_p1():
    r = np.random.default_rng(8)
    margin = 0.9
    t = np.array([0, 3, 1, 2, 4])
    x = r.standard_normal((5, 5))
    xy = x[np.arange(5), t][:, None]
    z = _away_from(margin - xy + x, 0.0, gap=0.05)  # shift the non-target entries off the kink
    x = np.where(np.arange(5)[None, :] == t[:, None], x, z - margin + xy)
    w = r.uniform(0.1, 2.0, 5)
    # piecewise linear: first order
    assert_grads_float64(
        lambda x, w: L.multi_margin_loss(x, t, margin=margin, weight=w, reduction="none"), [x, w], order=1
    )


def test_check_grads_multilabel_margin():
    r = np.random.default_rng(9)
    # Spaced values: every pairwise 1 - (x_c - x_i) is at least 0.05 away from 0.
    x = np.stack([r.permutation(np.arange(6) * 0.37) for _ in range(4)])
    t = np.array([[0, 2, -1, 1, 1, 1], [5, -1, 0, 0, 0, 0], [-1] * 6, [3, 3, 1, 4, -1, 2]])
    assert_grads_float64(lambda x: L.multilabel_margin_loss(x, t, reduction="none"), [x], order=1)


def test_multilabel_margin_long_lists_all_orders_and_transformations():
    """Lists longer than the loop's step of 8 slots (C = 19): both modes to second order
    (the loss is piecewise linear, so every second derivative is 0), forward over
    forward, vmap of grad, and the reference sum of every pair's margin."""
    r = np.random.default_rng(31)
    C = 19
    x = np.stack([r.permutation(np.arange(C) * 0.37) for _ in range(5)])
    t = np.full((5, C), -1)
    for i, k in enumerate((0, 4, 9, 16, 19)):
        t[i, :k] = r.permutation(C)[:k]
    t[1, 4:12] = 3  # a repeated label across the step, then the -1 at 12 ...
    t[1, 13] = 5  # ... and a leftover after it
    assert_grads_float64(lambda x: L.multilabel_margin_loss(x, t, reduction="none"), [x], order=2)

    def pairs(x):  # every (listed slot, class) pair: the (N, C, C) definition
        end = np.where((t == -1).any(1), (t == -1).argmax(1), C)
        out = []
        for n in range(len(x)):
            ys = t[n, : end[n]]
            out.append(sum(max(0.0, 1 - x[n, y] + x[n, i]) for y in ys for i in range(C) if i not in set(ys)) / C)
        return np.array(out)

    xf = jnp.asarray(x, jnp.float32)
    f = lambda x: L.multilabel_margin_loss(x, t, reduction="none")  # noqa: E731
    np.testing.assert_allclose(jax.jit(f)(xf), pairs(x), rtol=1e-5)
    v = jnp.asarray(r.standard_normal(x.shape), jnp.float32)
    u = jnp.asarray(r.standard_normal(x.shape), jnp.float32)
    g = jax.grad(lambda x: jnp.sum(f(x)))(xf)
    _, d1 = jax.jvp(lambda x: jnp.sum(f(x)), (xf,), (v,))
    np.testing.assert_allclose(d1, jnp.sum(g * v), rtol=1e-5)
    # forward over forward: the outer derivative of the inner value is the first derivative
    outer = jax.jvp(lambda x: jax.jvp(lambda y: jnp.sum(f(y)), (x,), (v,))[0], (xf,), (u,))[1]
    np.testing.assert_allclose(outer, jnp.sum(g * u), rtol=1e-5)
    hvp = jax.jvp(jax.grad(lambda x: jnp.sum(f(x))), (xf,), (v,))[1]
    np.testing.assert_array_equal(hvp, np.zeros(x.shape))
    per_row = jax.vmap(jax.grad(lambda row, tr: L.multilabel_margin_loss(row, tr)))(xf, jnp.asarray(t))
    np.testing.assert_allclose(per_row, g, rtol=1e-6)


def test_multilabel_margin_closed_over_target_is_not_folded():
    """A target that ``jit`` closes over (a constant) reaches the loop as an array.

    XLA folds constant subexpressions at compile time by interpreting them; for the
    target's end-of-list search and listed-class mask that took 27 s at N=4096,
    C=1000. The compiled program's only array constant must be the target itself,
    not something XLA derived from it (the old code folded a (N, C) mask here).
    """
    r = np.random.default_rng(5)
    N, C = 64, 50
    t = np.full((N, C), -1, np.int32)
    t[:, :3] = r.integers(0, C, (N, 3))
    t = jnp.asarray(t)
    x = jnp.asarray(r.standard_normal((N, C)), jnp.float32)
    f = jax.jit(jax.value_and_grad(lambda x: L.multilabel_margin_loss(x, t)))
    text = f.lower(x).compile().as_text()
    constants = re.findall(r"= (\w+)\[([\d,]+)\]\{[\d,]*\} constant\(", text)
    # (index constants of a few elements are the program's own, not the target's)
    large = {(dtype, dims) for dtype, dims in constants if np.prod([int(d) for d in dims.split(",")]) >= N}
    assert large == {("s32", f"{N},{C}")}, large
    expected = jax.jit(jax.value_and_grad(L.multilabel_margin_loss))(x, t)
    value, grad = f(x)
    np.testing.assert_array_equal(value, expected[0])
    np.testing.assert_array_equal(grad, expected[1])


def test_kink_subgradients_hand_derived():
    # Hand-derived from torch's kernels (and recorded in the fixtures): hinge/ranking clamp_min
    # passes the gradient at the kink; multi/multilabel margin count only z > 0.
    g = jax.grad(lambda x: L.hinge_embedding_loss(x, jnp.array([-1.0]), margin=0.5, reduction="sum"))
    np.testing.assert_array_equal(g(jnp.array([0.5])), [-1.0])
    g = jax.grad(lambda a: L.margin_ranking_loss(a, jnp.array([0.5]), jnp.array([1.0]), margin=0.5, reduction="sum"))
    np.testing.assert_array_equal(g(jnp.array([1.0])), [-1.0])
    g = jax.grad(lambda x: L.multi_margin_loss(x, jnp.array([2]), reduction="sum"))
    np.testing.assert_array_equal(g(jnp.array([[1.0, 0.0, 2.0]])), [[0.0, 0.0, 0.0]])
    g = jax.grad(lambda x: L.multilabel_margin_loss(x, jnp.array([[0, -1, -1]]), reduction="sum"))
    # target 0: z(i=1) = 1 - (1 - 0) = 0 (kink, no gradient); z(i=2) = 2 > 0: d/dx0 = -1/3, d/dx2 = 1/3
    np.testing.assert_allclose(g(jnp.array([[1.0, 0.0, 2.0]])), [[-1 / 3, 0.0, 1 / 3]], rtol=1e-6)


# ----------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision(name, dtype):
    fn, args, kwargs = _example(name, seed=10)
    args = [a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a for a in args]
    kwargs = {k: (v.astype(dtype) if isinstance(v, jax.Array) else v) for k, v in kwargs.items()}
    for reduction in ("none", "mean"):  # "sum" shares "mean"'s reduce-then-cast path
        assert_low_precision(fn, args, dtype, reduction=reduction, **kwargs)


def test_mixed_dtypes_promote_like_torch():
    # Output dtypes measured with torch 2.13.
    b = jnp.ones((2, 3), jnp.bfloat16)
    h = jnp.ones((2, 3), jnp.float16)
    f = jnp.ones((2, 3), jnp.float32)
    i = jnp.ones((2, 3), jnp.int32)
    assert L.margin_ranking_loss(b, h, i).dtype == jnp.float32
    assert L.margin_ranking_loss(b, b, i).dtype == jnp.bfloat16
    assert L.margin_ranking_loss(b, b, f).dtype == jnp.float32
    assert L.hinge_embedding_loss(b, f).dtype == jnp.bfloat16  # the target's dtype does not count
    assert L.soft_margin_loss(b, f).dtype == jnp.bfloat16
    assert L.multilabel_soft_margin_loss(b, f).dtype == jnp.float32
    assert L.multilabel_soft_margin_loss(b, i).dtype == jnp.bfloat16
    assert L.multilabel_soft_margin_loss(b, b, weight=jnp.ones(3)).dtype == jnp.float32
    assert L.multi_margin_loss(b, jnp.array([0, 1])).dtype == jnp.bfloat16
    assert L.multi_margin_loss(b, jnp.array([0, 1]), weight=jnp.ones(3)).dtype == jnp.float32
    assert L.multilabel_margin_loss(b, -i).dtype == jnp.bfloat16


def test_integer_targets_of_any_width():
    r = np.random.default_rng(11)
    x = jnp.asarray(r.standard_normal((4, 3)), jnp.float32)
    t = np.array([2, 0, 1, 2])
    want = L.multi_margin_loss(x, jnp.asarray(t, jnp.int32), reduction="none")
    for dt in (np.int8, np.uint8, np.int16, np.uint16, np.uint32, np.int64):
        np.testing.assert_array_equal(L.multi_margin_loss(x, t.astype(dt), reduction="none"), want)
    tm = np.array([[2, -1, 0], [0, 1, -1], [-1, -1, -1], [1, 1, -1]])
    want = L.multilabel_margin_loss(x, jnp.asarray(tm, jnp.int32), reduction="none")
    for dt in (np.int8, np.int16, np.int64):
        np.testing.assert_array_equal(L.multilabel_margin_loss(x, tm.astype(dt), reduction="none"), want)


def test_soft_margin_stays_finite_where_torch_overflows():
    # Documented difference: torch's log1p(exp(-y x)) is inf here (NaN gradient); the exact value is
    # -y x up to exp(-1000) and the gradient is -y (hand-derived).
    x = jnp.array([-1000.0, 1000.0])
    y = jnp.array([1.0, -1.0])
    np.testing.assert_allclose(L.soft_margin_loss(x, y, reduction="none"), [1000.0, 1000.0])
    np.testing.assert_allclose(jax.grad(lambda x: L.soft_margin_loss(x, y, reduction="sum"))(x), [-1.0, 1.0])


# ----------------------------------------------------------------------------- traced margins


@pytest.mark.parametrize(
    "name", ["hinge_embedding_loss", "margin_ranking_loss", "multi_margin_loss"]
)
def test_margin_is_traced_without_retracing(name):
    fn, args, kwargs = _example(name, seed=12)
    kwargs = {k: v for k, v in kwargs.items() if k != "margin"}
    assert_hyperparameter_is_traced(lambda m: fn(*args, margin=m, **kwargs), [0.2, 0.9, 1.7])


# ----------------------------------------------------------------------------- shapes


SHAPES = [
    # (loss, builder of (args, kwargs), expected "none" shape)
    ("hinge_embedding_loss", lambda: ((jnp.zeros((2, 3)), jnp.ones(3)), {}), (2, 3)),
    ("hinge_embedding_loss", lambda: ((jnp.zeros(3), jnp.ones((2, 3))), {}), (2, 3)),
    ("hinge_embedding_loss", lambda: ((jnp.zeros(()), jnp.ones(())), {}), ()),
    ("margin_ranking_loss", lambda: ((jnp.zeros((3, 1)), jnp.zeros((1, 4)), jnp.ones((1, 1))), {}), (3, 4)),
    ("margin_ranking_loss", lambda: ((jnp.zeros(5), jnp.zeros(5), jnp.ones(5)), {}), (5,)),
    ("soft_margin_loss", lambda: ((jnp.zeros((2, 3, 4)), jnp.ones(4)), {}), (2, 3, 4)),
    ("multilabel_soft_margin_loss", lambda: ((jnp.zeros((2, 3)), jnp.ones((2, 3))), {}), (2,)),
    ("multilabel_soft_margin_loss", lambda: ((jnp.zeros(3), jnp.ones(3)), {"weight": jnp.ones(3)}), ()),
    ("multilabel_soft_margin_loss", lambda: ((jnp.zeros((2, 5, 3)), jnp.ones(3)), {"weight": jnp.ones((5, 1))}), (2, 5)),
    ("multi_margin_loss", lambda: ((jnp.zeros((4, 3)), jnp.zeros(4, jnp.int32)), {}), (4,)),
    ("multi_margin_loss", lambda: ((jnp.zeros(3), jnp.zeros((), jnp.int32)), {}), ()),
    ("multi_margin_loss", lambda: ((jnp.zeros(3), jnp.zeros(1, jnp.int32)), {}), (1,)),
    ("multi_margin_loss", lambda: ((jnp.zeros((1, 3)), jnp.zeros((), jnp.int32)), {}), ()),
    ("multilabel_margin_loss", lambda: ((jnp.zeros((4, 3)), jnp.zeros((4, 3), jnp.int32)), {}), (4,)),
    ("multilabel_margin_loss", lambda: ((jnp.zeros(3), jnp.zeros(3, jnp.int32)), {}), ()),
    # torch 2.13 takes a 0-d or 1-d target with C entries for an unbatched input (measured)
    ("multilabel_margin_loss", lambda: ((jnp.zeros(()), jnp.zeros(1, jnp.int32)), {}), ()),
    ("multilabel_margin_loss", lambda: ((jnp.zeros(1), jnp.zeros((), jnp.int32)), {}), ()),
]


@pytest.mark.parametrize("name,build,none_shape", SHAPES, ids=[f"{s[0]}-{i}" for i, s in enumerate(SHAPES)])
def test_output_shapes(name, build, none_shape):
    fn = getattr(L, name)
    args, kwargs = build()
    chex.assert_shape(fn(*args, reduction="none", **kwargs), none_shape)
    chex.assert_shape(fn(*args, reduction="mean", **kwargs), ())
    chex.assert_shape(fn(*args, reduction="sum", **kwargs), ())


def test_empty_batch():
    # Hand-derived: a sum over no samples is 0, a mean over none is NaN (torch returns
    # uninitialised memory for both; documented).
    for fn, t in ((L.multi_margin_loss, jnp.zeros(0, jnp.int32)), (L.multilabel_margin_loss, jnp.zeros((0, 3), jnp.int32))):
        x = jnp.zeros((0, 3))
        chex.assert_shape(fn(x, t, reduction="none"), (0,))
        assert float(fn(x, t, reduction="sum")) == 0.0
        assert np.isnan(float(fn(x, t, reduction="mean")))


def test_targets_full_of_minus_one_give_zero_loss_and_gradient():
    x = jnp.asarray(np.random.default_rng(13).standard_normal((3, 4)), jnp.float32)
    t = -jnp.ones((3, 4), jnp.int32)
    assert float(L.multilabel_margin_loss(x, t, reduction="sum")) == 0.0
    np.testing.assert_array_equal(jax.grad(lambda x: L.multilabel_margin_loss(x, t))(x), np.zeros((3, 4)))


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("name", LOSSES)
def test_unknown_reduction(name):
    fn, args, kwargs = _example(name)
    with pytest.raises(ValueError, match="reduction: expected one of 'none', 'mean', 'sum', got 'batchmean'"):
        fn(*args, reduction="batchmean", **kwargs)


@pytest.mark.parametrize("name", LOSSES)
def test_integer_input_is_refused(name):
    fn, args, kwargs = _example(name)
    args = (args[0].astype(jnp.int32),) + tuple(args[1:])
    with pytest.raises(TypeError, match=r"input1?: expected a floating-point array, got dtype int32"):
        fn(*args, **kwargs)


@pytest.mark.parametrize("name", ["hinge_embedding_loss", "margin_ranking_loss", "multi_margin_loss"])
def test_margin_must_be_a_real_scalar(name):
    fn, args, kwargs = _example(name)
    kwargs = {**kwargs, "margin": jnp.ones(2)}
    with pytest.raises(TypeError, match=r"margin: expected a real scalar, got .* shape \(2,\)"):
        fn(*args, **kwargs)


def test_hinge_bad_inputs():
    with pytest.raises(ValueError, match=r"target: shapes do not broadcast together: input \(2, 3\), target \(2,\)"):
        L.hinge_embedding_loss(jnp.zeros((2, 3)), jnp.ones(2))
    with pytest.raises(TypeError, match="target: expected a floating, integer or bool array, got dtype complex64"):
        L.hinge_embedding_loss(jnp.zeros(3), jnp.ones(3, jnp.complex64))


def test_margin_ranking_bad_inputs():
    x = jnp.zeros(3)
    with pytest.raises(ValueError, match=r"target: input1, input2 and target must have the same number of dim.*target \(1, 3\)"):
        L.margin_ranking_loss(x, x, jnp.ones((1, 3)))
    with pytest.raises(ValueError, match=r"input2: input1, input2 and target must have the same number of dim.*input2 \(1, 3\)"):
        L.margin_ranking_loss(x, jnp.zeros((1, 3)), jnp.ones(3))
    with pytest.raises(ValueError, match=r"target: shapes do not broadcast together: input1 \(3,\), input2 \(4,\)"):
        L.margin_ranking_loss(x, jnp.zeros(4), jnp.ones(3))
    with pytest.raises(TypeError, match="target: expected a floating or integer array, got dtype bool"):
        L.margin_ranking_loss(x, x, jnp.ones(3, bool))
    with pytest.raises(TypeError, match="input2: expected a floating-point array, got dtype int32"):
        L.margin_ranking_loss(x, jnp.zeros(3, jnp.int32), jnp.ones(3))


def test_soft_margin_bad_inputs():
    # torch: "output with shape [3] doesn't match the broadcast shape [2, 3]".
    with pytest.raises(ValueError, match=r"target: shape \(2, 3\) does not broadcast to \(3,\)"):
        L.soft_margin_loss(jnp.zeros(3), jnp.ones((2, 3)))


def test_multilabel_soft_margin_bad_inputs():
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match=r"input: expected at least 1 dimensions.*got shape \(\)"):
        L.multilabel_soft_margin_loss(jnp.zeros(()), jnp.zeros(()))
    with pytest.raises(ValueError, match=r"target: shape \(2, 4\) does not broadcast to \(2, 3\)"):
        L.multilabel_soft_margin_loss(x, jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"weight: shape \(4,\) does not broadcast to \(2, 3\)"):
        L.multilabel_soft_margin_loss(x, jnp.zeros((2, 3)), weight=jnp.ones(4))
    with pytest.raises(ValueError, match=r"weight: shape \(5, 1, 3\) does not broadcast to \(2, 3\)"):
        L.multilabel_soft_margin_loss(x, jnp.zeros((2, 3)), weight=jnp.ones((5, 1, 3)))
    with pytest.raises(TypeError, match="target: expected a floating or integer array, got dtype bool"):
        L.multilabel_soft_margin_loss(x, jnp.zeros((2, 3), bool))


@pytest.mark.parametrize("p", [0, 3, 1.5, True, "1", None])
def test_multi_margin_p_must_be_1_or_2(p):
    with pytest.raises(ValueError, match=r"p: only p == 1 and p == 2 are supported, got"):
        L.multi_margin_loss(jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32), p=p)


def test_multi_margin_traced_p_asks_for_a_static_argument():
    with pytest.raises(TypeError, match=r"p: expected a Python int \(1 or 2; it is static\), got a traced .*static argument"):
        jax.jit(L.multi_margin_loss)(jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32), p=2)
    f = jax.jit(L.multi_margin_loss, static_argnames="p")
    np.testing.assert_allclose(f(jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32), p=2), 2 / 3)  # (1 - 0 + 0)^2 * 2 / 3


@pytest.mark.parametrize("weight", [jnp.ones((1, 3)), jnp.ones(4), jnp.ones(()), jnp.ones(2)])
def test_multi_margin_weight_must_be_1d_of_length_c(weight):
    with pytest.raises(ValueError, match=r"weight: expected a 1-D array of shape \(3,\) .*got " + re.escape(str(tuple(weight.shape)))):
        L.multi_margin_loss(jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32), weight=weight)


def test_multi_margin_bad_shapes_and_dtypes():
    x = jnp.zeros((2, 3))
    with pytest.raises(TypeError, match="target: expected an integer array \\(class indices\\), got dtype float32"):
        L.multi_margin_loss(x, jnp.zeros(2))
    with pytest.raises(ValueError, match=r"target: expected shape \(2,\) .* for input \(2, 3\), got \(2, 1\)"):
        L.multi_margin_loss(x, jnp.zeros((2, 1), jnp.int32))
    with pytest.raises(ValueError, match=r"target: expected shape \(2,\) .* for input \(2, 3\), got \(3,\)"):
        L.multi_margin_loss(x, jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match=r"target: expected shape \(\) .* for input \(3,\), got \(2,\)"):
        L.multi_margin_loss(jnp.zeros(3), jnp.zeros(2, jnp.int32))
    with pytest.raises(ValueError, match=r"input: expected 0 or 1 or 2 dimensions .*got shape \(2, 3, 4\)"):
        L.multi_margin_loss(jnp.zeros((2, 3, 4)), jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ValueError, match=r"input: expected at least one class, got shape \(2, 0\)"):
        L.multi_margin_loss(jnp.zeros((2, 0)), jnp.zeros(2, jnp.int32))
    with pytest.raises(TypeError, match="weight: expected a floating-point array, got dtype int32"):
        L.multi_margin_loss(x, jnp.zeros(2, jnp.int32), weight=jnp.ones(3, jnp.int32))


def test_multilabel_margin_bad_shapes_and_dtypes():
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match=r"target: expected shape \(2, 3\) .*got \(2, 2\)"):
        L.multilabel_margin_loss(x, jnp.zeros((2, 2), jnp.int32))
    with pytest.raises(ValueError, match=r"target: expected shape \(3,\) .*got \(1, 3\)"):
        L.multilabel_margin_loss(jnp.zeros(3), jnp.zeros((1, 3), jnp.int32))
    with pytest.raises(ValueError, match=r"target: expected shape \(3,\) .*got \(\)"):
        L.multilabel_margin_loss(jnp.zeros(3), jnp.zeros((), jnp.int32))
    with pytest.raises(ValueError, match=r"target: expected shape \(\) .*got \(2,\)"):
        L.multilabel_margin_loss(jnp.zeros(()), jnp.zeros(2, jnp.int32))
    with pytest.raises(TypeError, match="target: expected an integer array .*got dtype float32"):
        L.multilabel_margin_loss(x, jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"input: expected 0 or 1 or 2 dimensions .*got shape \(2, 2, 3\)"):
        L.multilabel_margin_loss(jnp.zeros((2, 2, 3)), jnp.zeros((2, 2, 3), jnp.int32))


# ----------------------------------------------------------------------------- out-of-range labels


@pytest.mark.parametrize("bad", [3, -1, 255])
def test_multi_margin_out_of_range_concrete_raises(bad):
    t = np.array([0, bad], np.uint8 if bad == 255 else np.int32)
    with pytest.raises(ValueError, match=r"target: class indices must be in \[0, 3\)"):
        L.multi_margin_loss(jnp.zeros((2, 3)), t)


@pytest.mark.parametrize("bad", [3, -2])
def test_multilabel_margin_out_of_range_concrete_raises(bad):
    # torch checks every entry, also those after the first -1.
    t = np.array([[0, -1, bad], [1, -1, 0]])
    with pytest.raises(ValueError, match=r"target: labels must be in \[-1, 3\)"):
        L.multilabel_margin_loss(jnp.zeros((2, 3)), t)


def _bad_label_calls():
    x = jnp.asarray(np.random.default_rng(14).standard_normal((3, 3)), jnp.float32)
    mm = (lambda x, t: L.multi_margin_loss(x, t, reduction="none"), x, jnp.array([0, 7, 2]))
    ml = (lambda x, t: L.multilabel_margin_loss(x, t, reduction="none"), x, jnp.array([[0, -1, 1], [1, -1, 5], [2, 1, -1]]))
    return [mm, ml]


@pytest.mark.parametrize("which", [0, 1], ids=["multi_margin_loss", "multilabel_margin_loss"])
def test_out_of_range_inside_jit_is_nan_with_finite_gradients(which):
    f, x, t = _bad_label_calls()[which]
    out = np.asarray(jax.jit(f)(x, t))
    assert np.isnan(out[1]) and np.all(np.isfinite(out[[0, 2]]))
    g = jax.jit(jax.grad(lambda x, t: jnp.nansum(f(x, t))))(x, t)
    assert np.all(np.isfinite(np.asarray(g)))
    np.testing.assert_array_equal(np.asarray(g)[1], 0.0)


@pytest.mark.parametrize("which", [0, 1], ids=["multi_margin_loss", "multilabel_margin_loss"])
def test_out_of_range_checkify_path(which):
    f, x, t = _bad_label_calls()[which]
    err, _ = checkify.checkify(jax.jit(f))(x, t)
    with pytest.raises(Exception, match="target: .* out of range|target: labels must be in"):
        err.throw()
    good = jnp.zeros_like(t)
    err, _ = checkify.checkify(jax.jit(f))(x, good)
    err.throw()  # no error for in-range labels


@pytest.mark.parametrize("weight", [None, [1.0, 2.0, 0.5]])
def test_multi_margin_infinite_margin_gradient_is_signed_infinity(weight):
    # margin=inf, p=2: every other class's term is inf with derivative 2 * inf, so
    # d/dx_i = +inf and d/dx_y = -inf (torch's values). The target's own term must not
    # enter the gradient: masked after the hinge, its infinite derivative gave NaN at y.
    x = jnp.array([[0.3, -0.2, 0.5], [0.1, 0.2, -0.4]])
    t = jnp.array([1, 2])
    w = None if weight is None else jnp.asarray(weight)
    f = lambda a: L.multi_margin_loss(a, t, p=2, margin=jnp.inf, weight=w, reduction="sum")
    assert float(f(x)) == np.inf
    g = np.asarray(jax.grad(f)(x))
    want = np.where(np.arange(3)[None, :] == np.asarray(t)[:, None], -np.inf, np.inf)
    np.testing.assert_array_equal(g, want)
