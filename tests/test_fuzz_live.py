"""With torch installed: a differential fuzz of every loss against torch, values and gradients.

Each case draws a layout (batched, unbatched, K-dimensional, empty batches, broadcast
targets), the options (reductions, class weights, ``ignore_index`` including a valid
class, smoothing, probability targets, ``p``, ``margin``, ``swap``, ``full``, ...) and the
data from a seeded generator, calls torch 2.13 and jaxloss on the same arrays, and
compares the values, the output dtype and shape, who raises, and the vector-Jacobian
product for one random cotangent with respect to every floating argument torch
differentiates. The ``big`` cases use 255-2049 classes, where cross_entropy and
linear_cross_entropy take their fused paths. The seeds are fixed, so a failure is
reproducible: the message names the loss, the shapes and the options.

Differences that the README and the docstrings document are not compared:
``kl_div``'s target gradient at a zero target (``log_target=False``: torch's is NaN),
the ``"mean"``/``"sum"`` of an empty batch in the margin losses (torch returns
uninitialised memory) and ``ctc_loss`` with respect to unnormalised log-probs (the
cases differentiate through ``log_softmax``, the way CTC is used).
"""

from __future__ import annotations

import warnings
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxloss as L
from tests._fuzz_cases import BIG, NAMES, gen

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (value rtol, value atol, gradient rtol, gradient atol). float32: torch and XLA round
# differently (sums in other orders, other exp/log kernels), a few ulps of the terms.
TOL = {"float64": (1e-9, 1e-12, 1e-8, 1e-11), "float32": (2e-5, 1e-6, 1e-4, 1e-5)}


def _compare(name, args, kw, gidx, dtype):
    """None if jaxloss agrees with torch on this case, else what differs."""
    rtol, atol, grtol, gatol = TOL[dtype]
    kw = dict(kw)
    jl = kw.pop("__jl", {})

    def tt(a, grad):
        if type(a) is float:
            return a
        a = np.asarray(a)
        t = torch.tensor(a.astype(dtype) if a.dtype.kind == "f" else a)
        return t.requires_grad_(True) if grad and t.is_floating_point() else t

    def ja(a):
        a = np.asarray(a)
        return jnp.asarray(a.astype(dtype) if a.dtype.kind == "f" else a)

    targs = [tt(a, i in gidx) for i, a in enumerate(args)]
    tkw = {k: (tt(v, False) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    try:
        ta = list(targs)
        if name == "ctc_loss":
            ta[0] = F.log_softmax(ta[0], -1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tv, terr = getattr(F, name)(*ta, **tkw), None
    except Exception as e:  # noqa: BLE001 (any torch error: jaxloss must raise too)
        tv, terr = None, e
    jargs = [a if type(a) is float else ja(a) for a in args]
    jkw = {k: (ja(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    jkw.update(jl)
    fn0 = getattr(L, name)

    def fn(*a, **k):
        if name == "ctc_loss":
            return fn0(jax.nn.log_softmax(a[0], -1), *a[1:], **k)
        return fn0(*a, **k)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            jv = fn(*jargs, **jkw)
    except (ValueError, TypeError) as e:
        return None if terr is not None else f"jaxloss raised {type(e).__name__}: {e}; torch gave {tv}"
    if terr is not None:
        return f"torch raised {type(terr).__name__}: {str(terr)[:200]}; jaxloss gave shape {jv.shape}"
    if str(jv.dtype) != str(tv.dtype).replace("torch.", ""):
        return f"dtype {jv.dtype} vs torch {tv.dtype}"
    tvn = tv.detach().numpy()
    if tvn.shape != jv.shape:
        return f"shape {jv.shape} vs torch {tvn.shape}"
    empty_margin_reduction = "margin" in name and 0 in np.shape(args[0]) and tvn.ndim == 0
    if not empty_margin_reduction and not np.allclose(np.asarray(jv), tvn, rtol=rtol, atol=atol, equal_nan=True):
        return f"value {np.asarray(jv)} vs torch {tvn}"
    gi = [i for i in gidx if targs[i].requires_grad]
    if name == "kl_div" and not kw["log_target"] and (np.asarray(args[1]) == 0).any():
        gi = [i for i in gi if i != 1]
    if not gi or tv.numel() == 0:
        return None
    ct = np.random.default_rng(1).standard_normal(tvn.shape)
    tg = torch.autograd.grad(tv, [targs[i] for i in gi], torch.tensor(ct).to(tv.dtype), allow_unused=True)

    def f(*gs):
        a = list(jargs)
        for i, g in zip(gi, gs):
            a[i] = g
        return fn(*a, **jkw)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, vjp = jax.vjp(f, *[jargs[i] for i in gi])
    for i, a, b in zip(gi, vjp(jnp.asarray(ct, jv.dtype)), tg):
        b = np.zeros(a.shape) if b is None else b.numpy()
        if not np.allclose(np.asarray(a), b, rtol=grtol, atol=gatol, equal_nan=True):
            return f"gradient of argument {i}: {np.asarray(a).ravel()[:6]} vs torch {b.ravel()[:6]}"
    return None


CASES = [(n, d, False, 5 if d == "float64" else 3) for n in NAMES for d in TOL] + [
    (n, d, True, 2) for n in BIG for d in TOL
]


@pytest.mark.parametrize("name,dtype,big,count", CASES, ids=[f"{n}-{d}{'-big' if b else ''}" for n, d, b, _ in CASES])
def test_random_cases_match_torch(name, dtype, big, count):
    r = np.random.default_rng(zlib.crc32(f"{name}/{dtype}/{big}".encode()))
    failures = []
    with jax.enable_x64(True):
        for k in range(count):
            args, kw, gidx = gen(r, name, big)
            args = tuple(a if type(a) is float else np.asarray(a) for a in args)
            kw = {key: (np.asarray(v) if isinstance(v, np.floating) else v) for key, v in kw.items()}
            msg = _compare(name, args, kw, gidx, dtype)
            if msg:
                shown = {key: (np.shape(v) if isinstance(v, np.ndarray) else v) for key, v in kw.items()}
                failures.append(f"case {k}: shapes {[np.shape(a) for a in args]}, {shown}: {msg[:400]}")
    assert not failures, "\n".join(failures)
