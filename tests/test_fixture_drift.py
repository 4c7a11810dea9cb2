"""With torch installed: the committed fixtures are what tests/fixtures/generate.py produces."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests._fixtures import RTOL, assert_close
from tests.fixtures import generate

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("family", generate.FAMILIES)
def test_committed_fixtures_match_a_fresh_generation(family):
    manifest = json.loads((generate.FIXTURE_DIR / f"{family}.json").read_text())
    if manifest["torch_version"] != torch.__version__:
        pytest.skip(f"fixtures were made with torch {manifest['torch_version']}, this is {torch.__version__}")
    arrays, fresh = generate.generate_family(family)
    assert [c["id"] for c in fresh["cases"]] == [c["id"] for c in manifest["cases"]]
    assert fresh["cases"] == manifest["cases"], "case descriptions changed: regenerate the fixtures"
    with np.load(generate.FIXTURE_DIR / f"{family}.npz") as committed:
        assert sorted(committed.files) == sorted(arrays)
        for key in committed.files:
            want, got = committed[key], arrays[key]
            assert got.dtype == want.dtype, key
            if not np.issubdtype(want.dtype, np.floating):
                np.testing.assert_array_equal(got, want, err_msg=key)
            elif "|arg|" in key or key.endswith("|cot"):
                # Drawn from a seeded generator (exact everywhere), but some pass through
                # NumPy's exp/log, whose SIMD kernels differ by a few ulps between CPUs (an
                # AVX-512 and an AVX2 machine gave up to 4 ulps apart). Arguments are
                # compared within 16 ulps of themselves, no absolute floor.
                rtol = 16 * np.finfo(want.dtype).eps
                np.testing.assert_allclose(got, want, rtol=rtol, atol=0, equal_nan=True, err_msg=key)
            else:
                # torch's kernels are platform-dependent too: their summation order and
                # vectorised exp/log change with the CPU (its CTC gradient over a long
                # sequence moved by 230 float32 eps of the array's largest entry between
                # an AVX-512 and an AVX2 machine; poisson_nll_loss's Stirling term of an
                # integer target is float32 even with float64 input). What fixtures must
                # keep is their parity verdict, so they are compared by the parity
                # tests' assert_close at a quarter of its tolerance: entries relative to
                # themselves, with a floor relative to the array's largest finite entry;
                # infinities and NaNs exactly where they were.
                dtype = str(want.dtype)
                assert_close(got, want, dtype, key, rtol=RTOL[dtype] / 4)
