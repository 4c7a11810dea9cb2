"""Every loss under jit on sharded inputs (4 simulated CPU devices, a separate process).

For each case of ``tests/_sharded_cases.py``, on a 2 x 2 mesh of ``Auto`` axes and one of
``Explicit`` axes (where shardings are part of the types and JAX rejects gathers and
scatters whose result sharding it cannot infer): the value and gradients on sharded
inputs equal those on plain arrays (which the fixture tests compare with torch), and
with explicit axes each gradient has its input's sharding, and linear_cross_entropy on
row-sharded input or a vocabulary-sharded weight gathers nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jaxloss
from tests import _sharded_cases

ROOT = Path(__file__).resolve().parents[1]
# float32, sharded against unsharded: only the order of the reductions differs.
RTOL = 1e-5
# Only the rows (and targets) are sharded in these: with explicit axes each device loops
# over its own rows, and the weight's gradient is summed across the devices once, after
# the loop (no all-reduce inside a loop).
ROWS_ONLY = (
    "linear_cross_entropy_rows",
    "linear_cross_entropy_rows_probs",
    "linear_cross_entropy_rows_kdim_sum",
    "linear_cross_entropy_rows_checkpoint",
    "linear_cross_entropy_rows_all_devices",
    "linear_cross_entropy_rows_jvp",
    "linear_cross_entropy_rows_tiled_options",
    "linear_cross_entropy_rows_tiled_probs_kdim",
    "linear_cross_entropy_rows_tiled_none",
)
# linear_cross_entropy gathers nothing in these: the rows stay on their devices, and a
# weight sharded along the vocabulary stays sharded (the log-normaliser is reduced across
# its shards). (Not listed: the gradient of a replicated probability target is replicated,
# a gather of each chunk's class-sharded gradient; a class weight is gathered, C numbers.)
PARTITIONED = ROWS_ONLY + (
    "linear_cross_entropy_vocab",
    "linear_cross_entropy_rows_vocab",
    "linear_cross_entropy_rows_vocab_kdim",
    "linear_cross_entropy_none",
    "linear_cross_entropy_rows_vocab_tiled",
)


def test_every_public_loss_has_a_sharded_case():
    names = list(_sharded_cases.cases())
    missing = [f for f in jaxloss.__all__ if not any(n == f or n.startswith(f + "_") for n in names)]
    assert not missing


def test_every_loss_on_sharded_inputs(tmp_path):
    out = tmp_path / "sharded.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests._sharded_cases", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["devices"] == 4
    failures = []
    names = set(_sharded_cases.cases())
    for kind in ("Auto", "Explicit"):
        assert set(result[kind]) == names
        for name, r in result[kind].items():
            where = f"{kind} {name}"
            if not r["ok"]:
                failures.append(f"{where}: {r['error']}")
                continue
            if r["dv"] > RTOL * max(1.0, abs(r["value"])):
                failures.append(f"{where}: value differs by {r['dv']} (value {r['value']})")
            if r["dg"] > RTOL * max(1.0, r["grad_scale"]):
                failures.append(f"{where}: gradient differs by {r['dg']} (largest entry {r['grad_scale']})")
            # With Auto axes the compiler picks the gradients' shardings.
            if kind == "Explicit" and r["grad_specs"] != r["input_specs"]:
                failures.append(f"{where}: gradient shardings {r['grad_specs']}, inputs {r['input_specs']}")
            if kind == "Explicit" and name in ROWS_ONLY and r["loop_all_reduces"]:
                failures.append(f"{where}: {r['loop_all_reduces']} all-reduces in loops; sum once, after the loop")
            if kind == "Explicit" and name in PARTITIONED and r["all_gathers"]:
                failures.append(f"{where}: {r['all_gathers']} all-gathers; the shards should stay on their devices")
    assert not failures, "\n".join(failures)

