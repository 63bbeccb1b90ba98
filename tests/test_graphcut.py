"""The max-flow cut's colour models (model/graphcut.py) against their textbook formulas."""

from __future__ import annotations

import numpy as np
import pytest

from model.graphcut import QUADRATIC_MAX_DIMS, fit_gmm, gmm_loglik, min_cut, min_cut_and_relaxed, potts_weights


@pytest.mark.parametrize("d", [3, QUADRATIC_MAX_DIMS + 4])  # both ways of computing the Mahalanobis term
def test_gmm_loglik_is_the_mixture_density(d: int) -> None:
    rng = np.random.default_rng(d)
    samples = np.concatenate([rng.standard_normal((400, d)) * s + c for s, c in ((0.5, -2.0), (1.0, 0.0), (2.0, 3.0))])
    model = fit_gmm(samples.astype(np.float32), np.ones(len(samples)), k=3)
    logpi, mu, chol = (t.numpy() for t in model)
    x = rng.standard_normal((7, 5, d)).astype(np.float32) * 2
    dens = np.zeros(x.shape[:2])
    for lp, m, lo in zip(logpi, mu, chol, strict=True):
        cov = lo @ lo.T
        diff = x.astype(np.float64) - m
        maha = np.einsum("...i,ij,...j->...", diff, np.linalg.inv(cov), diff)
        dens += np.exp(lp) * np.exp(-0.5 * maha) / np.sqrt((2 * np.pi) ** d * np.linalg.det(cov))
    assert np.allclose(gmm_loglik(x, model), np.log(dens), rtol=0, atol=1e-4)


def test_gmm_fits_separate_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[-4.0, 0, 0], [0, 4.0, 0], [4.0, 0, 0]])
    samples = np.concatenate([rng.standard_normal((300, 3)) * 0.3 + c for c in centres]).astype(np.float32)
    _, mu, _ = fit_gmm(samples, np.ones(len(samples)), k=3)
    found = mu.numpy()
    assert all(np.linalg.norm(found - c, axis=1).min() < 0.2 for c in centres)


def test_monomials_are_the_pixels_own_products() -> None:
    """_monomials (numpy, built once per EM fit) gives exactly torch's x_i x_j, i <= j, products in
    ``torch.triu_indices`` order, the order the precision's entries are read in (the values were
    checked bit for bit against the previous code on 1,500 VOC masks when it changed, README Speed)."""
    import torch

    from model.graphcut import _monomials

    xt = torch.from_numpy(np.random.default_rng(3).standard_normal((500, 5))).double()
    iu = torch.triu_indices(5, 5)
    quad = _monomials(xt)
    assert quad is not None and quad.is_contiguous()
    assert torch.equal(quad, xt[:, iu[0]] * xt[:, iu[1]])
    assert _monomials(torch.zeros(4, QUADRATIC_MAX_DIMS + 1, dtype=torch.float64)) is None


@pytest.mark.parametrize("d", [3, QUADRATIC_MAX_DIMS + 4])
def test_gmm_logliks_of_two_models_are_each_models_own_bit_for_bit(d: int) -> None:
    """featcut scores a window under its foreground and background GMMs with one gmm_logliks call
    (the monomials built once); each answer is exactly the one model's log density, computed
    from scratch (the monomials built inside _component_loglik)."""
    import torch

    from model.graphcut import _component_loglik, gmm_logliks

    rng = np.random.default_rng(d)
    models = [fit_gmm(rng.standard_normal((500, d)).astype(np.float32) * s, np.ones(500), k=5) for s in (0.5, 2.0)]
    x = rng.standard_normal((30, 40, d)).astype(np.float32)
    xt = torch.from_numpy(x.reshape(-1, d)).double()
    both = gmm_logliks(x, *models)
    for got, m in zip(both, models, strict=True):
        want = torch.logsumexp(_component_loglik(xt, *m), dim=1).numpy().reshape(30, 40).astype(np.float32)
        assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_min_cut_and_relaxed_gives_both_cuts_of_two_separate_solves() -> None:
    """The guard's answer without the ring prior comes from the same graph (dynamic max-flow,
    search trees reused): both answers must be the exact cuts that two fresh solves give."""
    rng = np.random.default_rng(7)
    h, w = 60, 80
    changed = 0
    for trial in range(12):
        img = np.cumsum(rng.random((h, w, 3)).astype(np.float32) * 60, axis=1) / np.arange(1, w + 1)[None, :, None]
        pair = potts_weights(img, 4.0)
        yy, xx = np.mgrid[0:h, 0:w]
        z = rng.normal(size=(h, w)).cumsum(axis=0) / 8 + 3.0 * (np.hypot(yy - 35, xx - 45) < 20) - 1.0
        cost_fg, cost_bg = np.logaddexp(0, -z), np.logaddexp(0, z)
        hard_bg = np.zeros((h, w), bool)
        hard_bg[:6], hard_bg[:, :7] = True, True
        hard_fg = np.zeros((h, w), bool)
        hard_fg[40:43, 50:53] = True
        relief = (2.0 * np.exp(-5 * rng.random((h, w))) * ~hard_bg) if trial else np.zeros((h, w))
        with_it, relaxed = min_cut_and_relaxed(cost_fg + relief, cost_bg, pair, hard_fg, hard_bg, relief)
        assert (with_it == min_cut(cost_fg + relief, cost_bg, pair, hard_fg, hard_bg)).all()
        assert (relaxed == min_cut(cost_fg, cost_bg, pair, hard_fg, hard_bg)).all()
        assert not (with_it & ~relaxed).any()  # monotone in the unary: less cost for foreground, a superset
        changed += int(relaxed.sum() > with_it.sum())
    assert changed >= 6  # the relief changed most answers, so the reused search trees were exercised
