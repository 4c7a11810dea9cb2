"""linear_cross_entropy against torch's fixtures, cross_entropy on materialised logits, and JAX's transformations."""

from __future__ import annotations

import functools
import types

import chex
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import jaxloss
from jaxloss import _sharding as S
from jaxloss._linear_cross_entropy import (
    CHUNK_ELEMENTS,
    GPU_CHUNK_ELEMENTS,
    GPU_MIN_CHUNK_ROWS,
    MIN_CHUNK_ROWS,
    default_chunk_size,
)
from tests import _checks
from tests._fixtures import JAX_ADAPTERS, JIT_DTYPE, assert_parity, case_params, load_cases

lce = jaxloss.linear_cross_entropy
METHODS = ("fused", "checkpoint", "tiled")


def _chunks(method: str, rows: int, classes: int = 2):
    """``chunk_size`` for ``method``: ``rows``, with tiles of ``classes`` classes for
    "tiled" (2 of the 5 classes most tests have: two whole tiles and a shorter one)."""
    return (rows, classes) if method == "tiled" else rows

# ---------------------------------------------------------------- torch fixtures


@pytest.mark.parametrize("case", case_params("linear_cross_entropy"))
def test_fixture_parity(case):
    assert_parity(case)


@pytest.mark.parametrize("case", case_params("linear_cross_entropy", dtype=JIT_DTYPE))
def test_fixture_parity_under_jit(case):
    assert_parity(case, transform=jax.jit)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", case_params("linear_cross_entropy", dtype="float64"))
def test_fixture_parity_in_chunks_of_3(case, method, monkeypatch):
    """The fixtures have at most 7 rows: chunks of 3 leave a shorter last chunk.
    (Under jit: one program per case instead of a forward and a backward one.)"""
    monkeypatch.setitem(JAX_ADAPTERS, "linear_cross_entropy", functools.partial(lce, chunk_size=_chunks(method, 3), method=method))
    assert_parity(case, transform=jax.jit)


def test_fixtures_cover_every_option():
    ids = [c.id for c in load_cases("linear_cross_entropy")]
    for needle in ("probs", "kdim", "unbatched", "ignore_index_2", "all_ignored", "smoothing", "weight", "no_bias"):
        assert any(needle in i for i in ids), needle
    assert {i.rsplit("/", 1)[1] for i in ids} == {"float32", "float64"}


# ------------------------------------------------- parity with materialised logits

N, D, C = 6, 4, 5


def _problem(kind: str, seed: int = 0):
    """(input, linear_weight, linear_bias, class weight, target) for a small problem."""
    r = np.random.default_rng(seed)
    if kind == "kdim":
        W = r.standard_normal((C, 2, D))
        b = r.standard_normal((C, 2))
        y = r.integers(0, C, (N, 2))
        y[1, 0] = -100
    else:
        W = r.standard_normal((C, D))
        b = r.standard_normal(C)
        y = r.integers(0, C, N)
        y[[1, 4]] = -100
    if kind == "probs":
        a = r.standard_normal((N, C))
        y = np.exp(a) / np.exp(a).sum(1, keepdims=True)
    x = r.standard_normal((N, D))
    cw = r.uniform(0.2, 2.0, C)
    return tuple(jnp.asarray(v) for v in (x, W, b, cw, y))


def _materialised(x, W, b, y, **kw):
    z = jnp.einsum("nd,c...d->nc...", x, W) + b
    return jaxloss.cross_entropy(z, y, **kw)


def _value_and_grads(fns, kind, reduction):
    """For each fn: value and gradients w.r.t. input, linear_weight, linear_bias, weight,
    label_smoothing (and a probability target); all in one compilation."""
    x, W, b, cw, y = _problem(kind)
    argnums = (0, 1, 2, 3, 4) + ((5,) if kind == "probs" else ())

    def one(fn):
        def f(x, W, b, cw, eps, y):
            out = fn(x, W, b, y, weight=cw, label_smoothing=eps, reduction=reduction)
            # a non-uniform cotangent for "none"
            return jnp.sum(jnp.cos(out)) if reduction == "none" else out

        return jax.value_and_grad(f, argnums=argnums)

    return jax.jit(lambda *a: [one(fn)(*a) for fn in fns])(x, W, b, cw, jnp.float64(0.2), y)


def _lce(x, W, b, y, **kw):
    return lce(x, W, y, linear_bias=b, **kw)


def _assert_tree_close(a, b, rtol=1e-10):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=rtol)


CHUNK_SIZES = (1, 3, 4, 16)  # 1, a divisor of N=6, a non-divisor, larger than N


_METHOD_REDUCTIONS = (
    ("checkpoint", "none"),
    ("fused", "mean"),
    ("fused", "sum"),
    ("checkpoint", "mean"),
    ("checkpoint", "sum"),
    # "tiled" with "mean"/"sum", every argument differentiated, computes the chunks' logits
    # whole: test_tiled_differentiated_options_take_whole_chunks; its tiles:
    # test_tiled_gradients_of_the_linear_arguments.
    ("tiled", "none"),
)


@pytest.mark.parametrize(
    "kind,method,reduction",
    [
        (kind, method, reduction)
        for kind in ("class", "probs", "kdim")
        for method, reduction in _METHOD_REDUCTIONS
        # K-dimensional weights: 'sum' differs from 'mean' only in the denominator,
        # which the class and probs kinds test; not generated, to save compile time.
        if not (kind == "kdim" and reduction == "sum")
    ],
)
def test_matches_cross_entropy_on_materialised_logits(kind, method, reduction):
    """Values and gradients (input, weight, bias, class weight, smoothing, probability target)
    for chunk sizes 1, a divisor, a non-divisor and one larger than N (one compilation).
    ("fused" with "none" is the checkpoint path.)"""
    with jax.enable_x64(True):
        kw = {} if kind == "probs" else {"ignore_index": -100}
        (want,) = _value_and_grads([functools.partial(_materialised, **kw)], kind, reduction)
        fns = [functools.partial(_lce, chunk_size=_chunks(method, c), method=method) for c in CHUNK_SIZES]
        for c, got in zip(CHUNK_SIZES, _value_and_grads(fns, kind, reduction), strict=True):
            _assert_tree_close(got, want)
            assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(got)), c


@pytest.mark.parametrize(
    "kind,reduction", [(k, r) for k in ("class", "probs", "kdim") for r in ("mean", "sum") if (k, r) != ("kdim", "sum")]
)
def test_fused_logit_gradient_formula(kind, reduction):
    """Only input, weight and bias differentiated: the fused path then uses its written-out
    gradient of the logits (differentiating a class weight, the smoothing or a probability
    target, as the test above does, takes autodiff of the per-sample losses instead).
    Every combination of class weight and smoothing, ignored rows, a shorter last chunk."""
    with jax.enable_x64(True):
        x, W, b, cw, y = _problem(kind)
        kw = {} if kind == "probs" else {"ignore_index": -100}
        options = [{}, {"weight": cw}, {"label_smoothing": 0.2}, {"weight": cw, "label_smoothing": 0.2}]

        def vg(fn, opts):
            f = lambda x, W, b: fn(x, W, b, y, reduction=reduction, **kw, **opts)  # noqa: E731
            return jax.value_and_grad(f, (0, 1, 2))(x, W, b)

        @jax.jit
        def run(x, W, b):
            return [
                (vg(_materialised, o), [vg(functools.partial(_lce, chunk_size=c, method="fused"), o) for c in (1, 4, 16)])
                for o in options
            ]

        for o, (want, gots) in zip(options, run(x, W, b), strict=True):
            for got in gots:
                _assert_tree_close(got, want)
            assert float(jnp.max(jnp.abs(want[1][1]))) > 1e-3, o


