"""The measuring core every benchmark suite uses.

A suite module ``benchmarks/suites/<name>.py`` defines
``cases(quick: bool, sizes: list[dict] | None) -> list[BenchCase]``: one case per
(loss, implementation, mode, size). The runner times each case with :func:`measure`:
compile time (the first call of a jitted function) separately from run time, warm-up
excluded, the median over repeats, every result blocked on. Nothing here asserts a
timing; it measures.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


@dataclasses.dataclass
class BenchCase:
    """One measurement.

    ``run`` performs one complete call and returns its result (the harness blocks on
    it). ``compile`` (optional) is run once first and timed as compile time (for jax:
    ``jitted.lower(*args).compile()``). ``temp_bytes`` (optional) returns XLA's
    ``memory_analysis().temp_size_in_bytes`` of the compiled call. ``baseline`` names
    the ``impl`` of the same loss/mode/size this case's ratio is taken against
    (ratios are reported as this / other). ``extra`` (optional) returns further
    metrics (e.g. peak RSS of a fresh process, FLOP/s), merged into the result.
    """

    loss: str
    impl: str
    mode: str
    size: dict[str, Any]
    run: Callable[[], Any]
    compile: Callable[[], Any] | None = None
    temp_bytes: Callable[[], int | None] | None = None
    extra: Callable[[], dict[str, Any]] | None = None

    @property
    def key(self) -> str:
        size = ",".join(f"{k}={v}" for k, v in self.size.items())
        return f"{self.loss}|{self.mode}|{size}|{self.impl}"


def _block(x):
    return jax.block_until_ready(x) if not hasattr(x, "detach") else x


def measure(case: BenchCase, *, repeats: int = 5, warmup: int = 1) -> dict[str, Any]:
    """Time ``case``: compile seconds, median/min run seconds over ``repeats``."""
    result: dict[str, Any] = {"loss": case.loss, "impl": case.impl, "mode": case.mode, "size": dict(case.size)}
    if case.compile is not None:
        t0 = time.perf_counter()
        case.compile()
        result["compile_s"] = time.perf_counter() - t0
    for _ in range(warmup):
        _block(case.run())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _block(case.run())
        times.append(time.perf_counter() - t0)
    result["median_s"] = statistics.median(times)
    result["min_s"] = min(times)
    result["repeats"] = repeats
    if case.temp_bytes is not None:
        result["temp_bytes"] = case.temp_bytes()
    if case.extra is not None:
        result.update(case.extra())
    return result


def jax_case(loss: str, impl: str, mode: str, size: dict[str, Any], fn: Callable, args: tuple, **kw) -> BenchCase:
    """A case for a jittable ``fn(*args)``; ``mode="value_and_grad"`` differentiates arg 0.

    For gradients with respect to several arguments pass ``argnums`` in ``kw``.
    """
    argnums = kw.pop("argnums", 0)
    if mode == "value":
        f = jax.jit(fn)
    elif mode == "value_and_grad":
        f = jax.jit(jax.value_and_grad(fn, argnums=argnums))
    else:
        raise ValueError(f"mode: expected 'value' or 'value_and_grad', got {mode!r}")
    compiled = {}

    def compile_():
        compiled["c"] = f.lower(*args).compile()

    def run():
        c = compiled.get("c")
        return c(*args) if c is not None else f(*args)

    def temp_bytes():
        c = compiled.get("c") or f.lower(*args).compile()
        analysis = c.memory_analysis()
        return None if analysis is None else int(analysis.temp_size_in_bytes)

    return BenchCase(loss, impl, mode, size, run=run, compile=compile_, temp_bytes=temp_bytes, **kw)
