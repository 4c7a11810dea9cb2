"""Test-session settings.

The suite compiles a few thousand tiny XLA programs (one per fixture case, layout
and transformation). On a 2-core CPU most of its time is XLA's optimisation passes,
not running the programs, so the tests compile with ``jax_disable_most_optimizations``.
That changes no semantics: every comparison keeps its tolerance. The
optimised compilation users get is exercised by the benchmarks (which check the
values of jaxloss, optax and torch against each other) and the notebooks (run in
their own kernels, with default settings). Set JAXLOSS_TEST_OPTIMIZED=1 to run
the tests with full optimisation. Matmuls run at full float32 precision (below).
"""

import os

import jax

if os.environ.get("JAXLOSS_TEST_OPTIMIZED", "") in ("", "0"):
    jax.config.update("jax_disable_most_optimizations", True)

# The fixtures are torch's float32 numbers, and torch's float32 matmuls are full float32
# by default. JAX's default float32 matmul is TF32 on NVIDIA GPUs (bf16 passes on TPUs),
# which moved linear_cross_entropy's fixture gradients by up to 9e-4 of their largest
# entry on an H100. On CPU this changes nothing. tests/test_linear_cross_entropy.py
# checks that the ``precision`` argument reaches every matmul.
jax.config.update("jax_default_matmul_precision", "highest")
