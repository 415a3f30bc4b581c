"""LM -> EM registration from the images alone
(:func:`~cryoopt.pipeline.registration.register_lm_em`; the method is described in
:mod:`cryoopt.pipeline.registration`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from cryoopt.exceptions import EvaluationError, RegistrationError
from cryoopt.pipeline._validate import check_image, check_pixel_size
from cryoopt.pipeline.preprocess import block_mean
from cryoopt.pipeline.registration.block_path import _register_by_blocks
from cryoopt.pipeline.registration.cut_model import _CompressionFit, _cut_model_matches
from cryoopt.pipeline.registration.hypotheses import (
    VERIFY_RADIUS_PX,
    _chance_p_value,
    _compression_frames,
    _fit,
    _loo_point_errors,
    _mat,
    _match,
    match_point_patterns,
)
from cryoopt.pipeline.registration.images import (
    MIN_FEATURE_SIGMA_PX,
    _features,
    _pad,
    _peak_z,
    _rotation_scale,
    _structure_image,
)
from cryoopt.pipeline.registration.nonrigid import _elastic, _nonrigid_refinement
from cryoopt.pipeline.registration.points import _bead_points, _points_and_features
from cryoopt.pipeline.registration.result import RegistrationResult, target_registration_error
from cryoopt.pipeline.registration.tre import _field_rms, _tre_estimate


#: a similarity replaces a requested affine when its leave-one-out RMS error at the matched
#: structures is below this fraction of the affine's (clearly better, not a tie)
SIMILARITY_PREFERENCE = 0.8


def register_lm_em(
    lm_image: np.ndarray,
    em_image: np.ndarray,
    *,
    lm_pixel_size_nm: float | None = None,
    em_pixel_size_nm: float | None = None,
    lm_points: np.ndarray | None = None,
    em_points: np.ndarray | None = None,
    lm_polarity: str = "auto",
    em_polarity: str = "auto",
    model: str = "affine",
    elastic: bool = False,
    max_working_px: int = 512,
    match_radius_px: float | None = None,
    min_matches: int = 4,
    max_p_value: float = 1e-3,
    min_peak_z: float = 8.0,
    max_compression: float = 0.0,
    scale_range: tuple[float, float] = (0.05, 50.0),
    seed: int = 0,
) -> RegistrationResult:
    """Register a light image to an electron image of the same area.

    Args:
        lm_image, em_image: 2-D images, any real dtype, any (different) sizes.
        lm_pixel_size_nm, em_pixel_size_nm: pixel sizes; when both are given the
            scale is fixed to their ratio (+-20 %, for compression), otherwise it is
            estimated within ``scale_range`` (EM px per LM px).
        lm_points, em_points: `N x 2` structure centroids (x, y) in full-resolution
            pixels. Pass the structures both images show (e.g. segmented mitochondria
            and the LM label spots); by default they are detected.
        lm_polarity, em_polarity: how structures look when detected: ``"auto"`` (the
            minority Otsu phase, :func:`detect_structure_points`), ``"bright"`` or
            ``"dark"`` compact objects (:func:`detect_compact_objects`: fluorescent label
            is bright, stained organelles and beads are dark).
        model: ``"affine"`` (default), ``"similarity"`` or ``"coarse"`` (no refinement).
            With fewer than 6 matches an affine falls back to a similarity.
        elastic: add a smooth displacement field for sections that deformed between
            the images: a non-rigid model of the matched structures, then TV-L1 optical
            flow, each kept only where it measurably helps (see the module docstring).
        max_working_px: largest side of the working grid of the coarse steps.
        match_radius_px: largest EM-pixel distance for a centroid match (default: a
            quarter of the median nearest-neighbour spacing of the EM points, at least
            3 working pixels).
        min_matches: fewest matched structures that verify a registration.
        max_p_value: largest chance probability of that many matches (binomial, times
            the number of transforms tried) that verifies a registration.
        min_peak_z: without structure points, how far (in sigmas of shifted copies)
            the Fourier-Mellin feature correlation must stand out.
        max_compression: the EM section may be compressed along an unknown direction by
            up to this fraction relative to the LM (a block-face or pre-section LM image;
            cryo-sections compress 20-60 % along the cut): point patterns are also matched
            after undoing compressions of 0.1, 0.2, ... along directions 15 degrees apart.
            Such a section is registered only from 10 or more structures matched within
            localisation precision (what a compression varying across the cut needs).
        scale_range: scales considered when the pixel sizes are not both known.
        seed: RANSAC and sampling seed.

    Returns:
        :class:`RegistrationResult`.

    Raises:
        EvaluationError: bad images, pixel sizes or options.
        RegistrationError: no transform could be verified (too few structures in common),
            or the refined one does not put its matched structures onto each other within
            their localisation precision beyond chance: pass pixel sizes, more or better
            structure points (fiducial beads), or a larger field.
    """
    from skimage.registration import phase_cross_correlation
    from skimage.transform import AffineTransform, SimilarityTransform, rescale, warp

    lm = check_image(lm_image, name="lm_image", min_size=16)
    em = check_image(em_image, name="em_image", min_size=16)
    if model not in ("affine", "similarity", "coarse"):
        raise EvaluationError(f"model must be 'affine', 'similarity' or 'coarse', got {model!r}")
    lm_px = None if lm_pixel_size_nm is None else check_pixel_size(lm_pixel_size_nm, name="lm_pixel_size_nm")
    em_px = None if em_pixel_size_nm is None else check_pixel_size(em_pixel_size_nm, name="em_pixel_size_nm")
    if not (0 < scale_range[0] < scale_range[1]):
        raise EvaluationError(f"scale_range must be (low, high) with 0 < low < high, got {scale_range!r}")
    if np.ptp(lm) == 0 or np.ptp(em) == 0:
        raise EvaluationError("an image is constant; there is nothing to register")
    known_scale = None if lm_px is None or em_px is None else lm_px / em_px  # EM px per LM px
    rng = np.random.default_rng(seed)

    # 1. working grid: EM reduced by f_em; LM brought to the same pixel size (when known)
    f_em = max(1, math.ceil(max(em.shape) / max_working_px))
    # the image correlation's grid: with the scale known, an LM field much wider than the EM
    # field would be brought up to the EM's working pixel (a 128 px LM field at 10 EM px per LM
    # px: 1280 px, Fourier transforms of 2048^2); the EM is block-averaged further instead until
    # the LM fits max_working_px. The structure points refine the result on the full grids.
    f_corr = f_em if known_scale is None else max(f_em, math.ceil(max(lm.shape) * known_scale / max_working_px))
    em_w = block_mean(em, f_corr)
    s_lm = (known_scale / f_corr) if known_scale is not None else max(em_w.shape) / max(lm.shape)
    f_lm = max(1, int(1.0 / s_lm)) if s_lm < 1 else 1
    lm_b = block_mean(lm, f_lm)
    s_rest = s_lm * f_lm
    lm_w = rescale(lm_b, s_rest, order=1, anti_aliasing=s_rest < 1) if abs(s_rest - 1) > 1e-6 else lm_b
    n = int(2 ** math.ceil(math.log2(max(*em_w.shape, *lm_w.shape))))
    fe_raw, fl_raw = _features(em_w, MIN_FEATURE_SIGMA_PX), _features(lm_w, MIN_FEATURE_SIGMA_PX)
    fe, fl = _pad(fe_raw, n), _pad(fl_raw, n)
    # LM full px -> LM working px. A block mean puts working pixel i at full pixel
    # f*i + (f-1)/2; skimage's rescale by s puts output pixel j at input (j+0.5)/s - 0.5.
    to_lm_w = _mat(s_rest / f_lm) @ _mat(1.0, 0.0, -(f_lm - 1) / 2.0, -(f_lm - 1) / 2.0)
    if abs(s_rest - 1) > 1e-6:
        to_lm_w = _mat(1.0, 0.0, (s_rest - 1) / 2.0, (s_rest - 1) / 2.0) @ to_lm_w
    # EM working px -> EM full px: block centre
    from_em_w = _mat(1.0, 0.0, (f_corr - 1) / 2.0, (f_corr - 1) / 2.0) @ _mat(float(f_corr))

    # 2a. Fourier-Mellin: rotation (and scale) about the working-grid centre, then shift
    rot, sc = _rotation_scale(fe_raw, fl_raw)
    if known_scale is not None:
        sc = 1.0
    c = (n - 1) / 2.0
    best: tuple[float, float, np.ndarray, np.ndarray, np.ndarray] = (-math.inf, rot, np.eye(3), np.zeros(2), fl)
    for r in (rot, rot + math.pi):
        about = _mat(1, 0, c, c) @ _mat(sc, r) @ _mat(1, 0, -c, -c)
        moved = warp(fl, np.linalg.inv(about), output_shape=(n, n), order=1)
        shift, _, _ = phase_cross_correlation(fe, moved, upsample_factor=20, normalization=None)
        shifted = ndi.shift(moved, shift, order=1)
        peak = float(np.sum(fe * shifted))
        if peak > best[0]:
            best = (peak, r, about, shift, shifted)
    _, rot, about, shift, aligned = best
    fm_matrix = from_em_w @ _mat(1, 0, shift[1], shift[0]) @ about @ to_lm_w

    # 2b. structure points and the point-pattern hypothesis; where they cannot verify one, the
    # same search among the objects alike in size and contrast in each image (fiducial beads:
    # the largest group of identical objects both images show), every transform tried in
    # either search counted in the chance test
    lp_all, lm_feat = _points_and_features(lm, lm_points, lm_polarity)
    ep_all, em_feat = _points_and_features(em, em_points, em_polarity)
    # the beads after the structures, not before, and found only then (a second top-hat over both
    # images): searched first, the beads alone registered more compressed sections below a pixel
    # but accepted two tissue-block sections 7 px off (on development seeds), where the group of
    # small beads at the detection threshold is part noise and too few beads verify the cut's model
    point_sets = [(lp_all, ep_all)]
    scales = (known_scale * 0.8, known_scale * 1.25) if known_scale is not None else scale_range
    tight = max(3.0 * f_em, 0.015 * max(em.shape))
    radius_given = match_radius_px
    hint = "" if known_scale is not None else "; pass lm_pixel_size_nm and em_pixel_size_nm to fix the scale"
    n_hyp = 1
    full_scored: list = []
    for lp, ep in point_sets:  # the bead set is appended below when the structures fail
        tree = cKDTree(ep) if len(ep) else None
        match_radius_px = radius_given
        if match_radius_px is None:
            nn = tree.query(ep, k=2)[0][:, 1] if len(ep) >= 2 else np.array([math.inf])
            match_radius_px = max(3.0 * f_em, min(0.25 * float(np.median(nn)), 0.05 * max(em.shape)))

        def refine(name: str, m: np.ndarray, frame: np.ndarray) -> tuple[int, bool, str, np.ndarray, list[tuple[int, int]]]:
            """A hypothesis refined on its own matches (a similarity in its frame, an affine once
            there are enough), its matches then counted at localisation precision."""
            s_m = math.sqrt(abs(np.linalg.det(m[:2, :2])))
            if tree is None or not scales[0] * 0.7 <= s_m <= scales[1]:
                return (0, name == "points", name, m, [])
            pairs = _match(lp, ep, m, tree, match_radius_px)
            ep_frame = ep @ frame[:2, :2].T + frame[:2, 2]
            for radius in (match_radius_px, tight, tight):
                if len(pairs) < 3:
                    break
                if len(pairs) >= 8:
                    m = _fit(lp, ep, pairs, "affine")
                else:
                    m = np.linalg.inv(frame) @ _fit(lp, ep_frame, pairs, "similarity")
                pairs = _match(lp, ep, m, tree, radius)
            return (len(pairs), name == "points", name, m, pairs)

        scored = [refine("fourier-mellin", fm_matrix, np.eye(3))]
        fm_ok = (scored[0][0] >= max(min_matches, 8) and len(lp) >= 3 and len(ep) >= 3
                 and _chance_p_value(lp, ep, scored[0][3], em.shape, tight, scored[0][0] - 3, n_hyp, fitted=3) < max_p_value)
        if len(lp) >= 3 and len(ep) >= 3 and (not fm_ok or len(lp) >= 20):
            # the image correlation did not verify, or the points are dense enough that an affine
            # refined from a wrong correlation peak can gather matches by chance: search the
            # point patterns, and let the hypotheses compete
            for frame in _compression_frames(max_compression):
                # EM points as they were before the section compressed: a similarity there
                ep_frame = ep @ frame[:2, :2].T + frame[:2, 2]
                pm, n_pm, n_tried = match_point_patterns(lp, ep_frame, radius=match_radius_px, scale_range=scales, seed=seed)
                n_hyp += n_tried
                if n_pm:
                    scored.append(refine("points" if lp is lp_all else "beads", np.linalg.inv(frame) @ pm, frame))
        scored.sort(key=lambda t: (t[0], t[1]), reverse=True)
        if lp is lp_all:
            full_scored = scored
        n_best, _, method, matrix, pairs = scored[0]
        wide_radius = match_radius_px
        match_radius_px = tight

        # 3. verification
        cut_pairs: list[tuple[int, int]] = []
        cut_absorbed = 0  # matches the cut's model's parameters absorb: the affine's 6 absorb 3, each 1-D coefficient 1
        if len(lp) < 3 or len(ep) < 3:
            break  # too few points to verify anything (the structures: beads are MIN_ALIKE_OBJECTS or more): the image correlation's test below
        # matched structures must beat chance: the best of n_hyp transforms, each mapping the
        # LM points that land in the EM field onto EM points scattered over it
        # the transform was fitted to the matches: the points its parameters absorb are no evidence
        free = 3
        p_value = _chance_p_value(lp, ep, matrix, em.shape, match_radius_px, n_best - free, n_hyp, fitted=free)
        # a right transform puts its matches within the centroids' localisation precision, far
        # inside the match radius: counted there too (a radius fixed in advance, no fitted
        # one), chance is far smaller; the better of the two tests, Bonferroni-corrected
        fine_radius = max(VERIFY_RADIUS_PX, float(f_em))
        tests = [p_value]
        if tree is not None and fine_radius < match_radius_px:
            n_fine = len(_match(lp, ep, matrix, tree, fine_radius))
            tests.append(_chance_p_value(lp, ep, matrix, em.shape, fine_radius, n_fine - free, n_hyp, fitted=free))
        if max_compression > 0 and elastic and tree is not None:
            # a section that compressed unevenly across the cut leaves any affine pixels off over
            # much of the field, so a right transform matches few structures at localisation
            # precision under it: counted under the cut's model grown from the matches too, every
            # parameter it fitted (affine and compression) taken as a match it absorbed
            cut_pairs, cut_par = _cut_model_matches(lp, ep, pairs, tree, (match_radius_px, match_radius_px, fine_radius, fine_radius))
            if cut_pairs:
                cut_absorbed = cut_par - 3
                tests.append(_chance_p_value(lp, ep, matrix, em.shape, fine_radius, len(cut_pairs) - cut_absorbed, n_hyp,
                                             fitted=cut_absorbed))
        p_value = len(tests) * min(tests)
        if n_best >= min_matches and p_value <= max_p_value:
            break
        if lp is lp_all:
            bead_l, bead_e = _bead_points(lm, lm_polarity, lm_feat), _bead_points(em, em_polarity, em_feat)
            if bead_l is not None and bead_e is not None:
                point_sets.append((bead_l, bead_e))
                continue
        # the points do not prove a transform (an LM that shows a labelled subset of the EM's
        # structures shares few points with it): the images may, where the label is
        by_blocks, why = _register_by_blocks(lm, em, lp_all, ep_all, lm_polarity, em_polarity,
                                             [fm_matrix] + [t[3] for t in full_scored], n_hyp, scales, max_compression,
                                             max_p_value, seed)
        if by_blocks is not None:
            return by_blocks
        raise RegistrationError(
            f"could not register LM to EM: LM {len(lp_all)} and EM {len(ep_all)} structure points, the best of {n_hyp} "
            f"transforms matched {n_best} (need {min_matches}, chance p = {min(p_value, 1.0):.2g} > {max_p_value:g}); "
            f"{why}{hint}, or pass lm_points/em_points of structures both images show"
        )
    if len(lp) < 3 or len(ep) < 3:
        z = _peak_z(fe, aligned, rng) if model == "coarse" else math.nan
        if not z >= min_peak_z:
            raise RegistrationError(
                f"could not register LM to EM: too few structure points to verify a transform (LM {len(lp)}, EM "
                f"{len(ep)}; need 3 in each){hint}, or pass lm_points/em_points"
                + (f"; the Fourier-Mellin feature correlation stands {z:.1f} sigma above shifted copies "
                   f"(need {min_peak_z:g})" if model == "coarse" else "; model='coarse' accepts an image-correlation-only result")
            )
    if model == "coarse" or len(pairs) < 3:
        m = matrix if len(pairs) >= min_matches else fm_matrix
        s_m = math.sqrt(abs(np.linalg.det(m[:2, :2])))
        return RegistrationResult(m, math.degrees(math.atan2(m[1, 0], m[0, 0])) % 360, s_m, 0, math.nan, math.nan,
                                  "coarse", method if m is matrix else "fourier-mellin")

    # 4. refinement from matched structure centroids
    fit_model = model if (model == "similarity" or len(pairs) >= 6) else "similarity"
    if fit_model == "similarity" and max_compression > 0 and len(pairs) >= 4:
        fit_model = "affine"  # a compressed section is no similarity of the LM
    min_n = 3 if fit_model == "affine" else 2
    src = lp[[p[0] for p in pairs]]
    dst = ep[[p[1] for p in pairs]]
    cls = AffineTransform if fit_model == "affine" else SimilarityTransform
    inliers = np.ones(len(src), bool)
    if len(src) > min_n + 2:
        from skimage.measure import ransac

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, found = ransac((src, dst), cls, min_samples=min_n, residual_threshold=max(1.0, 0.5 * f_em),
                              max_trials=200, rng=seed)
        if found is not None and found.sum() >= max(min_n, min_matches):
            inliers = found
    if fit_model == "affine" and inliers.sum() >= 4:
        # an affine on a handful of matches follows their localisation noise (4 matches leave
        # it 2 degrees of freedom) and extrapolates it over the field: kept only unless a
        # similarity predicts the held-out matches clearly better
        def loo_rms(kind: str) -> float:
            return float(np.sqrt(np.mean(_loo_point_errors(src[inliers], dst[inliers], kind) ** 2)))

        if loo_rms("similarity") < SIMILARITY_PREFERENCE * loo_rms("affine"):
            fit_model, cls = "similarity", SimilarityTransform
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tf = cls.from_estimate(src[inliers], dst[inliers])
    if not tf:
        raise RegistrationError(f"could not fit a {fit_model} transform to the {len(src)} matched structures{hint}")
    fine = np.asarray(tf.params, float)
    needs_cut_model = False
    if len(lp) >= 3 and len(ep) >= 3 and tree is not None:
        # 5. precision: the refined transform must put structures onto each other within their
        # localisation precision, beyond the ones its parameters absorb, more often than the
        # best of n_hyp chance transforms would. A transform verified only at the wider match
        # radius (its matches a few pixels off, or some of them wrong) has not been verified
        # at the precision a TRE below a pixel needs
        fine_radius = max(VERIFY_RADIUS_PX, float(f_em))
        absorbed = 3 if fit_model == "affine" else 2
        n_fine = len(_match(lp, ep, fine, tree, fine_radius))
        need = _CompressionFit.min_matches()
        p_fine = _chance_p_value(lp, ep, fine, em.shape, fine_radius, n_fine - absorbed, n_hyp, fitted=absorbed)
        if cut_pairs:
            # the cut's model's matches at localisation precision (step 3) count as the affine's do
            p_cut = _chance_p_value(lp, ep, fine, em.shape, fine_radius, len(cut_pairs) - cut_absorbed, n_hyp,
                                    fitted=cut_absorbed)
            needs_cut_model = n_fine < need or p_fine > max_p_value
            n_fine, p_fine = max(n_fine, len(cut_pairs)), 2.0 * min(p_fine, p_cut)
        if max_compression > 0 and n_fine < need:
            # a section that may have compressed compresses unevenly across the cut: an affine
            # through a few matches is right at them and extrapolates a uniform compression
            # beyond them, pixels off where the compression varied, with a small TRE estimate
            # (its residuals say nothing about the field away from the matches). Only matches
            # enough to fit and judge the simplest varying compression tell the two apart
            raise RegistrationError(
                f"could not verify the registration of a section that may have compressed: {n_fine} structures "
                f"matched within {fine_radius:.1f} EM px, fewer than the {need} that tell a compression varying "
                "across the cut from a uniform one (an affine through fewer is right at its matches and may be "
                "pixels off away from them); add fiducial beads or pass more lm_points/em_points, or "
                "max_compression=0 where the section did not deform"
            )
        if p_fine > max_p_value:
            raise RegistrationError(
                f"could not register LM to EM to localisation precision: the {fit_model} fitted to {int(inliers.sum())} matched "
                f"structures puts {n_fine} within {fine_radius:.1f} EM px of each other (chance p = {min(p_fine, 1.0):.2g} > "
                f"{max_p_value:g} over {n_hyp} transforms tried){hint}, or pass lm_points/em_points of structures both images show"
            )
    fre, tre = target_registration_error(src[inliers], dst[inliers], fine, em.shape, n_params=6 if fit_model == "affine" else 4)
    rot_deg = math.degrees(math.atan2(fine[1, 0], fine[0, 0])) % 360
    scale = math.sqrt(abs(np.linalg.det(fine[:2, :2])))
    disp = None
    name = fit_model
    m_src, m_dst = src[inliers], dst[inliers]
    nonrigid = None
    if elastic and fit_model == "affine":
        nonrigid = _nonrigid_refinement(lp, ep, fine, (wide_radius, match_radius_px), em.shape, seed_pairs=cut_pairs)
        if nonrigid is None and needs_cut_model:
            raise RegistrationError(
                f"could not register LM to EM to localisation precision: only the cut's model put enough structures "
                f"({len(cut_pairs)}) within {fine_radius:.1f} EM px of each other, and fitted to them it did not predict "
                f"held-out ones better than the affine{hint}; add fiducial beads or pass more lm_points/em_points"
            )
    if nonrigid is None:
        # the TRE estimate of the model returned only (its cross-validation refits it per fold)
        estimate = _tre_estimate(fit_model, m_src, m_dst, fine, None)
        if estimate is not None:
            tre = _field_rms(estimate, em.shape)
        base = RegistrationResult(fine, rot_deg, scale, int(inliers.sum()), fre, tre, name, method, None, estimate)
    else:
        kind, fine, m_src, m_dst, fre_nr, tre_nr, disp, fitted = nonrigid
        rot_deg = math.degrees(math.atan2(fine[1, 0], fine[0, 0])) % 360
        scale = math.sqrt(abs(np.linalg.det(fine[:2, :2])))
        estimate = _tre_estimate(kind, m_src, m_dst, fine, fitted)
        if estimate is not None:
            tre_nr = _field_rms(estimate, em.shape)
        base = RegistrationResult(fine, rot_deg, scale, len(m_src), fre_nr, tre_nr, f"{name}+{kind}", method, disp,
                                  estimate)
    if elastic:
        # the flow runs between what both images show: their compact structures, when told
        # how they look; the whole images otherwise
        lm_s = _structure_image(lm, lm_polarity)
        em_s = _structure_image(em, em_polarity)
        flow = _elastic(lm_s, em_s, base, max(1.0, 0.5 * scale))  # half an LM pixel seen on the EM grid
        if base.displacement is not None:
            flow = base.displacement + flow
        before = float(np.sqrt(np.mean(np.sum((base.apply(m_src) - m_dst) ** 2, axis=1))))
        elastic_result = RegistrationResult(fine, rot_deg, scale, base.n_matches, base.fre_px, base.tre_px,
                                            base.model + "+elastic", method, flow, base.tre_estimate)
        after = float(np.sqrt(np.mean(np.sum((elastic_result.apply(m_src) - m_dst) ** 2, axis=1))))
        # the flow never saw the matched structures: they are held-out evidence. Kept only
        # where it brings them measurably closer (by a tenth)
        if after <= 0.9 * before:
            object.__setattr__(elastic_result, "fre_px", after)
            return elastic_result
        warnings.warn(f"the elastic step did not bring the matched structures closer (residual {before:.2f} -> {after:.2f} px); "
                      f"kept the {base.model} transform", RuntimeWarning, stacklevel=2)
    return base
