"""``python -m benchmarks``: the CLI runs, writes the JSON schema and the plots, and its
options select what they say; every suite's implementations compute the same number.

Tiny sizes only, and nothing here asserts a timing.
"""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest

from benchmarks import cli, harness, suites

# A size every suite understands (each suite keeps the keys it uses).
TINY = {"N": 8, "V": 16, "C": 6, "D": 5, "C_ml": 4, "H": 4, "W": 4, "T": 12, "S": 3}
RESULT_KEYS = {"loss", "variant", "impl", "mode", "size", "suite", "median_s", "min_s", "repeats", "times_s", "value"}


def _run(tmp_path, *args):
    json_path = tmp_path / "out.json"
    fast = ["--quick", "--repeats", "1", "--warmup", "0", "--min-time", "0", "--no-progress"]
    rc = cli.main([*fast, "--out", str(tmp_path), "--json", str(json_path), *args])
    doc = json.loads(json_path.read_text())
    return rc, doc


def _sizes(doc, loss):
    return {tuple(sorted(r["size"].items())) for r in doc["results"] if r["loss"] == loss}


@pytest.fixture(scope="module")
def ce_run(tmp_path_factory):
    """One tiny run of the cross_entropy suite at two sizes (shared by the schema tests)."""
    tmp = tmp_path_factory.mktemp("bench")
    rc, doc = _run(tmp, "--only", "cross_entropy", "--sizes", "N=8,V=16", "N=16,V=16", "--modes", "value_and_grad")
    return tmp, rc, doc


def test_json_schema(ce_run):
    _, rc, doc = ce_run
    assert rc == 0, doc["errors"]
    assert doc["schema_version"] == cli.SCHEMA_VERSION
    assert doc["options"]["quick"] is True and doc["options"]["repeats"] == 1
    env = doc["environment"]
    for key in ("device", "platform", "device_kind", "cpu", "cpu_count", "versions", "glibc_tunables"):
        assert key in env, key
    for lib in ("jax", "jaxlib", "optax", "numpy", "jaxloss"):
        assert env["versions"][lib], lib
    assert doc["errors"] == []
    assert doc["mismatches"] == []  # jaxloss, optax and torch returned the same loss values
    assert doc["results"], "no results"
    for r in doc["results"]:
        assert RESULT_KEYS <= set(r), RESULT_KEYS - set(r)
        assert r["mode"] in ("value", "value_and_grad")
        assert r["median_s"] > 0 and r["min_s"] <= r["median_s"]
        if r["impl"] in ("jaxloss", "optax"):
            assert r["compile_s"] > 0
            assert isinstance(r["temp_bytes"], int) and r["temp_bytes"] >= 0
    plain = [r for r in doc["results"] if r["loss"] == "cross_entropy" and r["impl"] == "jaxloss" and not r["variant"]]
    assert len(plain) == 2
    for r in plain:
        assert math.isclose(r["ratios"]["optax"], r["median_s"] / _median(doc, r, "optax"))
    smoothed = [r for r in doc["results"] if r["impl"] == "jaxloss" and r["variant"].startswith("label_smoothing")]
    # --quick times the options beside the plain call only; the full run adds optax's
    # smoothed-label call (and torch)
    assert smoothed and all("plain" in r["ratios"] and "optax" not in r["ratios"] for r in smoothed)
    full = suites.load("cross_entropy").cases(False, [{"N": 8, "V": 16}])
    for variant in ("label_smoothing=0.1", "label_smoothing=0.1,bfloat16"):
        impls = {c.impl for c in full if c.variant == variant}
        assert {"jaxloss", "plain", "optax"} <= impls, (variant, impls)
    # an option variant's cost is measured against the plain call timed in the same
    # rounds (impl "plain"), whose value (without the options) is not a mismatch
    options = [r for r in doc["results"] if r["impl"] == "jaxloss" and r["loss"] == "cross_entropy" and r["variant"]]
    with_plain = [r for r in options if r["variant"] in ("weight", "ignore_index", "all_options", "label_smoothing=0.1")]
    assert len(with_plain) == 4  # the variants run at the last size only
    for r in with_plain:
        assert math.isclose(r["ratios"]["plain"], r["median_s"] / _median(doc, r, "plain"))
        assert _value(doc, r, "plain") != r["value"] or r["variant"] == "ignore_index"
    if harness.torch_available():
        assert env["versions"]["torch"]
        assert all("torch" in r["ratios"] for r in plain)


