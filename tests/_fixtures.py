"""Loading the torch golden fixtures and checking jaxloss against them (no torch needed)."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxloss
from tests.fixtures.generate import FIXTURE_DIR

# Relative tolerances of the project's parity promise (issues 2 and 3).
RTOL = {"float64": 1e-7, "float32": 2e-4}

# jaxloss callables for fixture functions that are not a public name with torch's
# signature (a family's wrapper, e.g. ctc through log_softmax). Families register here.
JAX_ADAPTERS: dict[str, Callable[..., Any]] = {}


# embedding: triplet_margin_with_distance_loss with the custom distances of
# tests/fixtures/cases_embedding.py (module-level, so jit's static cache hits).
def _cosine_distance(x, y, eps=1e-8):
    """1 - torch.nn.functional.cosine_similarity(x, y, dim=-1) (for norms above eps)."""
    nx = jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)
    ny = jnp.maximum(jnp.linalg.norm(y, axis=-1, keepdims=True), eps)
    return 1 - jnp.sum((x / nx) * (y / ny), axis=-1)


def _l1_distance(x, y):
    return jaxloss.pairwise_distance(x, y, p=1.0)


JAX_ADAPTERS["triplet_margin_with_distance_loss_cosine"] = functools.partial(
    jaxloss.triplet_margin_with_distance_loss, distance_function=_cosine_distance
)
JAX_ADAPTERS["triplet_margin_with_distance_loss_l1"] = functools.partial(
    jaxloss.triplet_margin_with_distance_loss, distance_function=_l1_distance
)


def _ctc_loss_logits(logits, targets, input_lengths, target_lengths, **kwargs):
    # torch's ctc backward is the logits gradient under a log_softmax (tests/fixtures/cases_ctc.py).
    return jaxloss.ctc_loss(jax.nn.log_softmax(logits, axis=-1), targets, input_lengths, target_lengths, **kwargs)


JAX_ADAPTERS["ctc_loss_logits"] = _ctc_loss_logits


@dataclasses.dataclass(frozen=True)
class FixtureCase:
    id: str
    fn: str
    dtype: str
    args: dict[str, Any]
    kwargs: dict[str, Any]
    out: np.ndarray
    out_dtype: str
    cot: np.ndarray
    grads: dict[str, np.ndarray]


@functools.cache
def load_cases(family: str) -> tuple[FixtureCase, ...]:
    manifest = json.loads((FIXTURE_DIR / f"{family}.json").read_text())
    with np.load(FIXTURE_DIR / f"{family}.npz") as z:
        data = {k: z[k] for k in z.files}

    def resolve(desc):
        return {k: (data[v["array"]] if "array" in v else v["value"]) for k, v in desc.items()}

    cases = []
    for e in manifest["cases"]:
        cid = e["id"]
        cases.append(
            FixtureCase(
                id=cid,
                fn=e["fn"],
                dtype=e["dtype"],
                args={k: resolve(e["args"])[k] for k in e.get("arg_order", e["args"])},
                kwargs=resolve(e["kwargs"]),
                out=data[f"{cid}|out"],
                out_dtype=e["out_dtype"],
                cot=data[f"{cid}|cot"],
                grads={k: data[f"{cid}|grad|{k}"] for k in e["grads"]},
            )
        )
    return tuple(cases)


def case_params(family: str, fn: str | None = None, *, dtype: str | None = None) -> list:
    """pytest params for every fixture case of ``family`` (optionally of one function or dtype)."""
    return [
        pytest.param(c, id=c.id)
        for c in load_cases(family)
        if (fn is None or c.fn == fn) and (dtype is None or c.dtype == dtype)
    ]


# The fixture tests of every family run each case eagerly (both dtypes) and the float64
# cases again under an outer jit (the strict tolerance; every case exists in both dtypes).
# What the outer jit changes is the tracing path (the checks on concrete values are
# skipped, Python branches see tracers, forward and backward are one program), not the
# dtype, and each case under jit costs a compilation, the largest part of the suite's time.
JIT_DTYPE = "float64"


def _jax_fn(case: FixtureCase):
    return JAX_ADAPTERS.get(case.fn) or getattr(jaxloss, case.fn)


def run_jax(case: FixtureCase, transform: Callable | None = None):
    """Evaluate the case with jaxloss: returns (output, {arg: vjp with the case's cotangent}).

    Float64 cases run under ``jax.enable_x64``; float32 cases in JAX's default mode.
    ``transform`` (e.g. ``jax.jit``) wraps the whole evaluation, forward and backward
    (``transform(vjp)``, as a training step wraps ``value_and_grad``): one program per
    case. Without it every operation runs eagerly.
    """
    fn = _jax_fn(case)
    names = list(case.grads)
    with jax.enable_x64(case.dtype == "float64"):

        def call(*diff):
            sub = dict(zip(names, diff))
            args = [sub.get(k, _as_jax(v)) for k, v in case.args.items()]
            kwargs = {k: sub.get(k, _as_jax(v)) for k, v in case.kwargs.items()}
            return fn(*args, **kwargs)

        def value_and_vjp(cot, *diff):
            out, vjp = jax.vjp(call, *diff)
            return out, (vjp(cot.astype(out.dtype)) if names else ())

        f = transform(value_and_vjp) if transform is not None else value_and_vjp
        diff = [jnp.asarray(_arg(case, k)) for k in names]
        out, grads = f(jnp.asarray(case.cot), *diff)
        return np.asarray(out), out.dtype, {k: np.asarray(g) for k, g in zip(names, grads, strict=True)}


def _arg(case: FixtureCase, k: str):
    return case.args[k] if k in case.args else case.kwargs[k]


def _as_jax(v):
    return jnp.asarray(v) if isinstance(v, np.ndarray) else v


def assert_close(actual, expected, dtype: str, what: str, *, rtol: float | None = None) -> None:
    """Compare with the parity tolerance of ``dtype`` (or ``rtol``).

    The absolute floor is ``rtol * max|expected|``: entries many orders of
    magnitude below the array's largest are dominated by rounding in the large
    terms, and torch and XLA sum in different orders.
    """
    rtol = RTOL[dtype] if rtol is None else rtol
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != torch's {expected.shape}"
    finite = expected[np.isfinite(expected)]
    scale = float(np.max(np.abs(finite))) if finite.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, equal_nan=True, err_msg=what)


def assert_parity(case: FixtureCase, transform: Callable | None = None) -> None:
    """jaxloss's value, output dtype and input gradients equal torch's for this case."""
    out, dtype, grads = run_jax(case, transform)
    assert str(dtype) == case.out_dtype, f"{case.id}: output dtype {dtype}, torch gives {case.out_dtype}"
    assert_close(out, case.out, case.dtype, f"{case.id}: value")
    for k, g in case.grads.items():
        assert_close(grads[k], g, case.dtype, f"{case.id}: gradient w.r.t. {k}")
