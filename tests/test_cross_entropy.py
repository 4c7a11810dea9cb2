"""cross_entropy and nll_loss against torch's golden fixtures and JAX's transformations."""

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
from tests._fixtures import JIT_DTYPE, assert_parity, case_params

REDUCTIONS = ("none", "mean", "sum")


@pytest.mark.parametrize("case", case_params("cross_entropy"))
def test_fixture_parity(case):
    assert_parity(case)


@pytest.fixture
def picked_everywhere(monkeypatch):
    """float32/64 and bf16 "mean"/"sum" calls take the picked-logit shift at every class
    count, not only from 256 classes on (bf16: 2048; 4096 with the class axis not
    last), for fresh traces; the caches are cleared again afterwards."""
    from jaxloss import _cross_entropy as impl

    jax.clear_caches()
    monkeypatch.setattr(impl, "PICKED_MIN_CLASSES_LAST", 1)
    monkeypatch.setattr(impl, "PICKED_MIN_CLASSES_LAST_BF16", 1)
    monkeypatch.setattr(impl, "PICKED_MIN_CLASSES_OTHER", 1)
    yield impl
    jax.clear_caches()


@pytest.fixture(params=["row_max", "picked"])
def either_shift(request, monkeypatch):
    """Both shifts at small class counts: the row max (the default there) and the picked
    logit (as ``picked_everywhere``)."""
    if request.param == "picked":
        yield request.getfixturevalue("picked_everywhere")
    else:
        yield None


@pytest.mark.parametrize("case", case_params("cross_entropy", dtype=JIT_DTYPE))
def test_fixture_parity_under_jit(case, picked_everywhere):
    # Under jit, and with the picked-logit shift forced, so that the torch fixtures (few of
    # which have 256 classes) pin both paths: test_fixture_parity takes the row max.
    assert_parity(case, transform=jax.jit)


def test_picked_shift_from_256_classes_or_4096_off_the_last_axis(monkeypatch):
    """Which calls take the picked-logit shift (a while loop for its fallback, in the
    jaxpr): float32/64 and bf16 class-index "mean"/"sum" with enough classes; on a
    GPU only from 64 MiB of logits. The platform is the default backend's (traced
    from shapes here, so nothing is placed)."""

    def picks(shape, dtype=jnp.float32, reduction="mean"):
        x = jax.ShapeDtypeStruct(shape, dtype)
        t = jax.ShapeDtypeStruct(shape[:1] + shape[2:] if len(shape) > 1 else (), jnp.int32)
        return "while" in str(jax.make_jaxpr(lambda x, t: L.cross_entropy(x, t, reduction=reduction))(x, t))

    for backend in ("cpu", "tpu", "gpu"):
        monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
        jax.clear_caches()  # jit's traces are keyed by shapes, not by the patched backend
        gpu = backend == "gpu"
        assert picks((16384, 1024)) and picks((8192, 4096), jnp.bfloat16)  # 64 MiB
        assert picks((1, 4096, 4096)) and not picks((1, 4095, 4096))
        assert picks((16383, 1024)) != gpu and picks((8191, 4096), jnp.bfloat16) != gpu
    with jax.enable_x64(True):  # (the GPU's rule still: bytes, not elements)
        assert picks((8192, 1024), jnp.float64) and not picks((8191, 1024), jnp.float64)
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    jax.clear_caches()
    assert picks((4, 256)) and picks((256,)) and picks((4, 256), reduction="sum") and picks((4, 2048), jnp.bfloat16)
    assert not picks((4, 255)) and not picks((4, 256), reduction="none") and not picks((4, 2047), jnp.bfloat16)
    assert picks((2, 4096, 3)) and not picks((2, 4095, 3)) and not picks((2, 256, 3))
    with jax.enable_x64(True):
        assert picks((4, 256), jnp.float64) and not picks((4, 256), jnp.float16)
    monkeypatch.undo()
    jax.clear_caches()  # no trace made under a patched backend outlives the test


# ---------------------------------------------------------------------------
# Small seeded inputs.


def _data(seed=0, n=6, c=5, extra=(), dtype=np.float32):
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, c) + extra).astype(dtype)
    t = r.integers(0, c, (n,) + extra).astype(np.int32)
    w = r.uniform(0.2, 2.0, c).astype(dtype)
    e = np.exp(r.standard_normal((n, c) + extra))
    p = (e / e.sum(axis=1, keepdims=True)).astype(dtype)
    return jnp.asarray(x), jnp.asarray(t), jnp.asarray(w), jnp.asarray(p)


def _ignored(t, value=-100):
    return t.at[::3].set(value)


