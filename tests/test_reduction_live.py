"""With torch installed: torch's deprecated ``reduction="elementwise_mean"``, loss by loss.

torch 2.13 takes it as ``"mean"`` with a warning in most losses and rejects it in a few.
Which do is asked of torch here, not listed: jaxloss must accept it exactly where torch
does (same value as ``"mean"`` and torch's, same warning) and raise ``ValueError`` naming
``reduction`` where torch raises.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest

import jaxloss as L

torch = pytest.importorskip("torch")
F = torch.nn.functional

MESSAGE = "reduction='elementwise_mean' is deprecated. Please use reduction='mean' instead."


def _arrays():
    r = np.random.default_rng(0)
    x = r.standard_normal((3, 4)).astype(np.float64)
    p = r.uniform(0.1, 0.9, (3, 4))
    t = r.integers(0, 4, 3)
    pm1 = np.array([1.0, -1.0, 1.0])
    lp = np.asarray(jax.nn.log_softmax(r.standard_normal((6, 2, 4)), axis=-1), np.float64)
    return {
        "cross_entropy": ((x, t), {}),
        "nll_loss": ((x, t), {}),
        "binary_cross_entropy": ((p, 1 - p), {}),
        "binary_cross_entropy_with_logits": ((x, p), {}),
        "kl_div": ((x, p), {}),
        "poisson_nll_loss": ((x, p), {}),
        "gaussian_nll_loss": ((x, p, p + 0.1), {}),
        "ctc_loss": ((lp, np.array([[1, 2], [3, 3]]), np.array([6, 5]), np.array([2, 1])), {}),
        "mse_loss": ((x, p), {}),
        "l1_loss": ((x, p), {}),
        "smooth_l1_loss": ((x, p), {}),
        "huber_loss": ((x, p), {}),
        "soft_margin_loss": ((x, np.sign(p - 0.5)), {}),
        "multilabel_soft_margin_loss": ((x, (p > 0.5).astype(np.float64)), {}),
        "multi_margin_loss": ((x, t), {}),
        "multilabel_margin_loss": ((x, np.array([[1, -1, 0, 0], [0, 2, -1, 0], [3, 0, 1, -1]])), {}),
        "hinge_embedding_loss": ((x, np.sign(p - 0.5)), {}),
        "margin_ranking_loss": ((x[:, 0], x[:, 1], pm1), {}),
        "cosine_embedding_loss": ((x, p, pm1), {}),
        "triplet_margin_loss": ((x, p, 2 * x), {}),
        "triplet_margin_with_distance_loss": ((x, p, 2 * x), {}),
        "linear_cross_entropy": ((x, p, t % 3), {}),
        # weighted variants: torch's weighted regression losses take another code path
        # (which rejects the deprecated spelling)
        "l1_loss+weight": ((x, p), {"weight": p}),
        "mse_loss+weight": ((x, p), {"weight": p}),
        "huber_loss+weight": ((x, p), {"weight": p}),
        "cross_entropy+weight": ((x, t), {"weight": p[0]}),
        "nll_loss+weight": ((x, t), {"weight": p[0]}),
        "binary_cross_entropy+weight": ((p, 1 - p), {"weight": p}),
        "binary_cross_entropy_with_logits+weight": ((x, p), {"weight": p, "pos_weight": p[0]}),
        "multi_margin_loss+weight": ((x, t), {"weight": p[0]}),
    }


CASES = _arrays()


def test_every_loss_is_asked():
    assert {c.split("+")[0] for c in CASES} == set(L.__all__) - {"pairwise_distance"}  # a helper, not a loss


@pytest.mark.parametrize("case", sorted(CASES))
def test_elementwise_mean_where_torch_takes_it(case):
    name = case.split("+")[0]
    if not hasattr(F, name):
        pytest.skip(f"torch {torch.__version__} has no F.{name} (the fixtures are torch 2.13's)")
    args, kwargs = CASES[case]
    targs = [torch.as_tensor(a) for a in args]
    kwargs_t = {k: torch.as_tensor(v) for k, v in kwargs.items()}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            want = getattr(F, name)(*targs, reduction="elementwise_mean", **kwargs_t)
        except ValueError:
            want = None
    fn = getattr(L, name)
    with jax.enable_x64(True):
        if want is None:
            with pytest.raises(ValueError, match="^reduction: .*'elementwise_mean'"):
                fn(*args, reduction="elementwise_mean", **kwargs)
            return
        assert MESSAGE in [str(w.message) for w in seen]
        with warnings.catch_warnings(record=True) as ours:
            warnings.simplefilter("always")
            got = fn(*args, reduction="elementwise_mean", **kwargs)
        # torch's words, attributed to this file (the caller), not to jaxloss
        deprecations = [w for w in ours if str(w.message) == MESSAGE]
        assert len(deprecations) == 1 and deprecations[0].category is UserWarning
        assert deprecations[0].filename == __file__
        mean = fn(*args, reduction="mean", **kwargs)
    assert got.shape == () and float(got) == float(mean)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-10)
