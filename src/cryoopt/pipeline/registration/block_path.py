"""The block path of :func:`~cryoopt.pipeline.registration.register_lm_em`: hypotheses verified
block by block (:mod:`cryoopt.pipeline.registration_blocks`) where the whole-field search finds
none.

Part of :mod:`cryoopt.pipeline.registration`, whose docstring describes the method step by step.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from cryoopt.pipeline.preprocess import block_mean
from cryoopt.pipeline.registration.hypotheses import VERIFY_RADIUS_PX, _mat, triangle_hypotheses
from cryoopt.pipeline.registration.images import (
    MIN_FEATURE_SIGMA_PX,
    _features,
    _pad,
    _rotation_scale,
    _structure_image,
)
from cryoopt.pipeline.registration.result import RegistrationResult, target_registration_error
from cryoopt.pipeline.registration.tre import _field_rms, _tre_estimate


def _structure_fourier_mellin(lm_s: np.ndarray, em_s: np.ndarray, max_working_px: int = 512) -> np.ndarray:
    """A Fourier-Mellin hypothesis (LM -> EM, `3 x 3`; step 2 of the module docstring) between the
    structure images rather than the whole ones: an LM of label and an EM of every organelle share
    little of their whole images' texture, but the labelled structures are a subset of the EM's
    compact ones, and their gradient images correlate where the whole images' do not."""
    from skimage.registration import phase_cross_correlation
    from skimage.transform import rescale, warp

    f = max(1, math.ceil(max(em_s.shape) / max_working_px))
    em_w = block_mean(em_s, f)
    s_lm = max(em_w.shape) / max(lm_s.shape)
    lm_w = rescale(lm_s, s_lm, order=1, anti_aliasing=s_lm < 1) if abs(s_lm - 1) > 1e-6 else lm_s
    n = int(2 ** math.ceil(math.log2(max(*em_w.shape, *lm_w.shape))))
    fe_raw, fl_raw = _features(em_w, MIN_FEATURE_SIGMA_PX), _features(lm_w, MIN_FEATURE_SIGMA_PX)
    fe, fl = _pad(fe_raw, n), _pad(fl_raw, n)
    rot, sc = _rotation_scale(fe_raw, fl_raw)
    c = (n - 1) / 2.0
    best: tuple[float, np.ndarray] = (-math.inf, np.eye(3))
    for r in (rot, rot + math.pi):  # the 180 degree ambiguity: the stronger translation peak
        about = _mat(1, 0, c, c) @ _mat(sc, r) @ _mat(1, 0, -c, -c)
        moved = warp(fl, np.linalg.inv(about), output_shape=(n, n), order=1)
        shift, _, _ = phase_cross_correlation(fe, moved, upsample_factor=20, normalization=None)
        peak = float(np.sum(fe * ndi.shift(moved, shift, order=1)))
        if peak > best[0]:
            best = (peak, _mat(1, 0, shift[1], shift[0]) @ about)
    # LM px -> working px (skimage's rescale: output j at input (j + 0.5) / s - 0.5); working EM px -> EM px
    to_lm_w = _mat(1.0, 0.0, (s_lm - 1) / 2.0, (s_lm - 1) / 2.0) @ _mat(s_lm)
    from_em_w = _mat(1.0, 0.0, (f - 1) / 2.0, (f - 1) / 2.0) @ _mat(float(f))
    return from_em_w @ best[1] @ to_lm_w


