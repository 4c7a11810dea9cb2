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
    the ``impl`` (or a tuple of impls) of the same loss/variant/mode/size this case's
    ratios are taken against (reported as this / other); when it is ``None``, a case
    whose impl is ``"jaxloss"`` is compared with every other impl of its group.
    ``extra`` (optional) returns further metrics (e.g. peak RSS of a fresh process,
    FLOP/s), merged into the result. ``variant`` (optional) names the options of the
    call (``"weight"``, ``"label_smoothing=0.1"``); ``""`` is the plain call, and a
    variant's jaxloss case is also compared with the plain jaxloss case. ``setup``
    (optional) runs first, untimed: building the inputs, so that neither compile time
    nor the first call pays for it. ``min_repeats`` raises the number of rounds for
    the case's group (a headline figure, worth more samples than ``--quick`` gives).
    """

    loss: str
    impl: str
    mode: str
    size: dict[str, Any]
    run: Callable[[], Any]
    compile: Callable[[], Any] | None = None
    temp_bytes: Callable[[], int | None] | None = None
    extra: Callable[[], dict[str, Any]] | None = None
    baseline: str | tuple[str, ...] | None = None
    variant: str = ""
    setup: Callable[[], Any] | None = None
    min_repeats: int = 0

    @property
    def group(self) -> str:
        """The comparison group: same loss, variant, mode and size."""
        size = ",".join(f"{k}={v}" for k, v in self.size.items())
        loss = f"{self.loss}[{self.variant}]" if self.variant else self.loss
        return f"{loss}|{self.mode}|{size}"

    @property
    def key(self) -> str:
        return f"{self.group}|{self.impl}"


def _block(x):
    return jax.block_until_ready(x) if not hasattr(x, "detach") else x


def loss_value(out) -> float | None:
    """The loss value in a case's output (the first leaf, when it is a single number)."""
    while isinstance(out, (tuple, list)) and out:
        out = out[0]
    if hasattr(out, "detach"):
        out = out.detach().float().cpu().numpy()
    try:
        import numpy as np

        a = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return float(a) if a.size == 1 else None


def measure(
    case: BenchCase, *, repeats: int = 5, warmup: int = 1, min_time: float = 0.0, max_repeats: int = 200
) -> dict[str, Any]:
    """Time ``case``: compile seconds, median/min run seconds over ``repeats`` calls, or
    more when they took less than ``min_time`` seconds in all (fast calls get enough
    samples for a stable median; at most ``max_repeats``). Also records the loss
    ``value`` the last call returned (so runs show that the compared implementations
    compute the same number)."""
    return measure_side_by_side([case], repeats=repeats, warmup=warmup, min_time=min_time, max_repeats=max_repeats)[0]


