"""Every loss on sharded inputs, on 4 simulated CPU devices; run by test_sharding.py.

``python -m tests._sharded_cases OUT.json`` runs ``jax.jit(value_and_grad)`` of each case
on plain arrays, then, per mesh kind (``Auto`` and ``Explicit`` axes, a 2 x 2 mesh
``("data", "model")``), on the same arrays placed with the case's shardings, and writes
per case whether it ran, the largest differences of the values and gradients, the
gradients' shardings, how many all-gathers the sharded program has, and how many
all-reduces it has outside its entry computation (in loops). It compiles as the test
suite does (``jax_disable_most_optimizations`` unless JAXLOSS_TEST_OPTIMIZED=1; with jax
0.10.2 every case's collectives and shardings were the same either way). The XLA flag
that simulates the devices must be set before JAX starts its backend, hence a separate
process.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxloss as J

N, C, D, T, S = 8, 6, 4, 10, 3


def cases():
    """name -> (loss of the arrays, arrays, their PartitionSpecs)."""
    rng = np.random.default_rng(0)

    def f32(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    y = rng.integers(0, C, N)
    y[1] = -100
    y4 = rng.integers(0, 4, N)
    probs = np.abs(f32(N, C))
    probs /= probs.sum(1, keepdims=True)
    pm1 = np.where(rng.random(N) < 0.5, 1.0, -1.0).astype(np.float32)
    listed = np.full((N, 4), -1)
    listed[:, 0] = rng.integers(0, 4, N)
    listed[:, 1] = rng.integers(0, 4, N)
    log_probs = np.asarray(jax.nn.log_softmax(f32(T, N, C), axis=-1))
    tg = rng.integers(1, C, (N, S))
    il = np.full(N, T)
    tl = rng.integers(1, S + 1, N)
    tg_cat = np.concatenate([tg[i, : tl[i]] for i in range(N)])
    row, rows, cls = P("data"), P("data", "model"), P("model")
    return {
        # cross_entropy / nll_loss: batch-sharded, and class-sharded (vocabulary-parallel logits)
        "cross_entropy": (lambda a, b: J.cross_entropy(a, b), [f32(N, C), y], [row, row]),
        "cross_entropy_options": (
            lambda a, b, w: J.cross_entropy(a, b, weight=w, ignore_index=2, label_smoothing=0.1),
            [f32(N, C), y % C, np.abs(f32(C))],
            [row, row, P()],
        ),
        # 256 classes: float32 "mean"/"sum" shift by the picked logit (with explicit axes only
        # where the classes are not sharded)
        "cross_entropy_picked_shift": (
            lambda a, b, w: J.cross_entropy(a, b, weight=w, label_smoothing=0.1),
            [f32(N, 256), rng.integers(0, 256, N), np.abs(f32(256))],
            [row, row, P()],
        ),
        "cross_entropy_picked_shift_class_sharded": (
            lambda a, b: J.cross_entropy(a, b, reduction="sum"),
            [f32(N, 256), rng.integers(0, 256, N)],
            [rows, row],
        ),
        "cross_entropy_class_sharded": (lambda a, b: J.cross_entropy(a, b), [f32(N, 4), y4], [rows, row]),
        "cross_entropy_class_sharded_options": (
            lambda a, b, w: J.cross_entropy(a, b, weight=w, ignore_index=1, label_smoothing=0.2),
            [f32(N, 4), y4, np.abs(f32(4))],
            [rows, row, cls],
        ),
        "cross_entropy_class_sharded_none": (
            lambda a, b: J.cross_entropy(a, b, reduction="none").sum(),
            [f32(N, 4), y4],
            [rows, row],
        ),
        "cross_entropy_class_sharded_bf16": (
            lambda a, b: J.cross_entropy(a.astype(jnp.bfloat16), b, label_smoothing=0.1).astype(jnp.float32),
            [f32(N, 4), y4],
            [rows, row],
        ),
        "cross_entropy_class_sharded_probs": (
            lambda a, b: J.cross_entropy(a, b, label_smoothing=0.1),
            [f32(N, 4), probs[:, :4]],
            [rows, rows],
        ),
        "cross_entropy_kdim_class_sharded": (
            lambda a, b: J.cross_entropy(a, b),
            [f32(N, 4, 3), rng.integers(0, 4, (N, 3))],
            [rows, row],
        ),
        "nll_loss_class_sharded": (
            lambda a, b, w: J.nll_loss(a, b, weight=w),
            [f32(N, 4), y4, np.abs(f32(4))],
            [rows, row, P()],
        ),
        # linear_cross_entropy: rows and/or vocabulary sharded
        "linear_cross_entropy_rows": (
            lambda a, w, b: J.linear_cross_entropy(a, w, b, chunk_size=3),
            [f32(N, D), f32(C, D), y],
            [row, P(), row],
        ),
        "linear_cross_entropy_vocab": (
            lambda a, w, bias, b: J.linear_cross_entropy(a, w, b, linear_bias=bias, chunk_size=2),
            [f32(N, D), f32(8, D), f32(8), y % 8],
            [P(), cls, cls, P()],
        ),
        "linear_cross_entropy_rows_vocab_options": (
            lambda a, w, cw, b: J.linear_cross_entropy(a, w, b, weight=cw, label_smoothing=0.1, chunk_size=3),
            [f32(N, D), f32(8, D), np.abs(f32(8)), y % 8],
            [row, cls, cls, row],
        ),
        # rows sharded (explicit axes: a chunk loop per device over its own rows)
        "linear_cross_entropy_rows_probs": (
            lambda a, w, bias, t, eps: J.linear_cross_entropy(
                a, w, t, linear_bias=bias, label_smoothing=eps, chunk_size=3
            ),
            [f32(N, D), f32(C, D), f32(C), probs, np.float32(0.2)],
            [row, P(), P(), row, P()],
        ),
        "linear_cross_entropy_rows_kdim_sum": (
            lambda a, w, bias, cw, b: J.linear_cross_entropy(
                a, w, b, linear_bias=bias, weight=cw, ignore_index=2, reduction="sum", chunk_size=3
            ),
            [f32(N, D), f32(C, 2, D), f32(C, 2), np.abs(f32(C)), rng.integers(0, C, (N, 2))],
            [row, P(), P(), P(), row],
        ),
        "linear_cross_entropy_rows_checkpoint": (
            lambda a, w, cw, b: J.linear_cross_entropy(a, w, b, weight=cw, method="checkpoint", chunk_size=3),
            [f32(N, D), f32(C, D), np.abs(f32(C)), y],
            [row, P(), P(), row],
        ),
        "linear_cross_entropy_rows_all_devices": (
            lambda a, w, b: J.linear_cross_entropy(a, w, b, label_smoothing=0.1, chunk_size=3),
            [f32(N, D), f32(C, D), y],
            [P(("data", "model")), P(), P()],
        ),
        "linear_cross_entropy_rows_jvp": (
            # forward mode inside, reverse mode over it: a Hessian-vector product
            lambda a, w, b: jax.jvp(
                lambda a: J.linear_cross_entropy(a, w, b, weight=jnp.arange(1.0, C + 1), chunk_size=3),
                (a,),
                (jnp.cos(a),),
            )[1],
            [f32(N, D), f32(C, D), y],
            [row, P(), row],
        ),
        # rows and vocabulary sharded (2-D): nothing gathered
        "linear_cross_entropy_rows_vocab": (
            lambda a, w, bias, b: J.linear_cross_entropy(a, w, b, linear_bias=bias, label_smoothing=0.1, chunk_size=3),
            [f32(N, D), f32(8, D), f32(8), y % 8],
            [row, cls, cls, row],
        ),
        "linear_cross_entropy_rows_vocab_kdim": (
            lambda a, w, bias, b: J.linear_cross_entropy(a, w, b, linear_bias=bias, ignore_index=3, chunk_size=3),
            [f32(N, D), f32(8, 2, D), f32(8, 2), rng.integers(0, 8, (N, 2))],
            [row, cls, cls, row],
        ),
        "linear_cross_entropy_vocab_probs_checkpoint": (
            lambda a, w, t: J.linear_cross_entropy(a, w, t, label_smoothing=0.2, method="checkpoint", chunk_size=3),
            [f32(N, D), f32(8, D), np.abs(f32(N, 8)) / 4],
            [P(), cls, P()],
        ),
        "linear_cross_entropy_none": (
            lambda a, w, b: J.linear_cross_entropy(a, w, b, reduction="none", chunk_size=3).sum(),
            [f32(N, D), f32(8, D), y % 8],
            [row, cls, row],
        ),
        # method="tiled": tiles of rows by classes (a weight sharded along the classes
        # computes each device's chunk logits whole)
        "linear_cross_entropy_rows_tiled_options": (
            lambda a, w, bias, cw, b: J.linear_cross_entropy(
                a, w, b, linear_bias=bias, weight=cw, label_smoothing=0.1, method="tiled", chunk_size=(3, 2)
            ),
            [f32(N, D), f32(C, D), f32(C), np.abs(f32(C)), y],
            [row, P(), P(), P(), row],
        ),
        "linear_cross_entropy_rows_tiled_probs_kdim": (
            lambda a, w, t: J.linear_cross_entropy(a, w, t, method="tiled", chunk_size=(3, 2)),
            [f32(N, D), f32(C, 2, D), np.abs(f32(N, C, 2)) / 4],
            [row, P(), row],
        ),
        "linear_cross_entropy_rows_tiled_none": (
            lambda a, w, b: J.linear_cross_entropy(
                a, w, b, reduction="none", label_smoothing=0.2, method="tiled", chunk_size=(3, 2)
            ).sum(),
            [f32(N, D), f32(C, D), y],
            [row, P(), row],
        ),
        "linear_cross_entropy_rows_vocab_tiled": (
            lambda a, w, b: J.linear_cross_entropy(a, w, b, method="tiled", chunk_size=(3, 2)),
            [f32(N, D), f32(8, D), y % 8],
            [row, cls, row],
        ),
        # the rest: batch-sharded (and class-sharded where there is a class axis)
        "binary_cross_entropy": (
            lambda a, b, w: J.binary_cross_entropy(jax.nn.sigmoid(a), b, weight=w),
            [f32(N, C), probs, np.abs(f32(N, C))],
            [rows, rows, rows],
        ),
        "binary_cross_entropy_with_logits": (
            lambda a, b, pw: J.binary_cross_entropy_with_logits(a, b, pos_weight=pw),
            [f32(N, 4), probs[:, :4], np.abs(f32(4))],
            [rows, rows, cls],
        ),
        "kl_div": (lambda a, b: J.kl_div(a, b, reduction="batchmean", log_target=True), [f32(N, C), f32(N, C)], [row, row]),
        "poisson_nll_loss": (lambda a, b: J.poisson_nll_loss(a, b, full=True), [f32(N, C), probs * 3], [row, row]),
        "gaussian_nll_loss": (
            lambda a, b, v: J.gaussian_nll_loss(a, b, jnp.abs(v) + 0.1, full=True),
            [f32(N, C), f32(N, C), f32(N, C)],
            [row, row, row],
        ),
        "mse_loss": (lambda a, b: J.mse_loss(a, b), [f32(N, C), f32(N, C)], [rows, rows]),
        "l1_loss": (lambda a, b: J.l1_loss(a, b, reduction="sum"), [f32(N, C), f32(N, C)], [row, row]),
        "huber_loss": (lambda a, b: J.huber_loss(a, b, delta=0.5), [f32(N, C), f32(N, C)], [row, row]),
        "smooth_l1_loss": (lambda a, b: J.smooth_l1_loss(a, b, beta=0.5), [f32(N, C), f32(N, C)], [row, row]),
        "soft_margin_loss": (lambda a, b: J.soft_margin_loss(a, b), [f32(N, C), np.sign(f32(N, C))], [row, row]),
        "multilabel_soft_margin_loss": (
            lambda a, b: J.multilabel_soft_margin_loss(a, b),
            [f32(N, C), (f32(N, C) > 0).astype(np.float32)],
            [rows, rows],
        ),
        "multi_margin_loss": (
            lambda a, b, w: J.multi_margin_loss(a, b, p=2, margin=0.5, weight=w),
            [f32(N, C), y % C, np.abs(f32(C))],
            [row, row, P()],
        ),
        "multi_margin_loss_class_sharded": (lambda a, b: J.multi_margin_loss(a, b), [f32(N, 4), y4], [rows, row]),
        "multilabel_margin_loss": (lambda a, b: J.multilabel_margin_loss(a, b), [f32(N, 4), listed], [row, row]),
        "multilabel_margin_loss_class_sharded": (
            lambda a, b: J.multilabel_margin_loss(a, b),
            [f32(N, 4), listed],
            [rows, rows],
        ),
        "hinge_embedding_loss": (lambda a, b: J.hinge_embedding_loss(a, b), [f32(N, C), np.sign(f32(N, C))], [row, row]),
        "margin_ranking_loss": (lambda a, b, c: J.margin_ranking_loss(a, b, c, margin=0.1), [f32(N), f32(N), pm1], [row] * 3),
        "cosine_embedding_loss": (lambda a, b, c: J.cosine_embedding_loss(a, b, c), [f32(N, D), f32(N, D), pm1], [row] * 3),
        "pairwise_distance": (lambda a, b: J.pairwise_distance(a, b, p=3.0).sum(), [f32(N, D), f32(N, D)], [row, row]),
        "triplet_margin_loss": (
            lambda a, b, c: J.triplet_margin_loss(a, b, c, p=1, swap=True),
            [f32(N, D), f32(N, D), f32(N, D)],
            [row] * 3,
        ),
        "triplet_margin_with_distance_loss": (
            lambda a, b, c: J.triplet_margin_with_distance_loss(a, b, c, swap=True),
            [f32(N, D), f32(N, D), f32(N, D)],
            [row] * 3,
        ),
        "ctc_loss": (lambda a, b, c, d: J.ctc_loss(a, b, c, d), [log_probs, tg, il, tl], [P(None, "data"), row, row, row]),
        "ctc_loss_concatenated_none": (
            lambda a, b, c, d: J.ctc_loss(a, b, c, d, reduction="none").sum(),
            [log_probs, tg_cat, il, tl],
            [P(None, "data"), P(), row, row],
        ),
    }


def spec_str(sharding) -> str:
    """A PartitionSpec as a string, without trailing unsharded axes."""
    spec = list(sharding.spec)
    while spec and spec[-1] is None:
        spec.pop()
    return str(tuple(spec))


def run(kinds=("Auto", "Explicit")) -> dict:
    """kind -> case name -> result. The plain-array run of each case is shared by the kinds."""
    out = {kind: {} for kind in kinds}
    meshes = {kind: jax.make_mesh((2, 2), ("data", "model"), axis_types=(getattr(AxisType, kind),) * 2) for kind in kinds}
    for name, (fn, arrays, specs) in cases().items():
        diff = tuple(i for i, a in enumerate(arrays) if np.asarray(a).dtype.kind == "f")
        f = jax.jit(jax.value_and_grad(fn, argnums=diff))
        try:
            v0, g0 = f(*arrays)
        except Exception as e:  # reported per case by the test
            for kind in kinds:
                out[kind][name] = {"ok": False, "error": f"unsharded: {type(e).__name__}: {e}"[:2000]}
            continue
        for kind, mesh in meshes.items():
            try:
                placed = [jax.device_put(a, NamedSharding(mesh, s)) for a, s in zip(arrays, specs)]
                v1, g1 = f(*placed)
                hlo = f.lower(*placed).compile().as_text()  # the executable just run (cached)
                out[kind][name] = {
                    "ok": True,
                    "value": float(v0),
                    "dv": float(abs(v1 - v0)),
                    "grad_scale": max(float(np.max(np.abs(a))) for a in g0),
                    "dg": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(g0, g1)),
                    "grad_specs": [spec_str(g.sharding) for g in g1],
                    "input_specs": [spec_str(placed[i].sharding) for i in diff],
                    "all_gathers": hlo.count(" all-gather"),
                    "loop_all_reduces": sum(
                        c.count(" all-reduce") for c in hlo.split("\n\n") if not c.lstrip().startswith("ENTRY")
                    ),
                }
            except Exception as e:  # reported per case by the test
                out[kind][name] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]}
    return out


if __name__ == "__main__":
    # Read when JAX first starts its backend (not at import), so set here. The platform
    # is a config option, read from the environment at import: set it directly, so that
    # a machine with a GPU also runs these cases on 4 simulated CPU devices.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    jax.config.update("jax_platforms", "cpu")
    # As in tests/conftest.py: compiling dominates, and the optimisation passes change no
    # value. The partitioner runs either way (see the module docstring).
    if os.environ.get("JAXLOSS_TEST_OPTIMIZED", "") in ("", "0"):
        jax.config.update("jax_disable_most_optimizations", True)
    result = {"devices": jax.device_count(), **run()}
    with open(sys.argv[1], "w") as fh:
        json.dump(result, fh, indent=1)
