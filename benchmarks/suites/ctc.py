"""ctc_loss: jaxloss against optax.ctc_loss and torch (CPU), value and value_and_grad.

Every implementation computes the same number from the same logits: the summed
CTC loss of ``log_softmax(logits)`` (optax applies the log_softmax itself), and
``value_and_grad`` differentiates with respect to the logits. jaxloss and torch
take time-major ``(T, N, C)`` logits with padded ``(N, S)`` targets and lengths;
optax takes the same data batch-major ``(N, T, C)`` with 0/1 padding masks.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxloss
from benchmarks.harness import BenchCase, jax_case

LOSS = "ctc_loss"
DEFAULT = {"T": 200, "N": 32, "C": 30, "S": 40}
LONG = {"T": 1000, "N": 32, "C": 30, "S": 40}
MODES = ("value", "value_and_grad")


def _data(T: int, N: int, C: int, S: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Logits, padded targets (labels in [1, C)), lengths between half and all of T and S."""
    r = np.random.default_rng(seed)
    logits = r.standard_normal((T, N, C)).astype(np.float32)
    targets = r.integers(1, C, (N, S)).astype(np.int32)
    tl = r.integers(max(S // 2, 0), S + 1, N).astype(np.int32)
    tl[0] = S
    # Enough frames for any target of length <= S (repeats need a blank between them).
    lo = min(2 * S + 1, T)
    il = r.integers(max(lo, T // 2), T + 1, N).astype(np.int32)
    il[0] = T
    return {"logits": logits, "targets": targets, "il": il, "tl": tl}


def _jaxloss_fn(x, targets, il, tl):
    return jaxloss.ctc_loss(jax.nn.log_softmax(x, axis=-1), targets, il, tl, reduction="sum")


def _optax_fn(xb, logit_paddings, targets, label_paddings):
    import optax

    return jnp.sum(optax.ctc_loss(xb, logit_paddings, targets, label_paddings))


def _optax_args(d: dict[str, np.ndarray]) -> tuple:
    T = d["logits"].shape[0]
    S = d["targets"].shape[1]
    xb = jnp.asarray(np.transpose(d["logits"], (1, 0, 2)))
    logit_paddings = jnp.asarray((np.arange(T)[None, :] >= d["il"][:, None]).astype(np.float32))
    label_paddings = jnp.asarray((np.arange(S)[None, :] >= d["tl"][:, None]).astype(np.float32))
    return xb, logit_paddings, jnp.asarray(d["targets"]), label_paddings


def _torch_case(size: dict[str, Any], mode: str, d: dict[str, np.ndarray]) -> BenchCase | None:
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    logits = torch.from_numpy(d["logits"].copy())
    targets = torch.from_numpy(d["targets"].astype(np.int64))
    il = torch.from_numpy(d["il"].astype(np.int64))
    tl = torch.from_numpy(d["tl"].astype(np.int64))

    def loss(x):
        return F.ctc_loss(F.log_softmax(x, dim=-1), targets, il, tl, reduction="sum")

    if mode == "value":

        def run():
            with torch.no_grad():
                return loss(logits)

    else:

        def run():
            x = logits.detach().requires_grad_(True)
            out = loss(x)
            out.backward()
            return out.detach()

    return BenchCase(LOSS, "torch", mode, dict(size), run=run)


def cases(quick: bool, sizes: list[dict] | None = None) -> list[BenchCase]:
    """jaxloss, optax and (when importable) torch, for each size and mode.

    Default sizes: T=200, N=32, C=30, S=40, plus T=1000 unless ``quick``.
    """
    if sizes is None:
        sizes = [DEFAULT] if quick else [DEFAULT, LONG]
    out: list[BenchCase] = []
    for size in sizes:
        size = dict(size)
        d = _data(size["T"], size["N"], size["C"], size["S"])
        jargs = (jnp.asarray(d["logits"]), jnp.asarray(d["targets"]), jnp.asarray(d["il"]), jnp.asarray(d["tl"]))
        oargs = _optax_args(d)
        for mode in MODES:
            out.append(jax_case(LOSS, "jaxloss", mode, size, _jaxloss_fn, jargs))
            out.append(jax_case(LOSS, "optax", mode, size, _optax_fn, oargs))
            t = _torch_case(size, mode, d)
            if t is not None:
                out.append(t)
    return out
