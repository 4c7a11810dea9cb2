"""A seeded fuzz of every loss under JAX's transformations (torch-free).

The cases are ``test_fuzz_live``'s (random layouts, options and data, float64), and
each is checked against jaxloss's own eager call:

- ``jax.jit`` with every array argument traced (targets, lengths and class weights
  too) gives the eager value;
- ``jax.vmap`` over a batch of two, with a random subset of the array arguments
  batched (the second copy of a differentiated argument perturbed, the others
  repeated), gives the two eager values, and ``vmap`` of ``grad`` the two eager
  gradients;
- ``jax.jvp`` and ``jax.vjp`` agree: ``<u, J t> = <J^T u, t>`` for random ``t``, ``u``,
  with respect to every argument torch differentiates;
- second order: forward-over-reverse and reverse-over-forward Hessian-vector
  products of the summed loss agree.

Cases that eager jaxloss rejects (the generator draws some invalid combinations,
for the comparison with torch's errors) are skipped here; ``test_fuzz_live`` checks
that torch rejects them too. The mutated cases of ``test_fuzz_live`` that eager
jaxloss rejects must be rejected under ``jit`` too (the checks run at trace time), or,
for the documented checks of traced values, give NaN. The tolerances are float64 rounding: the transformed
programs may fuse and order sums differently from the eager ones.
"""

from __future__ import annotations

import warnings
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxloss as L
from tests._fuzz_cases import BIG, NAMES, gen, mutate

RTOL, ATOL = 1e-10, 1e-12


def _close(a, b, rtol=RTOL, atol=ATOL) -> bool:
    return np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=atol, equal_nan=True)


def _check(name, args, kw, gidx, r):  # noqa: C901 (one block per transformation)
    """What differs on this case (an empty list when nothing does; None when eager
    jaxloss rejects the case)."""
    kw = dict(kw)
    static = dict(kw.pop("__jl", {}))
    arrays = {k: jnp.asarray(v) for k, v in kw.items() if isinstance(v, np.ndarray)}
    static.update({k: v for k, v in kw.items() if not isinstance(v, np.ndarray)})
    loss = getattr(L, name)

    def fn(pos, named):
        pos = list(pos)
        if name == "ctc_loss":  # differentiated through log_softmax, as CTC is used
            pos[0] = jax.nn.log_softmax(pos[0], -1)
        return loss(*pos, **named, **static)

    pos = [a if type(a) is float else jnp.asarray(a) for a in args]
    try:
        ref = fn(pos, arrays)
    except (ValueError, TypeError):
        return None
    problems = []

    # jit, every array traced (floats of the signature stay Python floats: static).
    traced = [i for i, a in enumerate(pos) if type(a) is not float]

    def with_traced(vals, named):
        full = list(pos)
        for i, v in zip(traced, vals):
            full[i] = v
        return fn(full, named)

    try:
        out = jax.jit(with_traced)([pos[i] for i in traced], arrays)
        if out.shape != ref.shape or out.dtype != ref.dtype or not _close(out, ref):
            problems.append(f"jit: {np.asarray(out).ravel()[:6]} ({out.dtype}) vs eager {np.asarray(ref).ravel()[:6]}")
    except Exception as e:  # noqa: BLE001 (any failure is a finding)
        problems.append(f"jit raised {type(e).__name__}: {str(e)[:200]}")

    diff = [i for i in gidx if type(pos[i]) is not float and jnp.issubdtype(pos[i].dtype, jnp.floating)]
    # vmap over two: a random subset of the array arguments batched (at least one).
    second = list(pos)
    for i in diff:
        second[i] = pos[i] * jnp.asarray(r.uniform(0.985, 0.995, pos[i].shape), pos[i].dtype)
    keys = sorted(arrays)
    slots = [("p", i) for i in traced] + [("k", k) for k in keys]
    batched = [bool(r.random() < 0.5) for _ in slots]
    if not any(batched):
        batched[int(r.integers(len(slots)))] = True

    def split(vals):
        return list(vals[: len(traced)]), dict(zip(keys, vals[len(traced) :]))

    firsts = [pos[i] for i in traced] + [arrays[k] for k in keys]
    seconds = [second[i] for i in traced] + [arrays[k] for k in keys]
    seconds = [b if bt else a for a, b, bt in zip(firsts, seconds, batched)]  # unbatched: shared
    stacked = [jnp.stack([a, b]) if bt else a for a, b, bt in zip(firsts, seconds, batched)]
    axes = [0 if bt else None for bt in batched]
    try:
        ref2 = with_traced(*split(seconds))
        vo = jax.vmap(lambda *v: with_traced(*split(v)), in_axes=axes)(*stacked)
        if not (_close(vo[0], ref) and _close(vo[1], ref2)):
            problems.append(
                f"vmap: {np.asarray(vo).ravel()[:6]} vs eager {np.asarray(ref).ravel()[:3]}, {np.asarray(ref2).ravel()[:3]}"
            )
        if diff:
            at = traced.index(diff[0])

            def total(*v):
                return jnp.sum(with_traced(*split(v)))

            g = jax.vmap(jax.grad(total, argnums=at), in_axes=axes)(*stacked)
            g0 = jax.grad(total, argnums=at)(*firsts)
            g1 = jax.grad(total, argnums=at)(*seconds)
            if not (_close(g[0], g0) and _close(g[1], g1)):
                problems.append(f"vmap(grad): {np.asarray(g[0]).ravel()[:6]} vs eager {np.asarray(g0).ravel()[:6]}")
    except Exception as e:  # noqa: BLE001
        problems.append(f"vmap raised {type(e).__name__}: {str(e)[:200]}")
    if not diff or bool(jnp.any(jnp.isnan(ref))):
        # A NaN value: a "mean" over nothing (an empty batch, every target ignored).
        # Its tangent is then sum(t) / 0, NaN, as in torch's forward mode, while the
        # vjp is 0 as in torch's backward, so <u, J t> = <J^T u, t> does not hold.
        return problems

    def f(*xs):
        full = list(pos)
        for i, x in zip(diff, xs):
            full[i] = x
        return fn(full, arrays)

    primals = [pos[i] for i in diff]
    tangents = [jnp.asarray(r.standard_normal(p.shape), p.dtype) for p in primals]
    try:
        _, jt = jax.jvp(f, primals, tangents)
        out, vjp = jax.vjp(f, *primals)
        u = jnp.asarray(r.standard_normal(out.shape), out.dtype)
        lhs = float(jnp.sum(u * jt))
        rhs = float(sum(jnp.sum(g * t) for g, t in zip(vjp(u), tangents)))
        if np.isfinite(lhs) != np.isfinite(rhs) or (np.isfinite(lhs) and not _close(lhs, rhs, rtol=1e-8, atol=1e-10)):
            problems.append(f"<u, J t> = {lhs} but <J^T u, t> = {rhs}")
    except Exception as e:  # noqa: BLE001
        problems.append(f"jvp/vjp raised {type(e).__name__}: {str(e)[:200]}")

    # Hessian-vector products of the summed loss in the first differentiated argument.
    x0, t0 = primals[0], tangents[0]

    def s(x):
        return jnp.sum(f(x, *primals[1:]))

    try:
        fwd_rev = jax.jvp(jax.grad(s), (x0,), (t0,))[1]
        rev_fwd = jax.grad(lambda x: jax.jvp(s, (x,), (t0,))[1])(x0)
        if not _close(fwd_rev, rev_fwd, rtol=1e-8, atol=1e-10):
            problems.append(
                f"hvp: fwd-over-rev {np.asarray(fwd_rev).ravel()[:6]} vs rev-over-fwd {np.asarray(rev_fwd).ravel()[:6]}"
            )
    except Exception as e:  # noqa: BLE001
        problems.append(f"hvp raised {type(e).__name__}: {str(e)[:200]}")
    return problems


