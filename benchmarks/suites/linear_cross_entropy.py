"""linear_cross_entropy at language-model head sizes: N tokens, D features, V classes.

value_and_grad with respect to the input and the weight, float32. Implementations:

``jaxloss``             ``jaxloss.linear_cross_entropy`` (``method="auto"``: the fused path)
``jaxloss_checkpoint``  the same with ``method="checkpoint"`` (rematerialised chunks)
``jaxloss_tiled``       the same with ``method="tiled"`` (tiles of rows by classes, two
                        passes over the classes: working memory one tile, 8·N·D·V FLOPs)
``jax_materialised``    ``jaxloss.cross_entropy(x @ W.T, y)``: the logits materialised
``torch_reference``     ``F.linear_cross_entropy(..., options=None)`` (torch's unchunked path)
``torch_chunked``       ``F.linear_cross_entropy(..., options=LinearCrossEntropyOptions())``
``jax_matmul``          ``jax.jit(x @ W.T)`` (``mode="value"``): the matmul throughput that
                        the achieved FLOP/s are compared with, measured in the same run

Each result carries ``flops`` (6·N·D·V for a value and gradient, 2·N·D·V for the
matmul) and, except for the matmul, ``rss_growth_bytes``: the peak resident memory
growth of one call in a fresh process, after the inputs exist (and, for jax, after
compiling), read from ``VmHWM`` reset through ``/proc/self/clear_refs`` (or, where
that is refused, the growth of ``ru_maxrss``). ``summarise(results)`` turns a run into
the ratios issue 5 sets targets for. ``python -m benchmarks.suites.linear_cross_entropy``
runs the suite alone and prints them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import BenchCase, measure

LOSS = "linear_cross_entropy"
MODE = "value_and_grad"
FULL_SIZES = [{"N": 2048, "D": 1024, "V": 32768}, {"N": 1024, "D": 1024, "V": 131072}]
QUICK_SIZES = [{"N": 256, "D": 128, "V": 4096}]
JAX_IMPLS = ("jaxloss", "jaxloss_checkpoint", "jaxloss_tiled", "jax_materialised")
IMPLS = (*JAX_IMPLS, "torch_reference", "torch_chunked")
ROOT = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=1)
def _numpy_data(N: int, D: int, V: int):
    """float32 input ~ N(0, 1), weight ~ N(0, 1/D) (logits of unit scale), int targets."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D), dtype=np.float32)
    W = rng.standard_normal((V, D), dtype=np.float32) / np.float32(np.sqrt(D))
    y = rng.integers(0, V, N).astype(np.int64)
    return x, W, y


def _jax_fn(impl: str):
    import jaxloss

    if impl == "jaxloss":
        return lambda x, W, y: jaxloss.linear_cross_entropy(x, W, y)
    if impl == "jaxloss_checkpoint":
        return lambda x, W, y: jaxloss.linear_cross_entropy(x, W, y, method="checkpoint")
    if impl == "jaxloss_tiled":
        return lambda x, W, y: jaxloss.linear_cross_entropy(x, W, y, method="tiled")
    if impl == "jax_materialised":
        return lambda x, W, y: jaxloss.cross_entropy(x @ W.T, y)
    raise ValueError(impl)


def _jax_args(size):
    import jax.numpy as jnp

    x, W, y = _numpy_data(size["N"], size["D"], size["V"])
    return jnp.asarray(x), jnp.asarray(W), jnp.asarray(y, jnp.int32)


def _torch_options(impl: str):
    import torch

    return None if impl == "torch_reference" else torch.nn.LinearCrossEntropyOptions()


def _torch_args(size):
    import torch

    x, W, y = _numpy_data(size["N"], size["D"], size["V"])
    return torch.from_numpy(x).requires_grad_(True), torch.from_numpy(W).requires_grad_(True), torch.from_numpy(y)


def _torch_run(impl: str, args):
    import torch
    import torch.nn.functional as F

    x, W, y = args
    options = _torch_options(impl)
    out = F.linear_cross_entropy(x, W, y, options=options)
    grads = torch.autograd.grad(out, [x, W])
    return out.detach(), grads


