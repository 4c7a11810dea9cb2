"""Checks every loss family runs: transformations, gradients, dtypes, traced hyper-parameters.

Each helper asserts something that fails when the loss is wrong; none compares a
function with itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads


def assert_jit_matches_eager(fn: Callable, *args, rtol: float = 1e-6, **kwargs) -> None:
    """``jax.jit(fn)`` gives the eager value (the eager call runs the concrete-value checks)."""
    eager = fn(*args, **kwargs)
    jitted = jax.jit(lambda *a: fn(*a, **kwargs))(*args)
    chex.assert_equal_shape([eager, jitted])
    assert eager.dtype == jitted.dtype
    np.testing.assert_allclose(np.asarray(jitted, np.float64), np.asarray(eager, np.float64), rtol=rtol, atol=0)


def assert_vmap_matches_none(
    fn: Callable,
    args: Sequence,
    in_axes: Sequence[int | None],
    *,
    rtol: float = 1e-6,
    **kwargs,
) -> None:
    """``vmap`` over the batch axis of a per-example ``"sum"`` equals ``reduction="none"``.

    ``reduction="none"`` of the batched call is summed over every axis but the
    first, so this holds for per-sample losses ``(N,)`` and element-wise ones
    ``(N, ...)`` alike. Also checks the per-example ``"mean"`` of a ``(N, ...)``
    element-wise loss is the row mean when ``elementwise_mean`` is set by the caller.
    """
    none = fn(*args, reduction="none", **kwargs)
    per_example = jax.vmap(lambda *a: fn(*a, reduction="sum", **kwargs), in_axes=tuple(in_axes))(*args)
    n = per_example.shape[0]
    expected = np.asarray(none, np.float64).reshape(n, -1).sum(axis=1)
    np.testing.assert_allclose(np.asarray(per_example, np.float64), expected, rtol=rtol, atol=rtol * 1e-3)


def assert_grads_float64(fn: Callable, args: Sequence, *, order: int = 2, modes=("fwd", "rev"), **kwargs) -> None:
    """``jax.test_util.check_grads`` in float64 on the floating ``args`` (others held fixed)."""
    with jax.enable_x64(True):
        arrays = [jnp.asarray(a, jnp.float64) if np.issubdtype(np.asarray(a).dtype, np.floating) else jnp.asarray(a) for a in args]
        idx = [i for i, a in enumerate(arrays) if jnp.issubdtype(a.dtype, jnp.floating)]

        def f(*floats):
            full = list(arrays)
            for i, v in zip(idx, floats):
                full[i] = v
            return fn(*full, **kwargs)

        # Under one jit: each derivative check_grads takes is then one program to compile,
        # not one per operation and loss term (the checks are the same).
        check_grads(jax.jit(f), tuple(arrays[i] for i in idx), order=order, modes=modes, atol=1e-5, rtol=1e-5)


def assert_low_precision(fn: Callable, args: Sequence, expected_dtype, *, reference_rtol: float = 3e-2, **kwargs) -> None:
    """bf16/f16 inputs: torch's output dtype, finite, and close to the float32 result.

    ``reference_rtol`` is the low-precision rounding of the inputs, not of the math
    (which accumulates in float32).
    """
    out = fn(*args, **kwargs)
    assert out.dtype == np.dtype(expected_dtype), f"dtype {out.dtype}, expected {expected_dtype}"
    assert bool(jnp.all(jnp.isfinite(out.astype(jnp.float32)))), "non-finite output in low precision"
    f32 = [a.astype(jnp.float32) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a for a in args]
    ref = fn(*f32, **kwargs)
    scale = float(jnp.max(jnp.abs(ref)))
    np.testing.assert_allclose(
        np.asarray(out, np.float32), np.asarray(ref), rtol=reference_rtol, atol=reference_rtol * scale
    )


def assert_hyperparameter_is_traced(call: Callable[[object], jax.Array], values: Sequence[float]) -> None:
    """A float hyper-parameter can be traced, and changing it does not retrace.

    ``call(v)`` evaluates the loss with the hyper-parameter set to ``v``. Under one
    ``jit`` the parameter is a tracer: a loss that makes it static or branches on it
    in Python fails here, and ``chex.assert_max_traces`` fails on a second trace.
    The traced results must equal the eager ones and differ between values.
    """
    chex.clear_trace_counter()  # chex counts per function source; start this check at zero

    def traced(v):
        return call(v)

    f = jax.jit(chex.assert_max_traces(traced, n=1))
    traced = [np.asarray(f(jnp.asarray(v, jnp.float32))) for v in values]
    eager = [np.asarray(call(float(v))) for v in values]
    for t, e in zip(traced, eager):
        np.testing.assert_allclose(t, e, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(traced[0], t) for t in traced[1:]), "the hyper-parameter changed nothing"
