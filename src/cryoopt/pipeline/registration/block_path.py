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
from cryoopt.pipeline.registration.hypotheses import VERIFY_RADIUS_PX, _compression_frames, _mat, triangle_hypotheses
from cryoopt.pipeline.registration.images import (
    MIN_FEATURE_SIGMA_PX,
    _features,
    _pad,
    _rotation_scale,
    _structure_image,
)
from cryoopt.pipeline.registration.result import RegistrationResult, target_registration_error
from cryoopt.pipeline.registration.tre import _field_rms, _tre_estimate


#: most triangle hypotheses per compression frame ranked for block matching on a section that
#: may have compressed (61 frames at ``max_compression=0.5``: the ranking's cost bound)
BLOCK_FRAME_HYPOTHESES = 400


def _frame_triangle_hypotheses(lp: np.ndarray, ep: np.ndarray, scales: tuple[float, float], max_compression: float,
                               seed: int) -> list[np.ndarray]:
    """Triangle hypotheses (more EM neighbours: an LM showing a labelled subset) in each frame
    of the compression search, mapped back to the compressed EM; one frame without compression."""
    frames = _compression_frames(max_compression)
    cap = 4000 if len(frames) == 1 else BLOCK_FRAME_HYPOTHESES
    out = []
    for frame in frames:
        ep_frame = ep @ frame[:2, :2].T + frame[:2, 2] if len(ep) else ep
        tri = triangle_hypotheses(lp, ep_frame, scale_range=scales, neighbours=(5, 10), max_hypotheses=cap, seed=seed)
        if len(tri):
            out.append(np.einsum("ij,hjk->hik", np.linalg.inv(frame), tri))
    return out


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


def _register_by_cut_blocks(lm_s: np.ndarray, em_s: np.ndarray, chosen: list[np.ndarray], n_tried: int, max_p_value: float,
                            lm_blur_em_px: float, elastic: bool, seed: int) -> tuple[RegistrationResult | None, str]:
    """A section that may have compressed, from block matches under the cut's model
    (:func:`~cryoopt.pipeline.registration_blocks.verify_cut_by_blocks`); the matched blocks are
    the matches of the TRE estimate, as on the point path."""
    from cryoopt.pipeline.registration_blocks import verify_cut_by_blocks

    match, why = verify_cut_by_blocks(lm_s, em_s, chosen, n_tried=n_tried, radius=VERIFY_RADIUS_PX, max_p_value=max_p_value,
                                      lm_blur_em_px=lm_blur_em_px, cut_model=elastic, seed=seed)
    if match is None:
        return None, why
    m, cut = match.affine, match.model
    kind = "affine" if cut is None else cut.name  # type: ignore[attr-defined]
    pred = match.src @ m[:2, :2].T + m[:2, 2] if cut is None else cut(match.src)  # type: ignore[operator]
    fre = float(np.sqrt(np.mean(np.sum((pred - match.dst) ** 2, axis=1))))
    estimate = _tre_estimate(kind, match.src, match.dst, m, cut)
    if estimate is None:
        return None, why + "; too few agreeing blocks to estimate the registration's error"
    tre = _field_rms(estimate, em_s.shape)
    gy, gx = np.meshgrid(np.linspace(0, em_s.shape[0] - 1, 16), np.linspace(0, em_s.shape[1] - 1, 16), indexing="ij")
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    inv = np.linalg.inv(m)
    lm_xy = (grid if cut is None else grid + cut.displacement(grid)) @ inv[:2, :2].T + inv[:2, 2]  # type: ignore[attr-defined]
    seen = np.all((lm_xy >= 0) & (lm_xy <= np.array(lm_s.shape[::-1]) - 1), axis=1)
    tre_seen = float(np.sqrt(np.mean(estimate(grid[seen]) ** 2))) if seen.any() else math.inf
    if tre_seen > VERIFY_RADIUS_PX:
        # the blocks agree within the verification radius where they are; the map fitted to them
        # is not known to be within it where both images show the section (its cross-validated
        # error says so): half the label blocks of a compressed section peak on structure the LM
        # does not show, and a map through the rest may be pixels off away from them
        return None, (why + f"; the map through them is not placed within {VERIFY_RADIUS_PX:g} EM px where both fields "
                      f"overlap (its TRE estimate there, cross-validated on the blocks: {tre_seen:.1f} px)")
    disp = None
    if cut is not None:
        h, w = em_s.shape
        rows, cols = np.mgrid[0:h, 0:w]
        pix = np.column_stack([cols.ravel(), rows.ravel()]).astype(float)
        disp = cut.displacement(pix).T.reshape(2, h, w)  # type: ignore[attr-defined]
    return RegistrationResult(m, math.degrees(math.atan2(m[1, 0], m[0, 0])) % 360, math.sqrt(abs(np.linalg.det(m[:2, :2]))),
                              len(match.src), fre, tre, "affine" if cut is None else f"affine+{kind}", "blocks", disp,
                              estimate), why