@pytest.mark.parametrize("mass", [False, True])
@pytest.mark.parametrize("kind", ["class", "probs"])
def test_infinite_weight_entry_in_a_shorter_last_chunk(kind, mass):
    """A -inf entry of ``linear_weight`` over an input column that is positive on every row:
    that class's logit is -inf everywhere. Without target mass on it the weight and bias
    gradients are finite; with some (smoothing, a positive probability) the input
    gradient is +inf in that column (torch's: see the ``*_infinite_weight_entry_*``
    fixtures). Chunks that do not divide N must not pad the last one (a zero row times
    -inf is a NaN logit, which reached the weight gradient), and the rows it repeats
    from the chunk before must add nothing to their input gradient (their zero logit
    gradient times -inf is NaN). Only input, weight and bias are differentiated, which
    is the fused path's written-out logit gradient (the fixtures also differentiate a
    probability target, which takes autodiff instead)."""
    with jax.enable_x64(True):
        x, W, b, cw, y = _problem(kind)
        x = x.at[:, 0].set(jnp.abs(x[:, 0]) + 0.5)
        W = W.at[0, 0].set(-jnp.inf)
        kw = {"weight": cw}
        if kind == "probs" and not mass:
            y = y.at[:, 0].set(0.0)
            y = y / jnp.sum(y, axis=1, keepdims=True)
        elif kind == "class":
            y = jnp.where(y == 0, 1, y)
            kw["label_smoothing"] = 0.1 if mass else 0.0

        def vg(fn, reduction):
            def f(x, W, b):
                out = fn(x, W, b, y, reduction=reduction, **kw)
                # "none": a non-uniform, positive cotangent (the losses may be inf)
                return jnp.sum(out * (1 + jnp.arange(out.size) / 10)) if reduction == "none" else out

            return jax.value_and_grad(f, (0, 1, 2))(x, W, b)

        variants = [(c, m) for c in (4, 5) for m in METHODS]  # N = 6: a last chunk of 2 rows, of 1 row

        @jax.jit  # one program for every variant: compiling dominates this test
        def run(x, W, b):
            return {
                r: (vg(_materialised, r), [vg(functools.partial(_lce, chunk_size=_chunks(m, c), method=m), r) for c, m in variants])
                for r in ("none", "mean", "sum")
            }

        for reduction, (want, gots) in run(x, W, b).items():
            if mass:  # (the ignored rows' input gradient is 0 times -inf: NaN, as torch's)
                kept = jnp.ones(y.shape[0], bool) if kind == "probs" else y != -100
                assert bool(jnp.all(want[1][0][kept, 0] == jnp.inf))
            else:
                assert all(bool(jnp.all(jnp.isfinite(g))) for g in want[1][1:])
            for got in gots:
                np.testing.assert_allclose(float(got[0]), float(want[0]), rtol=1e-10)
                _assert_tree_close(got[1], want[1])


def test_softmax_of_huge_tied_logits_every_method():
    """Two rows whose logits are (0, 1e20, 1e20, 0, 0), target class 0: the softmax is 1/2
    on the tied classes and 0 elsewhere, so the logits' gradient of the summed losses
    is ``p - q``, ``q = (1 - eps) onehot + eps / C`` (the same target mass for a
    one-hot probability target), by hand; the linear arguments' gradients are its
    products with ``linear_weight`` and ``input``. Chunks of one row, tiles of 2
    classes (the tied classes in two tiles). Taking the softmax as ``exp(z - (m + s))``
    lost ``s = log 2`` next to ``m = 1e20`` and gave 1 on each tied class."""
    x = jnp.array([[1.0, 0.0], [1.0, 0.0]])
    W = jnp.array([[0.0, 0.0], [1e20, 0.0], [1e20, 0.0], [0.0, 1.0], [0.0, -1.0]])
    b = jnp.zeros(5)
    p = np.array([0.0, 0.5, 0.5, 0.0, 0.0])
    onehot = np.eye(5)[0]

    @jax.jit
    def run(x, W, b):
        out = {}
        for method in METHODS:
            for eps in (0.0, 0.1):
                for reduction in ("none", "mean", "sum"):
                    for kind, y in (("class", jnp.array([0, 0])), ("probs", jnp.asarray(np.stack([onehot, onehot]), jnp.float32))):
                        kw = {"chunk_size": _chunks(method, 1), "method": method, "label_smoothing": eps, "reduction": reduction}
                        f = lambda x, W, b: jnp.sum(_lce(x, W, b, y, **kw))  # noqa: B023,E731
                        out[method, eps, reduction, kind] = jax.grad(f, (0, 1, 2))(x, W, b)
        return out

    for (method, eps, reduction, kind), got in run(x, W, b).items():
        dz = np.tile(p - ((1 - eps) * onehot + eps / 5), (2, 1)) / (2 if reduction == "mean" else 1)
        want = (dz @ np.asarray(W, np.float64), dz.T @ np.asarray(x, np.float64), dz.sum(0))
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=1e-6, atol=1e-7, err_msg=f"{method} {eps} {reduction} {kind}")


def _float64_definition(z, y):
    """Per-row losses ``logsumexp(z) - z_y`` and their logit gradient ``softmax(z) - onehot``,
    in float64 (``z`` a float64 ``(N, C)`` array, ``y`` class indices)."""
    e = np.exp(z - z.max(1, keepdims=True))
    lse = z.max(1) + np.log(e.sum(1))
    return lse - z[np.arange(len(y)), y], e / e.sum(1, keepdims=True) - np.eye(z.shape[1])[y]


@pytest.mark.parametrize("method", METHODS)
def test_float32_gradient_of_offset_logits(method):
    """float32 logits about 1e4 (through the bias) that float32 holds exactly (small
    dyadic inputs and weights, the bias 1e4 plus sixteenths; a float32 ulp there is
    2**-10): the input gradient against the float64 definition,
    ``(softmax(z) - onehot) @ W`` summed over rows. The softmax depends only on the
    logits' differences, so the gradient keeps float32's relative precision (about
    1e-7 measured). Taking the softmax as ``exp(z - (m + s))`` rounded ``m + s`` to
    the ulp of 1e4 and was off by 2e-4 of the largest entry."""
    r = np.random.default_rng(3)
    x = (r.integers(-8, 9, (8, 4)) / 4).astype(np.float32)
    W = (r.integers(-8, 9, (10, 4)) / 8).astype(np.float32)
    b = (1e4 + r.integers(-32, 33, 10) / 16).astype(np.float32)
    y = r.integers(0, 10, 8)
    z = x.astype(np.float64) @ W.T.astype(np.float64) + b.astype(np.float64)
    assert np.array_equal(z.astype(np.float32).astype(np.float64), z)  # exact in float32
    g = jax.jit(jax.grad(lambda x: _lce(x, W, b, y, reduction="sum", chunk_size=_chunks(method, 3, 4), method=method)))(x)
    want = _float64_definition(z, y)[1] @ W.astype(np.float64)
    np.testing.assert_allclose(np.asarray(g, np.float64), want, rtol=0, atol=1e-6 * np.abs(want).max())


