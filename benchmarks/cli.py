"""``python -m benchmarks``: time every jaxloss loss against optax and torch.

For each suite in ``benchmarks/suites/`` the runner builds the cases, times them with
:func:`benchmarks.harness.measure` (compile time apart from run time, warm-up
excluded, median over repeats, results blocked on), takes the ratios jaxloss/optax
and jaxloss/torch, and writes a table to the terminal, JSON and PNG plots to a
results folder. It measures; it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCHEMA_VERSION = 1


def _parse_size(text: str) -> dict[str, Any]:
    size: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise argparse.ArgumentTypeError(
                f"--sizes: expected KEY=VALUE[,KEY=VALUE...] such as N=4096,V=32768, got {text!r}"
            )
        try:
            size[key] = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--sizes: {key} must be an integer, got {value!r} in {text!r}") from None
    return size


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time jaxloss's losses (value and value_and_grad under jit) against optax and torch.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats (about 2 minutes on 2 CPU cores)")
    p.add_argument(
        "--device",
        default=None,
        help="JAX device to run on: cpu, gpu, cuda, rocm or tpu, optionally with an index (gpu:1); "
        "default: JAX's default device",
    )
    p.add_argument(
        "--torch-device",
        default="cpu",
        help="device for the torch comparison (default cpu; e.g. cuda when torch has CUDA)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="run only these suites or losses (e.g. --only cross_entropy regression); commas also separate",
    )
    p.add_argument(
        "--sizes",
        nargs="+",
        type=_parse_size,
        metavar="K=V[,K=V]",
        help="problem sizes instead of the suites' defaults, e.g. --sizes N=1024,V=8192 N=4096,V=8192; "
        "each suite uses the keys it knows (cross_entropy: N, V; others: see benchmarks/suites) and takes "
        "missing ones from its defaults",
    )
    p.add_argument(
        "--modes",
        nargs="+",
        choices=("value", "value_and_grad"),
        default=None,
        help="time only these modes (default both; --quick times option variants in value_and_grad only)",
    )
    p.add_argument("--repeats", type=int, default=None, help="timed calls per case (default: 3 with --quick, else 7)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls after compiling (default 1)")
    p.add_argument(
        "--min-time",
        type=float,
        default=None,
        help="keep repeating a case until its timed calls add up to this many seconds (at most 200 calls; "
        "default 0.1 with --quick, else 1.0): fast calls get a stable median",
    )
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help=f"folder for JSON and PNGs (default {RESULTS_DIR})")
    p.add_argument("--json", type=Path, default=None, help="JSON path (default OUT/bench-<time>.json)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-torch", action="store_true", help="skip the torch comparison even when torch is installed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list", action="store_true", help="list the suites and the losses they time, then exit")
    return p


def _select_device(spec: str | None):
    import jax

    if spec is None:
        return jax.devices()[0]
    platform, _, index = spec.partition(":")
    try:
        devices = jax.devices(platform)
    except RuntimeError as e:
        raise SystemExit(f"--device: JAX has no {platform!r} device ({e})") from None
    i = int(index) if index else 0
    if not 0 <= i < len(devices):
        raise SystemExit(f"--device: {platform} has {len(devices)} device(s), got index {i}")
    return devices[i]


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return getattr(mod, "__version__", "unknown")


def _cpu_name() -> str:
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(device, torch_used: bool) -> dict[str, Any]:
    import platform

    import jax

    env: dict[str, Any] = {
        "device": str(device),
        "platform": device.platform,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(device.platform),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            name: _version(name) for name in ("jaxloss", "jax", "jaxlib", "optax", "numpy", "torch")
        },
        "git_commit": _git_commit(),
        # glibc's malloc settings change CPU timings of large buffers (huge pages: see the README)
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
    }
    if torch_used:
        import torch

        from benchmarks import harness

        env["torch_device"] = str(harness.TORCH_DEVICE)
        env["torch_threads"] = torch.get_num_threads()
        env["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    return env


def collect(quick: bool, sizes, only: list[str] | None):
    """Build every suite's cases; returns ([(suite, case)], skipped, unknown names in ``only``)."""
    from benchmarks import harness, suites

    cases, skipped = [], []
    names = suites.suite_names()
    wanted = set(only or ())
    for name in names:
        try:
            mod = suites.load(name)
            built = list(mod.cases(quick, sizes))
        except Exception as e:  # a suite for a loss still being written must not stop the rest
            harness.take_skips()
            skipped.append({"suite": name, "loss": "*", "reason": f"{type(e).__name__}: {e}"})
            continue
        skipped += [{"suite": name, **s} for s in harness.take_skips()]
        cases += [(name, c) for c in built]
    unknown: list[str] = []
    if wanted:
        known = set(names) | {c.loss for _, c in cases} | {s["loss"] for s in skipped}
        unknown = sorted(wanted - known)
        cases = [(n, c) for n, c in cases if n in wanted or c.loss in wanted]
        skipped = [s for s in skipped if s["suite"] in wanted or s["loss"] in wanted]
    return cases, skipped, unknown