def _register_by_blocks(lm: np.ndarray, em: np.ndarray, lp: np.ndarray, ep: np.ndarray, lm_polarity: str, em_polarity: str,
                        seeds: list[np.ndarray], n_hyp: int, scales: tuple[float, float], max_compression: float,
                        max_p_value: float, seed: int, elastic: bool = False) -> tuple[RegistrationResult | None, str]:
    """Register from the images where the structure points could not verify a transform: the
    coarse hypotheses, and every triangle hypothesis with more EM neighbours (an LM showing a
    labelled subset of the EM's structures), ranked by how well the LM's structure pixels land
    on the EM's, then block-matched and verified against chance
    (:func:`~cryoopt.pipeline.registration_blocks.verify_by_blocks`); every transform ranked
    counts in that test. On a section that may have compressed (``max_compression > 0``) the
    triangles are matched after undoing each compression of the point path's search too, and
    the blocks verify the cut's model (``elastic``; the affine alone otherwise) instead
    (:func:`~cryoopt.pipeline.registration_blocks.verify_cut_by_blocks`)."""
    from cryoopt.pipeline.registration_blocks import BLOCK_HYPOTHESES, structure_hypothesis_scores, verify_by_blocks

    if lm_polarity not in ("bright", "dark") or em_polarity not in ("bright", "dark"):
        return None, "no block matching without the polarity of the structures in both images"
    lm_s = _structure_image(lm, lm_polarity)
    em_s = _structure_image(em, em_polarity)
    mats = [np.asarray(m, float)[None] for m in seeds]
    mats += _frame_triangle_hypotheses(lp, ep, scales, max_compression, seed)
    allm = np.concatenate(mats) if mats else np.zeros((0, 3, 3))
    if not len(allm):
        return None, "no hypothesis to match blocks under"
    scale = np.sqrt(np.abs(np.linalg.det(allm[:, :2, :2])))
    allm = allm[(scale >= scales[0] * 0.7) & (scale <= scales[1])]
    if not len(allm):
        return None, "no hypothesis of a plausible scale to match blocks under"
    em_smooth = ndi.gaussian_filter(em_s, 3.0)
    if max_compression > 0 and len(allm) > BLOCK_FRAME_HYPOTHESES:
        # a compression search's many hypotheses: a coarse ranking on a fifth of the pixels first
        coarse = structure_hypothesis_scores(lm_s, em_smooth, allm, n_samples=600, seed=seed)
        allm = allm[np.argsort(-coarse)[:BLOCK_FRAME_HYPOTHESES]]
    score = structure_hypothesis_scores(lm_s, em_smooth, allm, seed=seed)
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
    if max_compression <= 0:
        # the structure images' own Fourier-Mellin hypothesis, tried whatever its rank (the ranking
        # favours hypotheses that crowd the LM's label onto dense EM structure)
        fm_s = _structure_fourier_mellin(lm_s, em_s)
        s_fm = math.sqrt(abs(np.linalg.det(fm_s[:2, :2])))
        n_tried += 1
        if scales[0] * 0.7 <= s_fm <= scales[1] and not any(
                np.abs(fm_s[:2, 2] - c[:2, 2]).max() < 8 and np.abs(fm_s[:2, :2] - c[:2, :2]).max() < 0.05 for c in chosen):
            chosen.append(fm_s)
    if max_compression > 0:
        return _register_by_cut_blocks(lm_s, em_s, chosen, n_tried, max_p_value, max(1.0, s_em), elastic, seed)
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
