"""With torch installed: cross_entropy and nll_loss equal torch on shapes and options drawn by hypothesis.

The golden fixtures pin an explicit list of cases; this test draws new ones
(layout, number of classes including C = 1, target kind, weight, ignore_index,
label_smoothing, reduction) and compares values and input gradients with torch
directly, in float64 at the fixture tolerance.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxloss as L
from tests._fixtures import assert_close

torch = pytest.importorskip("torch")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

F = torch.nn.functional


@st.composite
def _cases(draw, fn):
    ndim = draw(st.integers(1, 4))
    C = draw(st.integers(1, 6))
    shape = (C,) if ndim == 1 else (draw(st.integers(1, 4)), C) + tuple(draw(st.integers(1, 3)) for _ in range(ndim - 2))
    probs = fn == "cross_entropy" and draw(st.booleans())
    kwargs = {"reduction": draw(st.sampled_from(["none", "mean", "sum"]))}
    if draw(st.booleans()):
        kwargs["weight"] = True
    if fn == "cross_entropy":
        kwargs["label_smoothing"] = draw(st.sampled_from([0.0, 0.05, 0.5, 1.0]))
    if not probs:
        kwargs["ignore_index"] = draw(st.sampled_from([-100, -1, 0, C - 1]))
    return shape, probs, kwargs, draw(st.integers(0, 2**32 - 1))


def _arrays(shape, probs, kwargs, seed):
    r = np.random.default_rng(seed)
    ax = 0 if len(shape) == 1 else 1
    C = shape[ax]
    x = r.standard_normal(shape) * r.choice([1.0, 30.0])
    tshape = shape[:ax] + shape[ax + 1 :]
    if probs:
        e = np.exp(r.standard_normal(shape))
        target = e / e.sum(axis=ax, keepdims=True)
    else:
        target = r.integers(0, C, tshape)
        ignore = kwargs["ignore_index"]
        target = np.where(r.random(tshape) < 0.3, ignore, target).astype(np.int64)
    weight = r.uniform(0.1, 2.0, C) if kwargs.get("weight") else None
    return x, target, weight, r


def _compare(fn, shape, probs, kwargs, seed):
    x, target, weight, r = _arrays(shape, probs, kwargs, seed)
    kw = {k: v for k, v in kwargs.items() if k != "weight"}
    # torch
    tx = torch.tensor(x, requires_grad=True)
    tt = torch.tensor(target, requires_grad=probs)
    tw = None if weight is None else torch.tensor(weight, requires_grad=probs)
    out = getattr(F, fn)(tx, tt, weight=tw, **kw)
    cot = r.standard_normal(tuple(out.shape))
    wrt = [tx] + ([tt] + ([tw] if tw is not None else []) if probs else [])
    tgrads = torch.autograd.grad(out, wrt, torch.tensor(cot))
    # jaxloss
    with jax.enable_x64(True):
        def f(x, t, w):
            return getattr(L, fn)(x, t if probs else jnp.asarray(target), weight=w, **kw)

        jw = None if weight is None else jnp.asarray(weight)
        val, vjp = jax.vjp(f, jnp.asarray(x), jnp.asarray(target, jnp.float64), jw)
        jgrads = vjp(jnp.asarray(cot))
    what = f"{fn} shape={shape} probs={probs} {kwargs} seed={seed}"
    assert_close(np.asarray(val), out.detach().numpy(), "float64", what + ": value")
    names = ["input", "target", "weight"]
    for name, tg, jg in zip(names, tgrads, jgrads):
        assert_close(np.asarray(jg), tg.numpy(), "float64", f"{what}: gradient w.r.t. {name}")


@settings(max_examples=20, deadline=None, derandomize=True, database=None)
@given(_cases("cross_entropy"))
def test_cross_entropy_matches_torch(case):
    _compare("cross_entropy", *case)


@settings(max_examples=10, deadline=None, derandomize=True, database=None)
@given(_cases("nll_loss"))
def test_nll_loss_matches_torch(case):
    _compare("nll_loss", *case)
