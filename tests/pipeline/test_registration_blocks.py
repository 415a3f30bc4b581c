"""Block matching on sections that may have compressed: the cut's model fitted to block matches."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import ellipse
from skimage.transform import AffineTransform, warp

from cryoopt.pipeline.registration_blocks import verify_cut_by_blocks

EM_N, LM_N = 320, 160


def _compressed_scene(seed: int):
    """Rods on an EM section then compressed along its rows towards its middle by
    ``c(x) = 0.3 + 0.06 (x - xc) / W + 0.02 sin(2 pi x / (0.8 W) + 1)`` (the mean, gradient and
    ripple of the simulator's sections; Al-Amoudi et al. 2005: compression varies across a
    section); the LM shows every other rod (a labelled subset), blurred, under a similarity of
    scale 2 to the uncompressed section. Returns the LM and EM structure images, the true map
    LM (x, y) -> imaged EM (x, y), and the affine a uniform 30 % compression gives."""
    rng = np.random.default_rng(seed)
    sim = np.array([[2.0 * math.cos(0.5), -2.0 * math.sin(0.5), 100.0], [2.0 * math.sin(0.5), 2.0 * math.cos(0.5), -40.0],
                    [0, 0, 1.0]])
    und, labelled = np.zeros((EM_N, EM_N)), np.zeros((EM_N, EM_N))
    for k in range(110):
        c, theta = rng.uniform(10, EM_N - 10, 2), rng.uniform(0, math.pi)
        rr, cc = ellipse(c[1], c[0], 3.0, 10.0, shape=und.shape, rotation=theta)
        und[rr, cc] = 1.0
        if k % 2 == 0:
            labelled[rr, cc] = 1.0
    mid = (EM_N - 1) / 2.0

    def comp(x: np.ndarray) -> np.ndarray:
        return 0.3 + 0.06 * (x - mid) / EM_N + 0.02 * np.sin(2 * np.pi * x / (0.8 * EM_N) + 1.0)

    rows, cols = np.mgrid[0:EM_N, 0:EM_N].astype(float)
    em = ndi.map_coordinates(und, [mid + (rows - mid) / (1 - comp(cols)), cols], order=1, cval=0.0)  # imaged <- undeformed
    lm = warp(ndi.gaussian_filter(labelled, 2.0), AffineTransform(matrix=sim), output_shape=(LM_N, LM_N), order=1)
    em = em + 0.05 * rng.standard_normal(em.shape)
    lm = lm + 0.02 * rng.standard_normal(lm.shape)

    def truth(lm_xy: np.ndarray) -> np.ndarray:
        q = lm_xy @ sim[:2, :2].T + sim[:2, 2]
        return np.column_stack([q[:, 0], mid + (q[:, 1] - mid) * (1 - comp(q[:, 0]))])

    uniform = np.array([[1.0, 0, 0], [0, 0.7, 0.3 * mid], [0, 0, 1.0]]) @ sim
    return lm, em, truth, uniform


def _grid_error(match, truth) -> np.ndarray:
    """Error (EM px) of a match's map against the truth at LM grid points imaged well inside the EM field."""
    g = np.stack(np.meshgrid(np.arange(8, LM_N - 8, 12.0), np.arange(8, LM_N - 8, 12.0)), -1).reshape(-1, 2)
    t = truth(g)
    inside = np.all((t > 30) & (t < EM_N - 30), axis=1)
    pred = match.model(g) if match.model is not None else g @ match.affine[:2, :2].T + match.affine[:2, 2]
    return np.hypot(*(pred - t).T)[inside]


def test_cut_model_from_blocks_follows_an_uneven_compression_an_affine_cannot():
    """From a hypothesis a few pixels off (the uniform compression, shifted 3.6 px), the blocks
    verify the registration against chance, and the cut's model fitted to them maps the LM to
    the compressed EM within a pixel RMS; the affine alone on the same blocks is over a pixel off
    (the compression's gradient and ripple leave it pixels off at the field's edges)."""
    lm, em, truth, uniform = _compressed_scene(3)
    start = uniform.copy()
    start[:2, 2] += (3.0, -2.0)
    cut, why = verify_cut_by_blocks(lm, em, [start], n_tried=100, radius=2.5, max_p_value=1e-3)
    assert cut is not None, why
    assert cut.model is not None and cut.p_value < 1e-3 and len(cut.src) >= 10
    err = _grid_error(cut, truth)
    assert float(np.sqrt(np.mean(err**2))) < 1.0
    affine, why = verify_cut_by_blocks(lm, em, [start], n_tried=100, radius=2.5, max_p_value=1e-3, cut_model=False)
    assert affine is not None and affine.model is None, why
    assert float(np.sqrt(np.mean(_grid_error(affine, truth) ** 2))) > 1.2
    assert float(np.max(_grid_error(affine, truth))) > 2.0 * float(np.max(err))