def test_one_input_feature_with_large_logits_every_method():
    """D = 1: float32 logits up to about 1e5 and a row of 4e9 against the float64
    definition on the same float32 logits (one product each, so the float32 logits
    are ``float32(x * W)``): losses ``logsumexp(z) - z_t`` and input and weight
    gradients ``(softmax(z) - onehot) @ W`` and ``(softmax(z) - onehot).T @ x``. XLA
    had made the one-feature matmul a product fused into each reader, rounded two
    ways: ``z - max(z)`` was not 0 at the max, the losses were off by 1.5e-4 at 1e4
    and -inf at 4e9."""
    r = np.random.default_rng(5)
    x = r.standard_normal((7, 1)).astype(np.float32)
    W = (r.standard_normal((6, 1)) * 1e4).astype(np.float32)
    x[0, 0], W[0, 0] = -0.4, -1e10  # a logit of 4e9
    y = r.integers(0, 6, 7)
    y[0] = 1
    z = (x.astype(np.float64) * W.T.astype(np.float64)).astype(np.float32).astype(np.float64)
    losses, dz = _float64_definition(z, y)

    @jax.jit
    def run(x, W):
        out = {}
        for method in METHODS:
            f = lambda x, W: _lce(x, W, None, y, reduction="none", chunk_size=_chunks(method, 3, 4), method=method)  # noqa: B023,E731
            g = lambda x, W: jnp.sum(_lce(x, W, None, y, reduction="sum", chunk_size=_chunks(method, 3, 4), method=method))  # noqa: B023,E731
            out[method] = (f(x, W), jax.grad(g, (0, 1))(x, W))
        return out

    for method, (loss, (gx, gW)) in run(x, W).items():
        np.testing.assert_allclose(loss, losses, rtol=1e-6, err_msg=method)
        for got, want in ((gx, dz @ W.astype(np.float64)), (gW, dz.T @ x.astype(np.float64))):
            np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0, atol=1e-6 * np.abs(want).max(), err_msg=method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("argnum", [0, 1, 2])
def test_gradient_of_one_argument(method, argnum):
    """Gradients of arguments that are not differentiated are skipped: the rest stays right."""
    with jax.enable_x64(True):
        x, W, b, cw, y = _problem("class")

        def f(fn, *a):
            return fn(*a, y, weight=cw, label_smoothing=0.1)

        got = jax.grad(functools.partial(f, functools.partial(_lce, chunk_size=_chunks(method, 4), method=method)), argnum)(x, W, b)
        want = jax.grad(functools.partial(f, _materialised), argnum)(x, W, b)
        _assert_tree_close(got, want)


def test_ignored_rows_get_exactly_zero_finite_gradients():
    x, W, b, cw, y = (jnp.asarray(v, jnp.float32) if v.dtype.kind == "f" else v for v in _problem("class"))
    for method in METHODS:
        g = jax.grad(lambda x: lce(x, W, y, linear_bias=b, weight=cw, label_smoothing=0.3, chunk_size=_chunks(method, 4), method=method))(x)
        assert bool(jnp.all(jnp.isfinite(g)))
        np.testing.assert_array_equal(np.asarray(g)[[1, 4]], 0.0)
        assert float(jnp.min(jnp.abs(g[0]))) > 0


def test_all_ignored_mean_is_nan_with_zero_gradient():
    x, W, b, cw, _ = _problem("class")
    y = jnp.full((N,), -100)
    for method in METHODS:
        v, g = jax.value_and_grad(lambda x, W: lce(x, W, y, weight=cw, chunk_size=_chunks(method, 4), method=method), (0, 1))(x, W)
        assert np.isnan(float(v))
        for a in g:
            np.testing.assert_array_equal(np.asarray(a), 0.0)


# ------------------------------------------------ forward mode and second order


def _fn_pair(kind, method):
    x, W, b, cw, y = _problem(kind)

    def make(fn):
        return lambda x, W, b, cw, eps: jnp.sum(jnp.sin(fn(x, W, b, y, weight=cw, label_smoothing=eps, reduction="none")))

    def make_scalar(fn):
        return lambda x, W, b, cw, eps: fn(x, W, b, y, weight=cw, label_smoothing=eps, reduction="sum")

    wrap = make if method == "checkpoint" else make_scalar
    return (
        wrap(functools.partial(_lce, chunk_size=_chunks(method, 4), method=method)),
        wrap(_materialised),
        (x, W, b, cw, jnp.float64(0.2)),
    )


def _tangents(args, seed=1):
    r = np.random.default_rng(seed)
    return tuple(jnp.asarray(r.standard_normal(jnp.shape(a))) for a in args)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["class", "probs"])
def test_jvp(kind, method):
    with jax.enable_x64(True):
        f, ref, args = _fn_pair(kind, method)
        tans = _tangents(args)
        _assert_tree_close(*(jax.jit(lambda a, t, g=g: jax.jvp(g, a, t))(args, tans) for g in (f, ref)))


# (Not "tiled": with the class weight and smoothing differentiated, its chunks are whole,
# as "fused"'s. Its tiles' HVPs: test_fused_hvp_of_the_linear_arguments.)
@pytest.mark.parametrize("method", ["fused", "checkpoint"])
@pytest.mark.parametrize("kind", ["class", "probs"])
def test_hessian_vector_products(kind, method):
    """Forward-over-reverse and reverse-over-reverse HVPs w.r.t. every floating argument."""
    with jax.enable_x64(True):
        _assert_hvps_match(*_fn_pair(kind, method))


def _assert_hvps_match(f, ref, args):
    """Forward-over-reverse and reverse-over-reverse HVPs of ``f`` and ``ref`` w.r.t. every
    argument, along the same random direction, agree (and are not all negligible)."""
    tans = _tangents(args)
    argnums = tuple(range(len(args)))
    fwd_rev = [jax.jit(lambda a, t, g=g: jax.jvp(jax.grad(g, argnums), a, t)[1])(args, tans) for g in (f, ref)]
    _assert_tree_close(*fwd_rev, rtol=1e-9)

    def rev_rev(g):
        inner = lambda *a: sum(jnp.vdot(u, t) for u, t in zip(jax.grad(g, argnums)(*a), tans))  # noqa: E731
        return jax.jit(jax.grad(inner, argnums))(*args)

    _assert_tree_close(rev_rev(f), rev_rev(ref), rtol=1e-9)
    assert any(float(jnp.max(jnp.abs(h))) > 1e-3 for h in fwd_rev[0])


@pytest.mark.parametrize("method", ["fused", "tiled"])
@pytest.mark.parametrize("kind", ["class", "probs", "kdim"])
def test_fused_hvp_of_the_linear_arguments(kind, method):
    """HVPs w.r.t. input, weight and bias only, so that the fused path's written-out
    logit gradient (tiled or not) is what gets differentiated (forward-over-reverse
    and reverse-over-reverse), with a class weight and smoothing."""
    with jax.enable_x64(True):
        x, W, b, cw, y = _problem(kind)
        kw = {"weight": cw, "label_smoothing": 0.2}
        f = lambda x, W, b: _lce(x, W, b, y, chunk_size=_chunks(method, 4), method=method, **kw)  # noqa: E731
        ref = lambda x, W, b: _materialised(x, W, b, y, **kw)  # noqa: E731
        _assert_hvps_match(f, ref, (x, W, b))


@pytest.mark.parametrize("method", ["checkpoint", "tiled"])
@pytest.mark.parametrize("kind", ["class", "probs", "kdim"])
def test_none_reduction_hvps_of_the_linear_arguments(kind, method):
    """HVPs through ``reduction="none"``'s checkpoint loop ("fused" takes it too), of a
    non-uniformly weighted sum of the losses, with a class weight and smoothing. The
    tiled loop's second pass carries the log-normaliser's derivatives: an exact-zero
    term with only its first derivative right gave second derivatives off by O(1)."""
    with jax.enable_x64(True):
        x, W, b, cw, y = _problem(kind)
        kw = {"weight": cw, "label_smoothing": 0.2, "reduction": "none"}

        def weighted(out):
            return jnp.sum(out * (1 + jnp.arange(out.size).reshape(out.shape) / 10))

        f = lambda x, W, b: weighted(_lce(x, W, b, y, chunk_size=_chunks(method, 4), method=method, **kw))  # noqa: E731
        ref = lambda x, W, b: weighted(_materialised(x, W, b, y, **kw))  # noqa: E731
        _assert_hvps_match(f, ref, (x, W, b))


