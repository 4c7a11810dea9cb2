"""The notebooks run top to bottom in a fresh kernel and print the numbers they promise.

Every notebook in notebooks/ is executed with nbclient in a new kernel launched from this
interpreter (``sys.executable``, so the test uses whatever environment runs pytest), with the
non-interactive Agg matplotlib backend and the repository root on ``PYTHONPATH``. Any cell
error fails the test. Notebooks are committed without outputs, so nothing shown can go stale;
the values they print are checked here instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from tests.conftest import USER_XLA_FLAGS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
KERNEL_NAME = "jaxloss-tests"
TIMEOUT_S = 300  # per cell; the slowest cell (Flax training) takes seconds

# notebooks/sync.py: the converter from the Flax script to its notebook.
_spec = importlib.util.spec_from_file_location("jaxloss_notebooks_sync", NOTEBOOKS / "sync.py")
sync = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync)

# Strings each notebook must print (whitespace-normalised before matching), grouped by where
# the numbers come from: printed by torch in the seed tutorials (the PyTorch originals that
# notebook 01 reproduces, at the precision they show), or derivable by hand as the notebooks'
# text does. Only computed output is matched: markdown is not output, and no code cell
# prints an expected number literally.
EXPECTED: dict[str, list[str]] = {
    "01_classification_losses.ipynb": [
        # Printed by the seed tutorials (torch), for the same inputs.
        "cross_entropy: 1.7589",
        "cross_entropy: 0.9732",
        "cross_entropy: 0.4402",
        "cross_entropy: 1.9076",
        "softmax: [[0.0900 0.2447 0.6652] [0.0900 0.2447 0.6652]]",
        "log softmax: [[-2.4076 -1.4076 -0.4076] [-2.4076 -1.4076 -0.4076]]",
        "cross_entropy, class indices: 1.9650",
        "nll_loss: 1.100000023841858",
        "nll_loss: -3.0",
        "softmax: [[0.2153 0.6851 0.0996] [0.2303 0.7304 0.0393]]",
        "sigmoid: [0.1192 0.2689 0.5000 0.7311 0.8808]",
        "log(sum(exp(x))): inf",
        "cross_entropy, weighted: 0.4032",
        "cross_entropy: 1.0986 input grads: [-0.2670 -0.0006 0.2676]",
        "cross_entropy: 20.8519 input grads: [ 6.3267 -12.6535 6.3267]",
        "binary_cross_entropy: 0.5108",
        "binary_cross_entropy: 0.4149",
        "sigmoid: [0.9011 0.7006 0.8022]",
        "binary_cross_entropy_with_logits: 0.5101",
        "binary_cross_entropy(sigmoid): 0.5101",
        # torch: 0.346109539270401; jaxloss's float32 mean is the adjacent float32 number
        # (XLA multiplies by 1/3 instead of dividing by 3), equal to 7 significant digits.
        "Built-in BCE: 0.3461095",
        "[[0.8729 0.8157 0.7111 0.1086]",
        "binary_cross_entropy(sigmoid(x)): 0.6935",
        "binary_cross_entropy_with_logits(x): 0.6935",
        "pos_weight=1: 0.3133",
        "binary_cross_entropy_with_logits (float64): 0.46380153",
        # By hand: one-hot probability targets equal class indices; per-sample terms of the
        # 1.9076 example; -log softmax([0, 1, 2])[2] = 0.4076 (the same row, shifted); and
        # the identities the notebook states.
        "cross_entropy, one-hot probabilities: 1.9650",
        "per sample: [2.4076 1.4076]",
        "picked, negated: [3.0000 0.2000 0.1000]",
        "cross_entropy(x, target=2): 0.4076",
        "equal to float32 rounding: True",
        "good < bad: True",
        "ValueError: input",
    ],
    "02_regression_and_margin_losses.ipynb": [
        # Printed by the seed tutorial (torch).
        "l1_loss: 0.2000",
        "mse_loss: 0.0400",
        # By hand, as derived in the notebook's text (and equal to torch 2.13's output).
        "huber_loss(delta=2): [0.1250 4.0000]",
        "smooth_l1_loss(beta=2): [0.0625 2.0000]",
        "smooth_l1_loss(beta=0): [0.5000 3.0000]",
        "mse_loss, weighted mean: 7.0000",
        "huber_loss, weighted mean: 4.6667",
        "mse_loss: c = 12.00",
        "margin_ranking_loss(margin=0.5): [0.0000 0.7000 1.1000]",
        "soft_margin_loss at x=0: 0.6931",
        "hinge_embedding_loss(margin=1): [0.3000 1.7000 0.7000 0.0000]",
        "multi_margin_loss: 0.3250",
        "multi_margin_loss(p=2): 0.1525",
        "multilabel_margin_loss: 0.8500",
        "cosine_embedding_loss(margin=0): [0.5000 0.5000]",
        "cosine_embedding_loss(margin=0.5): [0.5000 0.0000]",
        "triplet_margin_loss: [0.5000 0.0000 0.8820]",
        "triplet_margin_loss(swap=True): [0.5000 0.0000 1.5000]",
        "triplet_margin_with_distance_loss(cosine distance): [0.5000 0.0000]",
    ],
    "03_flax_training.ipynb": [
        # The test accuracies (>= 0.95) are checked by _check_accuracies.
        "loss floor with label_smoothing=0.1: 0.5003",  # entropy of (0.91, 9 x 0.01), by hand
    ],
}


def _kernel_env() -> dict[str, str]:
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {"MPLBACKEND": "Agg", "PYTHONPATH": pythonpath}
    # The kernels compile as users' programs do: with the XLA_FLAGS the session started
    # with, not those tests/conftest.py adds (it keeps the former in this variable).
    if USER_XLA_FLAGS in os.environ:
        env["XLA_FLAGS"] = os.environ[USER_XLA_FLAGS]
    return env


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory) -> KernelSpecManager:
    """A kernelspec for this interpreter, so the test does not depend on registered kernels."""
    kernels = tmp_path_factory.mktemp("kernels")
    spec = kernels / KERNEL_NAME
    spec.mkdir()
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "jaxloss tests",
                "language": "python",
                "env": _kernel_env(),
            }
        )
    )
    return KernelSpecManager(kernel_dirs=[str(kernels)])


def _execute(path: Path, kernel_specs: KernelSpecManager) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_specs)
    client = NotebookClient(
        nb, km=km, timeout=TIMEOUT_S, allow_errors=False, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    return nb


def _printed_text(nb: nbformat.NotebookNode) -> str:
    """Everything the code cells printed or displayed as text, whitespace-normalised."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                parts.append(out.get("data", {}).get("text/plain", ""))
    return re.sub(r"\s+", " ", "\n".join(parts))


