"""The benchmark report: terminal table, JSON file, PNG plots of time vs size."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Losses plotted as time vs each swept size key.
PLOT_LOSSES = ("cross_entropy", "linear_cross_entropy")
PLOT_AXES = ("N", "V")


def _size_str(size: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in size.items())


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _mib(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**20:.1f}"


def _render(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells):
        padded = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def format_table(
    results: list[dict[str, Any]], env: dict[str, Any], *, repeats: int, quick: bool, min_time: float = 0.0
) -> str:
    """One row per (loss, variant, mode, size): jaxloss's median, compile time and XLA
    temp bytes, and its ratios to optax, torch and (for a variant) the plain call."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in results:
        key = (r["loss"], r.get("variant", ""), r["mode"], tuple(r["size"].items()))
        groups.setdefault(key, {})[r["impl"]] = r
    header = [
        "loss",
        "variant",
        "mode",
        "size",
        "jaxloss ms",
        "compile s",
        "temp MiB",
        "optax MiB",
        "jl/optax",
        "jl/torch",
        "jl/plain",
        "other (this/that)",
    ]
    rows = []
    for (loss, variant, mode, size), impls in groups.items():
        jl = impls.get("jaxloss", {})
        ratios = jl.get("ratios", {})
        other = [f"{k}: {_ratio(v)}" for k, v in ratios.items() if k not in ("optax", "torch", "plain")]
        # cases whose ratios are taken against a named baseline (e.g. torch's chunked path)
        for impl, r in impls.items():
            if impl != "jaxloss" and r.get("ratios"):
                other += [f"{impl}/{k}: {_ratio(v)}" for k, v in r["ratios"].items()]
        if not jl:  # a group without a jaxloss case (e.g. a reference throughput): its times
            other += [f"{impl}: {_ms(r.get('median_s'))} ms" for impl, r in impls.items()]
        rows.append(
            [
                loss,
                variant or "-",
                "grad" if mode == "value_and_grad" else mode,
                _size_str(dict(size)),
                _ms(jl.get("median_s")),
                f"{jl['compile_s']:.2f}" if "compile_s" in jl else "-",
                _mib(jl.get("temp_bytes")),
                _mib(impls.get("optax", {}).get("temp_bytes")),
                _ratio(ratios.get("optax")),
                _ratio(ratios.get("torch")),
                _ratio(ratios.get("plain")),
                ", ".join(other),
            ]
        )
    versions = env.get("versions", {})
    host = ""
    if env.get("platform") != "cpu":
        host = f" (host CPU {env.get('cpu', '?')}, {env.get('cpu_count', '?')} cores)"
    title = (
        f"jaxloss benchmarks on {_machine(env)}{host}{' --quick' if quick else ''}; median of >= {repeats} calls"
        + (f" (and >= {min_time:g} s)" if min_time else "")
        + " after warm-up\n"
        + "versions: "
        + ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None)
        + (f"; torch on {env['torch_device']} with {env['torch_threads']} threads" if "torch_threads" in env else "")
        + (f" (OMP_WAIT_POLICY={env['omp_wait_policy']})" if env.get("omp_wait_policy") else "")
        + (f"; GLIBC_TUNABLES={env['glibc_tunables']}" if env.get("glibc_tunables") else "")
        + "\nratios are time(jaxloss) / time(other), under 1 means jaxloss is faster; grad = value_and_grad"
    )
    return title + "\n" + _render(header, rows, right={4, 5, 6, 7, 8, 9, 10})


def write_json(doc: dict[str, Any], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")


def _sweep(rows: list[dict[str, Any]], axis: str) -> list[dict[str, Any]]:
    """The results of the largest set of sizes that differ only in ``axis``."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if axis in r["size"]:
            fixed = tuple(sorted((k, v) for k, v in r["size"].items() if k != axis))
            groups.setdefault(fixed, []).append(r)
    best: list[dict[str, Any]] = []
    for members in groups.values():
        if len({r["size"][axis] for r in members}) > len({r["size"][axis] for r in best}):
            best = members
    return best if len({r["size"][axis] for r in best}) >= 2 else []


def _machine(env: dict[str, Any]) -> str:
    if env.get("platform") == "cpu":
        return f"CPU {env.get('cpu', '?')}, {env.get('cpu_count', '?')} cores"
    return f"{env.get('device_kind', '?')} ({env.get('platform', '?')})"


def _work(size: dict[str, Any]) -> int:
    """N*V (logits elements) when both are in ``size``, else the product of its values."""
    if "N" in size and "V" in size:
        return int(size["N"]) * int(size["V"])
    out = 1
    for v in size.values():
        out *= int(v)
    return out


def _figure(rows, x_of, xlabel: str, title: str, path: Path, *, label_sizes: bool = False) -> Path:
    from matplotlib.figure import Figure

    modes = [m for m in ("value", "value_and_grad") if any(r["mode"] == m for r in rows)]
    fig = Figure(figsize=(5.5 * len(modes), 4.2), layout="constrained")
    axes = fig.subplots(1, len(modes), squeeze=False)[0]
    xs = sorted({x_of(r) for r in rows})
    for ax, mode in zip(axes, modes):
        for impl in sorted({r["impl"] for r in rows}):
            pts = sorted((x_of(r), r["median_s"] * 1e3) for r in rows if r["mode"] == mode and r["impl"] == impl)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=impl)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(xs, [f"{x / 2**20:g}M" if x >= 2**20 else str(x) for x in xs])
        ax.minorticks_off()
        if label_sizes:
            for r in rows:
                if r["mode"] == mode and r["impl"] == "jaxloss":
                    ax.annotate(_size_str(r["size"]), (x_of(r), r["median_s"] * 1e3), fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("median time (ms)")
        ax.set_title(mode, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    return path


def plot(results: Iterable[dict[str, Any]], out_dir: Path, env: dict[str, Any]) -> list[Path]:
    """PNG plots of median time vs N and vs V (plain call, each impl a line) for the
    losses in :data:`PLOT_LOSSES` that have a sweep of at least two sizes. A loss
    timed at several sizes that differ in more than one key is plotted against N*V."""
    results = [r for r in results if "median_s" in r and not r.get("variant")]
    written: list[Path] = []
    for loss in PLOT_LOSSES:
        rows = [r for r in results if r["loss"] == loss]
        mine: list[Path] = []
        for axis in PLOT_AXES:
            sweep = _sweep(rows, axis)
            if sweep:
                fixed = _size_str({k: v for k, v in sweep[0]["size"].items() if k != axis})
                title = f"{loss}: time vs {axis} ({fixed}) on {_machine(env)}"
                path = Path(out_dir) / f"{loss}_time_vs_{axis}.png"
                mine.append(_figure(sweep, lambda r, axis=axis: r["size"][axis], axis, title, path))
        if not mine and len({_work(r["size"]) for r in rows}) >= 2:
            xlabel = "N*V" if all("N" in r["size"] and "V" in r["size"] for r in rows) else "problem size"
            title = f"{loss}: time vs {xlabel} on {_machine(env)}"
            path = Path(out_dir) / f"{loss}_time_vs_size.png"
            mine.append(_figure(rows, lambda r: _work(r["size"]), xlabel, title, path, label_sizes=True))
        written += mine
    return written


def print_listing(cases, skipped) -> None:
    seen: dict[str, set[str]] = {}
    for suite, c in cases:
        seen.setdefault(suite, set()).add(c.loss)
    for suite in sorted(seen):
        print(f"{suite}: {', '.join(sorted(seen[suite]))}")
    for s in skipped:
        print(f"skipped {s['suite']}/{s['loss']}: {s['reason']}")