@pytest.mark.parametrize("rows", [3, 4])  # a divisor of N, and not
@pytest.mark.parametrize(("kind", "smoothing"), [("class", 0.1), ("probs", 0.1), ("probs", None), ("kdim", 0.1)])
def test_infinite_class_weight_every_method(kind, smoothing, rows):
    """An infinite class weight with label smoothing (or probability targets, which need
    none): every method's losses and gradients (input, linear weight and bias, class
    weight, smoothing, probability target) have the materialised logits' values and
    inf/NaN pattern (torch's: the ``*infinite*`` cross_entropy fixtures).

    - The tiled ``"none"`` loop once gave a NaN loss for probability targets (its
      derivative-carrying zero times the infinite total weight), and NaN bias and
      target gradients where they are infinite.
    - Chunks that did not divide N made the bias gradient NaN where it is infinite, in
      every method: the last chunk's repeated rows, masked like ignored targets, had
      a logit gradient of 0 times the infinite weight.

    The input is positive, so that the linear weight's gradient is infinite rather than
    NaN where no class-weight NaN reaches it; class targets are not ignored (an ignored
    target's gradient with an infinite weight is NaN, as torch's, and would make the
    bias gradient NaN throughout). The K-dimensional case ignores one position: its
    half of the bias gradient is NaN, the other half infinite."""
    with jax.enable_x64(True):
        x, W, b, cw, y = _problem(kind)
        x = jnp.abs(x)
        if kind == "class":
            y = jnp.where(y < 0, 1, y)
        cw = cw.at[2].set(jnp.inf)
        argnums = (0, 1, 2, 3) + (() if smoothing is None else (4,)) + ((5,) if kind == "probs" else ())

        def vg(fn, reduction):
            def f(x, W, b, cw, eps, y):
                out = fn(x, W, b, y, reduction=reduction, weight=cw, **({} if eps is None else {"label_smoothing": eps}))
                return jnp.sum(out * (1 + jnp.arange(out.size).reshape(out.shape) / 10)) if reduction == "none" else out

            return jax.value_and_grad(f, argnums)(x, W, b, cw, smoothing, y)

        @jax.jit  # one program: compiling dominates
        def run(x, W, b, cw, y):
            return {
                r: (vg(_materialised, r), [vg(functools.partial(_lce, chunk_size=_chunks(m, rows), method=m), r) for m in METHODS])
                for r in ("none", "mean", "sum")
            }

        for reduction, (want, gots) in run(x, W, b, cw, y).items():
            leaves = jax.tree.leaves(want)
            assert not all(bool(jnp.all(jnp.isfinite(u))) for u in leaves)  # the case is non-finite
            if reduction != "mean" or kind == "probs":  # (a class-index mean is inf / inf)
                assert any(bool(jnp.any(jnp.isinf(u))) for u in leaves[1:4])  # and infinite gradients
            for method, got in zip(METHODS, gots):
                for u, v in zip(leaves, jax.tree.leaves(got), strict=True):
                    np.testing.assert_allclose(np.asarray(v), np.asarray(u), rtol=1e-9, atol=1e-9, err_msg=f"{reduction} {method}")


@pytest.mark.parametrize("method", METHODS)
def test_jacfwd_and_hessian(method):
    with jax.enable_x64(True):
        x, W, b, cw, y = _problem("class")
        f = lambda x, W: lce(x, W, y, weight=cw, chunk_size=_chunks(method, 4), method=method)  # noqa: E731
        ref = lambda x, W: _materialised(x, W, 0.0, y, weight=cw)  # noqa: E731
        _assert_tree_close(*(jax.jit(jax.jacfwd(g, (0, 1)))(x, W) for g in (f, ref)))
        _assert_tree_close(*(jax.jit(jax.hessian(g))(x, W) for g in (f, ref)), rtol=1e-9)


# (Not "tiled": its second derivatives are compared with the materialised logits' in
# test_fused_hvp_of_the_linear_arguments and test_jacfwd_and_hessian; 13 s here.)
@pytest.mark.parametrize("method", ["fused", "checkpoint"])
def test_check_grads_order_2(method):
    x, W, b, cw, y = _problem("class")
    _checks.assert_grads_float64(
        jax.jit(lambda x, W, b: lce(x, W, y, linear_bias=b, weight=cw, label_smoothing=0.1, chunk_size=_chunks(method, 4), method=method)),
        (x, W, b),
    )


# ------------------------------------------------------------ vmap, jit, dtypes


@pytest.mark.parametrize("method", METHODS)
def test_vmap_of_grad(method):
    with jax.enable_x64(True):
        _, W, b, cw, y = _problem("class")
        xb = jnp.asarray(np.random.default_rng(5).standard_normal((3, N, D)))

        def g(fn):
            return jax.jit(jax.vmap(jax.grad(lambda x, W: fn(x, W, b, y, weight=cw, label_smoothing=0.1), (0, 1)), (0, None)))

        _assert_tree_close(g(functools.partial(_lce, chunk_size=_chunks(method, 4), method=method))(xb, W), g(_materialised)(xb, W))


def test_vmap_over_rows_equals_reduction_none():
    x, W, b, cw, y = _problem("class")
    y = jnp.where(y < 0, 0, y)
    _checks.assert_vmap_matches_none(
        lambda x, W, y, **kw: lce(x, W, y, linear_bias=b, weight=cw, **kw), (x, W, y), (0, None, 0)
    )


def test_jit_matches_eager():
    x, W, b, cw, y = _problem("kdim")
    _checks.assert_jit_matches_eager(lambda x, W, y: lce(x, W, y, linear_bias=b, chunk_size=4), x, W, y)


def test_low_precision():
    x, W, b, cw, y = _problem("class")
    bf = [a.astype(jnp.bfloat16) for a in (x, W)]
    _checks.assert_low_precision(lambda x, W: lce(x, W, y, chunk_size=4), bf, jnp.bfloat16)
    _checks.assert_low_precision(lambda x, W: lce(x, W, y, chunk_size=(4, 2), method="tiled"), bf, jnp.bfloat16)
    _checks.assert_low_precision(lambda x, W: lce(x, W, y, reduction="none"), [a.astype(jnp.float16) for a in (x, W)], jnp.float16)
    g = jax.grad(lambda x, W: lce(x, W, y, chunk_size=4).astype(jnp.float32), (0, 1))(*bf)
    assert all(a.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(a.astype(jnp.float32)))) for a in g)
    # mixed dtypes promote as torch promotes
    assert lce(x.astype(jnp.bfloat16), W.astype(jnp.float32), y).dtype == jnp.float32


def test_label_smoothing_is_traced():
    x, W, b, cw, y = _problem("class")
    _checks.assert_hyperparameter_is_traced(lambda e: lce(x, W, y, label_smoothing=e, chunk_size=4), [0.0, 0.1, 0.5])