def measure_side_by_side(
    cases: list[BenchCase], *, repeats: int = 5, warmup: int = 1, min_time: float = 0.0, max_repeats: int = 200
) -> list[dict[str, Any]]:
    """Time several cases (the implementations of one group) in turns: each is set up,
    compiled and warmed up, then every round times one call of each, so that a change
    in the machine's load during the measurement hits all of them alike. Each round
    starts one case later than the one before (round ``r`` runs cases ``r % k, r % k + 1,
    ...``), so that no case is always first. Rounds go on until ``repeats`` and, while
    the timed calls add up to less than ``min_time`` per case, up to ``max_repeats``.
    One result per case, as :func:`measure` gives, with the per-round times in
    ``times_s``.

    Before each timed call the process is left to go quiet (:func:`settle`): the call
    after another library's paid for what that one left behind, its threads still
    spinning or its runtime still freeing buffers after the call returned (measured
    on a 2-core CPU: a 3 ms call that always followed torch's ran 2x slower; after
    optax's label-smoothed cross entropy, with 1.5 GiB of temporaries, one core stayed
    busy for up to 180 ms and the next call ran up to 2x slower). The rotation alone
    does not make that fair: in a round each case follows the same one as in every
    other round, except where it comes first, so with three cases the one after
    optax's followed it in two rounds of three, the others in one (a 1.07x ratio of
    jaxloss's smoothed call to its plain call read as 1.2-1.6x)."""
    results: list[dict[str, Any]] = []
    last = 0.0  # seconds the latest call took
    for case in cases:
        result: dict[str, Any] = {
            "loss": case.loss,
            "variant": case.variant,
            "impl": case.impl,
            "mode": case.mode,
            "size": dict(case.size),
        }
        if case.setup is not None:
            case.setup()
        if case.compile is not None:
            t0 = time.perf_counter()
            case.compile()
            result["compile_s"] = time.perf_counter() - t0
        for _ in range(warmup):
            t0 = time.perf_counter()
            _block(case.run())
            last = time.perf_counter() - t0
        results.append(result)
    times: list[list[float]] = [[] for _ in cases]
    outs: list[Any] = [None] * len(cases)
    rounds = 0
    repeats = max([repeats] + [c.min_repeats for c in cases])
    while rounds < repeats or (sum(map(sum, times)) < min_time * len(cases) and rounds < max_repeats):
        for j in range(len(cases)):
            i = (rounds + j) % len(cases)
            case = cases[i]
            # a window of half the last call's time, within 1-10 ms: what a call leaves
            # behind grows with it, and small calls are timed hundreds of times
            settle(window=min(0.01, max(0.001, last / 2)))
            t0 = time.perf_counter()
            outs[i] = _block(case.run())
            last = time.perf_counter() - t0
            times[i].append(last)
        rounds += 1
    for case, result, ts, out in zip(cases, results, times, outs):
        result["value"] = loss_value(out)
        result["median_s"] = statistics.median(ts)
        result["min_s"] = min(ts)
        result["repeats"] = len(ts)
        result["times_s"] = list(ts)
        if case.temp_bytes is not None:
            result["temp_bytes"] = case.temp_bytes()
        if case.extra is not None:
            result.update(case.extra())
    return results


def settle(*, window: float = 0.01, busy: float = 0.2, max_wait: float = 1.0) -> float:
    """Wait until this process's other threads have been quiet for one ``window``
    (seconds): together they used under ``busy`` of one core's time in it (a
    runtime's deallocation, worker threads still spinning). The calling thread
    spins meanwhile rather than sleeping: measured on a 2-core VM, calls timed
    after a sleep ran slower and spread wider (an idle virtual CPU comes back cold).
    Gives up after ``max_wait`` seconds. Returns the seconds waited. Threads running
    Python code wait for the GIL, which the spin holds, so what counts is native work
    (XLA's, torch's). Other processes do not count: a busy machine slows every case
    alike, which the rounds spread out (and a thread they starve of the CPU reads as
    idle).

    The kernel adds up a running thread's CPU time at its timer ticks (every 4 ms
    on the development VM; 1-10 ms elsewhere), so a window much shorter than a tick
    can read a busy thread as idle.
    """
    start = time.perf_counter()
    while True:
        p0, t0, w0 = time.process_time(), time.thread_time(), time.perf_counter()
        while time.perf_counter() - w0 < window:
            pass
        elapsed = time.perf_counter() - w0
        others = (time.process_time() - p0) - (time.thread_time() - t0)
        if others < busy * elapsed or time.perf_counter() - start >= max_wait:
            return time.perf_counter() - start


