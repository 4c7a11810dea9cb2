"""Margin losses against torch's golden fixtures and JAX's transformations."""

from __future__ import annotations

import jax
import pytest

from tests._fixtures import assert_parity, case_params


@pytest.mark.parametrize("case", case_params("margin"))
def test_fixture_parity(case):
    assert_parity(case)


@pytest.mark.parametrize("case", case_params("margin"))
def test_fixture_parity_under_jit(case):
    assert_parity(case, transform=jax.jit)