def test_output_shapes():
    x, W, b, cw, y = _problem("class")
    chex.assert_shape(lce(x, W, y, reduction="none"), (N,))
    chex.assert_shape([lce(x, W, y), lce(x, W, y, reduction="sum")], ())
    chex.assert_shape(lce(x[0], W, y[0], reduction="none"), ())
    xk, Wk, bk, _, yk = _problem("kdim")
    chex.assert_shape(lce(xk, Wk, yk, linear_bias=bk, reduction="none", chunk_size=4), (N, 2))
    chex.assert_shape(lce(xk, Wk[:, :, None], yk[:, :, None], reduction="none"), (N, 2, 1))
    _, _, _, _, p = _problem("probs")
    chex.assert_shape(lce(x, W, p, reduction="none"), (N,))
    chex.assert_shape(lce(x[0], W, p[0], reduction="none"), ())


def test_integer_target_dtypes():
    x, W, b, cw, y = _problem("class")
    want = lce(x, W, y)
    for dt in (np.int8, np.int16, np.int64):  # numpy: int64 survives without x64
        np.testing.assert_allclose(lce(x, W, np.asarray(y).astype(dt)), want, rtol=1e-6)
    yu = jnp.where(y < 0, 0, y)
    np.testing.assert_allclose(lce(x, W, yu.astype(jnp.uint8)), lce(x, W, yu), rtol=1e-6)


# -------------------------------------------------------------- memory and chunking


def test_never_holds_the_full_logits():
    """XLA's temp buffers for value_and_grad stay far below one (N, C) logits array."""
    n, d, c, rows = 1024, 16, 4096, 32
    x = jax.ShapeDtypeStruct((n, d), jnp.float32)
    W = jax.ShapeDtypeStruct((c, d), jnp.float32)
    y = jax.ShapeDtypeStruct((n,), jnp.int32)
    logits_bytes = n * c * 4
    for method in METHODS:
        f = jax.jit(jax.value_and_grad(lambda x, W, y: lce(x, W, y, chunk_size=_chunks(method, rows, 256), method=method), (0, 1)))
        temp = f.lower(x, W, y).compile().memory_analysis().temp_size_in_bytes
        # about three (rows, C) blocks and the (C, D) weight gradient, not (N, C)
        assert temp < logits_bytes / 5, (method, temp, logits_bytes)
    ref = jax.jit(jax.value_and_grad(lambda x, W, y: jaxloss.cross_entropy(x @ W.T, y), (0, 1)))
    assert ref.lower(x, W, y).compile().memory_analysis().temp_size_in_bytes >= logits_bytes


def test_default_chunk_size():
    # The CPU rule, named: without a platform the rule is the default backend's (a GPU's
    # is test_default_chunk_size_on_gpus).
    assert default_chunk_size(10, 50, "cpu") == 10  # everything fits: one chunk
    assert default_chunk_size(1 << 20, 256, "cpu") == CHUNK_ELEMENTS // 256
    assert default_chunk_size(1 << 20, 1 << 20, "cpu") == MIN_CHUNK_ROWS  # never starve the matmul
    assert default_chunk_size(3, 1 << 30, "cpu") == 3
    assert default_chunk_size(1 << 20, 256) == default_chunk_size(1 << 20, 256, jax.default_backend())


# ---------------------------------------------------------------------- bad input


def test_unbatched_input_takes_a_one_element_target_as_the_scalar():
    # torch's forward does (the fixtures hold its values; its backward raises for a
    # (1,) target, so the gradients are compared with the scalar target's here).
    x, W, b, cw, y = _problem("class")
    for reduction in ("none", "mean", "sum"):
        for t in (int(y[0]), -100):
            one = lambda x, W, b: lce(x, W, jnp.array([t]), linear_bias=b, weight=cw, reduction=reduction)
            scalar = lambda x, W, b: lce(x, W, jnp.array(t), linear_bias=b, weight=cw, reduction=reduction)
            assert one(x[0], W, b).shape == ()
            np.testing.assert_array_equal(one(x[0], W, b), scalar(x[0], W, b))
            for a, c in zip(jax.grad(one, (0, 1, 2))(x[0], W, b), jax.grad(scalar, (0, 1, 2))(x[0], W, b)):
                np.testing.assert_array_equal(a, c)


def test_bad_input():
    x, W, b, cw, y = _problem("class")
    xk, Wk, bk, _, yk = _problem("kdim")
    _, _, _, _, p = _problem("probs")
    with pytest.raises(ValueError, match=r"input: expected 1 or 2 dimensions .* got shape \(1, 6, 4\)"):
        lce(x[None], W, y)
    with pytest.raises(ValueError, match=r"input: expected 1 or 2 dimensions"):
        lce(x[0, 0], W, y)
    with pytest.raises(ValueError, match=r"linear_weight: expected at least 2 dimensions"):
        lce(x, W[0], y)
    with pytest.raises(ValueError, match=r"linear_weight: expected in_features=4 .* got shape \(5, 3\)"):
        lce(x, W[:, :3], y)
    with pytest.raises(ValueError, match=r"linear_bias: expected shape \(5,\) for linear_weight \(5, 4\), got \(6,\)"):
        lce(x, W, y, linear_bias=jnp.zeros(6))
    with pytest.raises(ValueError, match=r"linear_bias: expected shape \(5, 2\) for linear_weight \(5, 2, 4\), got \(5,\)"):
        lce(xk, Wk, yk, linear_bias=bk[:, 0])
    with pytest.raises(ValueError, match=r"input: a K-dimensional linear_weight \(5, 2, 4\) needs batched input"):
        lce(xk[0], Wk, yk[0])
    with pytest.raises(ValueError, match=r"ignore_index: cannot be specified when target contains class probabilities"):
        lce(x, W, p, ignore_index=-100)
    with pytest.raises(TypeError, match=r"target: class-index targets must be integers, got dtype float"):
        lce(x, W, p[:, 0])
    with pytest.raises(TypeError, match=r"target: class probabilities .* must be floating"):
        lce(x, W, jnp.zeros((N, C), jnp.int32))
    with pytest.raises(ValueError, match=r"target: expected shape \(6,\) for input \(6, 4\)"):
        lce(x, W, y[:5])
    with pytest.raises(ValueError, match=r"target: expected shape \(6, 2\)"):
        lce(xk, Wk, y)
    with pytest.raises(ValueError, match=r"target: expected shape \(\) for input \(4,\)"):
        lce(x[0], W, y[:2])  # unbatched input: a () or (1,) target
    with pytest.raises(ValueError, match=r"weight: expected shape \(5,\)"):
        lce(x, W, y, weight=cw[:4])
    with pytest.raises(ValueError, match=r"reduction: expected one of"):
        lce(x, W, y, reduction="batchmean")
    with pytest.raises(ValueError, match=r"label_smoothing: expected a value in \[0.0, 1.0\], got 1.5"):
        lce(x, W, y, label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"method: expected one of"):
        lce(x, W, y, method="tiles")
    with pytest.raises(ValueError, match=r"chunk_size: expected a positive int"):
        lce(x, W, y, chunk_size=0)
    with pytest.raises(TypeError, match=r"chunk_size: expected a Python int"):
        lce(x, W, y, chunk_size=2.0)
    with pytest.raises(TypeError, match=r"input: expected a floating-point array"):
        lce(x.astype(jnp.int32), W, y)
    with pytest.raises(ValueError, match=r"target: class indices must be in \[0, 5\)"):
        lce(x, W, y.at[0].set(7))
    with pytest.raises(ValueError, match=r"target: class indices must be in \[0, 5\)"):
        lce(x, W, y.at[0].set(-5))  # a negative index other than ignore_index


