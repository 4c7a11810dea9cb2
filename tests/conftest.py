"""Test-session settings.

The suite compiles a few thousand tiny XLA programs (one per fixture case, layout
and transformation). On a 2-core CPU compiling them, not running them, is most of
its time, so the tests compile with less work than XLA does by default:

- ``jax_disable_most_optimizations`` (XLA's optimisation passes off);
- on CPU, XLA's loop-emitter code generation instead of its newer MLIR fusion
  emitters (``--xla_cpu_use_fusion_emitters=false``, added to ``XLA_FLAGS`` when
  this jaxlib knows the flag). Both emitters generate code for the same HLO; the
  loop emitters compile faster: test_cross_entropy.py took 105 s instead of
  160-180 s on 2 cores (jaxlib 0.10.2).

That changes no semantics: every comparison keeps its tolerance, and the
comparisons that are exact compare two programs compiled the same way. The
optimised compilation users get is exercised by the benchmarks (which check the
values of jaxloss, optax and torch against each other) and the notebooks (run in
their own kernels, with the ``XLA_FLAGS`` the session started with). Set
JAXLOSS_TEST_OPTIMIZED=1 to run the tests with XLA's defaults. Matmuls run at full
float32 precision (below).
"""

import gc
import os
import subprocess
import sys

import jax
import pytest

# XLA_FLAGS as the session found them, before the flag below: the notebooks' kernels
# get these. Set once, by the first process (pytest, or xdist's controller, whose
# workers inherit its environment), before any backend starts.
USER_XLA_FLAGS = "JAXLOSS_USER_XLA_FLAGS"
FAST_COMPILE_FLAGS = "--xla_cpu_use_fusion_emitters=false"


def _xla_accepts(flags: str) -> bool:
    """Whether this jaxlib starts with ``flags`` (XLA aborts on an unknown flag, so ask
    a separate process; about a second, once per session)."""
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    probe = "import jax, jax.numpy as jnp; jax.jit(lambda x: x + 1)(jnp.ones(2)).block_until_ready()"
    try:
        return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


if os.environ.get("JAXLOSS_TEST_OPTIMIZED", "") in ("", "0"):
    jax.config.update("jax_disable_most_optimizations", True)
    if USER_XLA_FLAGS not in os.environ:
        user_flags = os.environ.get("XLA_FLAGS", "")
        os.environ[USER_XLA_FLAGS] = user_flags
        fast = f"{user_flags} {FAST_COMPILE_FLAGS}".strip()
        if _xla_accepts(fast):
            os.environ["XLA_FLAGS"] = fast

# The fixtures are torch's float32 numbers, and torch's float32 matmuls are full float32
# by default. JAX's default float32 matmul is TF32 on NVIDIA GPUs (bf16 passes on TPUs),
# which moved linear_cross_entropy's fixture gradients by up to 9e-4 of their largest
# entry on an H100. On CPU this changes nothing. tests/test_linear_cross_entropy.py
# checks that the ``precision`` argument reaches every matmul.
jax.config.update("jax_default_matmul_precision", "highest")


# The longest single tests first: the sharding test (a subprocess on four simulated
# devices, 33-59 s) and the notebooks (their own kernels, 7-33 s each). Collected in
# file order they came last, and one xdist worker ran them alone at the end of the run
# while the other had nothing left to take; work stealing (pyproject's --dist
# worksteal) splits queues, not tests, so one long test at the end would still do that.
# (A stable sort: the rest keep their order.)
_LONGEST_FIRST = ("tests/test_sharding.py::test_every_loss_on_sharded_inputs", "tests/test_notebooks.py::")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: not item.nodeid.startswith(_LONGEST_FIRST))


# An xdist worker frees the suite's compiled programs before it reports that it has
# finished. Otherwise pytest's last garbage collection (its unraisable-exception check,
# after the report) frees them, which took over 5 s on a slow run; execnet gives a
# finished worker 5 s, then sends it SIGINT, and the KeyboardInterrupt landing in JAX's
# gc callback ended runs with a PytestUnraisableExceptionWarning. (The hook runs before
# xdist's own sessionfinish wrapper sends the report.)
@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput"):
        jax.clear_caches()
        gc.collect()