def _case(**kw) -> BenchCase:
    """A BenchCase, with ``baseline`` where the harness has that field."""
    names = {f.name for f in dataclasses.fields(BenchCase)}
    return BenchCase(**{k: v for k, v in kw.items() if k in names})


def _jax_case(impl: str, size: dict[str, Any]) -> BenchCase:
    import jax

    N, D, V = size["N"], size["D"], size["V"]
    if impl == "jax_matmul":
        f = jax.jit(lambda x, W, y: x @ W.T)
        flops = 2 * N * D * V
        mode = "value"
    else:
        f = jax.jit(jax.value_and_grad(_jax_fn(impl), argnums=(0, 1)))
        flops = 6 * N * D * V
        mode = MODE
    state: dict[str, Any] = {}

    def args():
        if "args" not in state:
            state["args"] = _jax_args(size)
        return state["args"]

    def compile_():
        state["c"] = f.lower(*args()).compile()

    def run():
        c = state.get("c")
        return c(*args()) if c is not None else f(*args())

    def temp_bytes():
        c = state.get("c") or f.lower(*args()).compile()
        analysis = c.memory_analysis()
        return None if analysis is None else int(analysis.temp_size_in_bytes)

    def extra():
        out = {"flops": flops}
        if impl != "jax_matmul":
            out["rss_growth_bytes"] = peak_rss_growth(impl, size)
        state.pop("args", None)
        state.pop("c", None)
        return out

    return _case(
        loss=LOSS, impl=impl, mode=mode, size=dict(size), run=run, compile=compile_, temp_bytes=temp_bytes,
        extra=extra, baseline="torch_reference" if mode == MODE else None,
    )


def _torch_case(impl: str, size: dict[str, Any]) -> BenchCase:
    state: dict[str, Any] = {}

    def run():
        if "args" not in state:
            state["args"] = _torch_args(size)
        return _torch_run(impl, state["args"])[0]

    def extra():
        state.clear()
        return {"flops": 6 * size["N"] * size["D"] * size["V"], "rss_growth_bytes": peak_rss_growth(impl, size)}

    return _case(
        loss=LOSS, impl=impl, mode=MODE, size=dict(size), run=run, extra=extra,
        baseline=None if impl == "torch_reference" else "torch_reference",
    )


def _torch_available() -> bool:
    try:
        import torch

        return hasattr(torch.nn, "LinearCrossEntropyOptions")
    except ImportError:
        return False


def cases(quick: bool, sizes: list[dict] | None = None) -> list[BenchCase]:
    """One case per (implementation, size); torch's only when torch (>= 2.13) is installed."""
    chosen = sizes or (QUICK_SIZES if quick else FULL_SIZES)
    out: list[BenchCase] = []
    for size in chosen:
        size = {"N": int(size["N"]), "D": int(size["D"]), "V": int(size["V"])}
        out.append(_jax_case("jax_matmul", size))
        for impl in JAX_IMPLS:
            out.append(_jax_case(impl, size))
        if _torch_available():
            for impl in ("torch_reference", "torch_chunked"):
                out.append(_torch_case(impl, size))
    return out


# ------------------------------------------------------------------ peak memory


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _measure_rss_here(impl: str, size: dict[str, Any]) -> dict[str, Any]:
    """In this (fresh) process: inputs, compile, then one call; its peak RSS growth."""
    if impl.startswith("torch"):
        args = _torch_args(size)

        def call():
            return _torch_run(impl, args)

    else:
        import jax

        # Wait for the host-to-device copies: a copy still in flight keeps its numpy source
        # (the 512 MiB weight at V=131072) alive, and freeing it during the measured call
        # made the growth read up to 440 MB low, below the gradient's own size.
        args = jax.block_until_ready(_jax_args(size))
        _numpy_data.cache_clear()
        compiled = jax.jit(jax.value_and_grad(_jax_fn(impl), argnums=(0, 1))).lower(*args).compile()

        def call():
            return jax.block_until_ready(compiled(*args))

    gc.collect()
    base_kib = _status_kib("VmRSS")
    reset = base_kib is not None and _reset_peak()
    base_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = call()
    if reset:
        growth = (_status_kib("VmHWM") - base_kib) * 1024
        how = "VmHWM after clear_refs - VmRSS"
    else:
        growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_max) * 1024
        how = "ru_maxrss growth"
    del out
    return {"rss_growth_bytes": int(growth), "rss_method": how}


