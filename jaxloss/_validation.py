"""Argument checks that run at trace time, before any math.

Every message names the argument and shows what was expected and what was
given. Shape, rank, dtype and static-option checks work on tracers too, so they
fire inside ``jax.jit``. Value checks (a class index in range, a probability in
[0, 1]) can only run when the array is concrete: :func:`check_values` raises
``ValueError`` then and does nothing on a tracer. For traced code the losses call
:func:`debug_check`, a ``checkify.debug_check`` that is a no-op unless the
caller wraps the computation in ``jax.experimental.checkify.checkify``.

Never use ``assert`` or chex asserts here: they can be disabled.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from numbers import Integral, Real

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify


def is_traced(x) -> bool:
    """True when ``x`` is an abstract value inside a JAX transformation."""
    return isinstance(x, jax.core.Tracer)


_X64_HINT = "64-bit integers need jax.config.update('jax_enable_x64', True)"


def _check_fits_default_ints(name: str, x) -> None:
    """A NumPy 64-bit integer array whose values JAX would wrap to int32 (x64 disabled): a
    ``ValueError`` rather than silently different indices."""
    x = np.asarray(x)
    if x.dtype.kind in "iu" and x.dtype.itemsize > 4 and x.size and jax.dtypes.canonicalize_dtype(np.int64).itemsize == 4:
        info = np.iinfo(np.int32)
        if x.min() < info.min or x.max() > info.max:
            raise ValueError(f"{name}: values beyond int32 (e.g. {x.max() if x.max() > info.max else x.min()}); {_X64_HINT}")


def as_array(name: str, x) -> jax.Array:
    """``jnp.asarray(x)``, with a ``TypeError`` naming ``name`` when ``x`` is not array-like."""
    if x is None:
        raise TypeError(f"{name}: expected an array, got None")
    if isinstance(x, (np.ndarray, np.generic)):
        _check_fits_default_ints(name, x)
    if isinstance(x, (jax.Array, np.ndarray, np.generic)) or is_traced(x):
        return jnp.asarray(x)
    if isinstance(x, (bool, Integral, Real, list, tuple)):
        try:
            return jnp.asarray(x)
        except OverflowError:
            raise ValueError(f"{name}: integer out of range for {jax.dtypes.canonicalize_dtype(np.int64)}; {_X64_HINT}") from None
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name}: expected an array, got {type(x).__name__} ({e})") from None
    # Objects with __jax_array__ or the array protocol (e.g. a CPU torch tensor).
    try:
        return jnp.asarray(x)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}") from None


def require_floating(name: str, x: jax.Array) -> None:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name}: expected a floating-point array, got dtype {x.dtype}")


def is_real(x: jax.Array, *, allow_bool: bool = True) -> bool:
    """Floating or integer (and bool where ``allow_bool``): a real dtype, not complex
    (``jnp.number`` includes complex)."""
    return bool(
        jnp.issubdtype(x.dtype, jnp.floating)
        or jnp.issubdtype(x.dtype, jnp.integer)
        or (allow_bool and x.dtype == jnp.bool_)
    )


def require_integer(name: str, x: jax.Array, why: str = "") -> None:
    if not jnp.issubdtype(x.dtype, jnp.integer):
        extra = f" ({why})" if why else ""
        raise TypeError(f"{name}: expected an integer array{extra}, got dtype {x.dtype}")


def require_ndim(name: str, x: jax.Array, allowed: Sequence[int] | range, *, what: str = "") -> None:
    if x.ndim not in allowed:
        if isinstance(allowed, range) and allowed.stop > 64:
            want = f"at least {allowed.start} dimensions"
        elif isinstance(allowed, range) and len(allowed) > 1:
            want = f"{allowed.start} to {allowed.stop - 1} dimensions"
        else:
            want = " or ".join(str(a) for a in allowed) + " dimensions"
        extra = f" {what}" if what else ""
        raise ValueError(f"{name}: expected {want}{extra}, got shape {tuple(x.shape)} ({x.ndim} dimensions)")


def require_shape(name: str, x: jax.Array, expected: Sequence[int], *, context: str = "") -> None:
    expected = tuple(int(d) for d in expected)
    if tuple(x.shape) != expected:
        extra = f" {context}" if context else ""
        raise ValueError(f"{name}: expected shape {expected}{extra}, got {tuple(x.shape)}")


def require_broadcastable(name: str, x_shape: Sequence[int], to_shape: Sequence[int], *, context: str = "") -> None:
    """``x_shape`` must broadcast to ``to_shape`` without changing ``to_shape``."""
    try:
        ok = tuple(np.broadcast_shapes(tuple(x_shape), tuple(to_shape))) == tuple(to_shape)
    except ValueError:
        ok = False
    if not ok:
        extra = f" {context}" if context else ""
        raise ValueError(
            f"{name}: shape {tuple(x_shape)} does not broadcast to {tuple(to_shape)}{extra}"
        )


def require_static_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name}: expected a Python int, got {type(value).__name__} {value!r}")
    return int(value)


def require_static_index(name: str, value) -> int:
    """A class index given as a Python int or, as torch takes a 0-d tensor, a concrete
    0-d integer array (NumPy or JAX). A traced one cannot be: it decides which
    targets are ignored, which is part of the compiled program."""
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        if isinstance(value, jax.core.Tracer):
            raise TypeError(
                f"{name}: expected a Python int or a concrete integer scalar, got a traced array {value!r}; "
                "pass it as a static argument"
            )
        if np.ndim(value) == 0 and np.issubdtype(value.dtype, np.integer):
            return int(value)
    return require_static_int(name, value)


def require_static_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def require_choice(name: str, value, choices: Sequence) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")


def check_scalar(
    name: str,
    value,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """Check a float hyper-parameter.

    It must be a real scalar (a Python number or a 0-d array). Its range is
    checked when it is concrete; a traced value passes unchecked (it stays traced
    so that changing it does not recompile).
    """
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected a real number, got bool")
    if isinstance(value, Real):
        v = float(value)
    else:
        arr = value if is_traced(value) else np.asarray(value) if not isinstance(value, jax.Array) else value
        if getattr(arr, "ndim", None) != 0 or not is_real(arr, allow_bool=False):
            raise TypeError(
                f"{name}: expected a real scalar, got {type(value).__name__} with shape "
                f"{getattr(arr, 'shape', '?')} and dtype {getattr(arr, 'dtype', '?')}"
            )
        if is_traced(arr):
            return
        v = float(arr)
    low_bad = lo is not None and (v <= lo if lo_open else v < lo)
    high_bad = hi is not None and (v >= hi if hi_open else v > hi)
    if low_bad or high_bad or v != v:
        lb = "(" if lo_open else "["
        hb = ")" if hi_open else "]"
        rng = f"{lb}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{hb}"
        raise ValueError(f"{name}: expected a value in {rng}, got {v}")


def check_values(name: str, x, predicate: Callable[[np.ndarray], np.ndarray], message: str) -> None:
    """Raise ``ValueError(f"{name}: {message}")`` if ``x`` is concrete and ``predicate`` fails.

    ``predicate`` maps the NumPy value of ``x`` to a boolean array; the check fails
    when any element is False. Traced values are not checked (see the module doc).
    """
    if x is None or is_traced(x):
        return
    ok = predicate(np.asarray(x))
    if not bool(np.all(ok)):
        raise ValueError(f"{name}: {message}")


def debug_check(pred: jax.Array, message: str, **fmt) -> None:
    """A value check for traced code, active under ``checkify.checkify`` only."""
    checkify.debug_check(pred, message, **fmt)


def warn_at_caller(message: str) -> None:
    """``warnings.warn(message)`` (a ``UserWarning``, as torch's) attributed to the
    first frame outside jaxloss: the line that called the public loss."""
    frame, level = sys._getframe(1), 2  # level 2: the frame of our caller
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] == "jaxloss":
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)