def _median(doc, r, impl):
    def key(o):
        return o["loss"], o["variant"], o["mode"], o["size"]

    (other,) = [o for o in doc["results"] if key(o) == key(r) and o["impl"] == impl]
    return other["median_s"]


def _value(doc, r, impl):
    def key(o):
        return o["loss"], o["variant"], o["mode"], o["size"]

    (other,) = [o for o in doc["results"] if key(o) == key(r) and o["impl"] == impl]
    return other["value"]


def test_only_and_sizes_select(ce_run):
    _, _, doc = ce_run
    assert {r["loss"] for r in doc["results"]} == {"cross_entropy", "nll_loss"}
    assert {r["suite"] for r in doc["results"]} == {"cross_entropy"}
    assert _sizes(doc, "cross_entropy") == {(("N", 8), ("V", 16)), (("N", 16), ("V", 16))}
    assert doc["options"]["sizes"] == [{"N": 8, "V": 16}, {"N": 16, "V": 16}]
    assert {r["mode"] for r in doc["results"]} == {"value_and_grad"}


def test_plots_written(ce_run):
    tmp, _, doc = ce_run
    png = tmp / "cross_entropy_time_vs_N.png"
    assert str(png) in doc["plots"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # V does not vary in this run: no V plot
    assert not (tmp / "cross_entropy_time_vs_V.png").exists()


def test_only_a_loss_no_torch_no_plots(tmp_path):
    args = ["--only", "nll_loss", "--sizes", "N=8,V=16", "--no-torch", "--no-plots", "--device", "cpu:0"]
    rc, doc = _run(tmp_path, *args)
    assert rc == 0, doc["errors"]
    assert doc["environment"]["platform"] == "cpu" and doc["options"]["device"] == "cpu:0"
    assert {r["loss"] for r in doc["results"]} == {"nll_loss"}
    # no torch: jaxloss alone, and the plain call timed beside the weight variant
    assert {r["impl"] for r in doc["results"]} == {"jaxloss", "plain"}
    assert {r["mode"] for r in doc["results"]} == {"value", "value_and_grad"}
    assert doc["options"]["torch"] is False and doc["plots"] == []
    assert not list(tmp_path.glob("*.png"))


def test_unknown_only_name(tmp_path, capsys):
    rc = cli.main(["--only", "no_such_loss", "--out", str(tmp_path), "--no-progress"])
    assert rc == 2
    assert "no_such_loss" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.json"))


def test_unknown_device(tmp_path):
    with pytest.raises(SystemExit, match="--device"):
        cli.main(["--device", "cpu:7", "--only", "nll_loss", "--out", str(tmp_path), "--no-progress"])


def test_bad_sizes_argument():
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--sizes", "N:8"])


def test_table_lists_each_group(ce_run):
    _, _, doc = ce_run
    table = cli_report_table(doc)
    assert "jl/optax" in table and "jl/torch" in table
    groups = {(r["variant"], r["mode"], str(r["size"])) for r in doc["results"] if r["loss"] == "cross_entropy"}
    assert table.count("cross_entropy") >= len(groups)


def cli_report_table(doc):
    from benchmarks import report

    return report.format_table(doc["results"], doc["environment"], repeats=1, quick=True)


def test_pick_sizes():
    defaults = [{"N": 4, "D": 3}, {"N": 8, "D": 3}]
    assert harness.pick_sizes(None, defaults) == defaults
    assert harness.pick_sizes([{"N": 2, "V": 9}, {"N": 2}], defaults) == [{"N": 2, "D": 3}]


def test_value_mismatches_detected():
    rows = [
        {"loss": "l", "variant": "", "mode": "value", "size": {"N": 1}, "impl": "jaxloss", "value": 1.0},
        {"loss": "l", "variant": "", "mode": "value", "size": {"N": 1}, "impl": "optax", "value": 1.0 + 1e-7},
        {"loss": "l", "variant": "", "mode": "value", "size": {"N": 2}, "impl": "jaxloss", "value": 1.0},
        {"loss": "l", "variant": "", "mode": "value", "size": {"N": 2}, "impl": "torch", "value": 1.1},
    ]
    (bad,) = cli.value_mismatches(rows)
    assert bad["size"] == {"N": 2} and bad["values"] == {"jaxloss": 1.0, "torch": 1.1}


@pytest.mark.parametrize(
    ("suite", "quick"),
    # ce_run covers cross_entropy under --quick; the full run adds torch's option variants
    [(s, True) for s in suites.suite_names() if s != "cross_entropy"] + [(s, False) for s in suites.suite_names()],
)
def test_implementations_agree(suite, quick):
    """Every case of a group (jaxloss, its optax equivalent, torch) gives the same value:
    the suites time the same quantity. Losses not in jaxloss yet have no cases. Only
    the value_and_grad cases run: every call (option variants included) has one, and
    its value is the value-mode number. An option variant's ``"plain"`` case is
    jaxloss's call without the options: it gives the plain group's value. The full run
    (``quick=False``) has cases --quick leaves out: torch's bf16 calls with a class
    weight failed there (a float32 weight with bf16 logits, which torch rejects)."""
    cases = [c for c in suites.load(suite).cases(quick, [TINY]) if c.mode == "value_and_grad"]
    harness.take_skips()
    values: dict[str, dict[str, float]] = {}
    plain: dict[str, float] = {}  # plain group -> the "plain" cases' values beside its variants
    for case in cases:
        value = harness.loss_value(case.run())
        assert value is not None, case.key
        if case.impl == "plain":
            # the plain call is in the variant's dtype: "weight,bfloat16" beside "bfloat16"
            dtype = "bfloat16" if "bfloat16" in case.variant.split(",") else ""
            plain[harness.BenchCase(case.loss, "jaxloss", case.mode, case.size, run=case.run, variant=dtype).group] = value
        else:
            values.setdefault(case.group, {})[case.impl] = value
    harness.release_data()
    for group, v in plain.items():
        assert np.isclose(v, values[group]["jaxloss"], rtol=1e-6), f"{group}: the plain call beside a variant gives {v}"
    for group, by_impl in values.items():
        rtol = 2e-2 if "bfloat16" in group else 1e-5  # bf16 inputs: torch and XLA round differently
        ref = by_impl.get("torch", by_impl.get("jaxloss"))
        for impl, v in by_impl.items():
            assert np.isclose(v, ref, rtol=rtol, atol=1e-6), f"{group}: {impl} gives {v}, expected {ref}"


def test_option_variants_timed_beside_the_plain_call():
    """Every option variant (the same data, more keywords) is timed in the same rounds as
    jaxloss's plain call, so its ``jl/plain`` ratio is side by side; only the variants
    that change the data or its layout (their own plain group is another size or dtype)
    have no "plain" case."""
    other_data = {"bfloat16", "prob_targets", "segmentation"}
    variants = {}
    for suite in suites.suite_names():
        for c in suites.load(suite).cases(True, [TINY]):
            if c.variant and c.variant not in other_data:
                variants.setdefault((suite, c.loss, c.variant, c.mode), set()).add(c.impl)
    harness.take_skips()
    harness.release_data()
    assert len({k[:3] for k in variants}) >= 12, sorted(variants)
    for key, impls in variants.items():
        assert {"jaxloss", "plain"} <= impls, key


def test_module_entry_point_lists_suites():
    """``python -m benchmarks`` (the README's command) runs; --list builds cases only."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--list", "--no-torch"], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "cross_entropy: cross_entropy, nll_loss" in out.stdout


def test_measure_repeats_until_min_time():
    """``min_time`` adds calls until the timed calls add up to it, capped by ``max_repeats``;
    warm-up calls are not timed."""
    import time

    calls = []

    def run():
        calls.append(1)
        time.sleep(0.01)
        return np.float32(2.5)

    case = harness.BenchCase("l", "jaxloss", "value", {"N": 1}, run=run)
    r = harness.measure(case, repeats=2, warmup=1, min_time=0.05)
    assert 2 <= r["repeats"] <= 5 and len(calls) == r["repeats"] + 1
    assert r["value"] == 2.5 and r["min_s"] <= r["median_s"]
    assert harness.measure(case, repeats=2, warmup=0, min_time=60.0, max_repeats=4)["repeats"] == 4


def test_measure_side_by_side_takes_turns():
    """The implementations of a group are compiled and warmed up first, then timed in
    turns, each round starting one case later (a b c, b c a, c a b, a b c), so that no
    case is always first; each result has its own call count, per-call times and value.
    A case's ``min_repeats`` raises the rounds of its whole group."""
    log = []

    def make(name, value, min_repeats=0):
        def run():
            log.append(name)
            return np.float32(value)

        return harness.BenchCase(
            "l", name, "value", {"N": 1}, run=run, compile=lambda: log.append(f"compile {name}"), min_repeats=min_repeats
        )

    ra, rb, rc = harness.measure_side_by_side([make("a", 1.0), make("b", 2.0), make("c", 3.0, 4)], repeats=2, warmup=1)
    warm = ["compile a", "a", "compile b", "b", "compile c", "c"]
    assert log == warm + ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    assert (ra["impl"], ra["value"], ra["repeats"]) == ("a", 1.0, 4)
    assert (rb["impl"], rb["value"], rb["repeats"]) == ("b", 2.0, 4)
    assert (rc["impl"], rc["value"], rc["repeats"]) == ("c", 3.0, 4)
    for r in (ra, rb, rc):
        assert len(r["times_s"]) == r["repeats"]
        assert r["median_s"] == statistics.median(r["times_s"]) and r["min_s"] == min(r["times_s"])


def _native_worker():
    """A thread that hashes 1 GiB in one call (outside the GIL, as a runtime's
    native work is; a Python loop would wait for the GIL that settle's spin holds).
    Returns ``(thread, finished_at)`` once the hash has begun; ``finished_at`` gets
    the end time."""
    import hashlib
    import threading
    import time

    data = bytes(1 << 30)  # zero pages: read, never resident
    started, finished_at = threading.Event(), []

    def work():
        started.set()
        hashlib.sha256(data).digest()
        finished_at.append(time.perf_counter())

    t = threading.Thread(target=work)
    t.start()
    started.wait()
    time.sleep(0.02)  # into the hash
    return t, finished_at


def test_settle_waits_while_another_thread_works():
    """``settle`` (run before every timed call) does not return while another thread of
    the process works, and returns soon once the process is idle."""
    import time

    t, finished_at = _native_worker()
    # Windows of 0.1 s (the benchmark's are 1-10 ms): under the suite's parallel workers
    # the hashing thread shares the 2 cores with other processes, and in a 20 ms window
    # it once got under 20% of a core, which settle reads as quiet (CI, one run of four).
    harness.settle(window=0.1, max_wait=30.0)
    returned = time.perf_counter()
    t.join()
    assert returned > finished_at[0], "settle returned while the other thread still worked"
    assert harness.settle(window=0.1, max_wait=30.0) < 30.0  # an idle process: a quiet window, not the cap


def test_settle_gives_up_after_max_wait():
    import time

    t, finished_at = _native_worker()
    waited = harness.settle(window=0.1, max_wait=0.3)  # windows: see the test above
    returned = time.perf_counter()
    t.join()
    assert waited >= 0.3 and returned < finished_at[0], (waited, returned, finished_at)