def jax_case(
    loss: str, impl: str, mode: str, size: dict[str, Any], fn: Callable, args: tuple | Callable[[], tuple], **kw
) -> BenchCase:
    """A case for a jittable ``fn(*args)``; ``mode="value_and_grad"`` differentiates arg 0.

    For gradients with respect to several arguments pass ``argnums`` in ``kw``.
    ``args`` may be a zero-argument callable returning the tuple: it is then called
    when the case runs, so a suite can build many cases without holding every size's
    arrays at once (see :func:`cached_data`).
    """
    argnums = kw.pop("argnums", 0)
    if mode == "value":
        f = jax.jit(fn)
    elif mode == "value_and_grad":
        f = jax.jit(jax.value_and_grad(fn, argnums=argnums))
    else:
        raise ValueError(f"mode: expected 'value' or 'value_and_grad', got {mode!r}")
    compiled = {}
    get_args = args if callable(args) else (lambda: args)

    def compile_():
        compiled["c"] = f.lower(*get_args()).compile()

    def run():
        c = compiled.get("c")
        return c(*get_args()) if c is not None else f(*get_args())

    def temp_bytes():
        c = compiled.get("c") or f.lower(*get_args()).compile()
        analysis = c.memory_analysis()
        return None if analysis is None else int(analysis.temp_size_in_bytes)

    kw.setdefault("setup", get_args if callable(args) else None)
    return BenchCase(loss, impl, mode, size, run=run, compile=compile_, temp_bytes=temp_bytes, **kw)


# --------------------------------------------------------------------------------------
# Helpers for suites: optional losses, lazily built data, torch cases, sizes.
# --------------------------------------------------------------------------------------

MODES = ("value", "value_and_grad")

#: Notes from suites about what they could not time (a loss not in jaxloss yet, torch
#: missing). The runner drains it after each suite with :func:`take_skips`.
SKIPPED: list[dict[str, str]] = []

#: Whether suites add torch cases (``--no-torch`` turns it off); torch must be installed.
USE_TORCH = True

#: Where torch cases run ("cpu" unless the runner was asked for another device).
TORCH_DEVICE = "cpu"


def note_skip(loss: str, reason: str) -> None:
    SKIPPED.append({"loss": loss, "reason": reason})


def take_skips() -> list[dict[str, str]]:
    out = list(SKIPPED)
    SKIPPED.clear()
    return out


def jaxloss_loss(name: str) -> Callable | None:
    """``jaxloss.<name>``, or ``None`` (with a skip note) when jaxloss does not have it yet."""
    import jaxloss

    fn = getattr(jaxloss, name, None)
    if fn is None:
        note_skip(name, f"jaxloss.{name} does not exist yet")
    return fn


def torch_available() -> bool:
    if not USE_TORCH:
        return False
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def torch_functional():
    """``torch.nn.functional``, or ``None`` when torch is not installed (or ``--no-torch``)."""
    if not torch_available():
        return None
    import torch.nn.functional as F

    return F


