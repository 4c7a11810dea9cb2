"""Inputs with explicit shardings (meshes of ``jax.sharding.AxisType.Explicit`` axes).

Under an explicit mesh an array's sharding is part of its type, and JAX refuses
operations whose result sharding it cannot infer without collectives: a gather or
a scatter along a sharded axis, a scatter into fresh (unsharded) zeros, slices of a
sharded axis that the mesh does not divide. The losses route those few operations
through the helpers below, which do nothing unless an axis is explicitly sharded.
With ``Auto`` axes (or none) the compiler partitions everything itself, and arrays
carry no sharding in their type.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec


def _spec(x):
    """The explicit ``PartitionSpec`` of ``x``'s type, or None (no explicit axes)."""
    sharding = getattr(getattr(x, "aval", None), "sharding", None)
    spec = getattr(sharding, "spec", None)
    if spec is None or all(s is None for s in spec):
        return None
    return spec


def is_sharded(x, axis: int) -> bool:
    """Whether ``axis`` of ``x`` is explicitly sharded."""
    spec = _spec(x)
    return spec is not None and axis < len(spec) and spec[axis] is not None


def replicate_axis(x: jax.Array, axis: int) -> jax.Array:
    """``x`` with ``axis`` unsharded (an all-gather along it); ``x`` itself if it was not sharded."""
    if not is_sharded(x, axis):
        return x
    spec = list(_spec(x)) + [None] * (x.ndim - len(_spec(x)))
    spec[axis] = None
    return jax.sharding.reshard(x, NamedSharding(x.aval.sharding.mesh, PartitionSpec(*spec)))


def replicate(x):
    """``x`` with no axis sharded (None stays None)."""
    if x is None or _spec(x) is None:
        return x
    return jax.sharding.reshard(x, NamedSharding(x.aval.sharding.mesh, PartitionSpec()))


def take(x: jax.Array, idx: jax.Array, axis: int) -> jax.Array:
    """``x`` at index ``idx`` along ``axis`` (``idx`` has ``x``'s shape without ``axis``;
    every index in range). A gather; where ``axis`` is explicitly sharded, a one-hot
    masked sum instead, whose reduction over the sharded axis is an all-reduce of the
    result (a gather would need every shard's slice of ``x``)."""
    if not is_sharded(x, axis):
        return jnp.take_along_axis(x, jnp.expand_dims(idx, axis), axis=axis).squeeze(axis)
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    hit = jnp.arange(x.shape[axis], dtype=jnp.int32).reshape(shape) == jnp.expand_dims(idx.astype(jnp.int32), axis)
    return jnp.sum(jnp.where(hit, x, jnp.zeros((), x.dtype)), axis=axis, dtype=x.dtype)


def take_rows(table: jax.Array, idx: jax.Array) -> jax.Array:
    """``table[idx]`` (a per-class table, e.g. class weights, indexed by class targets).
    Where ``idx`` is explicitly sharded, the table is replicated and the result takes
    ``idx``'s sharding (JAX cannot infer it for a gather)."""
    table = replicate_axis(table, 0)
    spec = _spec(idx)
    if spec is None:
        return table[idx]
    spec = tuple(spec) + (None,) * (idx.ndim - len(spec) + table.ndim - 1)
    return table.at[idx].get(out_sharding=NamedSharding(idx.aval.sharding.mesh, PartitionSpec(*spec)))