def test_torch_options_keyword():
    """torch's ``options=``: ``None``, or a LinearCrossEntropyOptions whose
    ``batch_chunk_size`` sets the rows per chunk (the chunk loop's length shows it)."""
    x, W, b, cw, y = _problem("class")
    Options = types.SimpleNamespace  # torch's dataclass has these fields; here without torch
    default = lce(x, W, y)
    np.testing.assert_array_equal(np.asarray(lce(x, W, y, options=None)), np.asarray(default))
    for opts in (Options(batch_chunk_size=None, chunking_method="auto"), Options(batch_chunk_size=4)):
        np.testing.assert_allclose(np.asarray(lce(x, W, y, options=opts)), np.asarray(default), rtol=1e-6)

    def scan_lengths(**kw):
        jaxpr = jax.make_jaxpr(lambda x: lce(x, W, y, **kw))(x)
        return sorted(e.params["length"] for e in _equations(jaxpr) if e.primitive.name == "scan")

    assert scan_lengths(options=Options(batch_chunk_size=2)) == scan_lengths(chunk_size=2) == [3]
    assert scan_lengths(options=Options(batch_chunk_size=2), chunk_size=2) == [3]
    assert scan_lengths(options=Options(batch_chunk_size=1)) == [6]
    with pytest.raises(ValueError, match=r"options: batch_chunk_size=2 disagrees with chunk_size=3"):
        lce(x, W, y, options=Options(batch_chunk_size=2), chunk_size=3)
    with pytest.raises(ValueError, match=r"options.batch_chunk_size: expected a positive int or None, got 0"):
        lce(x, W, y, options=Options(batch_chunk_size=0))
    with pytest.raises(TypeError, match=r"options.batch_chunk_size: expected a Python int"):
        lce(x, W, y, options=Options(batch_chunk_size=2.0))
    with pytest.raises(TypeError, match=r"options: expected None or a torch.nn.LinearCrossEntropyOptions"):
        lce(x, W, y, options={"batch_chunk_size": 2})


def test_torch_options_object():
    torch = pytest.importorskip("torch")
    if not hasattr(torch.nn, "LinearCrossEntropyOptions"):
        pytest.skip(f"torch {torch.__version__} has no LinearCrossEntropyOptions (added in 2.13)")
    x, W, b, cw, y = _problem("class")
    opts = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=4, chunking_method=None)
    np.testing.assert_allclose(np.asarray(lce(x, W, y, options=opts)), np.asarray(lce(x, W, y, chunk_size=4)), rtol=0)
    got = lce(x, W, y, options=torch.nn.LinearCrossEntropyOptions())
    np.testing.assert_allclose(np.asarray(got), np.asarray(lce(x, W, y)), rtol=0)


def _equations(closed):
    """Every equation of a jaxpr and of the jaxprs inside it."""

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            yield eqn
            for v in eqn.params.values():
                for sub in v if isinstance(v, (tuple, list)) else (v,):
                    if isinstance(sub, jax.extend.core.ClosedJaxpr):
                        yield from walk(sub.jaxpr)
                    elif isinstance(sub, jax.extend.core.Jaxpr):
                        yield from walk(sub)

    return list(walk(closed.jaxpr))


def _dot_precisions(closed):
    """The ``precision`` of every matrix-matrix dot_general in a jaxpr and the jaxprs
    inside it. (Mat-vecs against the class weight, which cross_entropy's smoothing
    term takes at "highest" precision on purpose, are left out.)"""
    return [
        e.params["precision"]
        for e in _equations(closed)
        if e.primitive.name == "dot_general" and min(v.aval.ndim for v in e.invars) >= 2
    ]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["class", "kdim", "probs"])
def test_precision_reaches_every_matmul(kind, method):
    """``precision`` is used by every matmul of the value, the gradients, forward mode,
    a Hessian-vector product and vmap(grad); ``None`` follows JAX's default (the test
    session sets it to "highest": conftest.py)."""
    x, W, b, cw, y = _problem(kind)
    args = (x, W, b, cw, jnp.float32(0.2))
    tans = _tangents(args)

    def programs(**kw):
        def f(x, W, b, cw, eps):
            out = lce(x, W, y, linear_bias=b, weight=cw, label_smoothing=eps, chunk_size=_chunks(method, 4), method=method, **kw)
            return jnp.sum(out)

        g = jax.grad(f, argnums=(0, 1, 2, 3, 4))
        yield jax.make_jaxpr(f)(*args)
        yield jax.make_jaxpr(g)(*args)
        yield jax.make_jaxpr(lambda a, t: jax.jvp(f, a, t))(args, tans)
        yield jax.make_jaxpr(lambda a, t: jax.jvp(lambda *a: g(*a), a, t))(args, tans)  # forward-over-reverse
        yield jax.make_jaxpr(jax.vmap(lambda x: g(x, *args[1:])))(x[None].repeat(2, 0))

    for given, want in [
        ("tensorfloat32", jax.lax.Precision.HIGH),
        (jax.lax.Precision.DEFAULT, jax.lax.Precision.DEFAULT),
        (None, jax.lax.Precision.HIGHEST),  # the session's default
    ]:
        for closed in programs(precision=given):
            found = _dot_precisions(closed)
            assert found, "no matmul found"
            assert set(found) == {(want, want)}, (given, set(found))
    with jax.default_matmul_precision("bfloat16"):
        found = [p for c in programs() for p in _dot_precisions(c)]
    assert set(found) == {(jax.lax.Precision.DEFAULT,) * 2}


def test_precision_values_agree_on_cpu():
    """On CPU every precision is full float32: the same numbers."""
    x, W, b, cw, y = _problem("class")

    def f(p):
        return jax.value_and_grad(lambda x, W: lce(x, W, y, linear_bias=b, precision=p), argnums=(0, 1))(x, W)

    _assert_tree_close(f(None), f("highest"), rtol=0)
    _assert_tree_close(f(None), f(("default", jax.lax.Precision.HIGHEST)), rtol=0)


def test_bad_precision():
    x, W, b, cw, y = _problem("class")
    with pytest.raises(ValueError, match=r"precision: expected one of 'default', .* got 'fp32'"):
        lce(x, W, y, precision="fp32")
    with pytest.raises(TypeError, match=r"precision: expected None, a jax.lax.Precision .* got int 32"):
        lce(x, W, y, precision=32)
    with pytest.raises(ValueError, match=r"precision: a sequence must hold two precisions"):
        lce(x, W, y, precision=("highest",))


def test_out_of_range_index_inside_jit_is_nan_and_checkify_reports_it():
    x, W, b, cw, y = _problem("class")
    bad = y.at[0].set(9)
    for method in METHODS:
        assert np.isnan(float(jax.jit(lambda y: lce(x, W, y, chunk_size=_chunks(method, 4), method=method))(bad)))
    err, _ = checkify.checkify(jax.jit(lambda y: lce(x, W, y)))(bad)
    with pytest.raises(Exception, match="class index out of range"):
        err.throw()


# -------------------------------------------------------------- benchmark suite


