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