def _notebook_files() -> list[str]:
    return sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))


def test_every_notebook_has_expectations():
    assert _notebook_files() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_is_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: strip the outputs"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_expected_strings_are_not_in_the_code(name):
    """An expected string must come from running the code, not from a literal in it."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = re.sub(r"\s+", " ", "\n".join(c.source for c in nb.cells if c.cell_type == "code"))
    assert [s for s in EXPECTED[name] if re.sub(r"\s+", " ", s) in code] == []


def test_flax_notebook_is_generated_from_the_script():
    committed = nbformat.read(sync.NOTEBOOK, as_version=4)
    generated = sync.notebook_from_script()
    assert [(c.cell_type, c.source) for c in committed.cells] == [
        (c.cell_type, c.source) for c in generated.cells
    ], "run: python notebooks/sync.py"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_and_prints_expected_values(name, kernel_specs):
    printed = _printed_text(_execute(NOTEBOOKS / name, kernel_specs))
    missing = [s for s in EXPECTED[name] if re.sub(r"\s+", " ", s) not in printed]
    assert not missing, f"{name}: not printed: {missing}\n--- printed ---\n{printed}"
    if name == "03_flax_training.ipynb":
        _check_accuracies(printed)


def _check_accuracies(printed: str) -> None:
    for loss in ("cross_entropy", "linear_cross_entropy"):
        found = re.findall(rf"(?<![a-z_]){loss}: test accuracy (\d\.\d+)", printed)
        assert len(found) == 1, (loss, printed)
        assert float(found[0]) >= 0.95, (loss, found[0])


def test_flax_training_script_is_plain_python_the_notebook_runs():
    """``python notebooks/flax_training.py`` runs the notebook's code cells in order (the
    notebook is generated from it: test_flax_notebook_is_generated_from_the_script, and
    executed: test_notebook_runs_and_prints_expected_values), so it is not trained a
    second time here (14 s). What could differ between the two runs is checked instead:
    the script compiles as a module, and reads nothing a notebook kernel sets otherwise."""
    source = sync.SCRIPT.read_text()
    compile(source, str(sync.SCRIPT), "exec")
    code = "\n".join(src for kind, src in sync.cells_from_script(source) if kind == "code")
    assert [n for n in ("__file__", "__name__", "sys.argv", "get_ipython", "display(") if n in code] == []
