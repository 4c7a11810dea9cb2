"""With torch installed: output dtypes of mixed float32/float64 arguments, 0-d ones included.

torch promotes a tensor with dimensions by a 0-d tensor only when the 0-d one is of a
higher category (bool < integer < floating): float32 ``(3,)`` times float64 ``()`` is
float32. Which operands meet in which order differs per loss (``huber_loss`` writes
into an array of the input's dtype; l1/mse's weighted ``"mean"`` divides two 0-d sums),
so this asks torch for every layout: each floating argument 0-d or not, float32 with
one argument at a time in float64, every reduction. Only calls torch accepts are
compared; jaxloss must accept them too and return torch's dtype.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxloss as L

torch = pytest.importorskip("torch")
F = torch.nn.functional

REDUCTIONS = ("none", "mean", "sum")

# fn: (positional argument names, keyword argument names, {name: shapes to try}, fixed keywords)
# Shapes are those torch accepts for some combination; the others raise in torch and
# are skipped. Integer arguments are given as ("int", shape).
SPECS = {
    "l1_loss": (("input", "target"), ("weight",), {"input": [(), (2,)], "target": [(), (2,)], "weight": [None, "input"]}, {}),
    "mse_loss": (("input", "target"), ("weight",), {"input": [(), (2,)], "target": [(), (2,)], "weight": [None, "input"]}, {}),
    "huber_loss": (("input", "target"), ("weight",), {"input": [(), (2,)], "target": [(), (2,)], "weight": [None, "input"]}, {}),
    "smooth_l1_loss": (("input", "target"), (), {"input": [(), (2,)], "target": [(), (2,)]}, {}),
    "kl_div": (("input", "target"), (), {"input": [(), (2,)], "target": [(), (2,)]}, {}),
    "poisson_nll_loss": (("input", "target"), (), {"input": [(), (2,)], "target": [(), (2,)]}, {"full": True}),
    "gaussian_nll_loss": (("input", "target", "var"), (), {"input": [(), (2,)], "target": [(), (2,)], "var": [(), (2,)]}, {}),
    "binary_cross_entropy_with_logits": (
        ("input", "target"),
        ("weight", "pos_weight"),
        {"input": [(2,)], "target": [(2,)], "weight": [None, (), (2,)], "pos_weight": [None, (), (2,)]},
        {},
    ),
    "binary_cross_entropy": (("input", "target"), ("weight",), {"input": [(2,)], "target": [(2,)], "weight": [None, (), (2,)]}, {}),
    "multilabel_soft_margin_loss": (
        ("input", "target"),
        ("weight",),
        {"input": [(2, 3)], "target": [(), (3,), (2, 3)], "weight": [None, (), (3,)]},
        {},
    ),
    "soft_margin_loss": (("input", "target"), (), {"input": [(2,)], "target": [(), (2,)]}, {}),
    "hinge_embedding_loss": (("input", "target"), (), {"input": [(2,)], "target": [(), (2,)]}, {}),
    "margin_ranking_loss": (("input1", "input2", "target"), (), {"input1": [(2,)], "input2": [(2,)], "target": [(2,)]}, {}),
    "cosine_embedding_loss": (
        ("input1", "input2", "target"),
        (),
        {"input1": [(1, 2)], "input2": [(1, 2)], "target": [("int", (1,))]},
        {},
    ),
    "triplet_margin_loss": (("anchor", "positive", "negative"), (), {"anchor": [(1, 2)], "positive": [(1, 2)], "negative": [(1, 2)]}, {}),
    "cross_entropy": (("input", "target"), (), {"input": [(2, 3)], "target": [(2, 3)]}, {}),
    "pairwise_distance": (("x1", "x2"), (), {"x1": [(), (2,), (1, 2)], "x2": [(), (2,), (1, 2)]}, {}),
}


def _value(shape, dtype, seed):
    r = np.random.default_rng(seed)
    if isinstance(shape, tuple) and shape and shape[0] == "int":
        return np.ones(shape[1], np.int64)
    # positive values in (0.2, 0.8): valid probabilities, variances and counts everywhere
    return r.uniform(0.2, 0.8, shape).astype(dtype)


def _cases():
    for fn, (pos, kw, shapes, fixed) in SPECS.items():
        names = pos + kw
        floating = [n for n in names if not any(isinstance(s, tuple) and s and s[0] == "int" for s in shapes[n])]
        for choice in itertools.product(*(shapes[n] for n in names)):
            choice = dict(zip(names, choice))
            # None: the argument is left out; a name: the shape of that argument
            layout = {n: (choice[s] if isinstance(s, str) else s) for n, s in choice.items() if s is not None}
            present = [n for n in floating if n in layout]
            for wide in [None] + present:
                dtypes = {n: ("float64" if n == wide else "float32") for n in present}
                for reduction in (None,) if fn == "pairwise_distance" else REDUCTIONS:
                    yield fn, layout, dtypes, reduction, fixed


def _call(lib, fn, layout, dtypes, reduction, fixed):
    pos, kw, _, _ = SPECS[fn]
    arrays = {n: _value(s, dtypes.get(n, "float32"), i) for i, (n, s) in enumerate(layout.items())}
    conv = torch.from_numpy if lib == "torch" else jnp.asarray
    kwargs = dict(fixed, **({} if reduction is None else {"reduction": reduction}))
    kwargs.update({n: conv(arrays[n]) for n in kw if n in arrays})
    args = [conv(arrays[n]) for n in pos]
    if lib == "torch":
        return getattr(F, fn)(*args, **kwargs).dtype
    return jax.eval_shape(lambda *a: getattr(L, fn)(*a, **kwargs), *args).dtype


@pytest.mark.parametrize("fn", sorted(SPECS))
def test_output_dtype_follows_torch(fn):
    compared = 0
    with jax.enable_x64(True):
        for case in _cases():
            if case[0] != fn:
                continue
            try:
                with _quiet():
                    expected = str(_call("torch", *case)).replace("torch.", "")
            except (RuntimeError, ValueError, TypeError, IndexError):
                continue  # torch rejects this layout
            with _quiet():
                got = str(_call("jax", *case))
            assert got == expected, f"{case}: jaxloss gives {got}, torch {expected}"
            compared += 1
    assert compared >= 3, f"{fn}: torch accepted only {compared} layouts"


@contextlib.contextmanager
def _quiet():
    """Silence the broadcasting warnings torch and jaxloss give for a target of another shape."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
