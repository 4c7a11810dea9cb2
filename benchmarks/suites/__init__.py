"""Benchmark suites: one module per loss family.

Each module ``<name>.py`` defines ``cases(quick: bool, sizes: list[dict] | None) ->
list[BenchCase]`` (see :mod:`benchmarks.harness`). They are found by listing this
package; modules whose name starts with ``_`` are not suites.
"""

from __future__ import annotations

import importlib
import pkgutil


def suite_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load(name: str):
    return importlib.import_module(f"{__name__}.{name}")
