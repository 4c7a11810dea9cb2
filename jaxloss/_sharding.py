"""Inputs with explicit shardings (meshes of ``jax.sharding.AxisType.Explicit`` axes).

Under an explicit mesh an array's sharding is part of its type, and JAX refuses
operations whose result sharding it cannot infer without collectives: a gather or
a scatter along a sharded axis, a scatter into fresh (unsharded) zeros, slices of a
sharded axis that the mesh does not divide. The losses route those few operations
through the helpers below, which do nothing unless an axis is explicitly sharded
(cross_entropy's picked logit has its own branch, in ``_pick``).
With ``Auto`` axes (or none) the compiler partitions everything itself, and arrays
carry no sharding in their type.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec


def _type_sharding(x):
    """The sharding in ``x``'s type (None for non-arrays and arrays without one)."""
    return getattr(getattr(x, "aval", None), "sharding", None)


def _spec(x):
    """The explicit ``PartitionSpec`` of ``x``'s type, or None (no explicit axes)."""
    spec = getattr(_type_sharding(x), "spec", None)
    if spec is None or all(s is None for s in spec):
        return None
    return spec


def _on_mesh(x) -> bool:
    """Whether ``x``'s type is on a (non-empty) mesh, sharded or replicated."""
    mesh = getattr(_type_sharding(x), "mesh", None)
    return mesh is not None and not getattr(mesh, "empty", True)


def zeros_like(x, shape=None, dtype=None) -> jax.Array:
    """``jnp.zeros_like(x, dtype, shape)``, typed on ``x``'s explicit mesh if it has one.

    JAX 0.11 gives a replicated array on an explicit mesh zeros of no mesh (with or
    without ``out_sharding``), and a ``dynamic_update_slice`` then refuses to write a
    value computed from ``x`` into them (seen with jax 0.11.2; 0.10.2 kept the mesh).
    There the zeros are a select against a constant predicate, which keeps ``x``'s
    type and which XLA folds to zeros. Accumulators that loops update are made here."""
    if not _on_mesh(x):
        return jnp.zeros_like(x, dtype=dtype, shape=shape)
    z = jnp.where(False, x, jnp.zeros((), x.dtype)).astype(dtype or x.dtype)
    if shape is None or tuple(shape) == z.shape:
        return z
    return jnp.broadcast_to(jnp.sum(z), shape)  # replicated, on the mesh


def is_sharded(x, axis: int) -> bool:
    """Whether ``axis`` of ``x`` is explicitly sharded."""
    spec = _spec(x)
    return spec is not None and axis < len(spec) and spec[axis] is not None


def _reshard(x: jax.Array, *spec) -> jax.Array:
    return jax.sharding.reshard(x, NamedSharding(x.aval.sharding.mesh, PartitionSpec(*spec)))


def replicate_axis(x: jax.Array, axis: int) -> jax.Array:
    """``x`` with ``axis`` unsharded (an all-gather along it); ``x`` itself if it was not sharded."""
    if not is_sharded(x, axis):
        return x
    spec = list(_spec(x)) + [None] * (x.ndim - len(_spec(x)))
    spec[axis] = None
    return _reshard(x, *spec)


def replicate(x):
    """``x`` with no axis sharded; anything without an explicit sharding (None, a
    Python scalar, an unsharded array) is returned as it is."""
    return x if _spec(x) is None else _reshard(x)


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