CASES = [(n, False, 3) for n in NAMES] + [(n, True, 1) for n in BIG]


@pytest.mark.parametrize("name,big,count", CASES, ids=[f"{n}{'-big' if b else ''}" for n, b, _ in CASES])
def test_random_cases_under_transformations(name, big, count):
    r = np.random.default_rng(zlib.crc32(f"transforms/{name}/{big}".encode()))
    failures, checked, drawn = [], 0, 0
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's broadcast warnings, which jaxloss repeats
        while checked < count and drawn < 10 * count:
            drawn += 1
            args, kw, gidx = gen(r, name, big)
            problems = _check(name, args, kw, gidx, r)
            if problems is None:
                continue
            checked += 1
            if problems:
                shown = {key: (np.shape(v) if isinstance(v, np.ndarray) else v) for key, v in kw.items()}
                failures.append(
                    f"shapes {[np.shape(a) for a in args]}, {shown}: " + "; ".join(p[:300] for p in problems)
                )
    assert checked == count, f"only {checked} of {drawn} drawn cases were valid"
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", NAMES)
def test_mutated_cases_rejected_eagerly_are_rejected_under_jit(name):
    # The cases of test_fuzz_live's mutated-input test: one argument with a dimension added
    # or dropped, the last one grown or the dtype changed. What eager jaxloss rejects must
    # be rejected at trace time under jax.jit too, naming the same argument, with every
    # array traced. The exception is a check of traced values (ctc_loss's concatenated
    # target lengths that do not sum to the targets' length), which cannot raise inside
    # jit: those cases must give NaN, as the docstrings say.
    r = np.random.default_rng(zlib.crc32(f"mutated-jit/{name}".encode()))
    failures, rejected = [], 0
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(12):
            args, kw, _ = gen(r, name)
            mutated = mutate(r, args, kw)
            if mutated is None:
                continue
            args, kw, _, desc = mutated
            static = dict(kw.pop("__jl", {}))
            arrays = {k: jnp.asarray(v) for k, v in kw.items() if isinstance(v, np.ndarray)}
            static.update({k: v for k, v in kw.items() if not isinstance(v, np.ndarray)})
            pos = [a if type(a) is float else jnp.asarray(a) for a in args]
            loss = getattr(L, name)
            try:
                loss(*pos, **arrays, **static)
                continue
            except (ValueError, TypeError) as e:
                eager = e
            rejected += 1
            traced = [i for i, a in enumerate(pos) if type(a) is not float]

            def call(vals, named):
                full = list(pos)
                for i, v in zip(traced, vals):
                    full[i] = v
                return loss(*full, **named, **static)

            try:
                out = jax.jit(call)([pos[i] for i in traced], arrays)
            except (ValueError, TypeError) as e:
                if str(e).split(":")[0] != str(eager).split(":")[0]:
                    failures.append(f"{desc}: eager '{eager}', under jit '{e}'")
                continue
            if not bool(jnp.any(jnp.isnan(out))):
                failures.append(f"{desc}: eager raised '{eager}', under jit it gave {np.asarray(out).ravel()[:6]}")
    assert rejected, "no mutated case was rejected"
    assert not failures, "\n".join(failures)