def _reference_ce(x, t, w=None, *, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    """cross_entropy for class indices written from its definition with log_softmax (hand-derived math)."""
    ax = 0 if x.ndim == 1 else 1
    C = x.shape[ax]
    logp = jax.nn.log_softmax(x, axis=ax)
    active = t != ignore_index
    safe = jnp.where(active, t, 0)
    wv = jnp.ones((C,), x.dtype) if w is None else w
    picked = jnp.take_along_axis(logp, jnp.expand_dims(safe, ax), axis=ax).squeeze(ax)
    w_t = jnp.where(active, wv[safe], 0)
    smooth = -jnp.sum(wv.reshape((-1,) + (1,) * (x.ndim - ax - 1)) * logp, axis=ax)
    loss = jnp.where(active, (1 - label_smoothing) * -w_t * picked + label_smoothing / C * smooth, 0)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / w_t.sum()


# ---------------------------------------------------------------------------
# Transformations.

CLASS_OPTIONS = [
    pytest.param({}, id="plain"),
    pytest.param({"weight": True}, id="weight"),
    pytest.param({"ignore": True}, id="ignore"),
    pytest.param({"label_smoothing": 0.1}, id="smoothing"),
    pytest.param({"weight": True, "ignore": True, "label_smoothing": 0.2}, id="all"),
]


def _class_call(opts, fn=L.cross_entropy):
    x, t, w, _ = _data(1)
    if opts.get("ignore"):
        t = _ignored(t)
    kwargs = {k: v for k, v in opts.items() if k not in ("weight", "ignore")}
    args = (x, t, w) if opts.get("weight") else (x, t)

    def call(x, t, w=None, **kw):
        return fn(x, t, weight=w, **kwargs, **kw)

    return call, args


@pytest.mark.parametrize("opts", CLASS_OPTIONS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_jit_matches_eager(opts, reduction):
    call, args = _class_call(opts)
    _checks.assert_jit_matches_eager(call, *args, reduction=reduction)


@pytest.mark.parametrize("opts", CLASS_OPTIONS)
def test_vmap_over_batch_equals_reduction_none(opts):
    call, args = _class_call(opts)
    _checks.assert_vmap_matches_none(call, args, (0, 0, None)[: len(args)])


def test_vmap_probability_targets_equals_reduction_none():
    x, _, w, p = _data(2)
    fn = functools.partial(L.cross_entropy, label_smoothing=0.1)
    _checks.assert_vmap_matches_none(lambda x, p, w, **kw: fn(x, p, weight=w, **kw), (x, p, w), (0, 0, None))


@pytest.mark.parametrize("with_weight", [False, True])
def test_vmap_nll_loss_equals_reduction_none(with_weight):
    x, t, w, _ = _data(3)
    t = _ignored(t)
    args = (jax.nn.log_softmax(x), t) + ((w,) if with_weight else ())
    _checks.assert_vmap_matches_none(
        lambda x, t, w=None, **kw: L.nll_loss(x, t, weight=w, **kw), args, (0, 0, None)[: len(args)]
    )


def test_vmap_of_k_dimensional_losses():
    # vmap over an extra leading axis of (B, N, C, d): each slice is a batched K-dim call.
    r = np.random.default_rng(4)
    x = jnp.asarray(r.standard_normal((3, 4, 5, 2)), jnp.float32)
    t = jnp.asarray(r.integers(0, 5, (3, 4, 2)), jnp.int32).at[0, 0, 0].set(-100)
    got = jax.vmap(lambda x, t: L.cross_entropy(x, t, label_smoothing=0.1))(x, t)
    want = jnp.stack([L.cross_entropy(x[i], t[i], label_smoothing=0.1) for i in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-6)


# ---------------------------------------------------------------------------
# Gradients.


def test_check_grads_float64_every_path():
    # One second-order check over the sum of every configuration (one set of derivative
    # programs to compile). Each term is differentiated in input, weight and (for
    # probability targets) target: the class-index weight gradient is one torch lacks.
    x2, t2, w, p2 = _data(5, n=4, c=4, dtype=np.float64)
    xk, tk, _, pk = _data(6, n=3, c=4, extra=(2,), dtype=np.float64)
    t2i, tki = _ignored(t2), _ignored(tk)

    def total(x2, w, p2, xk, pk):
        ce, nll = L.cross_entropy, L.nll_loss
        return (
            ce(x2, t2)
            + ce(x2, t2i, weight=w, label_smoothing=0.2)
            + ce(xk, tki, weight=w, label_smoothing=0.2, reduction="sum")
            + ce(x2[0], t2[1], weight=w, label_smoothing=0.3)  # unbatched
            + ce(x2[1], p2[1], label_smoothing=0.3)  # unbatched probabilities
            + ce(x2, p2, weight=w, label_smoothing=0.2)
            + ce(xk, pk, weight=w, label_smoothing=0.2, reduction="sum")
            + nll(xk, tki, weight=w)
            + nll(x2, t2, reduction="sum")
        )

    _checks.assert_grads_float64(total, (x2, w, p2, xk, pk))


@pytest.mark.parametrize("opts", CLASS_OPTIONS)
def test_weight_gradient_matches_reference(opts):
    # torch has no weight gradient for class indices: compare with autodiff of the definition.
    with jax.enable_x64(True):
        x, t, w, _ = _data(9, dtype=np.float64)
        if opts.get("ignore"):
            t = _ignored(t)
        eps = opts.get("label_smoothing", 0.0)
        g = jax.grad(lambda w: L.cross_entropy(x, t, weight=w, label_smoothing=eps), )(w)
        ref = jax.grad(lambda w: _reference_ce(x, t, w, label_smoothing=eps))(w)
        np.testing.assert_allclose(g, ref, rtol=1e-10, atol=1e-12)


# Forward mode and second order through the custom_jvp rules.


@pytest.mark.parametrize("opts", CLASS_OPTIONS)
def test_jvp_and_hessian_vector_product_match_reference(opts):
    with jax.enable_x64(True):
        x, t, w, _ = _data(10, dtype=np.float64)
        if opts.get("ignore"):
            t = _ignored(t)
        wt = w if opts.get("weight") else None
        eps = opts.get("label_smoothing", 0.0)
        f = lambda x: L.cross_entropy(x, t, weight=wt, label_smoothing=eps)  # noqa: E731
        ref = lambda x: _reference_ce(x, t, wt, label_smoothing=eps)  # noqa: E731
        v = jnp.asarray(np.random.default_rng(11).standard_normal(x.shape))

        @jax.jit
        def derivatives(x, v):
            h = 1e-6
            tan = jax.jvp(f, (x,), (v,))[1]
            fd = (f(x + h * v) - f(x - h * v)) / (2 * h)  # central difference, O(h^2)
            ref_tan = jax.jvp(ref, (x,), (v,))[1]
            # Hessian-vector products: forward-over-reverse and reverse-over-forward.
            hvp = jax.jvp(jax.grad(f), (x,), (v,))[1]
            hvp_ref = jax.jvp(jax.grad(ref), (x,), (v,))[1]
            rof = jax.grad(lambda x: jax.jvp(f, (x,), (v,))[1])(x)
            gfd = (jax.grad(f)(x + h * v) - jax.grad(f)(x - h * v)) / (2 * h)
            return tan, fd, ref_tan, hvp, hvp_ref, rof, gfd

        tan, fd, ref_tan, hvp, hvp_ref, rof, gfd = derivatives(x, v)
        np.testing.assert_allclose(tan, fd, rtol=1e-6)
        np.testing.assert_allclose(tan, ref_tan, rtol=1e-10)
        np.testing.assert_allclose(hvp, hvp_ref, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(rof, hvp_ref, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(hvp, gfd, rtol=1e-5, atol=1e-8)


def test_hessian_and_jacfwd_match_reference():
    with jax.enable_x64(True):
        x, t, w, p = _data(12, n=3, c=4, dtype=np.float64)
        f = lambda x: L.cross_entropy(x, t, weight=w, label_smoothing=0.1)  # noqa: E731
        ref = lambda x: _reference_ce(x, t, w, label_smoothing=0.1)  # noqa: E731
        none = lambda x: L.cross_entropy(x, t, reduction="none")  # noqa: E731
        probs = lambda x: L.cross_entropy(x, p)  # noqa: E731
        logp_ref = lambda x: -jnp.sum(p * jax.nn.log_softmax(x), axis=1).mean()  # noqa: E731

        @jax.jit
        def all_of_them(x):
            return (
                jax.hessian(f)(x), jax.hessian(ref)(x), jax.jacfwd(none)(x), jax.jacrev(none)(x),
                jax.hessian(probs)(x), jax.hessian(logp_ref)(x),
            )

        h, h_ref, jf, jr, hp, hp_ref = all_of_them(x)
        np.testing.assert_allclose(h, h_ref, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(jf, jr, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(hp, hp_ref, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------
# Masking and edge values.


@pytest.mark.parametrize(
    "fn,opts",
    [
        ("cross_entropy", {}),
        ("cross_entropy", {"weight": True}),
        ("cross_entropy", {"weight": True, "label_smoothing": 0.3}),
        ("nll_loss", {}),
        ("nll_loss", {"weight": True}),
    ],
)
def test_masked_entries_get_exactly_zero_gradients(fn, opts):
    x, t, w, _ = _data(13, extra=(2,))
    t = t.at[1].set(-100).at[4, 0].set(-100)
    # Huge logits in an ignored row must not leak either.
    x = x.at[1].set(jnp.asarray([[1e30, -1e30], [0.0, 1e30], [3.0, -3.0], [1.0, 1.0], [-1e30, 2.0]]))
    kw = {"weight": w} if opts.get("weight") else {}
    if "label_smoothing" in opts:
        kw["label_smoothing"] = opts["label_smoothing"]
    f = getattr(L, fn)
    for reduction in REDUCTIONS:
        g = jax.jit(jax.grad(lambda x: f(x, t, reduction=reduction, **kw).sum()))(x)
        assert bool(jnp.all(jnp.isfinite(g))), reduction
        assert np.array_equal(np.asarray(g[1]), np.zeros_like(g[1])), reduction
        assert np.array_equal(np.asarray(g[4, :, 0]), np.zeros(5, np.float32)), reduction
        assert bool(jnp.any(g[0] != 0))  # unmasked rows do get a gradient


@pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("weighted", [False, True])
def test_all_ignored_mean_nan_sum_zero_grad_zero(fn, weighted):
    x, t, w, _ = _data(14)
    t = jnp.full_like(t, -100)
    kw = {"weight": w} if weighted else {}
    if fn == "cross_entropy":
        kw["label_smoothing"] = 0.1
    f = jax.jit(functools.partial(getattr(L, fn), **kw), static_argnames="reduction")
    assert bool(jnp.isnan(f(x, t, reduction="mean")))
    assert float(f(x, t, reduction="sum")) == 0.0
    np.testing.assert_array_equal(f(x, t, reduction="none"), np.zeros(6, np.float32))
    for reduction in REDUCTIONS:
        g = jax.grad(lambda x: f(x, t, reduction=reduction).sum())(x)
        np.testing.assert_array_equal(g, np.zeros_like(g))


def test_huge_and_neg_inf_logits_stay_finite():
    r = np.random.default_rng(15)
    x = jnp.asarray(r.standard_normal((4, 6)) * 1e4, jnp.float32)
    t = jnp.asarray([0, 1, 2, 3], jnp.int32)
    for kw in ({}, {"label_smoothing": 0.1}, {"weight": jnp.linspace(0.5, 1.5, 6)}):
        v, g = jax.value_and_grad(lambda x: L.cross_entropy(x, t, **kw))(x)
        assert bool(jnp.isfinite(v)) and bool(jnp.all(jnp.isfinite(g))), kw
    # -inf logits away from the target: finite value and gradient, and exactly the
    # loss of the remaining classes (hand-derived: softmax ignores -inf entries).
    y = x.at[:, 5].set(-jnp.inf) / 1e4
    v, g = jax.value_and_grad(lambda x: L.cross_entropy(x, t))(y)
    np.testing.assert_allclose(v, L.cross_entropy(y[:, :5], t), rtol=1e-6)
    assert bool(jnp.all(jnp.isfinite(g))) and bool(jnp.all(g[:, 5] == 0))


# ---------------------------------------------------------------------------
# dtypes.


@pytest.mark.parametrize("low", [jnp.bfloat16, jnp.float16])
def test_low_precision_inputs(low):
    x, t, w, p = _data(16, c=7)
    xl, wl, pl = x.astype(low), w.astype(low), p.astype(low)
    cases = [
        (lambda x: L.cross_entropy(x, t), (xl,), low),
        (lambda x, w: L.cross_entropy(x, _ignored(t), weight=w, label_smoothing=0.1), (xl, wl), low),
        (lambda x, p: L.cross_entropy(x, p, label_smoothing=0.1), (xl, pl), low),
        (lambda x: L.nll_loss(x, t), (jax.nn.log_softmax(x).astype(low),), low),
        # Mixed precision promotes as torch's type promotion would (torch's kernel refuses it).
        (lambda x, w: L.cross_entropy(x, t, weight=w), (xl, w), jnp.float32),
    ]
    for fn, args, expected in cases:
        _checks.assert_low_precision(fn, args, expected)
        g = jax.jit(jax.grad(lambda *a: fn(*a).astype(jnp.float32)))(*args)
        assert g.dtype == args[0].dtype and bool(jnp.all(jnp.isfinite(g.astype(jnp.float32))))


@pytest.mark.parametrize("low", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("smoothing", [None, 0.1])
def test_low_precision_gradient_is_the_rounded_float32_gradient(low, smoothing):
    # The narrow-input backward widens x by its bits (bf16) or behind a barrier
    # (f16) and computes in float32: the gradient must be the float32 gradient of
    # the same (widened) logits, rounded to the input dtype. The softmax term, the
    # picked-logit term and the smoothing term reach x as separate cotangents, each
    # rounded to the input dtype before they are added: 2 ulp of the value, and an
    # absolute ulp of the largest term where the terms cancel (smoothing).
    x, t, w, _ = _data(16, c=7)
    xl = (x * 3).astype(low)
    kw = {"label_smoothing": smoothing} if smoothing else {}
    f = lambda x: L.cross_entropy(x, _ignored(t), weight=w, **kw).astype(jnp.float32)  # noqa: E731
    g = jax.jit(jax.grad(f))(xl)
    ref = jax.grad(f)(xl.astype(jnp.float32))
    assert g.dtype == low
    ulp = float(jnp.finfo(low).eps)
    np.testing.assert_allclose(np.asarray(g, np.float32), ref, rtol=2 * ulp, atol=ulp * float(jnp.max(jnp.abs(ref))))
    # Forward mode and a Hessian-vector product through the narrow path agree with float32 too.
    v = jnp.asarray(np.random.default_rng(3).standard_normal(x.shape), low)
    _, tan = jax.jvp(f, (xl,), (v,))
    _, tan_ref = jax.jvp(f, (xl.astype(jnp.float32),), (v.astype(jnp.float32),))
    np.testing.assert_allclose(tan, tan_ref, rtol=4 * ulp)
    hvp = jax.jvp(jax.grad(f), (xl,), (v,))[1]
    hvp_ref = jax.jvp(jax.grad(f), (xl.astype(jnp.float32),), (v.astype(jnp.float32),))[1]
    np.testing.assert_allclose(np.asarray(hvp, np.float32), hvp_ref, rtol=4 * ulp, atol=4 * ulp * float(jnp.max(jnp.abs(hvp_ref))))


# bf16 logits, "mean"/"sum": the gradient is written out and rounded once (_bf16_total).

_BF16_LAYOUTS = {"2d": (6, 5, ()), "kdim": (3, 5, (4,)), "unbatched": (None, 7, ())}


def _bf16_case(layout, seed=0):
    n, c, extra = _BF16_LAYOUTS[layout]
    x, t, w, _ = _data(seed, n=n or 1, c=c, extra=extra)
    t = _ignored(t) if n else t
    if n is None:
        x, t = x[0], t[0]
    return (x * 3).astype(jnp.bfloat16), t, w


@pytest.mark.parametrize("layout", sorted(_BF16_LAYOUTS))
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [None, 0.3])
def test_bf16_gradient_is_the_float32_gradient_rounded_once(layout, reduction, weighted, smoothing):
    """The bf16 gradient equals the float32 gradient of the same (widened) logits,
    rounded to bf16 once: within half an ulp of bf16 plus float32 noise (the written-out
    formula and autodiff order their float32 sums differently). The value is the
    float32 value rounded to the result dtype."""
    xl, t, w = _bf16_case(layout)
    kw = {"reduction": reduction, "weight": w if weighted else None}
    if smoothing:
        kw["label_smoothing"] = smoothing
    v, g = jax.jit(jax.value_and_grad(lambda x: L.cross_entropy(x, t, **kw)))(xl)
    v_ref, g_ref = jax.value_and_grad(lambda x: L.cross_entropy(x, t, **kw))(xl.astype(jnp.float32))
    assert g.dtype == jnp.bfloat16 and v.dtype == (jnp.float32 if weighted else jnp.bfloat16)
    np.testing.assert_allclose(np.float32(v), v_ref, rtol=1e-6 if weighted else 2.0**-8)
    err = _bf16_ulps(g, g_ref)
    assert err.max() <= 0.5 + 2.0**-10, err.max()


def _bf16_ulps(g, ref):
    """|g - ref| in units of bf16's spacing at ``ref`` (correct rounding: at most 1/2)."""
    return np.abs(np.asarray(g, np.float64) - np.asarray(ref, np.float64)) / _bf16_spacing(ref)


def _bf16_spacing(ref):
    """bf16's spacing at ``|ref|`` (8 significant bits)."""
    return np.exp2(np.floor(np.log2(np.maximum(np.abs(np.asarray(ref, np.float64)), 1e-38))) - 7)


@pytest.mark.parametrize("layout", sorted(_BF16_LAYOUTS))
def test_bf16_written_out_gradient_keeps_every_derivative(layout, either_shift):
    """Through _bf16_total: gradients w.r.t. weight and label_smoothing, a cotangent
    other than 1 (a second rounding: within 1.5 ulp), forward mode, vmap(grad) and a
    Hessian-vector product all agree with the float32 computation."""
    xl, t, w = _bf16_case(layout)
    x32 = xl.astype(jnp.float32)

    def f(x, w, e):
        return L.cross_entropy(x, t, weight=w, label_smoothing=e).astype(jnp.float32)

    e = jnp.float32(0.2)
    gw, ge = jax.jit(jax.grad(f, argnums=(1, 2)))(xl, w, e)
    gw_ref, ge_ref = jax.grad(f, argnums=(1, 2))(x32, w, e)
    np.testing.assert_allclose(gw, gw_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ge, ge_ref, rtol=1e-5, atol=1e-6)

    g3 = jax.jit(jax.grad(lambda x: 3.7 * f(x, w, e)))(xl)
    ref3 = jax.grad(lambda x: 3.7 * f(x, w, e))(x32)
    # Rounded twice (g to bf16, then 3.7 * g): 1/2 ulp of 3.7 * g plus 3.7 times 1/2 ulp
    # of g, which is under one ulp of 3.7 * g: at most 1.5 ulp.
    err = _bf16_ulps(g3, ref3)
    assert err.max() <= 1.5 + 2.0**-10, err.max()

    v = jnp.asarray(np.random.default_rng(5).standard_normal(xl.shape), jnp.bfloat16)
    tw = jnp.asarray(np.random.default_rng(6).standard_normal(w.shape), jnp.float32)
    _, tan = jax.jvp(f, (xl, w, e), (v, tw, jnp.float32(0.5)))
    _, tan_ref = jax.jvp(f, (x32, w, e), (v.astype(jnp.float32), tw, jnp.float32(0.5)))
    np.testing.assert_allclose(tan, tan_ref, rtol=1e-2, atol=1e-2 * float(jnp.abs(tan_ref)))

    hvp = jax.jvp(jax.grad(lambda x: f(x, w, e)), (xl,), (v,))[1]
    hvp_ref = jax.jvp(jax.grad(lambda x: f(x, w, e)), (x32,), (v.astype(jnp.float32),))[1]
    np.testing.assert_allclose(np.asarray(hvp, np.float32), hvp_ref, rtol=2e-2, atol=2e-2 * float(jnp.max(jnp.abs(hvp_ref))))
    # reverse over reverse (the same Hessian-vector product)
    rr = jax.grad(lambda x: jnp.vdot(jax.grad(lambda x: f(x, w, e))(x).astype(jnp.float32), v.astype(jnp.float32)))(xl)
    np.testing.assert_allclose(np.asarray(rr, np.float32), hvp_ref, rtol=2e-2, atol=2e-2 * float(jnp.max(jnp.abs(hvp_ref))))

    batch = jnp.stack([xl, (xl.astype(jnp.float32) * 0.5).astype(jnp.bfloat16)])
    gb = jax.vmap(jax.grad(lambda x: f(x, w, e)))(batch)
    for i in range(2):
        np.testing.assert_array_equal(gb[i], jax.grad(lambda x: f(x, w, e))(batch[i]))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_bf16_written_out_gradient_edge_cases_match_autodiff(reduction, either_shift):
    """Every target ignored (mean: 0/0), a zero total weight over kept targets, and an
    out-of-range target inside jit: the value and where the gradient is NaN or exactly
    zero are those of autodiff of the per-sample losses; the finite gradient is the
    float32 one rounded once (autodiff rounds each term apart: up to a few ulp off)."""
    from jaxloss import _cross_entropy as impl

    x, t, w, _ = _data(3, n=4, c=5)
    xl = (x * 3).astype(jnp.bfloat16)
    w0 = w.at[t].set(0.0)
    cases = [
        (jnp.full_like(t, -100), None, 0.1),
        (t, w0, None),
        (t, w0, 0.1),
        (t.at[1].set(9), w, 0.1),
    ]
    for tgt, wt, e in cases:
        kw = {"ignore_index": -100, "reduction": reduction, "out_dtype": jnp.dtype(jnp.float32 if wt is not None else jnp.bfloat16)}
        new = jax.jit(jax.value_and_grad(lambda x: impl._bf16_total(tuple(kw.values()), x, tgt, wt, e).astype(jnp.float32)))(xl)
        old = jax.jit(jax.value_and_grad(lambda x: impl._indices_total(x, tgt, wt, e, **kw).astype(jnp.float32)))(xl)
        np.testing.assert_array_equal(np.isnan(np.asarray(new[0])), np.isnan(np.asarray(old[0])))
        if not np.isnan(old[0]):
            np.testing.assert_allclose(new[0], old[0], rtol=1e-6)
        gn, go = np.asarray(new[1], np.float32), np.asarray(old[1], np.float32)
        np.testing.assert_array_equal(np.isnan(gn), np.isnan(go))
        np.testing.assert_array_equal(gn == 0, go == 0)
        g32 = jax.grad(lambda x: impl._indices_total(x, tgt, wt, e, **{**kw, "out_dtype": jnp.dtype(jnp.float32)}))(
            xl.astype(jnp.float32)
        )
        finite = np.isfinite(gn) & (gn != 0)
        assert _bf16_ulps(gn[finite], np.asarray(g32)[finite]).max(initial=0) <= 0.5 + 2.0**-10


@pytest.mark.parametrize("layout", ["2d", "kdim"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bf16_weight_smoothing_neginf_logit(layout, reduction):
    """bf16 logits with a class weight, label smoothing and -inf logits: the smoothing
    term holds w_c * (-inf), so the loss is +inf where the weight is positive and NaN
    where it is 0 (0 * inf), as in float32 (pinned to torch by the 2d_neginf fixtures)
    and in torch; the gradient stays finite (p_c = 0 there). The weights are exact in
    bf16, so the weighted sum's lower split terms are 0 (they gave 0 * -inf = NaN)."""
    x, t, _, _ = _data(7, n=4, c=5, extra=(3,) if layout == "kdim" else ())
    x = (x * 3).at[0, 1].set(-jnp.inf).at[2, 3].set(-jnp.inf)  # class 1 / 3 at sample 0 / 2
    t = t.at[0].set(2).at[2].set(4)
    xl = x.astype(jnp.bfloat16)
    w = jnp.array([0.5, 1.0, 2.0, 0.0, 1.5], jnp.float32)  # class 3 weighs 0
    kw = {"weight": w, "label_smoothing": 0.1, "reduction": reduction}
    f = lambda x: L.cross_entropy(x, t, **kw)  # noqa: E731
    v = np.asarray(jax.jit(f)(xl))
    v_ref = np.asarray(f(xl.astype(jnp.float32)))
    if reduction == "none":
        first = v.reshape(4, -1)[:, 0]
        assert first[0] == np.inf and np.isnan(first[2])  # weight 1 -> inf; weight 0 -> NaN
        finite = np.isfinite(v_ref)
        np.testing.assert_array_equal(np.isnan(v), np.isnan(v_ref))
        np.testing.assert_array_equal(np.isinf(v), np.isinf(v_ref))
        np.testing.assert_allclose(v[finite], v_ref[finite], rtol=1e-6)
    else:
        assert np.isnan(v) and np.isnan(v_ref)  # the NaN sample carries into the total
        f0 = lambda x: L.cross_entropy(x[:2], t[:2], **kw)  # noqa: E731  (no zero-weight -inf)
        assert float(jax.jit(f0)(xl)) == np.inf == float(f0(xl.astype(jnp.float32)))
    g = jax.jit(jax.grad(lambda x: jnp.sum(f(x))))(xl)
    g_ref = jax.grad(lambda x: jnp.sum(f(x)))(xl.astype(jnp.float32))
    assert bool(jnp.all(jnp.isfinite(g_ref)))
    if reduction == "none":  # autodiff: each term rounded apart, as test_low_precision_gradient_...
        ulp = 2.0**-7
        np.testing.assert_allclose(np.asarray(g, np.float32), g_ref, rtol=2 * ulp, atol=ulp * float(jnp.max(jnp.abs(g_ref))))
    else:  # the written-out gradient, rounded once: half an ulp, plus float32 noise where
        # the smoothing term cancels the softmax term (a few float32 ulps of the largest term)
        diff = np.abs(np.asarray(g, np.float64) - np.asarray(g_ref, np.float64))
        assert np.all(diff <= 0.5 * _bf16_spacing(g_ref) + 2.0**-20 * float(jnp.max(jnp.abs(g_ref))))


def test_round_to_bf16_is_the_convert():
    from jaxloss import _cross_entropy as impl

    r = np.random.default_rng(11)
    bits = r.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    special = np.array([0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001, 0x7F7FFFFF, 0x00000001, 0x80000000,
                        0x3F808000, 0x3F818000, 0x3F807FFF, 0x7F7F8000], dtype=np.uint32)
    f = jnp.asarray(np.concatenate([bits, special]).view(np.float32))
    got, want = jax.jit(impl._round_to_bf16)(f), f.astype(jnp.bfloat16)
    same = (np.asarray(got).view(np.uint16) == np.asarray(want).view(np.uint16)) | (np.isnan(np.asarray(got, np.float32)) & np.isnan(np.asarray(want, np.float32)))
    assert same.all(), np.asarray(f)[~same][:5]


def test_low_precision_huge_logits_accumulate_in_float32():
    # 4096 classes of bf16 logits: a bf16 sum of exp would lose the value entirely.
    r = np.random.default_rng(17)
    x = jnp.asarray(r.standard_normal((2, 4096)) * 30, jnp.bfloat16)
    t = jnp.asarray([3, 4000], jnp.int32)
    out = L.cross_entropy(x, t, reduction="none")
    ref = L.cross_entropy(x.astype(jnp.float32), t, reduction="none")
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=1e-2)


@pytest.mark.parametrize("dt", [np.int8, np.int16, np.int32, np.uint8, np.int64])
def test_any_integer_target_dtype(dt):
    with jax.enable_x64(True):
        x, t, w, _ = _data(18)
        want = L.cross_entropy(x, t, weight=w, label_smoothing=0.1)
        np.testing.assert_allclose(L.cross_entropy(x, np.asarray(t).astype(dt), weight=w, label_smoothing=0.1), want, rtol=1e-6)
        np.testing.assert_allclose(L.nll_loss(x, np.asarray(t).astype(dt)), L.nll_loss(x, t), rtol=1e-6)


@pytest.mark.parametrize("dt", [jnp.uint8, jnp.int8])
def test_narrow_target_dtype_with_many_classes(dt):
    # More classes than the target dtype can count: nothing may wrap around (C = 300
    # in uint8 is 44; ignore_index -100 in uint8 is 156, a valid class here).
    r = np.random.default_rng(27)
    x = jnp.asarray(r.standard_normal((4, 300)), jnp.float32)
    t = jnp.asarray([0, 156, 255, 44] if dt == jnp.uint8 else [0, 5, 120, 44], jnp.int32)
    for fn in (L.cross_entropy, L.nll_loss):
        v, g = jax.value_and_grad(lambda x: fn(x, t.astype(dt), reduction="sum"))(x)
        v32, g32 = jax.value_and_grad(lambda x: fn(x, t, reduction="sum"))(x)
        np.testing.assert_allclose(v, v32, rtol=1e-6)
        np.testing.assert_allclose(g, g32, rtol=1e-6, atol=1e-9)


def test_uint8_target_with_negative_ignore_index_is_never_ignored():
    # A uint8 target cannot hold -100: nothing is ignored (torch behaves the same way).
    x, t, _, _ = _data(19)
    np.testing.assert_allclose(L.cross_entropy(x, t.astype(jnp.uint8)), L.cross_entropy(x, t), rtol=1e-6)


# ---------------------------------------------------------------------------
# Traced hyper-parameter and shapes.


def test_label_smoothing_is_traced_without_retrace():
    x, t, w, p = _data(20)
    _checks.assert_hyperparameter_is_traced(
        lambda v: L.cross_entropy(x, _ignored(t), weight=w, label_smoothing=v), [0.0, 0.1, 0.7]
    )
    _checks.assert_hyperparameter_is_traced(lambda v: L.cross_entropy(x, p, label_smoothing=v), [0.0, 0.1, 1.0])


@pytest.mark.parametrize(
    "xshape,tshape",
    [((5,), ()), ((6, 5), (6,)), ((3, 5, 4), (3, 4)), ((2, 5, 3, 2), (2, 3, 2))],
    ids=["1d", "2d", "3d", "4d"],
)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_output_shapes(xshape, tshape, reduction):
    r = np.random.default_rng(21)
    x = jnp.asarray(r.standard_normal(xshape), jnp.float32)
    t = jnp.asarray(r.integers(0, 5, tshape), jnp.int32)
    p = jax.nn.softmax(jnp.asarray(r.standard_normal(xshape), jnp.float32), axis=0 if len(xshape) == 1 else 1)
    want = tshape if reduction == "none" else ()
    for out in (
        L.cross_entropy(x, t, reduction=reduction, label_smoothing=0.1),
        L.cross_entropy(x, p, reduction=reduction),
        L.nll_loss(x, t, reduction=reduction),
    ):
        chex.assert_shape(out, want)
        chex.assert_type(out, jnp.float32)


# ---------------------------------------------------------------------------
# Bad input.


def test_out_of_range_index_concrete_raises():
    x, t, _, _ = _data(22)
    for bad in (5, -1, -7):
        tb = t.at[2].set(bad)
        with pytest.raises(ValueError, match=r"target: class indices must be in \[0, 5\)"):
            L.cross_entropy(x, tb)
        with pytest.raises(ValueError, match=r"target: class indices must be in \[0, 5\)"):
            L.nll_loss(x, tb)
    # A negative index equal to ignore_index is fine; another negative one is not.
    assert bool(jnp.isfinite(L.cross_entropy(x, t.at[2].set(-1), ignore_index=-1)))
    with pytest.raises(ValueError, match="ignore_index=-1"):
        L.cross_entropy(x, t.at[2].set(-2), ignore_index=-1)


@pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_out_of_range_index_in_jit_is_nan(fn, reduction):
    x, t, w, _ = _data(23)
    f = jax.jit(lambda x, t: getattr(L, fn)(x, t, weight=w, reduction=reduction))
    for bad in (5, -1, 127):
        out = f(x, t.at[2].set(bad))
        assert bool(jnp.any(jnp.isnan(out))), bad
        if reduction == "none":
            # Only the bad entry is NaN; the others keep their values.
            assert bool(jnp.all(jnp.isfinite(jnp.delete(out, 2))))


@pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss"])
def test_checkify_reports_out_of_range_index(fn):
    x, t, _, _ = _data(24)
    checked = checkify.checkify(jax.jit(getattr(L, fn)))
    err, out = checked(x, t.at[3].set(9))
    with pytest.raises(checkify.JaxRuntimeError, match=r"target: class index out of range \[0, 5\)"):
        err.throw()
    err, out = checked(x, t.at[3].set(-100))
    err.throw()  # ignored entries are not errors
    assert bool(jnp.isfinite(out))


@pytest.mark.parametrize("layout", ["class_last", "kdim", "lce_fused", "lce_checkpoint", "lce_tiled"])
def test_traced_zero_smoothing_with_masked_logits(layout):
    """A label_smoothing of 0 given as an array or traced (a schedule reaching 0) equals
    the Python 0.0 path, torch's, also with -inf logits (masked classes): the smoothing
    term is 0, not 0 * inf = NaN. Its gradients and forward-mode tangents match too."""
    r = np.random.default_rng(12)
    if layout.startswith("lce"):
        method = layout[4:]
        h = jnp.asarray(r.standard_normal((5, 3)), jnp.float32)
        W = jnp.asarray(r.standard_normal((4, 3)), jnp.float32)
        bias = jnp.array([0.0, -jnp.inf, 0.5, 0.0])  # class 1 masked
        t = jnp.array([0, 2, 3, 0, -100])
        chunk = (2, 3) if method == "tiled" else 2

        def f(h, eps, reduction):
            kw = {} if eps is None else {"label_smoothing": eps}
            return L.linear_cross_entropy(h, W, t, linear_bias=bias, reduction=reduction, method=method, chunk_size=chunk, **kw)
    else:
        shape = (5, 4) if layout == "class_last" else (5, 4, 3)
        x0 = jnp.asarray(r.standard_normal(shape), jnp.float32)
        h = x0.at[:, 1].set(-jnp.inf).at[0, 3].set(-jnp.inf)
        t = jnp.asarray(r.choice([0, 2], shape[:1] + shape[2:]))

        def f(x, eps, reduction):
            kw = {} if eps is None else {"label_smoothing": eps}
            return L.cross_entropy(x, t, reduction=reduction, **kw)

    for reduction in ("none", "mean", "sum"):
        want = f(h, None, reduction)
        assert bool(jnp.all(jnp.isfinite(want)))
        for got in (f(h, jnp.float32(0.0), reduction), jax.jit(lambda e: f(h, e, reduction))(0.0)):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)
    ref = lambda h: f(h, None, "sum")  # noqa: E731
    traced = jax.jit(lambda h, e: f(h, e, "sum"))
    finite = h if layout.startswith("lce") else x0  # (an input without the masked logits)
    g_want, g_got = jax.grad(ref)(finite), jax.grad(traced)(finite, 0.0)
    np.testing.assert_allclose(np.asarray(g_got), np.asarray(g_want), rtol=1e-5, atol=1e-7)
    if not layout.startswith("lce"):  # gradients and tangents at the masked logits themselves
        g_want, g_got = jax.grad(ref)(h), jax.grad(traced)(h, 0.0)
        np.testing.assert_allclose(np.asarray(g_got), np.asarray(g_want), rtol=1e-5, atol=1e-7)
        tangent = jnp.asarray(r.standard_normal(h.shape), jnp.float32)
        _, t_want = jax.jvp(ref, (h,), (tangent,))
        _, t_got = jax.jvp(lambda h: traced(h, 0.0), (h,), (tangent,))
        np.testing.assert_allclose(float(t_got), float(t_want), rtol=1e-5)


def test_ignore_index_as_torch_takes_it():
    """torch takes a 0-d integer tensor as ignore_index, and a negative ignore_index
    with probability targets (it has no effect there; one >= 0 raises in both)."""
    ce, nll = L.cross_entropy, L.nll_loss
    r = np.random.default_rng(11)
    x = jnp.asarray(r.standard_normal((4, 5)), jnp.float32)
    t = jnp.array([0, 2, 2, 4])
    want = ce(x, t, ignore_index=2)
    assert float(want) != float(ce(x, t))  # the ignored targets change the mean
    for idx in (jnp.int32(2), jnp.asarray(2, jnp.uint8), np.int64(2), np.asarray(2, np.uint8)):
        np.testing.assert_array_equal(np.asarray(ce(x, t, ignore_index=idx)), np.asarray(want))
        np.testing.assert_array_equal(np.asarray(nll(jax.nn.log_softmax(x), t, ignore_index=idx)), np.asarray(nll(jax.nn.log_softmax(x), t, ignore_index=2)))
    W = jnp.asarray(r.standard_normal((5, 3)), jnp.float32)
    h = jnp.asarray(r.standard_normal((4, 3)), jnp.float32)
    got = L.linear_cross_entropy(h, W, t, ignore_index=jnp.int32(2))
    np.testing.assert_allclose(float(got), float(ce(h @ W.T, t, ignore_index=2)), rtol=1e-6)
    p = jax.nn.softmax(jnp.asarray(r.standard_normal((4, 5)), jnp.float32))
    for idx in (-1, -100, -7):
        np.testing.assert_array_equal(np.asarray(ce(x, p, ignore_index=idx, label_smoothing=0.1)), np.asarray(ce(x, p, label_smoothing=0.1)))
    with pytest.raises(ValueError, match=r"ignore_index: only applies to class-index targets, got ignore_index=0"):
        ce(x, p, ignore_index=0)


def test_bad_inputs_raise_naming_the_argument():
    x, t, w, p = _data(25)
    ce, nll = L.cross_entropy, L.nll_loss
    bad = [
        (ValueError, r"input: expected at least 1 dimensions", lambda: ce(jnp.float32(1.0), t)),
        (ValueError, r"input: expected at least 1 dimensions", lambda: nll(jnp.float32(1.0), t)),
        (TypeError, r"input: expected a floating-point array", lambda: ce(t, t)),
        (ValueError, r"target: expected shape \(6,\) for input \(6, 5\), got \(5,\)", lambda: ce(x, t[:5])),
        (ValueError, r"target: expected shape \(6,\) for input \(6, 5\), got \(6, 1\)", lambda: nll(x, t[:, None])),
        (TypeError, r"target: class-index targets must be integers, got dtype float32", lambda: ce(x, t.astype(jnp.float32))),
        (TypeError, r"target: .*nll_loss takes class indices only", lambda: nll(x, p)),
        (TypeError, r"target: class probabilities must be floating, got dtype int32", lambda: ce(x, jnp.zeros((6, 5), jnp.int32))),
        (TypeError, r"must have the input's shape \(6, 5\)", lambda: ce(x, p[:, :4])),
        (ValueError, r"weight: expected shape \(5,\)", lambda: ce(x, t, weight=w[:4])),
        (ValueError, r"weight: expected shape \(5,\)", lambda: ce(x, p, weight=w[:4])),
        (ValueError, r"weight: expected shape \(5,\)", lambda: nll(x, t, weight=w[None])),
        (TypeError, r"weight: expected a floating-point array", lambda: ce(x, t, weight=jnp.ones(5, jnp.int32))),
        (ValueError, r"reduction: expected one of 'none', 'mean', 'sum', got 'avg'", lambda: ce(x, t, reduction="avg")),
        (ValueError, r"reduction: expected one of", lambda: nll(x, t, reduction="batchmean")),
        (ValueError, r"label_smoothing: expected a value in \[0.0, 1.0\], got 1.5", lambda: ce(x, t, label_smoothing=1.5)),
        (ValueError, r"label_smoothing: expected a value in \[0.0, 1.0\], got -0.1", lambda: ce(x, p, label_smoothing=-0.1)),
        (ValueError, r"label_smoothing: expected a value in", lambda: ce(x, t, label_smoothing=jnp.float32(2.0))),
        (TypeError, r"label_smoothing: expected a real scalar", lambda: ce(x, t, label_smoothing=jnp.zeros(2))),
        (ValueError, r"ignore_index: only applies to class-index targets", lambda: ce(x, p, ignore_index=0)),
        (TypeError, r"ignore_index: expected a Python int", lambda: ce(x, t, ignore_index=0.5)),
        (TypeError, r"ignore_index: expected a Python int", lambda: nll(x, t, ignore_index=jnp.zeros(2, jnp.int32))),
        (TypeError, r"ignore_index: expected a Python int", lambda: nll(x, t, ignore_index=np.float32(1))),
        (TypeError, r"ignore_index: .* got a traced array", lambda: jax.jit(lambda i: nll(x, t, ignore_index=i))(0)),
    ]
    for exc, match, call in bad:
        with pytest.raises(exc, match=match):
            call()


def test_class_weight_must_be_one_dimensional_with_spatial_targets_too():
    # torch's K-dimensional class-index path checks only that weight has C entries, so it
    # takes (C, 1), (1, C) or (2, 3) for C=6 without smoothing, and fails inside with it
    # (README, differences found by fuzzing). jaxloss asks for (C,) on every path.
    r = np.random.default_rng(29)
    x = jnp.asarray(r.standard_normal((3, 6, 2)), jnp.float32)
    t = jnp.asarray(r.integers(0, 6, (3, 2)))
    h = jnp.asarray(r.standard_normal((3, 4)), jnp.float32)
    W = jnp.asarray(r.standard_normal((6, 2, 4)), jnp.float32)
    for shape in ((6, 1), (1, 6), (2, 3)):
        w = jnp.ones(shape, jnp.float32)
        calls = (
            lambda: L.cross_entropy(x, t, weight=w),
            lambda: L.nll_loss(x, t, weight=w),
            lambda: L.linear_cross_entropy(h, W, t, weight=w),
        )
        for call in calls:
            with pytest.raises(ValueError, match=r"weight: expected shape \(6,\) \(one per class, C=6\), got"):
                call()
    try:
        import torch
    except ImportError:
        return
    tx, tt, tw = torch.tensor(np.asarray(x)), torch.tensor(np.asarray(t, np.int64)), torch.rand(6, 1)
    got = torch.nn.functional.cross_entropy(tx, tt, weight=tw)
    want = L.cross_entropy(x, t, weight=jnp.asarray(tw.numpy()).reshape(6))
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
    with pytest.raises(RuntimeError):
        torch.nn.functional.cross_entropy(tx, tt, weight=tw, label_smoothing=0.1)


def test_unbatched_input_takes_a_one_element_target_as_the_scalar():
    # torch's forward accepts a (1,) target for (C,) input and returns the scalar
    # target's loss (the fixtures hold its values; torch's backward raises for it, so
    # the gradients here are compared with the scalar target's), and rejects (2,).
    x = jax.random.normal(jax.random.key(27), (5,))
    w = jax.random.uniform(jax.random.key(28), (5,)) + 0.1
    for fn in (L.cross_entropy, L.nll_loss):
        for reduction in ("none", "mean", "sum"):
            for t in (2, -100):
                one = lambda x, w: fn(x, jnp.array([t]), weight=w, reduction=reduction)
                scalar = lambda x, w: fn(x, jnp.array(t), weight=w, reduction=reduction)
                assert one(x, w).shape == ()
                np.testing.assert_array_equal(one(x, w), scalar(x, w))
                for a, b in zip(jax.jacrev(one, (0, 1))(x, w), jax.jacrev(scalar, (0, 1))(x, w)):
                    np.testing.assert_array_equal(a, b)
        with pytest.raises(ValueError, match=r"target: expected shape \(\) for input \(5,\), got \(2,\)"):
            fn(x, jnp.array([1, 2]))
    # As in torch, cross_entropy reads a (1,) integer target of a one-class (1,) input
    # as misdtyped probabilities; nll_loss takes it as a class index.
    with pytest.raises(TypeError, match="target: class probabilities must be floating"):
        L.cross_entropy(x[:1], jnp.array([0]))
    np.testing.assert_array_equal(L.nll_loss(x[:1], jnp.array([0])), -x[0])


def test_shape_errors_fire_at_trace_time_inside_jit():
    x, t, w, _ = _data(26)
    with pytest.raises(ValueError, match=r"target: expected shape \(6,\)"):
        jax.jit(L.cross_entropy)(x, t[:4])
    with pytest.raises(ValueError, match=r"weight: expected shape \(5,\)"):
        jax.jit(lambda x, t, w: L.nll_loss(x, t, weight=w))(x, t, w[:3])
    # Traced label_smoothing outside [0, 1] cannot raise; it is documented, not checked.
    assert bool(jnp.isfinite(jax.jit(lambda e: L.cross_entropy(x, t, label_smoothing=e))(0.5)))


@pytest.mark.parametrize("options", [{}, {"weight": 1}, {"label_smoothing": 0.1}, {"weight": 1, "label_smoothing": 0.1}])
@pytest.mark.parametrize("extra", [(), (8,)])
def test_bf16_gradient_holds_no_float32_copy_of_the_logits(options, extra):
    # XLA's own buffer accounting (no timing): the bf16 value_and_grad must not hold
    # a float32 (N, C) copy of the logits (the bit-level gather and widening avoid it),
    # nor a broadcast class weight or a shared float32 convert (the smoothing sum).
    x, temp = _value_and_grad_temp_bytes(jnp.bfloat16, options, extra)
    assert temp < x.size * 4 // 4, temp


def _value_and_grad_temp_bytes(dtype, options, extra, N=256, C=4096):
    """(the logits' shape, XLA's temp bytes of cross_entropy's jitted value_and_grad) for
    ``(N, C) + extra`` logits of ``dtype`` with ``options`` (a ``"weight"`` key: a
    float32 class weight), compiled from shapes alone."""
    x, y = jax.ShapeDtypeStruct((N, C) + extra, dtype), jax.ShapeDtypeStruct((N,) + extra, jnp.int32)
    w = jax.ShapeDtypeStruct((C,), jnp.float32)
    kw = dict(options)
    f = jax.jit(jax.value_and_grad(lambda x, y, w: L.cross_entropy(x, y, **{**kw, **({"weight": w} if "weight" in kw else {})})))
    return x, f.lower(x, y, w).compile().memory_analysis().temp_size_in_bytes


# --------------------------------------------- long class axes: two-stage reductions


def _split_small(monkeypatch):
    """Make 'long' mean more than 8 classes, in pieces of at least 2, for fresh traces."""
    from jaxloss import _cross_entropy as impl

    jax.clear_caches()
    monkeypatch.setattr(impl, "LONG_ROW", 8)
    monkeypatch.setattr(impl, "MIN_PIECE", 2)
    return impl


@pytest.mark.parametrize("C,split", [(24, True), (8, False), (23, False)])
@pytest.mark.parametrize("ax", [1, 2])
def test_class_reduce_in_two_stages_equals_one(monkeypatch, C, split, ax):
    """24 classes: 3 pieces of 8; 8 classes are not long; 23 (prime) cannot be split."""
    impl = _split_small(monkeypatch)
    shape = (3, C, 2) if ax == 1 else (3, 2, C)
    x = jnp.asarray(np.random.default_rng(0).standard_normal(shape))
    with jax.enable_x64(True):
        x = x.astype(jnp.float64)
        for reducer in (jnp.sum, jnp.max):
            got = impl._class_reduce(reducer, x, ax)
            np.testing.assert_allclose(np.asarray(got), np.asarray(reducer(x, axis=ax, keepdims=True)), rtol=1e-14)
            barrier = "optimization_barrier" in str(jax.make_jaxpr(lambda v, r=reducer: impl._class_reduce(r, v, ax))(x))
            assert barrier == split, (C, reducer)
    jax.clear_caches()


@pytest.mark.parametrize("C,split", [(24, True), (8, False), (23, False)])
@pytest.mark.parametrize("ax", [1, 2])
@pytest.mark.parametrize("dtype", ["float64", "bfloat16"])
def test_exp_sum_in_two_stages(monkeypatch, C, split, ax, dtype):
    """_exp_sum: the class sum of exp(x - m), equal to the direct formula; when split,
    the exponentials are taken in the split shape (m broadcast over the pieces there,
    which XLA:CPU reduces 3.8x faster than a split of exponentials taken whole), so no
    exp in the jaxpr has x's unsplit shape. bf16 is widened to float32."""
    impl = _split_small(monkeypatch)
    shape = (3, C, 2) if ax == 1 else (3, 2, C)
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).standard_normal(shape) * 4, dtype)
        m = jnp.max(x, axis=ax, keepdims=True).astype(jnp.float32 if dtype == "bfloat16" else jnp.float64)
        z = impl._exp_sum(x, m, ax)
        want = np.exp(np.asarray(x, np.float64) - np.asarray(m, np.float64)).sum(axis=ax, keepdims=True)
        assert z.shape == m.shape and z.dtype == m.dtype
        # float32 (from bf16): C exponentials within a few units in the last place each,
        # summed within C units of the float32 rounding
        u = 2.0**-24 if dtype == "bfloat16" else 2.0**-53
        np.testing.assert_allclose(np.asarray(z, np.float64), want, rtol=(C + 8) * u)
        jaxpr = jax.make_jaxpr(lambda v, w: impl._exp_sum(v, w, ax))(x, m)
        exp_shapes = [eq.outvars[0].aval.shape for eq in jaxpr.eqns if eq.primitive.name == "exp"]
        assert len(exp_shapes) == 1 and (exp_shapes[0] != x.shape) == split, exp_shapes
    jax.clear_caches()


def test_two_stage_reductions_keep_values_and_every_derivative(monkeypatch):
    """cross_entropy and linear_cross_entropy with a 'long' class axis (24 classes in 3
    pieces): value, gradient and HVP equal those of the one-stage reduction."""
    with jax.enable_x64(True):
        r = np.random.default_rng(1)
        x = jnp.asarray(r.standard_normal((6, 24)))
        h, W = jnp.asarray(r.standard_normal((6, 5))), jnp.asarray(r.standard_normal((24, 5)))
        y = jnp.asarray(r.integers(0, 24, 6))
        w = jnp.asarray(r.uniform(0.5, 2.0, 24))
        ce = lambda x: L.cross_entropy(x, y, weight=w, label_smoothing=0.1)  # noqa: E731
        lce = lambda h: L.linear_cross_entropy(h, W, y, weight=w, label_smoothing=0.1, chunk_size=4)  # noqa: E731

        def derivatives(f, a):
            v, g = jax.value_and_grad(f)(a)
            direction = jnp.asarray(np.random.default_rng(2).standard_normal(a.shape), a.dtype)
            return v, g, jax.jvp(jax.grad(f), (a,), (direction,))[1]

        def run():
            return [derivatives(ce, x), derivatives(lce, h), derivatives(ce, x.astype(jnp.float32))]

        jax.clear_caches()
        want = run()
        _split_small(monkeypatch)
        got = run()
        jax.clear_caches()
    # Summation order differs: rounding of the largest term is the scale. The precision
    # is the logits' (float32 logits with the float64 weight compute in float32 and
    # return float64): keyed on the output dtype, the float32 call was held to 1e-12,
    # which the GPU's summation order broke by one float32 ulp (2.4e-7 at 3.5, H100).
    for g, w_, logits in zip(got, want, (x, h, x.astype(jnp.float32)), strict=True):
        rtol = 1e-6 if logits.dtype == jnp.float32 else 1e-12
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(w_), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=rtol * float(np.max(np.abs(b))))


def test_ignore_index_beyond_the_target_dtype_with_x64():
    """Found by differential fuzzing against torch: with x64 on, linear_cross_entropy cast
    int64 targets to int32, so a target of 2**32 equal to ignore_index wrapped to class
    0 and was counted. The reference is the mean over the kept rows alone."""
    r = np.random.default_rng(7)
    with jax.enable_x64(True):
        h = jnp.asarray(r.standard_normal((3, 2)))
        W = jnp.asarray(r.standard_normal((3, 2)))
        cases = (
            (np.array([1, 2**32, 0]), 2**32, [0, 2]),  # int64 target equal to an ignore_index beyond int32
            (np.array([1, 2, 0], np.int32), 2**32, [0, 1, 2]),  # no int32 target can equal it
            (np.array([1, 2, 0], np.int8), 300, [0, 1, 2]),  # nor an int8 one 300
            (np.array([1, 2, 0], np.uint8), -100, [0, 1, 2]),  # nor a uint8 one -100
        )
        for y, ii, kept in cases:
            kept = np.asarray(kept)
            want = jax.value_and_grad(lambda h: L.cross_entropy(h[kept] @ W.T, jnp.asarray(y[kept]).astype(int)))(h)
            for chunk in (1, 2, None):
                got = jax.value_and_grad(lambda h: L.linear_cross_entropy(h, W, y, ignore_index=ii, chunk_size=chunk))(h)
                np.testing.assert_allclose(got[0], want[0], rtol=1e-12, err_msg=f"{y.dtype} {ii} {chunk}")
                np.testing.assert_allclose(got[1], want[1], rtol=1e-12, atol=1e-15, err_msg=f"{y.dtype} {ii} {chunk}")
            for fn in (L.cross_entropy, L.nll_loss):
                np.testing.assert_allclose(
                    fn(h @ W.T, y, ignore_index=ii), fn(h[kept] @ W.T, jnp.asarray(y[kept]).astype(int)), rtol=1e-12
                )


def test_integer_ranges_without_x64_and_zero_classes():
    """Found by differential fuzzing against torch (x64 off, JAX's default)."""
    x = jnp.ones((2, 3))
    y = np.array([0, 1])
    # torch accepts an ignore_index no int32 target can equal: nothing is ignored
    for fn in (L.cross_entropy, L.nll_loss):
        np.testing.assert_allclose(fn(x, y, ignore_index=2**31), fn(x, y, ignore_index=-100), rtol=0)
    W = jnp.asarray(np.random.default_rng(3).standard_normal((4, 3)), jnp.float32)
    for ii in (2**31, -(2**40)):
        got = jax.value_and_grad(lambda h: L.linear_cross_entropy(h, W, y, ignore_index=ii, chunk_size=3))(x)
        want = jax.value_and_grad(lambda h: L.linear_cross_entropy(h, W, y, chunk_size=3))(x)
        np.testing.assert_allclose(got[0], want[0], rtol=0)
        np.testing.assert_allclose(got[1], want[1], rtol=0)
    # an int64 index beyond int32 would wrap to another class: an error instead
    with pytest.raises(ValueError, match="target: values beyond int32"):
        L.cross_entropy(x, np.array([0, 2**32 + 1]))
    with pytest.raises(ValueError, match="target: integer out of range"):
        L.cross_entropy(x, [0, 2**32 + 1])
    # no classes
    with pytest.raises(ValueError, match="input: expected at least one class"):
        L.cross_entropy(jnp.zeros((3, 0)), jnp.full(3, -100))
    with pytest.raises(ValueError, match="linear_weight: expected at least one class"):
        L.linear_cross_entropy(jnp.zeros((3, 2)), jnp.zeros((0, 2)), jnp.full(3, -100))


@pytest.mark.parametrize("method", ["fused", "checkpoint", "tiled"])
def test_linear_cross_entropy_zero_class_weight_mean_gradient_is_nan_but_all_ignored_is_zero(method):
    # torch: kept targets whose class weights are all 0 give 0/0, NaN gradients; all targets
    # ignored gives a zero gradient (cross_entropy on the logits does the same).
    h = jnp.array([[1.0, -0.5], [0.3, 0.8]])
    W = jnp.array([[0.5, -1.0], [1.5, 0.2], [-0.3, 0.7]])
    w = jnp.array([0.0, 1.0, 1.0])
    g = jax.grad(lambda h: L.linear_cross_entropy(h, W, jnp.array([0, 0]), weight=w, method=method))(h)
    assert np.all(np.isnan(np.asarray(g)))
    g = jax.grad(lambda h: L.linear_cross_entropy(h, W, jnp.array([-100, -100]), method=method))(h)
    np.testing.assert_array_equal(g, np.zeros((2, 2)))
    ref = jax.grad(lambda h: L.cross_entropy(h @ W.T, jnp.array([0, 0]), weight=w))(h)
    assert np.all(np.isnan(np.asarray(ref)))


@pytest.mark.parametrize("shape", [(4, 1000), (1000,), (4, 1000, 3)], ids=["2d", "unbatched", "kdim"])
def test_label_smoothing_is_shift_invariant_at_large_offsets(shape):
    # softmax (and so every term of the smoothed loss) ignores a common offset; the smoothing
    # sum must not lose it to cancellation (it did with class-last logits: 2e-4 relative at
    # an offset of 1e4 in float32, where torch is within 1e-7)
    r = np.random.default_rng(17)
    x = r.standard_normal(shape).astype(np.float32)
    tshape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    y = jnp.asarray(r.integers(0, 1000, tshape))
    f = lambda x: L.cross_entropy(x, y, label_smoothing=1.0, reduction="none")  # noqa: E731
    # rtol: x + 1e4 rounds each logit to float32's 1e-3 spacing there, which moves the loss by
    # about 2e-6 relative; the cancellation this guards against was 2e-4
    np.testing.assert_allclose(f(jnp.asarray(x + np.float32(1e4))), f(jnp.asarray(x)), rtol=1e-5)


# ------------------------- float32/64 logits, "mean"/"sum": the picked-logit shift (_picked_total)


_PICKED_LAYOUTS = {"2d": (6, 5, ()), "kdim": (3, 5, (4,)), "unbatched": (None, 7, ())}


def _picked_case(layout, seed=0, dtype=np.float64):
    n, c, extra = _PICKED_LAYOUTS[layout]
    x, t, w, _ = _data(seed, n=n or 1, c=c, extra=extra, dtype=dtype)
    t = _ignored(t) if n else t
    if n is None:
        x, t = x[0], t[0]
    return x * 3, t, w


def _overflowing(x, t, gap):
    """``x`` with one logit ``gap`` above the target's logit in one row (the second, which
    ``_ignored`` keeps; for unbatched input, the only one): that row's sum of
    exp(x - target logit) overflows for a gap past about 88 in float32 and 709 in
    float64."""
    C = x.shape[0 if x.ndim == 1 else 1]
    pos = () if x.ndim == 1 else (1,)
    rest = (0,) * max(x.ndim - 2, 0)
    y = int(t[pos + rest])
    return x.at[pos + ((y + 1) % C,) + rest].set(x[pos + (y,) + rest] + gap)


@pytest.mark.parametrize("layout", sorted(_PICKED_LAYOUTS))
@pytest.mark.parametrize("gap", [None, 60.0, 1e3, 1e30], ids=["plain", "gap60", "gap1e3", "gap1e30"])
def test_picked_shift_value_and_gradient_match_log_softmax(layout, gap, picked_everywhere):
    """Value and gradient of the picked-logit path equal those of log_softmax's definition
    (float64), with every option and both reductions, for logits near the target's, for
    a logit 60 above it (a large loss, no overflow in float64), and for gaps of 1e3 and
    1e30, past exp's range: there that row overflows the picked shift's sum and every
    row takes the max-shifted fallback, whose loss stays finite (about the gap)."""
    with jax.enable_x64(True):
        x, t, w = _picked_case(layout)
        if gap is not None:
            x = _overflowing(x, t, gap)
        kept = jnp.where(t == -100, 0, t)
        configs = [
            (tt, w if o.get("weight") else None, o.get("label_smoothing", 0.0), red)
            for o in (p.values[0] for p in CLASS_OPTIONS)
            for tt in ([t] if o.get("ignore") else [kept])
            for red in ("mean", "sum")
        ]

        def all_of(fn):
            return jax.jit(lambda x: [jax.value_and_grad(lambda x: fn(x, tt, wt, e, red))(x) for tt, wt, e, red in configs])

        new = all_of(lambda x, tt, wt, e, red: L.cross_entropy(x, tt, weight=wt, label_smoothing=e, reduction=red))(x)
        values = jax.jit(lambda x: [L.cross_entropy(x, tt, weight=wt, label_smoothing=e, reduction=red) for tt, wt, e, red in configs])(x)
        ref = all_of(lambda x, tt, wt, e, red: _reference_ce(x, tt, wt, label_smoothing=e, reduction=red))(x)
        for (v, g), v1, (v_ref, g_ref), config in zip(new, values, ref, configs):
            assert np.isfinite(v) and np.all(np.isfinite(g)), config
            np.testing.assert_allclose(v, v_ref, rtol=1e-12, err_msg=str(config))
            np.testing.assert_allclose(v1, v_ref, rtol=1e-12, err_msg=str(config))
            np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-13, err_msg=str(config))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_picked_shift_falls_back_where_a_float32_row_overflows(reduction, picked_everywhere):
    """A logit 100 above the target's overflows float32's exp (not float64's): the float32
    value and gradient still match the float64 definition to float32 rounding. Without
    the fallback the value would be inf and the gradient NaN. (float64's overflow is in
    test_picked_shift_value_and_gradient_match_log_softmax.)"""
    x, t, w = _picked_case("2d", dtype=np.float32)
    x = _overflowing(x, t, 100.0)
    with jax.enable_x64(True):
        for wt, eps in ((None, 0.0), (w, 0.2)):
            f = lambda x: L.cross_entropy(x, t, weight=wt, label_smoothing=eps, reduction=reduction)  # noqa: E731
            v, g = jax.jit(jax.value_and_grad(f))(x)
            w64 = None if wt is None else wt.astype(jnp.float64)
            ref = lambda x: _reference_ce(x, t, w64, label_smoothing=eps, reduction=reduction)  # noqa: E731
            v_ref, g_ref = jax.value_and_grad(ref)(x.astype(np.float64))
            tol = 1e-6
            np.testing.assert_allclose(v, v_ref, rtol=tol)
            np.testing.assert_allclose(jax.jit(f)(x), v_ref, rtol=tol)
            # the gradient is float32 throughout (each entry a few roundings of 6e-8 relative,
            # and its sums over the classes), hence 10x the value's rtol
            np.testing.assert_allclose(g, g_ref, rtol=10 * tol, atol=tol * float(np.abs(g_ref).max()))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_picked_shift_bf16_row_overflow_falls_back(reduction, picked_everywhere):
    """bf16 logits with one 100 above the target's (past float32's exp): the value is the
    float32 value of the widened logits and the gradient their float32 gradient rounded
    to bf16 once, as without the shift (without the fallback: inf and NaN)."""
    x, t, w = _picked_case("2d", dtype=np.float32)
    xl = _overflowing(x, t, 100.0).astype(jnp.bfloat16)
    for wt, eps in ((None, 0.0), (w, 0.2)):
        f = lambda x: L.cross_entropy(x, t, weight=wt, label_smoothing=eps, reduction=reduction).astype(jnp.float32)  # noqa: E731
        v, g = jax.jit(jax.value_and_grad(f))(xl)
        v_ref, g_ref = jax.value_and_grad(f)(xl.astype(jnp.float32))
        np.testing.assert_allclose(v, v_ref, rtol=1e-6 if wt is not None else 2.0**-8)
        np.testing.assert_allclose(jax.jit(f)(xl), v_ref, rtol=1e-6 if wt is not None else 2.0**-8)
        assert _bf16_ulps(g, g_ref).max() <= 0.5 + 2.0**-10


def test_picked_shift_non_finite_logits_are_the_max_shifted_path(picked_everywhere):
    """+inf, -inf and NaN logits (at the target or elsewhere), an all-ignored batch, a
    zero total weight and an out-of-range target: value and gradient are those of autodiff of the per-sample
    losses shifted by the row max (pinned to torch by the fixtures), NaN where they are
    NaN and exactly zero where they are zero."""
    impl = picked_everywhere
    x, t, w = _picked_case("2d", dtype=np.float32)
    t = jnp.where(t == -100, 1, t)
    tgt = lambda i: (i, int(t[i]))  # noqa: E731
    all_ignored, zero_weight = jnp.full_like(t, -100), w.at[t].set(0.0)
    cases = [
        (x.at[0, 0].set(jnp.inf), t, None, None, "mean"),
        (x.at[tgt(1)].set(jnp.inf), t, None, 0.1, "sum"),
        (x.at[tgt(2)].set(-jnp.inf), t, w, None, "mean"),
        (x.at[0, 3].set(-jnp.inf), t, w, 0.1, "sum"),
        (x.at[3, 2].set(jnp.nan), t, None, None, "mean"),
        (x, all_ignored, None, 0.1, "mean"),
        (x, all_ignored, None, 0.1, "sum"),
        (x, t, zero_weight, None, "mean"),
        (x, t, zero_weight, 0.1, "sum"),
        (x.at[0, 0].set(jnp.inf), jnp.where(jnp.arange(t.size) == 0, -100, t), None, None, "mean"),
        (x, t.at[2].set(9), w, 0.1, "mean"),  # out of range inside jit: NaN, zero gradient on the row
    ]
    for xx, tt, wt, e, reduction in cases:
        kw = {"ignore_index": -100, "reduction": reduction, "out_dtype": jnp.dtype(jnp.float32)}
        new = jax.jit(jax.value_and_grad(lambda x: impl._picked_total(tuple(kw.values()), x, tt, wt, e)))(xx)
        old = jax.jit(jax.value_and_grad(lambda x: impl._indices_total(x, tt, wt, e, **kw)))(xx)
        np.testing.assert_array_equal(np.isnan(np.asarray(new[0])), np.isnan(np.asarray(old[0])))
        np.testing.assert_allclose(new[0], old[0], rtol=1e-6)
        gn, go = np.asarray(new[1]), np.asarray(old[1])
        np.testing.assert_array_equal(np.isnan(gn), np.isnan(go))
        np.testing.assert_array_equal(gn == 0, go == 0)
        np.testing.assert_allclose(gn, go, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(jax.jit(lambda x: impl._picked_total(tuple(kw.values()), x, tt, wt, e))(xx), old[0], rtol=1e-6)


@pytest.mark.parametrize("gap", [None, 1e3], ids=["plain", "fallback"])
def test_picked_shift_keeps_every_derivative(gap, picked_everywhere):
    """Forward mode, forward-over-reverse (Hessian-vector), reverse-over-reverse (the
    fallback's loop is kept out of every tangent's path), cotangents other than 1, and
    vmap over a batch where only one example overflows: all agree with the float64
    definition."""
    with jax.enable_x64(True):
        x, t, w = _picked_case("kdim")
        if gap is not None:
            x = _overflowing(x, t, gap)
        f = lambda x: L.cross_entropy(x, t, weight=w, label_smoothing=0.2)  # noqa: E731
        ref = lambda x: _reference_ce(x, t, w, label_smoothing=0.2)  # noqa: E731
        v = jnp.asarray(np.random.default_rng(21).standard_normal(x.shape))
        np.testing.assert_allclose(jax.jvp(f, (x,), (v,))[1], jax.jvp(ref, (x,), (v,))[1], rtol=1e-10)
        hvp = jax.jit(lambda x: jax.jvp(jax.grad(f), (x,), (v,))[1])(x)
        np.testing.assert_allclose(hvp, jax.jvp(jax.grad(ref), (x,), (v,))[1], rtol=1e-9, atol=1e-12)
        rr = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(jax.grad(f)(x)))))(x)
        np.testing.assert_allclose(rr, jax.grad(lambda x: jnp.sum(jnp.sin(jax.grad(ref)(x))))(x), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(jax.grad(lambda x: -2.5 * f(x))(x), -2.5 * jax.grad(ref)(x), rtol=1e-10, atol=1e-13)
        batch = jnp.stack([x, _overflowing(x, t, 1e3) if gap is None else x * 0.5])
        gb = jax.jit(jax.vmap(jax.value_and_grad(f)))(batch)
        for i in range(2):
            v_ref, g_ref = jax.value_and_grad(ref)(batch[i])
            np.testing.assert_allclose(gb[0][i], v_ref, rtol=1e-12)
            np.testing.assert_allclose(gb[1][i], g_ref, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("options", [{}, {"weight": 1}, {"label_smoothing": 0.1}, {"weight": 1, "label_smoothing": 0.1}])
@pytest.mark.parametrize("extra", [(), (8,)])
def test_float32_gradient_is_written_over_the_exponentials(options, extra):
    # XLA's own buffer accounting (no timing): the float32 value_and_grad keeps no (N, C)
    # buffer beside the gradient, the max-shifted fallback included (it recomputes the
    # exponentials rather than keep them).
    x, temp = _value_and_grad_temp_bytes(jnp.float32, options, extra)
    if extra and "weight" in options and "label_smoothing" in options:
        # A known exception: with the class axis not last, XLA materialises the broadcast
        # weight times the shifted logits for the smoothing sum (one (N, C, d) buffer, as
        # before the picked shift); still within issue 6's bound of one such buffer.
        assert temp <= x.size * 4 + (1 << 16), temp
    else:
        assert temp < x.size * 4 // 4, temp


# K-dimensional logits with long trailing axes: the class reductions are a tree of slices
# (XLA:CPU's own reductions over a class axis that is not last are slow there). The
# smallest layouts that take it: 32768 trailing elements, a class count for each branch.
SLICED_CASES = [
    pytest.param(5, id="C5-smoothing-only"),  # the smoothing sums are sliced from 5 classes (odd: 2 + 1 leaves)
    pytest.param(65, id="C65-odd"),  # the normaliser and probability sums from 64 classes
]


@pytest.mark.parametrize("C", SLICED_CASES)
def test_sliced_class_reductions_keep_values_and_every_derivative(C):
    from jaxloss import _cross_entropy as impl

    rng = np.random.default_rng(C)
    with jax.enable_x64(True):
        x = jnp.asarray(3 * rng.standard_normal((1, C, 8, 4096)))
        assert impl._sliced(x, 1) and impl._sliced(x, 1, impl.SLICED_NORMALISER_MIN_CLASSES) == (C >= 64)
        t = jnp.asarray(rng.integers(0, C, (1, 8, 4096)))
        w = jnp.asarray(rng.uniform(0.5, 2.0, C))
        v = jnp.asarray(rng.standard_normal(x.shape))
        p = jax.nn.softmax(jnp.asarray(rng.standard_normal(x.shape)), axis=1)
        every = {"weight": w, "label_smoothing": 0.2, "ignore_index": 1}
        for kw, reduction in (({}, "mean"), (every, "none"), ({"label_smoothing": 0.1}, "sum")):
            f = lambda x: L.cross_entropy(x, t, reduction=reduction, **kw)  # noqa: E731
            ref = lambda x: _reference_ce(x, t, kw.get("weight"), reduction=reduction, **{k: kw[k] for k in kw if k != "weight"})  # noqa: E731
            s = lambda g: lambda x: jnp.sum(jnp.sin(g(x)))  # noqa: E731
            for op in (
                lambda f: f,
                lambda f: jax.grad(s(f)),
                lambda f: lambda x: jax.jvp(f, (x,), (v,))[1],  # forward mode
                lambda f: lambda x: jax.jvp(jax.grad(s(f)), (x,), (v,))[1],  # Hessian-vector product
            ):
                np.testing.assert_allclose(jax.jit(op(f))(x), jax.jit(op(ref))(x), rtol=1e-9, atol=1e-14)
        # probability targets, against their definition
        fp = lambda x: L.cross_entropy(x, p, weight=w, label_smoothing=0.1)  # noqa: E731
        q = (p * 0.9 + 0.1 / C) * w[:, None, None]
        refp = lambda x: jnp.mean(-jnp.sum(q * jax.nn.log_softmax(x, axis=1), axis=1))  # noqa: E731
        np.testing.assert_allclose(jax.jit(fp)(x), jax.jit(refp)(x), rtol=1e-12)
        np.testing.assert_allclose(jax.jit(jax.grad(fp))(x), jax.jit(jax.grad(refp))(x), rtol=1e-10, atol=1e-16)
        # non-finite logits: a masked class (-inf), a row with +inf, a NaN; as the unsliced layout
        y = x.at[0, 2].set(-jnp.inf).at[0, :, 0, 0].set(jnp.inf).at[0, 3, 1, 1].set(jnp.nan)
        last = jnp.moveaxis(y, 1, -1).reshape(-1, C)
        for kw in ({}, {"label_smoothing": 0.1}):
            got = jax.jit(jax.value_and_grad(lambda y: L.cross_entropy(y, t, reduction="sum", **kw)))(y)
            want = jax.jit(jax.value_and_grad(lambda z: L.cross_entropy(z, t.reshape(-1), reduction="sum", **kw)))(last)
            np.testing.assert_array_equal(np.isnan(got[0]), np.isnan(want[0]))
            g = np.asarray(jnp.moveaxis(got[1], 1, -1).reshape(-1, C))
            np.testing.assert_array_equal(np.isnan(g), np.isnan(np.asarray(want[1])))
            # the two layouts sum in different orders: differences of one float64 ulp of 1
            np.testing.assert_allclose(g, want[1], rtol=1e-12, atol=1e-15)


def test_sliced_class_reductions_in_bf16():
    """bf16 K-dimensional logits on the sliced path: as the same logits laid out class-last
    (unsliced), to bf16's rounding of the float32 results."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((1, 70, 32768)), jnp.bfloat16)
    t = jnp.asarray(rng.integers(0, 70, (1, 32768)))
    w = jnp.asarray(rng.uniform(0.5, 2.0, 70), jnp.float32)
    last = jnp.moveaxis(x, 1, -1).reshape(-1, 70)
    for kw in ({}, {"label_smoothing": 0.1}, {"weight": w, "label_smoothing": 0.1}):
        got = jax.jit(jax.value_and_grad(lambda x: L.cross_entropy(x, t, **kw)))(x)
        want = jax.jit(jax.value_and_grad(lambda z: L.cross_entropy(z, t.reshape(-1), **kw)))(last)
        np.testing.assert_allclose(np.float32(got[0]), np.float32(want[0]), rtol=1e-2)
        g = np.asarray(jnp.moveaxis(got[1], 1, -1).reshape(-1, 70), np.float32)
        np.testing.assert_allclose(g, np.asarray(want[1], np.float32), rtol=1e-2, atol=1e-9)


@pytest.mark.parametrize(
    "dtype,C",
    [
        ("float64", 5),  # autodiff of the log-normaliser's rule
        ("float64", 300),  # the picked shift overflows: the max-shifted fallback
        ("float32", 300),
        ("bfloat16", 5),  # the bf16 rule (mean/sum) and the narrow-input normaliser (none, probabilities)
        ("bfloat16", 2048),  # the bf16 rule with the picked shift
    ],
)
def test_softmax_of_huge_tied_logits(dtype, C):
    """Two logits tied at 1e20, the target (class 0) at 0 and the rest at 0: the
    softmax is 1/2 on each tied class and 0 elsewhere (exp(-1e20) is 0), so the
    gradient of the summed losses is ``p - ((1 - eps) onehot + eps / C)`` by hand.
    Taking the softmax as ``exp(x - (m + s))`` lost ``s = log 2`` next to ``m = 1e20``
    and gave 1 on each tied class."""
    with jax.enable_x64(dtype == "float64"):
        x = jnp.zeros((1, C), dtype).at[0, 1:3].set(1e20)
        onehot = np.eye(C)[:1]
        p = np.zeros((1, C))
        p[0, 1:3] = 0.5

        def grads(x):
            out = {}
            for eps in (0.0, 0.1):
                for reduction in ("none", "mean", "sum"):
                    for kind, t in (("class", jnp.array([0])), ("probs", jnp.asarray(onehot, dtype))):
                        f = lambda x: jnp.sum(L.cross_entropy(x, t, reduction=reduction, label_smoothing=eps).astype(jnp.float32))  # noqa: B023,E731
                        out[eps, reduction, kind] = jax.grad(f)(x)
                    # K-dimensional: the same row at two positions, (1, C, 2)
                    xk = jnp.stack([x, x], axis=-1)
                    f = lambda xk: jnp.sum(L.cross_entropy(xk, jnp.zeros((1, 2), int), reduction=reduction, label_smoothing=eps).astype(jnp.float32))  # noqa: B023,E731
                    out[eps, reduction, "kdim"] = jax.grad(f)(xk)
            return out

        tol = {"rtol": 1e-2, "atol": 1e-3} if dtype == "bfloat16" else {"rtol": 1e-6, "atol": 1e-7}
        for (eps, reduction, kind), g in jax.jit(grads)(x).items():
            want = p - ((1 - eps) * onehot + eps / C)
            if kind == "kdim":
                want = np.stack([want, want], axis=-1) / (2 if reduction == "mean" else 1)
            np.testing.assert_allclose(np.asarray(g, np.float64), want, **tol, err_msg=f"{eps} {reduction} {kind}")