def test_benchmark_suite_smoke():
    """The suite imports, builds its cases at a tiny size, and every implementation agrees."""
    from benchmarks.suites import linear_cross_entropy as suite

    size = {"N": 8, "D": 4, "V": 16}
    cases = suite.cases(quick=True, sizes=[size])
    impls = {c.impl for c in cases}
    assert {"jax_matmul", "jaxloss", "jaxloss_checkpoint", "jax_materialised"} <= impls
    values = {}
    for c in cases:
        if c.compile is not None:
            c.compile()
        out = c.run()
        if c.impl != "jax_matmul":
            loss = out[0] if isinstance(out, tuple) else out  # jax: (value, grads); torch: the value
            values[c.impl] = float(loss.detach() if hasattr(loss, "detach") else loss)
    want = values["jax_materialised"]
    for impl, v in values.items():
        np.testing.assert_allclose(v, want, rtol=1e-5, err_msg=impl)
    fake = [
        {"loss": "linear_cross_entropy", "impl": i, "size": size, "median_s": t, "flops": f, "rss_growth_bytes": r}
        for i, t, f, r in [("jax_matmul", 1.0, 2, None), ("jaxloss", 4.0, 6, 30), ("torch_reference", 5.0, 6, 100), ("torch_chunked", 8.0, 6, 50)]
    ]
    s = suite.summarise(fake)["N=8,D=4,V=16"]
    assert s["time_vs_torch_reference"] == 0.8 and s["speedup_vs_torch_chunked"] == 2.0
    assert s["rss_vs_torch_reference"] == 0.3 and s["flops_vs_matmul"] == 0.75


@pytest.mark.parametrize(("C", "block"), [(11, 3), (12, 3), (11, 8), (13, 13)])
def test_weight_blocks_every_derivative(C, block, monkeypatch):
    """The fused path walks the weight in row blocks (full blocks in a scan, then a
    remainder): values, gradients, forward-over-reverse and reverse-over-reverse
    HVPs match the materialised logits for every split of the classes."""
    import jaxloss._linear_cross_entropy as impl

    monkeypatch.setattr(impl, "_weight_block", lambda CP, D: block)
    with jax.enable_x64(True):
        r = np.random.default_rng(C + block)
        x, W = jnp.asarray(r.standard_normal((7, 5))), jnp.asarray(r.standard_normal((C, 5)))
        y = jnp.asarray(r.integers(0, C, 7))
        f = lambda x, W: lce(x, W, y, label_smoothing=0.1, chunk_size=3, method="fused")  # noqa: E731
        ref = lambda x, W: jaxloss.cross_entropy(x @ W.T, y, label_smoothing=0.1)  # noqa: E731
        _assert_tree_close(*(jax.jit(jax.value_and_grad(g, (0, 1)))(x, W) for g in (f, ref)))
        t = (jnp.asarray(r.standard_normal(x.shape)), jnp.asarray(r.standard_normal(W.shape)))
        fwd_rev = [jax.jvp(jax.grad(g, (0, 1)), (x, W), t)[1] for g in (f, ref)]
        _assert_tree_close(*fwd_rev, rtol=1e-9)

        def rev_rev(g):
            inner = lambda x, W: sum(jnp.vdot(u, v) for u, v in zip(jax.grad(g, (0, 1))(x, W), t))  # noqa: E731
            return jax.grad(inner, (0, 1))(x, W)

        _assert_tree_close(rev_rev(f), rev_rev(ref), rtol=1e-9)


def test_weight_block_prefers_a_divisor_of_the_classes():
    import jaxloss._linear_cross_entropy as impl

    for CP, D in [(131072, 1024), (50257, 1024), (128256, 1024), (151936, 1024), (32000, 4096)]:
        b = impl._weight_block(CP, D)
        target = impl.W_BLOCK_ELEMENTS // D
        assert CP % b == 0 and target // 4 <= b <= target, (CP, D, b)
    assert impl._weight_block(7, 1 << 30) == 1 and impl._weight_block(5, 4) == 5


@pytest.mark.skipif(
    jax.default_backend() != "cpu",
    reason="XLA's CPU buffer accounting: on an H100 the same program reports 37.8 MB of temp "
    "(4.2 MB of logits per chunk; the rest not attributed), and a plain matmul's temp does not explain it",
)
def test_fused_working_memory_is_one_chunk_of_logits():
    # XLA's own buffer accounting (no timing): one chunk's logits, with their gradient
    # written in place of them, plus a weight block's product; no loop-invariant
    # (chunk, C) iota/zeros hoisted out of the scan, no separate buffer for the
    # exponentials, no weight-sized temporaries for the dW update (each was there before).
    N, D, V, rows = 512, 64, 8192, 128
    shapes = [jax.ShapeDtypeStruct(s, d) for s, d in [((N, D), jnp.float32), ((V, D), jnp.float32), ((N,), jnp.int32)]]
    for kw in ({}, {"label_smoothing": 0.1, "weight": jnp.ones(V)}):
        f = jax.jit(
            jax.value_and_grad(lambda x, W, y: lce(x, W, y, chunk_size=rows, method="fused", **kw), argnums=(0, 1))
        )
        temp = f.lower(*shapes).compile().memory_analysis().temp_size_in_bytes
        assert temp < 2 * rows * V * 4, (kw, temp)


def test_default_chunk_size_on_gpus():
    # Larger blocks on GPUs (measured on an H100, see GPU_CHUNK_ELEMENTS); the CPU rule elsewhere.
    assert default_chunk_size(1 << 20, 32768, "cpu") == CHUNK_ELEMENTS // 32768 == 512
    assert default_chunk_size(1 << 20, 32768, "tpu") == 512
    for gpu in ("gpu", "cuda", "rocm"):
        assert default_chunk_size(1 << 20, 32768, gpu) == GPU_CHUNK_ELEMENTS // 32768 == 4096
        assert default_chunk_size(1 << 20, 1 << 20, gpu) == GPU_MIN_CHUNK_ROWS
        assert default_chunk_size(100, 32768, gpu) == 100


def _scan_lengths(fn, *args):
    """The lengths of the scans in ``fn``'s jaxpr (the number of chunks)."""
    return {e.params["length"] for e in _equations(jax.make_jaxpr(fn)(*args)) if e.primitive.name == "scan"}


def test_default_chunk_size_follows_the_platform(monkeypatch):
    # 4096 rows of 32768 logits: 8 chunks of 512 rows on a CPU, one chunk on a GPU.
    x, W, y = jnp.zeros((4096, 2)), jnp.zeros((32768, 2)), jnp.zeros(4096, jnp.int32)

    def loss(x):
        return jaxloss.linear_cross_entropy(x, W, y)

    # Under tracing the platform is the default backend's. (A new function each time:
    # make_jaxpr caches traces by function.)
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert _scan_lengths(lambda x: loss(x), x) == {8}
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert _scan_lengths(lambda x: loss(x), x) == {1}
    # A placed array's is its device's (an array on the host CPU, on a GPU machine too).
    assert S.platform(jax.device_put(x, jax.devices("cpu")[0])) == "cpu"
    assert S.platform(jax.ShapeDtypeStruct((2,), jnp.float32)) == "gpu"


# ------------------------------------------------------------- method="tiled"

# (rows, classes) of 5: one tile; a scan of two and a shorter tile, rows not dividing N; one
# and a shorter tile; a scan of single classes, rows beyond N. (Chunks of 1 row and of 3:
# test_fixture_parity_in_chunks_of_3, test_matches_cross_entropy_on_materialised_logits.)
_TILED_CHUNKS = ((3, 5), (4, 2), (4, 3), (16, 1))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kind", ["class", "probs", "kdim"])
def test_tiled_gradients_of_the_linear_arguments(kind, reduction):
    """The tiled gradients (input, weight, bias differentiated: the two-pass tiles, not
    the whole-chunk fallback) and the value alone equal those of the materialised
    logits, with and without a class weight and smoothing, for tiles of 1 class, of
    all classes and with a shorter last tile, and chunks of rows that do and do not
    divide N (one compilation)."""
    with jax.enable_x64(True):
        x, W, b, cw, y = _problem(kind)
        kw = {} if kind == "probs" else {"ignore_index": -100}
        options = [{}, {"weight": cw, "label_smoothing": 0.2}]

        def vg(fn, o):
            return jax.value_and_grad(lambda x, W, b: fn(x, W, b, y, reduction=reduction, **kw, **o), (0, 1, 2))

        @jax.jit
        def run(x, W, b):
            out = []
            for o in options:
                want = vg(_materialised, o)(x, W, b)
                fns = [functools.partial(_lce, chunk_size=c, method="tiled") for c in _TILED_CHUNKS]
                out.append((want, [vg(f, o)(x, W, b) for f in fns], [f(x, W, b, y, reduction=reduction, **kw, **o) for f in fns]))
            return out

        for want, grads, values in run(x, W, b):
            for c, got, value in zip(_TILED_CHUNKS, grads, values, strict=True):
                _assert_tree_close(got, want)
                np.testing.assert_allclose(float(value), float(want[0]), rtol=1e-10, err_msg=str(c))