def _group(r: dict[str, Any], variant: str | None = None) -> tuple:
    v = r.get("variant", "") if variant is None else variant
    return (r["loss"], v, r["mode"], tuple(sorted(r["size"].items())))


def add_ratios(results: list[dict[str, Any]], baselines: dict[int, Any]) -> None:
    """``ratios``: this case's median over each compared impl's median (same group);
    for a jaxloss variant also over the plain jaxloss call (key ``"plain"``): the
    group's own ``"plain"`` case when it has one (timed side by side), else the
    plain call's group."""
    by_group: dict[tuple, dict[str, dict]] = {}
    for r in results:
        if "median_s" in r:
            by_group.setdefault(_group(r), {})[r["impl"]] = r
    for i, r in enumerate(results):
        if "median_s" not in r:
            continue
        group = by_group.get(_group(r), {})
        base = baselines.get(i)
        if base is None:
            others = [k for k in group if k != "jaxloss"] if r["impl"] == "jaxloss" else []
        else:
            others = [base] if isinstance(base, str) else list(base)
        ratios = {o: r["median_s"] / group[o]["median_s"] for o in others if o in group and group[o]["median_s"] > 0}
        if r["impl"] == "jaxloss" and r.get("variant") and "plain" not in ratios:
            plain = by_group.get(_group(r, variant=""), {}).get("jaxloss")
            if plain is not None and plain["median_s"] > 0:
                ratios["plain"] = r["median_s"] / plain["median_s"]
        if ratios:
            r["ratios"] = ratios


def value_mismatches(results: list[dict[str, Any]], rtol: float = 1e-3, rtol_low: float = 2e-2) -> list[dict[str, Any]]:
    """Groups whose implementations returned different loss values (relative to jaxloss's
    value; ``rtol_low`` for bfloat16/float16 variants). Empty when the comparisons are
    like for like."""
    by_group: dict[tuple, dict[str, float]] = {}
    for r in results:
        if r.get("value") is not None and r["impl"] != "plain":  # "plain" omits the options
            by_group.setdefault(_group(r), {})[r["impl"]] = r["value"]
    out = []
    for (loss, variant, mode, size), values in by_group.items():
        ref = values.get("jaxloss")
        if ref is None:
            continue
        tol = rtol_low if ("bfloat16" in variant or "float16" in variant) else rtol
        bad = {k: v for k, v in values.items() if not abs(v - ref) <= tol * abs(ref) + 1e-6}
        if bad:
            out.append({"loss": loss, "variant": variant, "mode": mode, "size": dict(size), "values": values})
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    only = None
    if args.only:
        only = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 7)
    if args.min_time is None:
        args.min_time = 0.1 if args.quick else 1.0
    if repeats < 1 or args.warmup < 0:
        raise SystemExit("--repeats must be >= 1 and --warmup >= 0")

    # torch's OpenMP threads (libgomp) otherwise spin for a while after each of its
    # calls, on the cores the next call (jax's) needs. Read when torch loads, so set
    # before any suite imports it; a value already in the environment is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    import jax

    from benchmarks import harness

    device = _select_device(args.device)
    saved = harness.TORCH_DEVICE, harness.USE_TORCH
    harness.TORCH_DEVICE, harness.USE_TORCH = args.torch_device, not args.no_torch
    try:
        with jax.default_device(device):
            return _run(args, argv, only, repeats, device)
    finally:
        harness.TORCH_DEVICE, harness.USE_TORCH = saved
        harness.release_data()


