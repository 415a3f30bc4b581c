"""The whole pipeline: ``evaluate_section(lm, em, context=...) -> Scores``.

:class:`Pipeline` runs named stages in order (``preprocess``, ``parse``,
``metrics``, ``register``, ``evaluate``) over a :class:`SectionState`, timing each.
Segmentation, artifact masks and the coarse registration work on a reduced grid
(the longer side at most ``context.max_working_px``, by block averaging); FRC and
sharpness use the full-resolution images.

A metric that cannot be computed for this section (e.g. no structure to measure a
CNR on) is reported as NaN, which marks it failed; the reward refuses NaN terms.
Bad input images (dtype, NaN pixels, constant) raise
:class:`~cryoopt.exceptions.EvaluationError` before any stage runs.

Example:
    >>> ctx = EvaluationContext(lm_pixel_size_nm=100.0, em_pixel_size_nm=10.0)  # doctest: +SKIP
    >>> scores = evaluate_section(lm, em, context=ctx)                          # doctest: +SKIP
    >>> scores["registration_tre_nm"].value                                     # doctest: +SKIP
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cryoopt.exceptions import EvaluationError
from cryoopt.pipeline import metrics as M
from cryoopt.pipeline._robust import median_sigma
from cryoopt.pipeline._validate import (
    MAX_ABS_INTENSITY,
    MIN_ABS_INTENSITY,
    check_field_mask,
    check_image,
    check_mask,
    check_pixel_size,
    power_of_two_exponent,
)
from cryoopt.pipeline.evaluators import Evaluator, Evidence, LogicConsistencyEvaluator
from cryoopt.pipeline.parser import KnownMask, ParseResult, parse_section
from cryoopt.pipeline.preprocess import Restorer, block_mean, detect_charging, detect_ice, normalize_intensity, restorers
from cryoopt.pipeline.registration import (
    STAGE_RELOCATION_SIGMA_NM,
    RegistrationResult,
    detect_structure_points,
    register_lm_em,
    register_near_prior,
)
from cryoopt.pipeline.scores import Score, Scores, score

__all__ = ["LABEL_SITES", "EvaluationContext", "Pipeline", "SectionState", "evaluate_section"]

#: How the pipeline estimates where the label belongs (``EvaluationContext.label_sites``).
LABEL_SITES = ("structures", "spots", "near_label")


@dataclass(frozen=True)
class EvaluationContext:
    """Everything about a section the images do not say.

    Attributes:
        lm_pixel_size_nm, em_pixel_size_nm: pixel sizes (required: resolutions are in nm).
        restorer: name in :data:`~cryoopt.pipeline.preprocess.restorers` or a Restorer.
        protocol: parameters that produced the section (for the evaluators).
        previous_sections: ``(label_mask, target_mask)`` of earlier serial sections on
            the same working grid (see ``SectionState.label_mask``).
        target_structures: EM structure kinds the label should sit on.
        evaluators: evaluator instances to run (default: logic consistency only; the
            others need resources, see :mod:`cryoopt.pipeline.evaluators`).
        cutting_axis: image axis along which the knife travelled.
        max_working_px: longest side of the reduced grid.
        charging_mask, ice_mask: known EM masks (e.g. simulator ground truth) instead
            of the detectors.
        structure_masks: known EM masks by structure kind (``"cells"``, ``"nuclei"``,
            ``"mitochondria"``, ``"membranes"``, ...) on the EM image's grid, used
            instead of the segmenters for those kinds (e.g. simulator ground truth, or
            an operator's annotation). The LM label is always segmented.
        label_target_mask: where the label belongs, on the EM image's grid (e.g. the
            simulator's labelled sites, grown by one LM pixel); default: the sites
            ``label_sites`` estimates from the segmented ``target_structures``.
        segmenter: the EM section segmenter, a name in
            :data:`~cryoopt.pipeline.parser.segmenters` (``"hierarchical"``, the classical
            default; ``"learned"``, a U-Net trained at first use) or a
            :class:`~cryoopt.pipeline.segmentation.SectionSegmenter`. It works in nm, from
            ``em_pixel_size_nm``.
        em_reference_intensity: the raw EM intensity of the open beam (or of bare resin), in
            the units of the EM image as given, when the instrument reports it (dose x gain):
            tells resin from cytoplasm by optical density ``-ln(I / reference)`` instead of by
            context. The segmenter reads the optical density on the working grid with the raw
            image's zero restored; a reference over 3x darker than the section's median pixel
            is no open beam and is refused.
        elastic_registration: refine the LM -> EM transform with a smooth displacement
            field (sections that deformed between the two images).
        registration_prior: what to use when the images do not verify a registration:
            ``"centred"`` (the default: both fields share their centre, as correlative
            navigation to a region of interest leaves them, at the pixel sizes' scale,
            unrotated), a `3 x 3` LM -> EM pixel matrix from stage coordinates, or None
            (no label placement: label scores fail). ``registration_verified`` says which.
            Image evidence is only accepted within three ``stage_relocation_sigma_nm`` of the
            prior and only where it beats chance over the shifts searched there.
        stage_relocation_sigma_nm: one-sigma uncertainty (nm, per axis) of the prior, how
            well the stage relocates the LM field in the EM (default
            :data:`~cryoopt.pipeline.registration.STAGE_RELOCATION_SIGMA_NM`, 2 um), 0-1e6 nm.
        label_sites: where the label belongs when ``label_target_mask`` is not given: the
            labelled sites, each grown by one LM pixel (the finest the label can be placed;
            the simulator's known sites are grown the same way), so precision, recall and
            ``logic`` mean the same with known and with estimated structures.
            ``"structures"`` (default): every segmented target structure in the field, for a
            marker of the whole structure (a mitochondrial marker, fluorescent beads): a
            structure without label is a miss. ``"spots"``: for a marker of sites on the
            target structures that the EM does not show (synaptic puncta on neurites): one
            disc of ``label_site_radius_nm`` at the centre of each label spot that lies on a
            target structure (within one LM pixel), none for a spot off them; the score then
            measures whether the label sits on the target structures and is as compact as
            the sites it marks, not which site it marks. ``"near_label"``: the target
            structures within one LM pixel of the placed label, not grown (an earlier
            default, kept for comparison).
        label_site_radius_nm: radius of one labelled site for ``label_sites="spots"`` (e.g.
            150 nm for a synaptic punctum), 1-100000 nm.
    """

    lm_pixel_size_nm: float
    em_pixel_size_nm: float
    restorer: str | Restorer = "identity"
    protocol: Mapping[str, Any] = field(default_factory=dict)
    previous_sections: Sequence[tuple[np.ndarray, np.ndarray]] = ()
    target_structures: tuple[str, ...] = ("mitochondria",)
    evaluators: Sequence[Evaluator] = (LogicConsistencyEvaluator(),)
    cutting_axis: int = 0
    max_working_px: int = 512
    charging_mask: np.ndarray | None = None
    ice_mask: np.ndarray | None = None
    structure_masks: Mapping[str, np.ndarray] | None = None
    label_target_mask: np.ndarray | None = None
    segmenter: Any = "hierarchical"
    em_reference_intensity: float | None = None
    elastic_registration: bool = False
    registration_prior: Any = "centred"
    stage_relocation_sigma_nm: float = STAGE_RELOCATION_SIGMA_NM
    label_sites: str = "structures"
    label_site_radius_nm: float | None = None

    def __post_init__(self) -> None:
        for name in ("lm_pixel_size_nm", "em_pixel_size_nm"):
            object.__setattr__(self, name, check_pixel_size(getattr(self, name), name=name))
        ref = self.em_reference_intensity
        if ref is not None:
            try:
                ok = isinstance(ref, numbers.Real) and not isinstance(ref, (bool, np.bool_)) and math.isfinite(float(ref)) and float(ref) > 0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise EvaluationError("em_reference_intensity must be a positive finite raw EM intensity (the open beam "
                                      f"or bare resin, in the image's units), got {ref!r}")
            object.__setattr__(self, "em_reference_intensity", float(ref))
        if self.label_sites not in LABEL_SITES:
            raise EvaluationError(f"label_sites must be one of {LABEL_SITES}, got {self.label_sites!r}")
        if self.label_site_radius_nm is not None:
            r = self.label_site_radius_nm
            try:
                ok = not isinstance(r, bool) and math.isfinite(float(r)) and 1.0 <= float(r) <= 1e5
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise EvaluationError(f"label_site_radius_nm must be a number of nm in [1, 100000], got {r!r}")
            object.__setattr__(self, "label_site_radius_nm", float(r))
        elif self.label_sites == "spots":
            raise EvaluationError("label_sites='spots' needs label_site_radius_nm, the radius of one labelled site in nm")
        sigma = self.stage_relocation_sigma_nm
        try:
            ok = not isinstance(sigma, bool) and 0.0 <= float(sigma) <= 1e6
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise EvaluationError(f"stage_relocation_sigma_nm must be a number of nm in [0, 1000000], got {sigma!r}")
        object.__setattr__(self, "stage_relocation_sigma_nm", float(sigma))
        prior = self.registration_prior
        if not (prior is None or (isinstance(prior, str) and prior == "centred")):
            m = np.asarray(prior, float)
            if m.shape != (3, 3) or not np.all(np.isfinite(m)) or abs(np.linalg.det(m[:2, :2])) < 1e-12:
                raise EvaluationError("registration_prior must be 'centred', None or an invertible finite 3 x 3 LM -> EM matrix")
        for name in ("charging_mask", "ice_mask", "label_target_mask"):
            if getattr(self, name) is not None and np.asarray(getattr(self, name)).size == 0:
                raise EvaluationError(f"context.{name} is empty; pass a mask on the EM image's grid, or None")


@dataclass
class SectionState:
    """Intermediate results, filled stage by stage."""

    lm: np.ndarray
    em: np.ndarray
    context: EvaluationContext
    f_em: int = 1
    f_lm: int = 1
    em_w: np.ndarray | None = None
    lm_w: np.ndarray | None = None
    em_raw_w: np.ndarray | None = None
    #: the raw EM intensities that the normalised grids' 0 and 1 stand for (their physical zero)
    em_raw_range: tuple[float, float] | None = None
    lm_raw_w: np.ndarray | None = None
    charging: np.ndarray | None = None
    ice: np.ndarray | None = None
    parsed: ParseResult | None = None
    registration: RegistrationResult | None = None
    label_mask: np.ndarray | None = None
    #: the target structures (``metrics``, ``register``), then where the label belongs (``evaluate``)
    target_mask: np.ndarray | None = None
    scores: dict[str, Score] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def _safe(name: str, fn: Callable[[], float]) -> Score:
    """A documented score, NaN (failed) when the metric is undefined for this section."""
    try:
        return score(name, fn())
    except EvaluationError:
        return score(name, math.nan)


def _to_full(points: np.ndarray, f: int) -> np.ndarray:
    return points * f + (f - 1) / 2.0


# -- stages ---------------------------------------------------------------------
def stage_preprocess(st: SectionState) -> None:
    ctx = st.context
    r = ctx.restorer
    restorer: Restorer = restorers.get(r)() if isinstance(r, str) else r
    # raw working grids keep the physical zero (SNR, ice opacity)
    st.f_em = max(1, math.ceil(max(st.em.shape) / ctx.max_working_px))
    st.f_lm = max(1, math.ceil(max(st.lm.shape) / ctx.max_working_px))
    st.em_raw_w, st.lm_raw_w = block_mean(st.em, st.f_em), block_mean(st.lm, st.f_lm)
    st.em_raw_range = tuple(float(v) for v in np.percentile(st.em, (0.5, 99.5)))  # as normalize_intensity maps
    em = normalize_intensity(st.em)
    lm = normalize_intensity(st.lm)
    em_r, lm_r = np.asarray(restorer.restore(em), float), np.asarray(restorer.restore(lm), float)
    if em_r.shape != em.shape or lm_r.shape != lm.shape:
        raise EvaluationError("the restorer changed the image shape; the pipeline needs the pixel grid kept")
    st.em, st.lm = em_r, lm_r
    st.em_w, st.lm_w = block_mean(st.em, st.f_em), block_mean(st.lm, st.f_lm)
    min_area = max(4, int(250_000 / (ctx.em_pixel_size_nm * st.f_em) ** 2))  # 0.25 um^2
    if ctx.charging_mask is not None:
        st.charging = _working_mask(ctx.charging_mask, st, "charging_mask")
    else:
        st.charging = detect_charging(st.em_raw_w, min_area_px=min_area)
    if ctx.ice_mask is not None:
        st.ice = _working_mask(ctx.ice_mask, st, "ice_mask")
    else:
        st.ice = detect_ice(st.em_raw_w, min_area_px=min_area)


def stage_parse(st: SectionState) -> None:
    """Segment the EM working grid in nm (the context's section segmenter) and the LM label."""
    assert st.em_w is not None and st.lm_w is not None and st.em_raw_w is not None  # noqa: S101 - stage order
    ctx = st.context
    artifacts = st.charging | st.ice
    em = st.em_w.copy()
    em[artifacts] = median_sigma(em)[0]  # artifacts are not structures
    known = {kind: KnownMask(_working_mask(mask, st, f"structure_masks[{kind!r}]"))
             for kind, mask in (ctx.structure_masks or {}).items()}
    kinds = tuple(dict.fromkeys(("cells", "nuclei", "mitochondria", "membranes", *ctx.target_structures, *known)))
    ref = None
    if ctx.em_reference_intensity is not None:
        em, ref = _with_physical_zero(em, st, artifacts)
    st.parsed = parse_section(em, st.lm_w, structures=kinds, segmenter_overrides=known, with_graph=False,
                              pixel_size_nm=ctx.em_pixel_size_nm * st.f_em, segmenter=ctx.segmenter,
                              reference_intensity=ref, ignore=artifacts)


#: how far above the open beam a section's median pixel may read (charging brightens a
#: transparent film; the simulator's charging adds up to 2x the beam at its strongest)
_MAX_OVER_OPEN_BEAM = 3.0


def _with_physical_zero(em: np.ndarray, st: SectionState, artifacts: np.ndarray) -> tuple[np.ndarray, float]:
    """The normalised EM working grid and the context's raw reference on one scale that keeps the raw zero.

    Normalisation maps the raw ``lo``/``hi`` percentiles to 0 and 1; an optical density
    ``-ln(I / I0)`` needs intensities measured from the detector's zero, so the grid is
    shifted back by ``lo / (hi - lo)`` and the reference divided by ``hi - lo``: their ratio
    is the raw one. Raises EvaluationError when the section's median pixel (artifacts aside)
    reads over ``_MAX_OVER_OPEN_BEAM`` times the reference: a nearly transparent film under a
    charging beam can read somewhat above the open beam, no section that far (wrong units or gain)."""
    ctx = st.context
    assert st.em_raw_range is not None and st.em_raw_w is not None and ctx.em_reference_intensity is not None  # noqa: S101
    lo, hi = st.em_raw_range
    raw = st.em_raw_w[~artifacts] if (~artifacts).any() else st.em_raw_w
    median = float(np.median(raw))
    if ctx.em_reference_intensity * _MAX_OVER_OPEN_BEAM < median:
        raise EvaluationError(f"context.em_reference_intensity={ctx.em_reference_intensity:g} is over "
                              f"{_MAX_OVER_OPEN_BEAM:g}x darker than the section's median pixel ({median:g}); pass the raw "
                              "intensity of the open beam or bare resin, in the EM image's units (dose x gain), or None")
    scale = hi - lo
    return em + lo / scale, ctx.em_reference_intensity / scale


def _working_mask(mask: Any, st: SectionState, name: str) -> np.ndarray:
    """A known full-resolution EM mask on the working grid (a block is in if half its pixels are)."""
    return block_mean(check_field_mask(mask, st.em.shape, name=f"context.{name}"), st.f_em) > 0.5


def stage_metrics(st: SectionState) -> None:
    ctx, p = st.context, st.parsed
    assert p is not None and st.em_w is not None and st.lm_w is not None  # noqa: S101
    s = st.scores
    structures = np.zeros(st.em_w.shape, bool)
    for k in ctx.target_structures:
        structures |= p.mask(k)
    artifacts = st.charging | st.ice
    bg = ~(structures | p.mask("nuclei") | p.mask("mitochondria") | p.mask("membranes") | artifacts)
    # against the band 50-300 nm around the structures, so a field mostly inside a cell still has a contrast
    w_px = ctx.em_pixel_size_nm * st.f_em
    s["em_cnr"] = _safe("em_cnr", lambda: M.local_contrast_to_noise_ratio(st.em_w, structures, exclude_mask=~bg & ~structures,
                                                                          gap_px=50.0 / w_px, width_px=max(2.0, 250.0 / w_px)))
    # SNR on the raw grid: mean section signal over background noise (physical zero needed)
    s["em_snr"] = _safe("em_snr", lambda: M.signal_to_noise_ratio(st.em_raw_w, bg, structures))
    targets = p.mask("targets")
    s["lm_cnr"] = _safe("lm_cnr", lambda: M.contrast_to_noise_ratio(st.lm_w, targets, ~targets))
    s["lm_snr"] = _safe("lm_snr", lambda: M.signal_to_noise_ratio(st.lm_raw_w, targets, ~targets, subtract_background=True))
    try:
        frc = M.fourier_ring_correlation(st.em, pixel_size_nm=ctx.em_pixel_size_nm)
        s["em_frc_resolution_nm"] = score("em_frc_resolution_nm", frc.resolution)
        s["em_frc_resolution_halfbit_nm"] = score("em_frc_resolution_halfbit_nm", frc.resolution_halfbit)
    except EvaluationError:
        s["em_frc_resolution_nm"] = score("em_frc_resolution_nm", math.nan)
        s["em_frc_resolution_halfbit_nm"] = score("em_frc_resolution_halfbit_nm", math.nan)
    s["lm_frc_resolution_nm"] = _safe("lm_frc_resolution_nm", lambda: M.frc_resolution(st.lm, pixel_size_nm=ctx.lm_pixel_size_nm))
    s["em_sharpness"] = _safe("em_sharpness", lambda: M.sharpness(st.em))
    s["lm_sharpness"] = _safe("lm_sharpness", lambda: M.sharpness(st.lm))
    defects = M.section_defects(st.em_w, cutting_axis=ctx.cutting_axis)
    s["em_charging_fraction"] = score("em_charging_fraction", float(st.charging.mean()))
    s["em_ice_fraction"] = score("em_ice_fraction", float(st.ice.mean()))
    s["em_crack_fraction"] = score("em_crack_fraction", defects.crack_fraction)
    s["em_artifact_fraction"] = score("em_artifact_fraction", M.artifact_fraction(st.charging, st.ice, defects.crack_mask))
    s["em_knife_mark_index"] = score("em_knife_mark_index", defects.knife_mark_index)
    s["em_chatter_index"] = score("em_chatter_index", defects.chatter_index)
    s["n_nuclei"] = score("n_nuclei", p.count("nuclei"))
    s["n_mitochondria"] = score("n_mitochondria", p.count("mitochondria"))
    s["n_targets"] = score("n_targets", p.count("targets"))
    s["membrane_fraction"] = score("membrane_fraction", float(p.mask("membranes").mean()))
    # with em_cnr: an undefined contrast of a target that is there (its surroundings saturated) is
    # a failed measurement; of none, or of one filling the field, there is nothing to measure
    s["em_target_fraction"] = score("em_target_fraction", float(structures.mean()))
    if ctx.label_target_mask is not None:
        st.target_mask = _working_mask(ctx.label_target_mask, st, "label_target_mask")
    else:
        st.target_mask = structures


def _grid(f: int) -> np.ndarray:
    """Working-grid (x, y) -> full-resolution (x, y) for a block mean of ``f``."""
    return np.array([[f, 0, (f - 1) / 2.0], [0, f, (f - 1) / 2.0], [0, 0, 1.0]])


def stage_register(st: SectionState) -> None:
    """Register on the working grids, using the parsed structures as modality-free features:
    the EM target structures against the LM label (the label marks them)."""
    from scipy import ndimage as ndi

    ctx, p = st.context, st.parsed
    assert p is not None and st.em_w is not None and st.lm_w is not None and st.target_mask is not None  # noqa: S101
    em_feat = ndi.gaussian_filter(st.target_mask.astype(float), 1.0)
    lm_feat = ndi.gaussian_filter(p.mask("targets").astype(float), 1.0)
    kwargs = dict(lm_pixel_size_nm=ctx.lm_pixel_size_nm * st.f_lm, em_pixel_size_nm=ctx.em_pixel_size_nm * st.f_em,
                  lm_points=detect_structure_points(lm_feat), em_points=detect_structure_points(em_feat),
                  max_working_px=ctx.max_working_px)
    prior = _prior(st)
    # how far from the prior the stage may have put the EM field (working EM px)
    radius = 3.0 * ctx.stage_relocation_sigma_nm / (ctx.em_pixel_size_nm * st.f_em)
    reg_w = None
    # structure points verify an affine, and it must lie where the stage can have put the field
    try:
        reg_w = register_lm_em(lm_feat, em_feat, model="affine", elastic=ctx.elastic_registration, **kwargs)
        if prior is not None and _offset_from(reg_w.matrix, prior, st.em_w.shape) > radius:
            reg_w = None
    except EvaluationError:
        pass
    if reg_w is None:
        # too few points (a neurite and a few puncta): the image correlation must stand out on
        # its own, against chance over the shifts the stage allows, else the prior is used unverified
        try:
            if prior is not None:
                reg_w = register_near_prior(lm_feat, em_feat, prior, search_radius_px=radius)
            else:
                reg_w = register_lm_em(lm_feat, em_feat, model="coarse", **kwargs)
        except EvaluationError:
            reg_w = None
    s = st.scores
    s["registration_verified"] = score("registration_verified", float(reg_w is not None))
    if reg_w is None:
        if prior is None:
            for k in ("registration_tre_px", "registration_tre_nm", "registration_fre_px", "label_in_target_fraction"):
                s[k] = score(k, math.nan)
            s["registration_n_matches"] = score("registration_n_matches", 0)
            st.label_mask = np.zeros(st.em_w.shape, bool)
            return
        rot = math.degrees(math.atan2(prior[1, 0], prior[0, 0])) % 360
        reg_w = RegistrationResult(prior, rot, math.sqrt(abs(np.linalg.det(prior[:2, :2]))), 0, math.nan, math.nan,
                                   "prior", "prior")
    disp = None
    if reg_w.displacement is not None:
        from skimage.transform import resize

        disp = np.stack([resize(d * st.f_em, st.em.shape, order=1, mode="edge") for d in reg_w.displacement])
    st.registration = reg_w.regridded(_grid(st.f_em), _grid(st.f_lm), disp)
    reg = st.registration
    s["registration_tre_px"] = score("registration_tre_px", reg.tre_px)
    s["registration_tre_nm"] = score("registration_tre_nm", reg.tre_px * ctx.em_pixel_size_nm)
    s["registration_fre_px"] = score("registration_fre_px", reg.fre_px)
    s["registration_n_matches"] = score("registration_n_matches", reg.n_matches)
    st.label_mask = reg_w.warp(p.mask("targets"), st.em_w.shape, order=0)
    if st.label_mask.any():
        inside = np.count_nonzero(st.label_mask & st.target_mask) / np.count_nonzero(st.label_mask)
        s["label_in_target_fraction"] = score("label_in_target_fraction", inside)
    else:
        s["label_in_target_fraction"] = score("label_in_target_fraction", math.nan)


def _offset_from(matrix: np.ndarray, prior: np.ndarray, em_shape: tuple[int, ...]) -> float:
    """How far (EM px) ``matrix`` puts the EM field's centre from where ``prior`` puts it."""
    centre = np.array([(em_shape[1] - 1) / 2.0, (em_shape[0] - 1) / 2.0, 1.0])
    lm_at = np.linalg.solve(prior, centre)
    return float(np.hypot(*((matrix @ lm_at)[:2] - centre[:2])))


def _prior(st: SectionState) -> np.ndarray | None:
    """The context's registration prior on the working grids (LM working px -> EM working px)."""
    ctx = st.context
    prior = ctx.registration_prior
    if prior is None:
        return None
    to_w = np.linalg.inv(_grid(st.f_em))
    if isinstance(prior, str):  # "centred": the fields share their centre, at the pixel sizes' scale
        s = ctx.lm_pixel_size_nm * st.f_lm / (ctx.em_pixel_size_nm * st.f_em)
        c_lm = (np.array(st.lm_w.shape[::-1], float) - 1) / 2.0
        c_em = (np.array(st.em_w.shape[::-1], float) - 1) / 2.0
        m = np.eye(3)
        m[:2, :2] *= s
        m[:2, 2] = c_em - s * c_lm
        return m
    return to_w @ np.asarray(prior, float) @ _grid(st.f_lm)


def label_sites(st: SectionState) -> np.ndarray:
    """Where the placed label belongs on the working grid, estimated from the segmented target
    structures (``st.target_mask``) as ``context.label_sites`` says; see :class:`EvaluationContext`."""
    from scipy import ndimage as ndi

    ctx = st.context
    assert st.label_mask is not None and st.target_mask is not None  # noqa: S101 - stage order
    structures, label = st.target_mask, st.label_mask
    reach = max(1, int(round(ctx.lm_pixel_size_nm / (ctx.em_pixel_size_nm * st.f_em))))  # one LM pixel
    if ctx.label_sites == "near_label":
        return structures & ndi.binary_dilation(label, iterations=reach) if label.any() else structures
    grown = ndi.binary_dilation(structures, iterations=reach) if structures.any() else structures
    if ctx.label_sites == "structures":
        return grown
    # "spots": a site-sized disc at the centre of each label spot on the structures
    spots, n = ndi.label(label, structure=np.ones((3, 3), bool))
    markers = np.zeros(label.shape, bool)
    if n:
        centres = np.rint(ndi.center_of_mass(label, spots, range(1, n + 1))).astype(int).reshape(-1, 2)
        centres = centres[grown[centres[:, 0], centres[:, 1]]]
        markers[centres[:, 0], centres[:, 1]] = True
    if not markers.any():
        return markers
    radius_px = (ctx.label_site_radius_nm or 0.0) / (ctx.em_pixel_size_nm * st.f_em)  # set: the context checks it
    discs = ndi.distance_transform_edt(~markers) <= radius_px
    return ndi.binary_dilation(discs, iterations=reach)


def stage_evaluate(st: SectionState) -> None:
    ctx = st.context
    assert st.label_mask is not None and st.target_mask is not None  # noqa: S101
    if ctx.label_target_mask is None:
        st.target_mask = label_sites(st)
    shape = st.label_mask.shape
    previous = []
    for i, pair in enumerate(ctx.previous_sections):
        if len(pair) != 2:
            raise EvaluationError(f"context.previous_sections[{i}] must be a (label_mask, target_mask) pair")
        previous.append(tuple(check_mask(m, shape, name=f"context.previous_sections[{i}][{j}]", min_pixels=0)
                              for j, m in enumerate(pair)))
    evidence = Evidence(
        label_masks=[a for a, _ in previous] + [st.label_mask],
        target_masks=[b for _, b in previous] + [st.target_mask],
        metrics={k: v.value for k, v in st.scores.items()},
        protocol=ctx.protocol,
    )
    for ev in ctx.evaluators:
        out = ev.evaluate(evidence)
        clash = set(out) & set(st.scores)
        if clash:
            raise EvaluationError(f"evaluator {type(ev).__name__} repeats scores {sorted(clash)}")
        st.scores.update(out)


DEFAULT_STAGES: tuple[tuple[str, Callable[[SectionState], None]], ...] = (
    ("preprocess", stage_preprocess),
    ("parse", stage_parse),
    ("metrics", stage_metrics),
    ("register", stage_register),
    ("evaluate", stage_evaluate),
)


class Pipeline:
    """Named stages run in order over a :class:`SectionState`.

    Args:
        stages: ``(name, fn)`` pairs; ``fn(state)`` mutates the state. Default:
            :data:`DEFAULT_STAGES`. Replace one stage to swap a method.
    """

    def __init__(self, stages: Sequence[tuple[str, Callable[[SectionState], None]]] = DEFAULT_STAGES) -> None:
        names = [n for n, _ in stages]
        if len(set(names)) != len(names):
            raise EvaluationError(f"stage names must be unique, got {names}")
        self.stages = tuple(stages)

    def run(self, lm_image: np.ndarray, em_image: np.ndarray, *, context: EvaluationContext) -> SectionState:
        """Run all stages; returns the final state (``.scores``, ``.timings``, masks, transform)."""
        lm = check_image(_in_range(lm_image), name="lm_image", min_size=16)
        em = check_image(_in_range(em_image), name="em_image", min_size=16)
        for name, img in (("lm_image", lm), ("em_image", em)):
            if np.ptp(img) == 0:
                raise EvaluationError(f"{name} is constant; there is nothing to evaluate")
        st = SectionState(lm=lm, em=em, context=context)
        t_all = time.perf_counter()
        for name, fn in self.stages:
            t0 = time.perf_counter()
            fn(st)
            st.timings[name] = time.perf_counter() - t0
        st.timings["total"] = time.perf_counter() - t_all
        return st

    def __call__(self, lm_image: np.ndarray, em_image: np.ndarray, *, context: EvaluationContext) -> Scores:
        return Scores(self.run(lm_image, em_image, context=context).scores)


def _in_range(image: Any) -> Any:
    """A float image whose peak magnitude would overflow (or underflow) the metrics' variances,
    rescaled by an exact power of two; every pipeline score is invariant to that."""
    arr = np.asarray(image)
    if arr.dtype.kind != "f" or arr.size == 0:
        return image
    peak = max(float(arr.max()), -float(arr.min()))
    if math.isfinite(peak) and (peak > MAX_ABS_INTENSITY or 0.0 < peak < MIN_ABS_INTENSITY):
        return np.ldexp(arr.astype(np.float64), power_of_two_exponent(peak))
    return image


def evaluate_section(lm_image: np.ndarray, em_image: np.ndarray, *, context: EvaluationContext) -> Scores:
    """Evaluate one LM+EM image pair of a section with the default :class:`Pipeline`."""
    return Pipeline()(lm_image, em_image, context=context)
