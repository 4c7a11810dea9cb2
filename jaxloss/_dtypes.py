"""Dtype rules: torch-like result dtypes and a float32-or-wider compute dtype."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def result_dtype(*arrays) -> np.dtype:
    """The floating dtype torch returns for these floating arguments.

    Promotion follows torch for floating types: bf16 with f16 -> f32, bf16 with
    f32 -> f32, f32 with f64 -> f64. ``None`` entries are skipped. Python scalars
    (weak types) do not promote an array's dtype, as in torch.
    """
    dtypes = [a for a in arrays if a is not None]
    return np.dtype(jnp.result_type(*dtypes))


def compute_dtype(dtype) -> np.dtype:
    """The dtype to accumulate exp/log/sum in: at least float32."""
    return np.dtype(jnp.promote_types(dtype, jnp.float32))


def _category(dtype) -> int:
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return 0
    if jnp.issubdtype(dtype, jnp.integer):
        return 1
    return 2 if jnp.issubdtype(dtype, jnp.floating) else 3


def tensor_result_dtype(*operands) -> np.dtype:
    """torch's result dtype of an element-wise operation on tensors, 0-d ones included.

    ``operands`` are arrays or ``(dtype, ndim)`` pairs; ``None`` entries are skipped.
    As in torch, a 0-d tensor promotes the tensors with dimensions only when its
    category (bool < integer < floating) is higher than theirs: float32 ``(3,)``
    times float64 ``()`` is float32, int32 ``(3,)`` times float64 ``()`` is float64.
    """
    dims, zero_d = [], []
    for op in operands:
        if op is None:
            continue
        dtype, ndim = op if isinstance(op, tuple) else (op.dtype, op.ndim)
        (dims if ndim > 0 else zero_d).append(np.dtype(dtype))
    if not dims:
        return result_dtype(*zero_d)
    out = result_dtype(*dims)
    if zero_d and _category(result_dtype(*zero_d)) > _category(out):
        return result_dtype(out, *zero_d)
    return out
