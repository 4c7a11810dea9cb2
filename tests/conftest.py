"""Test-session settings.

The suite compiles a few thousand tiny XLA programs (one per fixture case, layout
and transformation). On a 2-core CPU most of its time is XLA's optimisation passes,
not running the programs, so the tests compile with ``jax_disable_most_optimizations``.
That changes no semantics: every comparison keeps its tolerance. The
optimised compilation users get is exercised by the benchmarks (which check the
values of jaxloss, optax and torch against each other) and the notebooks (run in
their own kernels, with default settings). Set JAXLOSS_TEST_OPTIMIZED=1 to run
the tests with full optimisation.
"""

import os

import jax

if os.environ.get("JAXLOSS_TEST_OPTIMIZED", "") in ("", "0"):
    jax.config.update("jax_disable_most_optimizations", True)
