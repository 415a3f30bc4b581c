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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cryoopt.exceptions import EvaluationError
from cryoopt.pipeline import metrics as M
from cryoopt.pipeline._robust import median_sigma
from cryoopt.pipeline._validate import check_image
from cryoopt.pipeline.evaluators import Evaluator, Evidence, LogicConsistencyEvaluator
from cryoopt.pipeline.parser import KnownMask, ParseResult, parse_section
from cryoopt.pipeline.preprocess import Restorer, block_mean, detect_charging, detect_ice, normalize_intensity, restorers
from cryoopt.pipeline.registration import RegistrationResult, detect_structure_points, register_lm_em
from cryoopt.pipeline.scores import Score, Scores, score

__all__ = ["EvaluationContext", "Pipeline", "SectionState", "evaluate_section"]


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
            simulator's labelled sites); default: the union of ``target_structures``.
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

    def __post_init__(self) -> None:
        for name in ("lm_pixel_size_nm", "em_pixel_size_nm"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise EvaluationError(f"{name} must be a positive number, got {v!r}")


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
    lm_raw_w: np.ndarray | None = None
    charging: np.ndarray | None = None
    ice: np.ndarray | None = None
    parsed: ParseResult | None = None
    registration: RegistrationResult | None = None
    label_mask: np.ndarray | None = None
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
    em = normalize_intensity(st.em)
    lm = normalize_intensity(st.lm)
    em_r, lm_r = np.asarray(restorer.restore(em), float), np.asarray(restorer.restore(lm), float)
    if em_r.shape != em.shape or lm_r.shape != lm.shape:
        raise EvaluationError("the restorer changed the image shape; the pipeline needs the pixel grid kept")
    st.em, st.lm = em_r, lm_r
    st.em_w, st.lm_w = block_mean(st.em, st.f_em), block_mean(st.lm, st.f_lm)
    min_area = max(4, int(250_000 / (ctx.em_pixel_size_nm * st.f_em) ** 2))  # 0.25 um^2
    if ctx.charging_mask is not None:
        st.charging = block_mean(np.asarray(ctx.charging_mask, float), st.f_em) > 0.5
    else:
        st.charging = detect_charging(st.em_raw_w, min_area_px=min_area)
    if ctx.ice_mask is not None:
        st.ice = block_mean(np.asarray(ctx.ice_mask, float), st.f_em) > 0.5
    else:
        st.ice = detect_ice(st.em_raw_w, min_area_px=min_area)


def stage_parse(st: SectionState) -> None:
    assert st.em_w is not None and st.lm_w is not None  # noqa: S101 - stage order
    em = st.em_w.copy()
    em[st.charging | st.ice] = median_sigma(em)[0]  # artifacts are not structures
    known = {kind: KnownMask(_working_mask(mask, st, f"structure_masks[{kind!r}]"))
             for kind, mask in (st.context.structure_masks or {}).items()}
    kinds = tuple(dict.fromkeys(("nuclei", "mitochondria", "membranes", *st.context.target_structures, *known)))
    st.parsed = parse_section(em, st.lm_w, structures=kinds, segmenter_overrides=known, with_graph=False)


def _working_mask(mask: Any, st: SectionState, name: str) -> np.ndarray:
    """A known full-resolution EM mask on the working grid (a block is in if half its pixels are)."""
    arr = np.asarray(mask)
    if arr.shape != st.em.shape:
        raise EvaluationError(f"context.{name} has shape {arr.shape}; it must be on the EM image's grid {st.em.shape}")
    return block_mean(arr.astype(float), st.f_em) > 0.5


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
    from skimage.transform import warp

    ctx, p = st.context, st.parsed
    assert p is not None and st.em_w is not None and st.lm_w is not None and st.target_mask is not None  # noqa: S101
    em_feat = ndi.gaussian_filter(st.target_mask.astype(float), 1.0)
    lm_feat = ndi.gaussian_filter(p.mask("targets").astype(float), 1.0)
    try:
        reg_w = register_lm_em(
            lm_feat, em_feat,
            lm_pixel_size_nm=ctx.lm_pixel_size_nm * st.f_lm, em_pixel_size_nm=ctx.em_pixel_size_nm * st.f_em,
            lm_points=detect_structure_points(lm_feat), em_points=detect_structure_points(em_feat),
            max_working_px=ctx.max_working_px,
        )
    except EvaluationError:
        reg_w = None
    s = st.scores
    if reg_w is None:
        for k in ("registration_tre_px", "registration_tre_nm", "registration_fre_px", "label_in_target_fraction"):
            s[k] = score(k, math.nan)
        s["registration_n_matches"] = score("registration_n_matches", 0)
        st.label_mask = np.zeros(st.em_w.shape, bool)
        return
    full = _grid(st.f_em) @ reg_w.matrix @ np.linalg.inv(_grid(st.f_lm))
    st.registration = RegistrationResult(
        full, reg_w.rotation_deg, reg_w.scale * st.f_em / st.f_lm, reg_w.n_matches,
        reg_w.fre_px * st.f_em, reg_w.tre_px * st.f_em, reg_w.model,
    )
    reg = st.registration
    s["registration_tre_px"] = score("registration_tre_px", reg.tre_px)
    s["registration_tre_nm"] = score("registration_tre_nm", reg.tre_px * ctx.em_pixel_size_nm)
    s["registration_fre_px"] = score("registration_fre_px", reg.fre_px)
    s["registration_n_matches"] = score("registration_n_matches", reg.n_matches)
    label = warp(p.mask("targets").astype(float), np.linalg.inv(reg_w.matrix), output_shape=st.em_w.shape, order=0)
    st.label_mask = label > 0.5
    if st.label_mask.any():
        inside = np.count_nonzero(st.label_mask & st.target_mask) / np.count_nonzero(st.label_mask)
        s["label_in_target_fraction"] = score("label_in_target_fraction", inside)
    else:
        s["label_in_target_fraction"] = score("label_in_target_fraction", math.nan)


def stage_evaluate(st: SectionState) -> None:
    ctx = st.context
    assert st.label_mask is not None and st.target_mask is not None  # noqa: S101
    evidence = Evidence(
        label_masks=[np.asarray(a, bool) for a, _ in ctx.previous_sections] + [st.label_mask],
        target_masks=[np.asarray(b, bool) for _, b in ctx.previous_sections] + [st.target_mask],
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
        lm = check_image(lm_image, name="lm_image", min_size=16)
        em = check_image(em_image, name="em_image", min_size=16)
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


def evaluate_section(lm_image: np.ndarray, em_image: np.ndarray, *, context: EvaluationContext) -> Scores:
    """Evaluate one LM+EM image pair of a section with the default :class:`Pipeline`."""
    return Pipeline()(lm_image, em_image, context=context)
