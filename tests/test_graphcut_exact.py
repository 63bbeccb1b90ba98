"""The colour GMMs' speed-ups (model/graphcut.py: the pixels' monomials built once per fit, in
numpy) leave every value bit for bit as the textbook-order code computed it, so no mask moves:
checked against that code, kept here verbatim, on the Lab pixels of a real VOC box window."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from model.graphcut import _monomials, fit_gmm, gmm_loglik

VOC = Path(__file__).resolve().parents[2] / "shared" / "voc2012" / "VOC2012"


def _old_component_loglik(xt: torch.Tensor, logpi: torch.Tensor, mu: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    k, d = mu.shape
    linv = torch.linalg.solve_triangular(chol, torch.eye(d, dtype=chol.dtype).expand(k, d, d), upper=False)
    logdet = 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(1)
    prec = linv.transpose(1, 2) @ linv
    iu = torch.triu_indices(d, d)
    twice = torch.where(iu[0] == iu[1], 1.0, 2.0).to(chol.dtype)
    quad = xt[:, iu[0]] * xt[:, iu[1]]
    pm = (prec @ mu[:, :, None])[:, :, 0]
    maha = quad @ (prec[:, iu[0], iu[1]] * twice).T - 2 * xt @ pm.T + (mu * pm).sum(1)[None]
    return logpi[None] - 0.5 * (maha + logdet[None] + d * np.log(2 * np.pi))


def _old_fit_gmm(x: np.ndarray, w: np.ndarray, k: int = 5, iterations: int = 4, reg: float = 1e-2) -> tuple[torch.Tensor, ...]:
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).double()
    wt = torch.from_numpy(np.asarray(w, dtype=np.float64)).clamp(min=0)
    n, d = xt.shape
    k = max(1, min(k, n // max(2 * d, 1)))
    mean = (wt[:, None] * xt).sum(0) / wt.sum().clamp(min=1e-12)
    xc = xt - mean
    cov = (xc * wt[:, None]).T @ xc / wt.sum().clamp(min=1e-12)
    lead = torch.linalg.eigh(cov)[1][:, -1]
    order = torch.argsort(xc @ lead)
    resp = torch.zeros(n, k, dtype=torch.float64)
    resp[order, (torch.arange(n) * k // n)] = 1.0
    eye = torch.eye(d, dtype=torch.float64)
    for it in range(iterations + 1):
        r = resp * wt[:, None]
        nk = r.sum(0).clamp(min=1e-9)
        mu = (r.T @ xt) / nk[:, None]
        diff = xt[:, None, :] - mu[None]
        covs = torch.einsum("nk,nki,nkj->kij", r, diff, diff) / nk[:, None, None] + reg * eye
        chol = torch.linalg.cholesky(covs)
        logpi = torch.log(nk / nk.sum())
        if it == iterations:
            break
        resp = torch.softmax(_old_component_loglik(xt, logpi, mu, chol), dim=1)
    return logpi, mu, chol


def _old_gmm_loglik(x: np.ndarray, model: tuple[torch.Tensor, ...]) -> np.ndarray:
    shape = x.shape[:-1]
    xt = torch.from_numpy(np.ascontiguousarray(x.reshape(-1, x.shape[-1]), dtype=np.float32)).double()
    return torch.logsumexp(_old_component_loglik(xt, *model), dim=1).numpy().reshape(shape).astype(np.float32)


@pytest.fixture(scope="module")
def lab_window() -> np.ndarray:
    """Lab of 2007_000032's first box (the aeroplane) grown by 10%, at 160 px: a featcut window."""
    bgr = cv2.imread(str(VOC / "JPEGImages" / "2007_000032.jpg"))
    assert bgr is not None
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    win = rgb[78:197, 93:388]
    small = cv2.resize(win, (160, round(160 * win.shape[0] / win.shape[1])), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def test_monomials_are_the_same_products(lab_window: np.ndarray) -> None:
    xt = torch.from_numpy(lab_window.reshape(-1, 3)).double()
    iu = torch.triu_indices(3, 3)
    quad = _monomials(xt)
    assert quad is not None and quad.is_contiguous()
    assert torch.equal(quad, xt[:, iu[0]] * xt[:, iu[1]])


@pytest.mark.parametrize("torch_threads", [1, 2])
def test_fit_and_likelihood_bit_identical_to_the_formula(lab_window: np.ndarray, torch_threads: int) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    try:
        x = lab_window.reshape(-1, 3)
        h, w = lab_window.shape[:2]
        # featcut's samples: a regular subsample; "foreground" the centre of the window, weighted as the engine does
        centre = np.zeros((h, w), bool)
        centre[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = True
        sub = (slice(None, None, 4), slice(None, None, 4))
        xs, ys = lab_window[sub].reshape(-1, 3), centre[sub].ravel()
        ws = np.ones(len(xs), np.float32)
        for side in (ys, ~ys):
            new, old = fit_gmm(xs[side], ws[side], 5), _old_fit_gmm(xs[side], ws[side], 5)
            for a, b in zip(new, old, strict=True):
                assert torch.equal(a, b)
            assert np.array_equal(gmm_loglik(lab_window, new), _old_gmm_loglik(lab_window, old))
        assert np.array_equal(gmm_loglik(x, new), _old_gmm_loglik(x, old))
    finally:
        torch.set_num_threads(before)
