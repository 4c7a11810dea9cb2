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

import math

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec


GPU_PLATFORMS = ("gpu", "cuda", "rocm")


def platform(x) -> str:
    """The platform ``x`` will be computed on: its devices' if it is a placed array,
    else (a tracer, a ShapeDtypeStruct) the default device's (``jax.default_device``)
    or JAX's default backend."""
    if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer):
        try:
            return next(iter(x.devices())).platform
        except Exception:  # e.g. a deleted array: fall back to the defaults below
            pass
    device = jax.config.jax_default_device
    if device is not None:
        return device if isinstance(device, str) else device.platform
    return jax.default_backend()


def _type_sharding(x):
    """The sharding in ``x``'s type (None for non-arrays and arrays without one)."""
    return getattr(getattr(x, "aval", None), "sharding", None)


def sharding_of(x):
    """The sharding in ``x``'s type where it is on a mesh, else None."""
    return _type_sharding(x) if _on_mesh(x) else None


def replicated_on_mesh_of(x):
    """A replicated sharding on ``x``'s mesh."""
    return NamedSharding(mesh_of(x), PartitionSpec())


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


def _vma(x) -> frozenset:
    """The manual mesh axes that ``x`` varies over inside ``shard_map`` (empty elsewhere).
    (``aval.mat.varying`` in jax 0.10 and later, ``aval.vma`` before.)"""
    aval = getattr(x, "aval", None)
    mat = getattr(aval, "mat", None)
    return frozenset(getattr(mat, "varying", None) or getattr(aval, "vma", None) or ())


def vary_like(tree, *likes):
    """``tree``'s arrays typed as varying over every manual axis that ``likes`` vary over.

    Inside ``shard_map`` two things need it: a loop's carry must keep its type (an
    accumulator started from zeros, invariant, that adds values computed from
    per-device rows, varying, must start varying); and a replicated input (a weight)
    used with per-device rows is best typed varying at entry, so that autodiff sums
    its gradient across devices once, where the varying type is cast back, instead of
    in every use. Outside ``shard_map`` this returns ``tree`` unchanged."""
    axes = frozenset().union(*map(_vma, jax.tree.leaves(likes)))
    if not axes:
        return tree

    def one(a):
        missing = tuple(sorted(axes - _vma(a)))
        return jax.lax.pcast(a, missing, to="varying") if missing else a

    return jax.tree.map(one, tree)


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


def mesh_of(x):
    """The mesh in ``x``'s type (an abstract mesh under ``jit``)."""
    return _type_sharding(x).mesh


def _axis_names(axes) -> tuple:
    return axes if isinstance(axes, tuple) else (axes,)


def _row_split(x):
    """(mesh axes of ``x``'s explicitly sharded axis 0, number of blocks), or None
    (also when the blocks do not divide the rows, which a per-device loop over whole
    rows needs)."""
    if not is_sharded(x, 0):
        return None
    axes = _spec(x)[0]
    shards = math.prod(mesh_of(x).shape[a] for a in _axis_names(axes))
    return (axes, shards) if x.shape[0] % shards == 0 else None


def row_axes(x):
    """The mesh axes that ``x``'s axis 0 is explicitly sharded over, or None (also when
    they do not divide it, which a per-device loop over whole rows needs)."""
    split = _row_split(x)
    return None if split is None else split[0]


def row_shards(x) -> int:
    """Into how many blocks :func:`row_axes` splits ``x``'s rows (1 if it does not)."""
    split = _row_split(x)
    return 1 if split is None else split[1]


def keep_rows(x):
    """``x`` with only its axis 0 (rows) left sharded, and only where :func:`row_axes`
    allows a per-device loop over them; otherwise :func:`replicate`."""
    axes = row_axes(x)
    if axes is None:
        return replicate(x)
    spec = _spec(x)
    if spec[0] == axes and all(s is None for s in spec[1:]):
        return x
    return _reshard(x, axes)


def shard_rows(x, axes, mesh):
    """``x`` with axis 0 sharded over ``axes`` of ``mesh`` and nothing else sharded."""
    spec = _spec(x)
    if spec is not None and spec[0] == axes and all(s is None for s in spec[1:]):
        return x
    return jax.sharding.reshard(x, NamedSharding(mesh, PartitionSpec(axes)))


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
