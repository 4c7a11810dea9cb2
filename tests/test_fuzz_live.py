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

The mutated cases change one array argument of a valid case (a dimension added or
dropped, the last one grown, the dtype changed): jaxloss must raise ``ValueError`` or
``TypeError`` naming one of its arguments wherever torch raises, and agree with torch
wherever torch computes, apart from the differences the README lists (``ALLOWED``).
Where torch's backward refuses what its forward took, only the values are compared. The
bad-option cases do the same with one option replaced by a value of the wrong type or
range (``OPTIONS_ALLOWED``: the README's "Keywords and arguments").

Differences that the README and the docstrings document are not compared:
``kl_div``'s target gradient at a zero target (``log_target=False``: torch's is NaN),
the ``"mean"``/``"sum"`` of an empty batch in the margin losses (torch returns
uninitialised memory) and ``ctc_loss`` with respect to unnormalised log-probs (the
cases differentiate through ``log_softmax``, the way CTC is used).
"""

from __future__ import annotations

import inspect
import re
import warnings
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxloss as L
from tests._fuzz_cases import BIG, NAMES, gen, mutate

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (value rtol, value atol, gradient rtol, gradient atol). float32: torch and XLA round
# differently (sums in other orders, other exp/log kernels), a few ulps of the terms.
TOL = {"float64": (1e-9, 1e-12, 1e-8, 1e-11), "float32": (2e-5, 1e-6, 1e-4, 1e-5)}


def _compare(name, args, kw, gidx, dtype, errors=None):
    """None if jaxloss agrees with torch on this case, else what differs. jaxloss's
    ValueError/TypeError, if it raises one, is appended to ``errors``."""
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
        if name == "ctc_loss" and ta[0].is_floating_point():
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
        if name == "ctc_loss" and jnp.issubdtype(a[0].dtype, jnp.floating):
            return fn0(jax.nn.log_softmax(a[0], -1), *a[1:], **k)
        return fn0(*a, **k)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            jv = fn(*jargs, **jkw)
    except (ValueError, TypeError) as e:
        if errors is not None:
            errors.append(e)
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
    try:
        tg = torch.autograd.grad(tv, [targs[i] for i in gi], torch.tensor(ct).to(tv.dtype), allow_unused=True)
    except RuntimeError:  # torch's backward refuses what its forward took (a bool target, a (1,) one)
        return None

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
            msg = _compare(name, args, kw, gidx, dtype)
            if msg:
                shown = {key: (np.shape(v) if isinstance(v, np.ndarray) else v) for key, v in kw.items()}
                failures.append(f"case {k}: shapes {[np.shape(a) for a in args]}, {shown}: {msg[:400]}")
    assert not failures, "\n".join(failures)


# Bad input: each case above with one array argument mutated (a dimension added or dropped,
# the last one grown, its dtype changed to integer/floating, bool or complex). jaxloss must
# raise ValueError/TypeError naming one of its arguments wherever torch raises, and agree
# with torch wherever torch computes, except for the differences the README lists:
ALLOWED = [
    # "Dtypes are checked alike in every loss": torch computes with some other dtypes.
    lambda c: c["what"] == "dtype" and c["msg"].startswith("jaxloss raised TypeError"),
    # ctc_loss lengths of shape (N, 1) (torch flattens them).
    lambda c: c["name"] == "ctc_loss" and "_lengths: expected one length per sample" in c["msg"],
    # multilabel_soft_margin_loss: a target or weight that broadcasts beyond the input.
    lambda c: c["name"] == "multilabel_soft_margin_loss" and "does not broadcast to" in c["msg"],
    # A class weight of another shape with C entries (torch's K-dimensional path).
    lambda c: re.search(r"raised ValueError: weight: expected shape \(\d+,\) \(one per class", c["msg"]),
    # A bool target accepted where torch's subtraction refuses one.
    lambda c: c["what"] == "dtype" and "with a bool tensor is not supported" in c["msg"],
    # An unbatched input with a (1,) target and label_smoothing (torch's forward fails).
    lambda c: "doesn't match the broadcast shape [1]" in c["msg"],
    # Mixed precision: torch takes the log of an integer target of poisson_nll_loss(full=True)
    # in float32, next to a float64 input.
    lambda c: c["name"] == "poisson_nll_loss" and c["kw"]["full"] and c["desc"].endswith("int64"),
]


def _named(error) -> str:
    """The argument an error message starts with (``"target: expected ..."``), or ""."""
    m = re.match(r"(\w+):", str(error))
    return m.group(1) if m else ""


@pytest.mark.parametrize("name", NAMES)
def test_mutated_cases_raise_where_torch_raises(name):
    r = np.random.default_rng(zlib.crc32(f"mutated/{name}".encode()))
    params = set(inspect.signature(getattr(L, name)).parameters)
    failures, checked = [], 0
    with jax.enable_x64(True):
        while checked < 8:
            args, kw, gidx = gen(r, name)
            mutated = mutate(r, args, kw)
            if mutated is None:
                continue
            checked += 1
            args, kw, what, desc = mutated
            errors = []
            msg = _compare(name, args, kw, gidx, "float64", errors)
            if errors and _named(errors[0]) not in params:
                failures.append(f"{desc}: the error names no argument: {errors[0]}")
            elif msg and not any(rule(dict(name=name, what=what, desc=desc, kw=kw, msg=msg)) for rule in ALLOWED):
                failures.append(f"{desc}: {msg[:300]}")
    assert not failures, "\n".join(failures)


# Bad options: each case with one option (a keyword that is not an array) replaced by a
# value of the wrong type or range. The README's "Keywords and arguments" lists where
# jaxloss checks what torch converts:
BAD_OPTIONS = {
    "reduction": ["avg", "", None, 1, "MEAN", "batchmean", "elementwise_mean"],
    "number": [-1.0, -0.5, float("nan"), float("inf"), -float("inf"), "0.1", True, 0, 2, np.array([0.1, 0.2])],
    "index": [1.5, "1", -5, 10**6, True, None, np.int64(1), -1],
    "flag": [2, None, "yes", 0, 1, np.bool_(True)],
}
OPTIONS_ALLOWED = [
    # A bool where a number is expected (torch reads True as 1).
    lambda c: c["kind"] in ("number", "index") and c["value"] is True and c["msg"].startswith("jaxloss raised"),
    # A flag that is not a bool (torch reads its truthiness).
    lambda c: c["kind"] == "flag" and not isinstance(c["value"], (bool, np.bool_)) and "expected a bool" in c["msg"],
    # A NaN float option (torch returns NaN, or 0 in multi_margin_loss).
    lambda c: c["kind"] == "number" and c["value"] != c["value"] and "got nan" in c["msg"],
    # A negative label_smoothing (torch 2.13 accepts one).
    lambda c: c["option"] == "label_smoothing" and c["value"] < 0 and "expected a value in [0.0, 1.0]" in c["msg"],
    # A NumPy bool flag (torch's functional API refuses one; jaxloss reads it as the bool).
    lambda c: isinstance(c["value"], np.bool_) and c["msg"].startswith("torch raised TypeError"),
    # ctc_loss: a blank that the targets contain ("rejects targets equal to blank").
    lambda c: c["option"] == "blank" and "must not be the blank label" in c["msg"],
]


@pytest.mark.parametrize("name", NAMES)
def test_bad_options_raise_where_torch_raises(name):
    r = np.random.default_rng(zlib.crc32(f"options/{name}".encode()))
    params = set(inspect.signature(getattr(L, name)).parameters)
    failures, checked = [], 0
    with jax.enable_x64(True):
        while checked < 8:
            args, kw, gidx = gen(r, name)
            options = [k for k, v in kw.items() if k != "__jl" and not isinstance(v, np.ndarray)]
            if not options:
                continue
            checked += 1
            option = options[r.integers(len(options))]
            old = kw[option]
            kind = (
                "reduction"
                if option == "reduction"
                else "flag" if isinstance(old, bool) else "index" if old is None or isinstance(old, int) else "number"
            )
            value = BAD_OPTIONS[kind][r.integers(len(BAD_OPTIONS[kind]))]
            kw = {**kw, option: value}
            errors = []
            msg = _compare(name, args, kw, gidx, "float64", errors)
            case = dict(option=option, kind=kind, value=value, msg=msg or "")
            if errors and _named(errors[0]) not in params:
                failures.append(f"{option}={value!r}: the error names no argument: {errors[0]}")
            elif msg and not any(rule(case) for rule in OPTIONS_ALLOWED):
                failures.append(f"{option}={value!r} (was {old!r}): {msg[:300]}")
    assert not failures, "\n".join(failures)