def test_cut_model_from_blocks_refuses_a_wrong_hypothesis_with_the_reason():
    """A hypothesis a quarter turn off leaves the blocks' peaks scattered over their windows:
    no map is verified, and the reason says how many blocks agreed."""
    lm, em, _, uniform = _compressed_scene(3)
    wrong = uniform @ np.array([[0, -1, float(LM_N)], [1, 0, 0], [0, 0, 1]])
    match, why = verify_cut_by_blocks(lm, em, [wrong], n_tried=100, radius=2.5, max_p_value=1e-3)
    assert match is None
    assert "label blocks agree" in why and "need 10" in why


def test_registration_from_cut_blocks_carries_the_displacement_and_a_tre_estimate():
    """The registration made from the blocks (:func:`_register_by_cut_blocks`) applies the cut's
    model through its displacement field (``apply``, ``em_to_lm``) to within a pixel of the truth
    at the grid points, and its TRE estimate is finite where the blocks are."""
    from cryoopt.pipeline.registration.block_path import _register_by_cut_blocks

    lm, em, truth, uniform = _compressed_scene(3)
    start = uniform.copy()
    start[:2, 2] += (3.0, -2.0)
    r, why = _register_by_cut_blocks(lm, em, [start], 100, 1e-3, 2.0, True, 0)
    assert r is not None, why
    assert r.method == "blocks" and r.model.startswith("affine+compression") and r.displacement is not None
    g = np.stack(np.meshgrid(np.arange(8, LM_N - 8, 12.0), np.arange(8, LM_N - 8, 12.0)), -1).reshape(-1, 2)
    t = truth(g)
    inside = np.all((t > 30) & (t < EM_N - 30), axis=1)
    err = np.hypot(*(r.apply(g[inside]) - t[inside]).T)
    assert float(np.sqrt(np.mean(err**2))) < 1.0
    back = np.hypot(*(r.em_to_lm(t[inside]) - g[inside]).T) * 2.0  # LM px -> EM px (scale 2)
    assert float(np.sqrt(np.mean(back**2))) < 1.5
    est = r.tre_at(t[inside])
    assert np.all(np.isfinite(est)) and math.isfinite(r.tre_px)


def test_structure_fourier_mellin_recovers_a_similarity_from_a_labelled_subset():
    """An LM showing every other rod of the EM (blurred, scale 2, rotated 0.5 rad, shifted): the
    Fourier-Mellin hypothesis between the structure images is within a few pixels over the LM
    field, close enough for the blocks' +-24 px search to take it from there."""
    from cryoopt.pipeline.registration.block_path import _structure_fourier_mellin

    rng = np.random.default_rng(5)
    truth = np.array([[2.0 * math.cos(0.5), -2.0 * math.sin(0.5), 0.0], [2.0 * math.sin(0.5), 2.0 * math.cos(0.5), 0.0],
                      [0, 0, 1.0]])
    truth[:2, 2] = np.array([160.0, 150.0]) - truth[:2, :2] @ np.array([63.5, 63.5])  # LM centre near EM centre
    em_s, labelled = np.zeros((320, 320)), np.zeros((320, 320))
    for k in range(120):
        c, theta = rng.uniform(10, 310, 2), rng.uniform(0, math.pi)
        rr, cc = ellipse(c[1], c[0], 3.0, 10.0, shape=em_s.shape, rotation=theta)
        em_s[rr, cc] = 1.0
        if k % 2 == 0:
            labelled[rr, cc] = 1.0
    lm_s = warp(ndi.gaussian_filter(labelled, 2.0), AffineTransform(matrix=truth), output_shape=(128, 128), order=1)
    em_s = em_s + 0.05 * rng.standard_normal(em_s.shape)
    lm_s = lm_s + 0.02 * rng.standard_normal(lm_s.shape)
    m = _structure_fourier_mellin(lm_s, em_s)
    g = np.stack(np.meshgrid(np.arange(0, 128, 16.0), np.arange(0, 128, 16.0)), -1).reshape(-1, 2)
    err = g @ (m[:2, :2] - truth[:2, :2]).T + (m[:2, 2] - truth[:2, 2])
    assert float(np.sqrt(np.mean(np.sum(err**2, axis=1)))) < 5.0
