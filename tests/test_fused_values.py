"""The select-free softplus (``_elementwise.softplus_``) against JAX's: the same
values, bit for bit, on special values; the same derivatives; NaN and infinities
kept inside large reductions, and their sums right; and no per-element buffer in a
value-only program."""

from __future__ import annotations

import functools
import itertools
import math

import jax
import numpy as np
import pytest

import jaxloss
from jaxloss import _elementwise as E


def _special(dtype) -> np.ndarray:
    """Zeros, subnormals, the edges of exp's range, values around 1, huge values,
    infinities and NaN, of both signs."""
    f = np.finfo(dtype)
    one = dtype(1)
    v = [
        0.0, f.smallest_subnormal, f.tiny, 1e-30, 1e-8, 0.25, 0.5,
        np.nextafter(one, dtype(0)), 1.0, np.nextafter(one, dtype(2)), 2.0, 3.5, 10.0,
        30.0, 88.7, 89.0, 709.0, 710.0, 1e30, f.max, np.inf, np.nan,
    ]  # fmt: skip
    v = np.asarray(v, dtype)
    return np.concatenate([v, -v])


DTYPES = [np.float32, np.float64]


def _same(a, b) -> None:
    # bit for bit, except the sign of a zero; NaN matches NaN
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype
    assert np.array_equal(a, b, equal_nan=True), np.flatnonzero(~((a == b) | (np.isnan(a) & np.isnan(b))))


def _pairs(dtype):
    v = _special(dtype)
    x, t = (np.asarray(g) for g in zip(*itertools.product(v, v)))
    return x, t


@pytest.mark.parametrize("dtype", DTYPES)
def test_softplus_value_is_jax_softplus(dtype):
    with jax.enable_x64(dtype == np.float64):
        x = _special(dtype)
        _same(jax.jit(E._softplus_value)(x), jax.jit(jax.nn.softplus)(x))
        _same(jax.jit(E.softplus_)(x), jax.jit(jax.nn.softplus)(x))
        _same(jax.jit(E.log_sigmoid_)(x), jax.jit(jax.nn.log_sigmoid)(x))


def _vgrad(f, argnum, *args):
    return jax.jit(jax.vmap(jax.grad(f, argnums=argnum)))(*args)


def _vgrad2(f, argnum, *args):
    return jax.jit(jax.vmap(jax.grad(jax.grad(f, argnums=argnum), argnums=argnum)))(*args)


@pytest.mark.parametrize(
    "fast, reference, arity",
    [
        (E.softplus_, jax.nn.softplus, 1),
        (E.log_sigmoid_, jax.nn.log_sigmoid, 1),
        (lambda x, t: E.softplus_(x * t), lambda x, t: jax.nn.softplus(x * t), 2),
    ],
    ids=["softplus", "log_sigmoid", "softplus_of_product"],
)
def test_fused_derivatives_are_the_references(fast, reference, arity):
    # First and second derivatives, with respect to each argument alone (the others
    # then have no tangent) and, for two arguments, jointly.
    with jax.enable_x64(True):
        args = _pairs(np.float64) if arity == 2 else (_special(np.float64),)
        for argnum in range(arity):
            _same(_vgrad(fast, argnum, *args), _vgrad(reference, argnum, *args))
            _same(_vgrad2(fast, argnum, *args), _vgrad2(reference, argnum, *args))
        if arity == 2:
            for a, b in zip(_vgrad(fast, (0, 1), *args), _vgrad(reference, (0, 1), *args)):
                _same(a, b)
        # forward mode
        tangents = tuple(np.ones_like(a) for a in args)
        _same(jax.jvp(fast, args, tangents)[1], jax.jvp(reference, args, tangents)[1])


N = 256  # large enough for XLA:CPU (jax 0.10) to run the reductions as YNNPACK kernels


def _inputs():
    r = np.random.default_rng(0)
    x = r.standard_normal((N, N)).astype(np.float32)
    y = r.standard_normal((N, N)).astype(np.float32)
    t01 = (r.random((N, N)) > 0.5).astype(np.float32)
    logp = np.asarray(jax.nn.log_softmax(x, -1))
    logq = np.asarray(jax.nn.log_softmax(y, -1))
    return x, y, t01, logp, logq


