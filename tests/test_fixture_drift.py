"""With torch installed: the committed fixtures are what tests/fixtures/generate.py produces."""

from __future__ import annotations

import json

import numpy as np
import pytest

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
            if "|arg|" in key or key.endswith("|cot"):
                np.testing.assert_array_equal(got, want, err_msg=key)
            else:
                # torch's kernels may pick a different summation order on another CPU.
                rtol = 1e-12 if want.dtype == np.float64 else 1e-6
                np.testing.assert_allclose(got, want, rtol=rtol, atol=0, equal_nan=True, err_msg=key)
