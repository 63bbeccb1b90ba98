"""model/shapeprior.py: the per-class shape prior in box coordinates (synthetic masks)."""

from __future__ import annotations

import numpy as np

from model import shapeprior as sp


def disc(r: float) -> np.ndarray:
    yy, xx = (np.mgrid[0 : sp.SIZE, 0 : sp.SIZE] + 0.5) / sp.SIZE - 0.5
    return (xx**2 + yy**2 < r**2).astype(np.float32)


def test_box_shape_resamples_the_mask_in_its_box() -> None:
    win = np.zeros((60, 80), bool)
    win[10:50, 20:40] = True  # the left half of a box x 20..60, y 10..50
    got = sp.box_shape(win, (20, 60, 10, 50))
    assert got.shape == (sp.SIZE, sp.SIZE)
    assert np.allclose(got[:, : sp.SIZE // 2], 1.0) and np.allclose(got[:, sp.SIZE // 2 :], 0.0)


def test_a_class_with_few_corrections_is_shrunk_towards_the_project() -> None:
    shapes = [disc(0.45)] * 30 + [disc(0.15)]
    maps = sp.class_maps(shapes, ["a"] * 30 + ["b"])
    one = maps["b"]  # one object of b: mostly the project's shape
    assert np.abs(one - maps[""]).mean() < np.abs(one - disc(0.15)).mean()
    many = sp.class_maps([disc(0.15)] * 200 + [disc(0.45)], ["b"] * 200 + ["a"])["b"]
    assert np.abs(many - disc(0.15)).mean() < 0.05  # many objects of b: b's own shape


def test_leave_one_out_maps_do_not_see_their_own_object() -> None:
    shapes, classes = [disc(0.3), disc(0.3), disc(0.1)], ["a", "a", "a"]
    loo = sp.loo_maps(shapes, classes)
    changed = sp.loo_maps([disc(0.3), disc(0.3), disc(0.45)], classes)
    assert np.allclose(loo[2], changed[2])  # the third object's map ignores the third object
    assert not np.allclose(loo[0], changed[0])


def test_weight_follows_how_much_the_prior_tells() -> None:
    rng = np.random.default_rng(0)
    p = [rng.normal(0, 2, 400) for _ in range(10)]
    told = [rng.random(400) < 1 / (1 + np.exp(-q)) for q in p]  # labels drawn from the prior
    noise = [rng.random(400) < 0.5 for _ in p]  # labels that ignore it
    zero = [np.zeros(400) for _ in p]
    assert sp.fit_weight(zero, p, told) > 0.6
    assert sp.fit_weight(zero, p, noise) < 0.1


def test_sample_map_reads_the_cells_at_box_coordinates() -> None:
    m = np.zeros((sp.SIZE, sp.SIZE), np.float32)
    m[:, : sp.SIZE // 2] = 1.0
    u = np.array([0.1, 0.9, -0.5, 1.5])
    got = sp.sample_map(m, u, np.full(4, 0.5))
    assert np.allclose(got, [1.0, 0.0, 1.0, 0.0])  # outside the box: the nearest cell


def test_box_shape_leaves_void_pixels_out() -> None:
    win = np.zeros((40, 40), bool)
    win[:, :20] = True
    valid = np.ones((40, 40), bool)
    valid[:, 20:30] = False  # void: neither object nor background
    got = sp.box_shape(win, (0, 40, 0, 40), valid)
    assert np.allclose(got[:, : sp.SIZE // 2], 1.0) and np.allclose(got[:, -4:], 0.0)
    # cells wholly void take the mean over the valid pixels (2/3 object), not 0 (background)
    assert np.allclose(got[:, 13:17], 2 / 3, atol=1e-3)
