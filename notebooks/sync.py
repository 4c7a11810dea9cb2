"""Write notebooks/03_flax_training.ipynb from notebooks/flax_training.py.

The script is the single source: it is written in the "percent" format, where a line
``# %%`` starts a code cell and ``# %% [markdown]`` starts a markdown cell whose lines are
comments (``# text``). The notebook is written without outputs. The test suite checks that
the committed notebook equals what this produces, and executes the notebook (the
script's code cells, in order).

Usage: ``python notebooks/sync.py`` (from anywhere); ``python notebooks/sync.py SCRIPT NOTEBOOK``
converts another percent-format script.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "flax_training.py"
NOTEBOOK = HERE / "03_flax_training.ipynb"

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def cells_from_script(text: str, name: str = SCRIPT.name) -> list[tuple[str, str]]:
    """``[(cell_type, source), ...]`` from a percent-format script."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            kind = "markdown" if line.strip() == "# %% [markdown]" else "code"
            cells.append((kind, []))
        elif not cells:
            if line.strip():
                raise ValueError(f"{name}: text before the first '# %%' marker: {line!r}")
        elif cells[-1][0] == "markdown":
            if line and not (line == "#" or line.startswith("# ")):
                raise ValueError(f"{name}: markdown cell line is not a '# ' comment: {line!r}")
            cells[-1][1].append(line[2:])
        else:
            cells[-1][1].append(line)
    return [(kind, "\n".join(lines).strip("\n")) for kind, lines in cells]


def notebook_from_script(path: Path = SCRIPT) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source in cells_from_script(path.read_text(), path.name):
        new = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        nb.cells.append(new(source))
    # Stable cell ids, so regenerating an unchanged script gives an identical file.
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    return nb


def main(argv: list[str]) -> int:
    script, notebook = (Path(argv[0]), Path(argv[1])) if argv else (SCRIPT, NOTEBOOK)
    nb = notebook_from_script(script)
    nbformat.validate(nb)
    notebook.write_text(nbformat.writes(nb) + "\n")
    print(f"wrote {notebook} ({len(nb.cells)} cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