def peak_rss_growth(impl: str, size: dict[str, Any]) -> int | None:
    """Peak RSS growth (bytes) of one value_and_grad call of ``impl`` in a fresh process."""
    cmd = [sys.executable, "-m", "benchmarks.suites.linear_cross_entropy", "--rss", impl]
    cmd += [f"{k}={v}" for k, v in size.items()]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)["rss_growth_bytes"]
    return None


# ---------------------------------------------------------------------- ratios


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Issue 5's ratios per size, from ``measure`` results of :func:`cases`.

    ``time_vs_torch_reference``: jaxloss / torch unchunked (target <= 1.1);
    ``speedup_vs_torch_chunked``: torch chunked / jaxloss (target >= 1.3);
    ``rss_vs_torch_reference``: peak RSS growth, jaxloss / torch unchunked (target <= 0.35);
    ``flops_vs_matmul``: (6NDV / jaxloss time) / (2NDV / matmul time) (target >= 0.9);
    plus the same for the checkpoint and tiled paths and the materialised jax reference.
    """
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        if r.get("loss") != LOSS:
            continue
        key = ",".join(f"{k}={v}" for k, v in r["size"].items())
        by.setdefault(key, {})[r["impl"]] = r

    def ratio(a, b):
        return None if a is None or b is None or b == 0 else a / b

    out = {}
    for key, rs in by.items():
        t = {k: v.get("median_s") for k, v in rs.items()}
        rss = {k: v.get("rss_growth_bytes") for k, v in rs.items()}
        mm = rs.get("jax_matmul")
        mm_rate = None if mm is None else mm["flops"] / mm["median_s"]
        s: dict[str, float | None] = {}
        for impl in JAX_IMPLS:
            tag = "" if impl == "jaxloss" else f"[{impl}]"
            s["time_vs_torch_reference" + tag] = ratio(t.get(impl), t.get("torch_reference"))
            s["speedup_vs_torch_chunked" + tag] = ratio(t.get("torch_chunked"), t.get(impl))
            s["rss_vs_torch_reference" + tag] = ratio(rss.get(impl), rss.get("torch_reference"))
            rate = None if impl not in rs else rs[impl]["flops"] / rs[impl]["median_s"]
            s["flops_vs_matmul" + tag] = ratio(rate, mm_rate)
        s["temp_bytes_vs_materialised"] = ratio(
            rs.get("jaxloss", {}).get("temp_bytes"), rs.get("jax_materialised", {}).get("temp_bytes")
        )
        s["torch_chunked_vs_torch_reference"] = ratio(t.get("torch_chunked"), t.get("torch_reference"))
        out[key] = s
    return out


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rss", metavar="IMPL", help="(internal) measure one call's peak RSS growth in this process")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", nargs="*", help="implementations to run (default: all)")
    p.add_argument("sizes", nargs="*", help="N=.. D=.. V=.. (one size)")
    a = p.parse_args(argv)
    size = {k: int(v) for k, v in (s.split("=") for s in a.sizes)} or None
    if a.rss:
        print(json.dumps(_measure_rss_here(a.rss, size)))
        return
    results = []
    for case in cases(a.quick, [size] if size else None):
        if a.only and case.impl not in a.only and case.impl != "jax_matmul":
            continue
        r = measure(case, repeats=a.repeats, warmup=1)
        results.append(r)
        print(json.dumps(r), flush=True)
    print(json.dumps(summarise(results), indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