def _fused_cases():
    x, y, t01, logp, logq = _inputs()
    return {
        "soft_margin": (jaxloss.soft_margin_loss, (x, 2 * t01 - 1), {}),
        "bce_with_logits": (jaxloss.binary_cross_entropy_with_logits, (x, t01), {}),
        "bce_with_logits_pos_weight": (
            jaxloss.binary_cross_entropy_with_logits,
            (x, t01),
            {"pos_weight": np.full(N, 2.0, np.float32)},
        ),
        "multilabel_soft_margin": (jaxloss.multilabel_soft_margin_loss, (x, t01), {}),
    }


CASES = _fused_cases()
x, y, _, logp, logq = _inputs()
# Not select-free, but sums that XLA:CPU's fused reductions could get wrong: a
# select-free Stirling term was summed wrongly (see _elementwise).
SUM_CASES = dict(
    CASES,
    kl_div=(jaxloss.kl_div, (logp, np.exp(logq)), {}),
    kl_div_log_target=(jaxloss.kl_div, (logp, logq), {"log_target": True}),
    poisson_full=(jaxloss.poisson_nll_loss, (x, np.abs(y) * 3), {"full": True}),
    poisson_full_probabilities=(jaxloss.poisson_nll_loss, (np.abs(x), np.abs(y) * 3), {"full": True, "log_input": False}),
)
del x, y, logp, logq


@pytest.mark.parametrize("name", sorted(SUM_CASES))
def test_large_sums_are_sums_of_the_elements(name):
    fn, args, kw = SUM_CASES[name]
    none = np.asarray(fn(*args, **kw, reduction="none"), np.float64)
    np.testing.assert_allclose(float(fn(*args, **kw, reduction="sum")), none.sum(), rtol=1e-5)
    np.testing.assert_allclose(float(fn(*args, **kw, reduction="mean")), none.mean(), rtol=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
def test_large_reductions_keep_nan_and_inf(name, special):
    # The sum and mean of the per-element losses are NaN, or infinite of the same sign,
    # exactly where the sum of reduction="none"'s output is: the fused kernels must not
    # drop a NaN (their min/max do) or turn an infinity into something else.
    fn, args, kw = CASES[name]
    for i, a in enumerate(args):
        for pos in [(0, 0), (N // 2, N // 3)]:
            bad = [np.array(b, copy=True) for b in args]
            bad[i][pos] = special
            none = np.asarray(fn(*bad, **kw, reduction="none"), np.float64)
            expected = none.sum()
            for reduction in ("sum", "mean"):
                got = float(fn(*bad, **kw, reduction=reduction))
                assert math.isnan(got) == math.isnan(expected), (i, pos, reduction, got, expected)
                if math.isinf(expected):
                    assert got == (expected if reduction == "sum" else expected), (i, pos, reduction, got)


@pytest.mark.parametrize("name", sorted(CASES))
def test_value_only_program_holds_no_per_element_buffer(name):
    # The point of the select-free forms: a value-only "mean" reads its inputs once and
    # writes no (N, N) array of losses (the selects made XLA:CPU write one out).
    if jax.default_backend() != "cpu":
        # XLA:GPU fuses by its own rules: on an H100 (jax 0.11.2) bce_with_logits with
        # pos_weight and multilabel_soft_margin wrote their (N, N) losses before the
        # reduction with jax.nn.softplus and with softplus_ alike (263168 bytes of temp);
        # bce_with_logits lost its buffer there too (263168 -> 1024 bytes).
        pytest.skip("the fusion this checks is XLA:CPU's")
    fn, args, kw = CASES[name]
    compiled = jax.jit(functools.partial(fn, **kw)).lower(*args).compile()
    stats = compiled.memory_analysis()
    if stats is None:
        pytest.skip("this backend reports no memory analysis")
    assert stats.temp_size_in_bytes < N * N * 4 // 4, stats.temp_size_in_bytes