def pick_sizes(sizes: list[dict[str, Any]] | None, defaults: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sizes a suite runs: ``defaults``, or each of ``sizes`` (from ``--sizes``)
    restricted to the keys the suite uses, missing keys taken from ``defaults[0]``."""
    if not sizes:
        return [dict(d) for d in defaults]
    base = defaults[0]
    out: list[dict[str, Any]] = []
    for s in sizes:
        d = {k: s.get(k, v) for k, v in base.items()}
        if d not in out:
            out.append(d)
    return out


class Data:
    """A tuple of numpy arrays, converted to jax / torch once, on first use."""

    def __init__(self, arrays: tuple):
        self.arrays = tuple(arrays)
        self._jax = None
        self._torch: dict[tuple[int, ...], tuple] = {}

    def jax(self) -> tuple:
        if self._jax is None:
            import jax.numpy as jnp

            self._jax = tuple(None if a is None else jax.block_until_ready(jnp.asarray(a)) for a in self.arrays)
        return self._jax

    def torch(self, grad: tuple[int, ...] = ()) -> tuple:
        if grad not in self._torch:
            import numpy as np
            import torch

            def conv(i, a):
                if a is None:
                    return None
                a = np.asarray(a)
                if a.dtype.name == "bfloat16":
                    t = torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
                elif np.issubdtype(a.dtype, np.integer):
                    t = torch.from_numpy(a.astype(np.int64))
                else:
                    t = torch.from_numpy(np.ascontiguousarray(a))
                t = t.to(TORCH_DEVICE)
                return t.requires_grad_(True) if i in grad else t

            self._torch[grad] = tuple(conv(i, a) for i, a in enumerate(self.arrays))
        return self._torch[grad]


_DATA: dict[Any, Data] = {}


def cached_data(key: Any, make: Callable[[], tuple]) -> Callable[[], Data]:
    """A getter for ``Data(make())`` that keeps only the most recently used key alive.

    Build cases of the same data one after another: a suite can then list cases for
    many sizes while only one size's arrays exist at a time.
    """

    def get() -> Data:
        d = _DATA.get(key)
        if d is None:
            _DATA.clear()
            import gc

            gc.collect()
            d = _DATA[key] = Data(make())
        return d

    return get


def release_data() -> None:
    """Drop the arrays :func:`cached_data` keeps."""
    _DATA.clear()


def torch_case(
    loss: str,
    mode: str,
    size: dict[str, Any],
    fn: Callable,
    data: Callable[[], Data],
    *,
    argnums: int | tuple[int, ...] = 0,
    impl: str = "torch",
    **kw,
) -> BenchCase:
    """A torch eager case: ``fn(*tensors)``; value under ``no_grad``, or forward plus
    ``torch.autograd.grad`` w.r.t. ``argnums``."""
    import torch

    argnums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    sync = torch.cuda.synchronize if str(TORCH_DEVICE).startswith("cuda") else (lambda: None)
    if mode == "value":

        def run():
            with torch.no_grad():
                out = fn(*data().torch(argnums))
            sync()
            return out

    elif mode == "value_and_grad":

        def run():
            args = data().torch(argnums)
            out = fn(*args)
            grads = torch.autograd.grad(out, [args[i] for i in argnums])
            sync()
            return out, grads

    else:
        raise ValueError(f"mode: expected 'value' or 'value_and_grad', got {mode!r}")
    kw.setdefault("setup", lambda: data().torch(argnums))
    return BenchCase(loss, impl, mode, size, run=run, **kw)


def loss_cases(
    loss: str,
    size: dict[str, Any],
    data: Callable[[], Data],
    *,
    jaxloss: Callable | None,
    optax: Callable | None = None,
    torch: Callable | None = None,
    argnums: int | tuple[int, ...] = 0,
    variant: str = "",
    modes: tuple[str, ...] = MODES,
    torch_modes: tuple[str, ...] | None = None,
    plain: Callable | None = None,
    min_repeats: int = 0,
) -> list[BenchCase]:
    """The cases comparing one call of a loss: jaxloss, optax's equivalent (when there
    is one) and torch (when installed), for each mode, all on the same ``data``.

    ``jaxloss``/``optax`` take jax arrays and ``torch`` takes tensors, in the order of
    ``data``'s arrays; each returns the scalar loss. Nothing is built when ``jaxloss``
    is ``None`` (the loss does not exist yet: :func:`jaxloss_loss` noted it).
    ``torch_modes`` (default ``modes``) limits the torch cases, the slowest to run.
    ``plain`` (for a ``variant``): jaxloss's call without the variant's options, on
    the same data, timed in the same rounds as impl ``"plain"``, so that what the
    options cost (the ``jl/plain`` ratio) is measured side by side rather than
    against the plain call's own group, timed at another moment. ``min_repeats``:
    see :class:`BenchCase`.
    """
    if jaxloss is None:
        return []
    cases: list[BenchCase] = []
    for mode in modes:
        jargs = lambda: data().jax()  # noqa: E731
        kw = {"argnums": argnums, "variant": variant, "min_repeats": min_repeats}
        cases.append(jax_case(loss, "jaxloss", mode, size, jaxloss, jargs, **kw))
        if plain is not None and variant:
            cases.append(jax_case(loss, "plain", mode, size, plain, jargs, **kw))
        if optax is not None:
            cases.append(jax_case(loss, "optax", mode, size, optax, jargs, **kw))
        if torch is not None and torch_available() and mode in (modes if torch_modes is None else torch_modes):
            cases.append(torch_case(loss, mode, size, torch, data, **kw))
    return cases