def _register_by_blocks(lm: np.ndarray, em: np.ndarray, lp: np.ndarray, ep: np.ndarray, lm_polarity: str, em_polarity: str,
                        seeds: list[np.ndarray], n_hyp: int, scales: tuple[float, float], max_compression: float,
                        max_p_value: float, seed: int) -> tuple[RegistrationResult | None, str]:
    """Register from the images where the structure points could not verify a transform: the
    coarse hypotheses, and every triangle hypothesis with more EM neighbours (an LM showing a
    labelled subset of the EM's structures), ranked by how well the LM's structure pixels land
    on the EM's, then block-matched and verified against chance
    (:func:`~cryoopt.pipeline.registration_blocks.verify_by_blocks`); every transform ranked
    counts in that test. A section that may have compressed is refused: an affine through a
    dozen blocks is pixels off where a cut compressed unevenly, and the cut's model fitted to
    blocks registered no such section (it was tried: commit ``b5df3c2`` and ``docs/estimate.md``)."""
    from cryoopt.pipeline.registration_blocks import BLOCK_HYPOTHESES, structure_hypothesis_scores, verify_by_blocks

    if lm_polarity not in ("bright", "dark") or em_polarity not in ("bright", "dark"):
        return None, "no block matching without the polarity of the structures in both images"
    if max_compression > 0:
        return None, "no block matching on a section that may have compressed"
    lm_s = _structure_image(lm, lm_polarity)
    em_s = _structure_image(em, em_polarity)
    mats = [np.asarray(m, float)[None] for m in seeds]
    tri = triangle_hypotheses(lp, ep, scale_range=scales, neighbours=(5, 10), seed=seed)  # no compression (above)
    if len(tri):
        mats.append(tri)
    allm = np.concatenate(mats) if mats else np.zeros((0, 3, 3))
    if not len(allm):
        return None, "no hypothesis to match blocks under"
    scale = np.sqrt(np.abs(np.linalg.det(allm[:, :2, :2])))
    allm = allm[(scale >= scales[0] * 0.7) & (scale <= scales[1])]
    if not len(allm):
        return None, "no hypothesis of a plausible scale to match blocks under"
    score = structure_hypothesis_scores(lm_s, ndi.gaussian_filter(em_s, 3.0), allm, seed=seed)
    order = np.argsort(-score)
    chosen: list[np.ndarray] = []
    for k in order:
        m = allm[k]
        # distinct hypotheses: a near-duplicate adds nothing
        if any(np.abs(m[:2, 2] - c[:2, 2]).max() < 8 and np.abs(m[:2, :2] - c[:2, :2]).max() < 0.05 for c in chosen):
            continue
        chosen.append(m)
        if len(chosen) >= BLOCK_HYPOTHESES:
            break
    s_em = float(np.sqrt(abs(np.linalg.det(chosen[0][:2, :2]))))
    n_tried = n_hyp + len(allm)
    # the structure images' own Fourier-Mellin hypothesis, tried whatever its rank (the ranking
    # favours hypotheses that crowd the LM's label onto dense EM structure)
    fm_s = _structure_fourier_mellin(lm_s, em_s)
    s_fm = math.sqrt(abs(np.linalg.det(fm_s[:2, :2])))
    n_tried += 1
    if scales[0] * 0.7 <= s_fm <= scales[1] and not any(
            np.abs(fm_s[:2, 2] - c[:2, 2]).max() < 8 and np.abs(fm_s[:2, :2] - c[:2, :2]).max() < 0.05 for c in chosen):
        chosen.append(fm_s)
    match, why = verify_by_blocks(lm_s, em_s, chosen, n_tried=n_tried, radius=VERIFY_RADIUS_PX, max_p_value=max_p_value,
                                  min_blocks=6, lm_blur_em_px=max(1.0, s_em), affine=False, seed=seed)
    if match is None:
        return None, why
    m = match.matrix
    kind = "similarity"  # a section that did not compress (above)
    fre, tre = target_registration_error(match.src, match.dst, m, em.shape, n_params=4)
    # the matched blocks are the matches: the same estimate at any point as a point-verified registration's
    estimate = _tre_estimate(kind, match.src, match.dst, m, None)
    if estimate is not None:
        tre = _field_rms(estimate, em.shape)
    return RegistrationResult(m, math.degrees(math.atan2(m[1, 0], m[0, 0])) % 360, math.sqrt(abs(np.linalg.det(m[:2, :2]))),
                              len(match.src), fre, tre, kind, "blocks", None, estimate), why