def _run(args, argv, only, repeats, device) -> int:
    from benchmarks import harness, report

    use_torch = harness.torch_available()

    cases, skipped, unknown = collect(args.quick, args.sizes, only)
    if args.modes:
        cases = [(s, c) for s, c in cases if c.mode in args.modes]
    if unknown:  # say why a loss may be missing (a suite that failed to build its cases)
        skipped = collect(args.quick, args.sizes, None)[1]
    if args.list:
        report.print_listing(cases, skipped)
        return 0
    if unknown:
        from benchmarks import suites

        print(
            f"--only: unknown suite or loss {', '.join(unknown)}; suites: {', '.join(suites.suite_names())}",
            file=sys.stderr,
        )
        for s in skipped:
            print(f"skipped {s['suite']}/{s['loss']}: {s['reason']}", file=sys.stderr)
        return 2
    if not use_torch and not args.no_torch:
        skipped.append({"suite": "*", "loss": "*", "reason": "torch is not installed: no torch comparison"})

    from tqdm.auto import tqdm

    started = _dt.datetime.now(_dt.timezone.utc)
    t_start = time.perf_counter()
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    baselines: dict[int, Any] = {}
    # The implementations of one group (same loss, variant, mode and size; the suites
    # list them one after another) are timed side by side, in turns.
    groups: list[list[tuple[str, Any]]] = []
    for suite, case in cases:
        if groups and groups[-1][0][1].group == case.group:
            groups[-1].append((suite, case))
        else:
            groups.append([(suite, case)])
    bar = tqdm(total=len(cases), desc="benchmarks", unit="case", disable=args.no_progress, file=sys.stderr)
    for group in groups:
        bar.set_postfix_str(group[0][1].group, refresh=True)
        kw = {"repeats": repeats, "warmup": args.warmup, "min_time": args.min_time}
        try:
            measured = harness.measure_side_by_side([c for _, c in group], **kw)
        except Exception:  # find which case fails; time the others alone
            measured = []
            for _, case in group:
                try:
                    measured += harness.measure_side_by_side([case], **kw)
                except Exception as e:
                    measured.append(None)
                    errors.append({"key": case.key, "error": f"{type(e).__name__}: {e}"})
        for (suite, case), r in zip(group, measured):
            if r is None:
                continue
            r["suite"] = suite
            if case.baseline is not None:
                baselines[len(results)] = case.baseline
            results.append(r)
        bar.update(len(group))
    bar.close()
    harness.release_data()
    add_ratios(results, baselines)
    mismatches = value_mismatches(results)
    elapsed = time.perf_counter() - t_start

    out_dir = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    json_path = args.json or out_dir / f"bench-{stamp}.json"
    env = environment(device, use_torch)
    plots = [] if args.no_plots else report.plot(results, out_dir, env)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "created": started.isoformat(timespec="seconds"),
        "command": ["python", "-m", "benchmarks", *(sys.argv[1:] if argv is None else argv)],
        "options": {
            "quick": args.quick,
            "repeats": repeats,
            "warmup": args.warmup,
            "min_time_s": args.min_time,
            "only": only,
            "modes": args.modes,
            "sizes": args.sizes,
            "device": args.device,
            "torch": use_torch,
        },
        "environment": env,
        "elapsed_s": elapsed,
        "results": results,
        "skipped": skipped,
        "errors": errors,
        "mismatches": mismatches,
        "plots": [str(p) for p in plots],
    }
    report.write_json(doc, json_path)
    print(report.format_table(results, env, repeats=repeats, quick=args.quick, min_time=args.min_time))
    for s in skipped:
        print(f"skipped {s['suite']}/{s['loss']}: {s['reason']}")
    for m in mismatches:
        where = f"{m['loss']}[{m['variant']}] {m['mode']} {m['size']}"
        print(f"WARNING: implementations disagree for {where}: {m['values']}")
    for e in errors:
        print(f"ERROR {e['key']}: {e['error']}", file=sys.stderr)
    print(f"{len(results)} cases in {elapsed:.1f} s; JSON: {json_path}")
    for p in plots:
        print(f"plot: {p}")
    return 1 if errors else 0