def _non_finite_problem(case: str):
    """float64 (x, W, b, y): logits with an infinite or NaN entry, or a large common offset."""
    x, W, b, cw, y = _problem("class")
    x = x.at[:, 0].set(jnp.abs(x[:, 0]) + 0.5)  # positive on every row
    if case == "plus_inf":
        W = W.at[3, 0].set(jnp.inf)  # class 3's logit is +inf on every row
    elif case == "minus_inf":
        W = W.at[2, 0].set(-jnp.inf)
    elif case == "nan":
        W = W.at[1, 2].set(jnp.nan)
    elif case == "row_of_minus_inf":
        b = jnp.full_like(b, -jnp.inf)  # every logit -inf
    elif case == "offset":
        b = b + 1e4
    return x, W, b, cw, y


@pytest.mark.parametrize("case", ["plus_inf", "minus_inf", "nan", "row_of_minus_inf", "offset"])
def test_tiled_non_finite_logits_as_the_whole_chunk(case):
    """Infinite and NaN logits give the tiled path the values and gradients (inf/NaN
    patterns included) of the fused path, whose chunks hold their logits whole:
    the running max and the rescaled sum of exponentials keep the row max's
    semantics (a +inf max makes the row NaN; a row of -inf has a -inf
    log-normaliser). A large common offset keeps its precision."""
    with jax.enable_x64(True):
        x, W, b, cw, y = _non_finite_problem(case)
        variants = [{}, {"weight": cw, "label_smoothing": 0.3}]  # (smoothing alone: the fixtures)

        def vg(method, chunk, o, reduction):
            def f(x, W, b):
                out = lce(x, W, y, linear_bias=b, reduction=reduction, chunk_size=chunk, method=method, **o)
                return jnp.sum(out * (1 + jnp.arange(out.size) / 10)) if reduction == "none" else out

            return jax.value_and_grad(f, (0, 1, 2))(x, W, b)

        @jax.jit
        def run(x, W, b):
            return [
                (vg("fused", 4, o, r), vg("checkpoint", 4, o, r) if r == "none" else None, vg("tiled", (4, 2), o, r))
                for o in variants
                for r in ("mean", "none")
            ]

        for fused, checkpoint, tiled in run(x, W, b):
            want = fused if checkpoint is None else checkpoint
            for u, v in zip(jax.tree.leaves(tiled), jax.tree.leaves(want), strict=True):
                np.testing.assert_array_equal(np.isnan(u), np.isnan(v))
                np.testing.assert_allclose(np.nan_to_num(u, nan=0.0), np.nan_to_num(v, nan=0.0), rtol=1e-10, atol=1e-10)
        if case == "nan":  # (the NaN reaches the value, as in torch)
            assert np.isnan(float(run(x, W, b)[0][2][0]))


def test_tiled_differentiated_options_take_whole_chunks():
    """With a class weight, the smoothing or a probability target differentiated, the tiled
    method computes a chunk's logits whole (JAX's autodiff): gradients still match."""
    with jax.enable_x64(True):
        for kind in ("class", "probs"):
            (want,) = _value_and_grads([_materialised], kind, "mean")
            (got,) = _value_and_grads([functools.partial(_lce, chunk_size=(4, 2), method="tiled")], kind, "mean")
            _assert_tree_close(got, want)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA's CPU buffer accounting (see the fused test)")
def test_tiled_working_memory_is_one_tile():
    """XLA's temp buffers: a few (rows, tile) blocks and the (rows, D) input-gradient
    accumulator, whatever the number of classes; far below one chunk of logits."""
    n, d, rows, tile = 512, 64, 256, 128
    for c in (8192, 32768):
        shapes = [jax.ShapeDtypeStruct(s, t) for s, t in [((n, d), jnp.float32), ((c, d), jnp.float32), ((n,), jnp.int32)]]
        for kw in ({}, {"label_smoothing": 0.1, "weight": jnp.ones(c)}):
            f = jax.jit(
                jax.value_and_grad(
                    lambda x, W, y: lce(x, W, y, chunk_size=(rows, tile), method="tiled", **kw), argnums=(0, 1)
                )
            )
            temp = f.lower(*shapes).compile().memory_analysis().temp_size_in_bytes
            assert temp < 6 * rows * tile * 4 + 3 * rows * d * 4 + 8 * c, (c, kw, temp)
            assert temp < rows * c * 4 / 4, (c, kw, temp)


def test_default_tile_size():
    from jaxloss._linear_cross_entropy import TILE_ELEMENTS, TILED_ROWS, default_tile_size

    assert default_tile_size(1024, 131072) == TILE_ELEMENTS // 1024 == 512
    assert default_tile_size(1024, 50257) == 512  # 29 * 1733: no divisor near the target, a shorter last tile
    assert default_tile_size(1024, 1000) == 500  # a divisor of the classes near the target
    assert default_tile_size(1024, 7) == 7  # at most every class
    assert default_tile_size(1024, 100, positions=64) == 5  # positions count: 8 classes, or a divisor near
    assert default_tile_size(1 << 30, 10) == 1
    # the defaults the wrapper takes: TILED_ROWS rows (or N), then the tile for them
    x, W, y = jnp.zeros((2048, 2)), jnp.zeros((4096, 2)), jnp.zeros(2048, jnp.int32)
    assert _scan_lengths(lambda x: lce(x, W, y, method="tiled"), x) == {2048 // TILED_ROWS, 4096 // 512}


def test_tiled_chunk_size_pairs():
    x, W, b, cw, y = _problem("class")
    np.testing.assert_allclose(lce(x, W, y, chunk_size=(4, 2), method="tiled"), lce(x, W, y), rtol=1e-6)
    np.testing.assert_allclose(lce(x, W, y, chunk_size=[4, 99], method="tiled"), lce(x, W, y), rtol=1e-6)
    np.testing.assert_allclose(lce(x, W, y, chunk_size=4, method="tiled"), lce(x, W, y), rtol=1e-6)
    with pytest.raises(ValueError, match=r"chunk_size: a \(rows, classes\) pair is for method='tiled'"):
        lce(x, W, y, chunk_size=(4, 2))
    with pytest.raises(ValueError, match=r"chunk_size: expected an int or a \(rows, classes\) pair"):
        lce(x, W, y, chunk_size=(4, 2, 1), method="tiled")
    with pytest.raises(ValueError, match=r"chunk_size: expected a positive number of classes per tile, got 0"):
        lce(x, W, y, chunk_size=(4, 0), method="tiled")
    with pytest.raises(ValueError, match=r"chunk_size: expected a positive int or None, got 0"):
        lce(x, W, y, chunk_size=(0, 2), method="tiled")
    with pytest.raises(TypeError, match=r"chunk_size"):
        lce(x, W, y, chunk_size=(4, 2.5), method="tiled")
