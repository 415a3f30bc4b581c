"""``cryoopt/CLEMProtocol-v0``: the whole chain per step (cut, stain, image, score, fuse)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from cryoopt.envs._base import InstrumentEnv, term, to_uint8
from cryoopt.envs._core import IMAGING_KNOBS, SECTIONING_KNOBS, STAINING_KNOBS
from cryoopt.envs.sectioning import SECTIONING_FEATURES, sectioning_features
from cryoopt.envs.staining import STAINING_FEATURES
from cryoopt.exceptions import EvaluationError, ParameterError
from cryoopt.fusion import fused_reward
from cryoopt.pipeline import EvaluationContext, Pipeline, Scores, score
from cryoopt.pipeline.evaluators import (
    Evaluator,
    Evidence,
    ExecutionEvaluator,
    ImageQualityIndex,
    LogicConsistencyEvaluator,
    NoveltyEvaluator,
    ReproducibilityEvaluator,
    SampleDatabase,
    signature,
)
from cryoopt.pipeline.pipeline import DEFAULT_STAGES, SectionState

__all__ = ["CLEM_FEATURES", "DEFAULT_WEIGHTS", "IMAGING_FEATURES", "READBACK_FEATURES", "REWARD_JUDGMENTS", "CLEMProtocolEnv"]

#: Imaging and progress features appended after the sectioning and staining ones.
IMAGING_FEATURES = (
    *(f"{k.name}_norm" for k in IMAGING_KNOBS), "lm_cnr", "em_cnr", "em_frc_resolution", "em_artifact_fraction",
    "fused_reward",
)
#: What the bench reports about its own drift, appended last (see the env's Observation Space):
#: instrument readbacks and the previous section's defect metrics.
READBACK_FEATURES = (
    "specimen_temperature_offset", "knife_temperature_offset", "edge_cuts", "depth",
    "em_knife_mark_index", "em_chatter_index", "em_crack_fraction", "em_charging_fraction",
    "em_grid_dose", "lm_grid_exposure", "lm_saturated_fraction", "em_saturated_fraction",
)
CLEM_FEATURES = (*SECTIONING_FEATURES, *STAINING_FEATURES, *IMAGING_FEATURES, "block_progress", "prep_time", *READBACK_FEATURES)

#: The simulator's truth mask of an EM target structure kind, where the names differ
#: (fiducial beads are the phantom's free labelled targets).
_TRUTH_KIND = {"beads": "targets"}

#: Pairwise judgments behind :data:`DEFAULT_WEIGHTS` (Saaty's scale: ``a_ij`` = how much more
#: term i matters than term j). Image quality (``impact``: EM/LM CNR, FRC resolution,
#: artifacts) is what a CLEM preparation is for and what the campaign reports, so it leads:
#: moderately more important than the label sitting on its targets (``logic``, 3), strongly
#: more than the protocol's robustness to pipetting errors (``d_repro``, 5), very strongly
#: more than agreement with the staining model's incubation time (``meta``, 7), and
#: extremely more than novelty within a block (9), which rewards sections for differing
#: from each other, not for being good. Label placement matters more than robustness (2),
#: more than meta (3) and novelty (4); robustness counts twice meta and novelty; meta and
#: novelty are equal.
REWARD_JUDGMENTS: dict[tuple[str, str], float] = {
    ("impact", "logic"): 3.0, ("impact", "d_repro"): 5.0, ("impact", "meta"): 7.0, ("impact", "novelty"): 9.0,
    ("logic", "d_repro"): 2.0, ("logic", "meta"): 3.0, ("logic", "novelty"): 4.0,
    ("d_repro", "meta"): 2.0, ("d_repro", "novelty"): 2.0, ("meta", "novelty"): 1.0,
}


def _ahp_weights(judgments: Mapping[tuple[str, str], float]) -> dict[str, float]:
    from cryoopt.fusion.ahp import ahp_weights

    names = tuple(dict.fromkeys(n for pair in judgments for n in pair))
    a = np.ones((len(names), len(names)))
    for (i, j), v in judgments.items():
        a[names.index(i), names.index(j)], a[names.index(j), names.index(i)] = v, 1.0 / v
    return {k: round(w, 4) for k, w in ahp_weights(a, names=names).as_dict().items()}


#: Default fusion weights: AHP priorities of :data:`REWARD_JUDGMENTS` (principal eigenvector,
#: consistency ratio 0.005): impact 0.55, logic 0.21, d_repro 0.12, meta 0.07, novelty 0.06.
DEFAULT_WEIGHTS = _ahp_weights(REWARD_JUDGMENTS)

_REG_KEYS = ("registration_tre_px", "registration_tre_nm", "registration_fre_px", "label_in_target_fraction")


class _Safe(Evaluator):
    """An evaluator whose missing evidence gives NaN scores (a failed term) instead of an exception."""

    def __init__(self, inner: Evaluator, names: Sequence[str]) -> None:
        self.inner, self.names = inner, tuple(names)

    def evaluate(self, evidence: Evidence) -> Scores:
        try:
            return self.inner.evaluate(evidence)
        except EvaluationError:
            return Scores({n: score(n, math.nan) for n in self.names})


def _grid(f: int) -> np.ndarray:
    return np.array([[f, 0, (f - 1) / 2.0], [0, f, (f - 1) / 2.0], [0, 0, 1.0]])


def known_label_cnr_stage(sites: np.ndarray) -> Any:
    """A stage run after ``metrics`` that measures ``lm_cnr`` on the known labelled sites of the
    LM field (``sites``, boolean, LM grid): the label's mean there against every other pixel
    of the field (Welvaert & Rosseel 2013), so non-specific background, which lifts the
    cells, lowers it. The segmentation-based LM CNR of a real bench measures whatever Otsu
    picks, on a bright background the cells themselves. For simulated benches only."""
    from cryoopt.pipeline import metrics as M

    def stage(st: SectionState) -> None:
        if st.lm_w is None or sites.shape != st.lm_w.shape or sites.sum() < 2:
            return
        try:
            st.scores["lm_cnr"] = score("lm_cnr", M.contrast_to_noise_ratio(st.lm_w, sites, ~sites))
        except EvaluationError:
            st.scores["lm_cnr"] = score("lm_cnr", math.nan)

    return stage


def centred_lm_to_em(n_lm: int, n_em: int, lm_px: float, em_px: float) -> np.ndarray:
    """The LM -> EM pixel transform (3x3, ``(x, y, 1)``) of two fields that share their centre.

    The simulated microscope samples pixel ``i`` of an ``n``-pixel field at ``centre + (i - (n-1)/2) px``
    (:meth:`~cryoopt.instruments.simulated.sim_physics.SimImaging.truth`), so the middle of the
    LM field, ``(n_lm - 1)/2``, lands on the middle of the EM field, ``(n_em - 1)/2``, and the LM
    origin sits at ``(n_em - 1)/2 - s (n_lm - 1)/2`` EM px, ``s = lm_px / em_px``."""
    s = lm_px / em_px
    off = (n_em - 1) / 2.0 - s * (n_lm - 1) / 2.0
    return np.array([[s, 0.0, off], [0.0, s, off], [0.0, 0.0, 1.0]])


def known_registration_stage(matrix: np.ndarray) -> Any:
    """A ``register`` stage that uses the simulator's known LM->EM pixel transform ``matrix``
    (3x3, ``(x, y, 1)``) instead of estimating it: TRE/FRE are reported as 0 px and
    ``registration_n_matches`` as 0 (nothing was matched). For simulated benches only."""
    from scipy import ndimage as ndi

    swap = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # (x, y) <-> (row, col)

    def stage(st: SectionState) -> None:
        p = st.parsed
        assert p is not None and st.em_w is not None and st.target_mask is not None  # noqa: S101 - stage order
        reg_w = np.linalg.inv(_grid(st.f_em)) @ matrix @ _grid(st.f_lm)
        # EM pixel -> LM pixel, in array index order, nearest neighbour (a mask stays a mask)
        em_to_lm = swap @ np.linalg.inv(reg_w) @ swap
        label = ndi.affine_transform(p.mask("targets").astype(np.uint8), em_to_lm, output_shape=st.em_w.shape,
                                     order=0, mode="constant", cval=0)
        st.label_mask = label > 0
        s = st.scores
        for k in ("registration_tre_px", "registration_tre_nm", "registration_fre_px"):
            s[k] = score(k, 0.0)
        s["registration_n_matches"] = score("registration_n_matches", 0)
        if st.label_mask.any():
            inside = np.count_nonzero(st.label_mask & st.target_mask) / np.count_nonzero(st.label_mask)
            s["label_in_target_fraction"] = score("label_in_target_fraction", inside)
        else:
            s["label_in_target_fraction"] = score("label_in_target_fraction", math.nan)

    return stage


def _shifted(mask: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``mask`` moved by whole pixels (content at ``(r, c)`` goes to ``(r + rows, c + cols)``), empty where nothing moves in."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    if abs(rows) >= h or abs(cols) >= w:
        return out
    out[max(rows, 0):h + min(rows, 0), max(cols, 0):w + min(cols, 0)] = mask[max(-rows, 0):h + min(-rows, 0), max(-cols, 0):w + min(-cols, 0)]
    return out


class CLEMProtocolEnv(InstrumentEnv):
    """The whole CLEM preparation chain, one serial section per step.

    ## Description
    Each step cuts a section (ultramicrotome), stains it (staining platform), images
    it in LM and EM (microscope), scores the pair with the evaluation pipeline
    (:class:`cryoopt.pipeline.Pipeline`) and fuses the scores into a reward
    (:func:`cryoopt.fusion.fused_reward`). Instruments are the drivers over simulated
    devices (``backend="instruments"``/``"socket"``), your bench (``bench=``), or the
    same ``cryoopt.sim`` physics called directly (``backend="direct"``, fast).
    With ``registration="known"`` (default on simulated benches) the pipeline's
    registration stage is replaced by the simulator's known LM->EM transform (the
    estimating stage costs ~0.3 s per pair); ``registration="estimate"`` keeps it. With
    ``structures="known"`` (default on simulated benches) the EM structures and labelled
    sites are the simulator's, and ``lm_cnr`` is the label's contrast on the known labelled
    sites (:func:`known_label_cnr_stage`) rather than on what the LM segmentation picks.
    ``open_beam`` (None: on with estimated structures on a simulated bench; False: off): the
    estimate path gets the EM open-beam intensity, dose x gain, as a microscope knows it from
    its beam current, dwell and detector gain (``EvaluationContext.em_reference_intensity``),
    so the segmenter tells the embedding matrix from cytoplasm by optical density; True on a
    bench that does not report it is an error.

    ## Action Space
    ``Box(-1, 1, (13,), float32)``: normalized deltas, grouped as
    ``env.unwrapped.action_groups``: ``sectioning`` = ``slice(0, 5)`` (as
    ``Sectioning-v0``), ``staining`` = ``slice(5, 9)`` (as ``Staining-v0``), ``imaging`` =
    ``slice(9, 12)`` (``exposure_ms`` +-0.1 decade, ``gain`` +-0.1 decade, ``focus_um``
    +-0.5 um), ``stop`` = ``slice(12, 13)``: a value > 0.5 stops the block now (no cut;
    reward 0; terminated). All setpoints are clipped to the profile limits.

    ## Observation Space
    ``observation="scalar"`` (default): ``Box(-1, 1, (41,), float32)``
    (:data:`CLEM_FEATURES`, in this order):

    ======  ====================================================================
    0-10    the 11 ``Sectioning-v0`` features (:data:`SECTIONING_FEATURES`): measured
            thickness error, compression, chatter, cracks, ribbon failed, the 5
            sectioning setpoints normalized, knife wear
    11-18   the 8 ``Staining-v0`` features (:data:`STAINING_FEATURES`): label
            intensity, uniformity, non-specific background of the stained section,
            the 4 staining setpoints normalized, section thickness normalized
    19-26   the 3 imaging setpoints normalized, ``cnr/(1+cnr)`` for LM and EM,
            ``exp(-FRC resolution / 100 nm)``, EM artifact fraction, the last
            fused reward (clipped to [-1, 1])
    27-28   block progress (sections / block size), ``1 - exp(-prep hours / 24)``
    29-40   what the bench reports about its drift (:data:`READBACK_FEATURES`):
            measured minus set specimen and knife temperature of the last cut
            (/10 C, clipped), sections cut on this knife edge region (/100), depth
            cut into the block (``1 - exp(-depth / 2 um)``), the last section's EM
            knife-mark, chatter and crack indices and charging fraction, the
            electron dose left on the grid by this block's acquisitions
            (``1 - exp(-dose / 4 charge thresholds)``), the LM light it received
            (``1 - exp(-ms / 1 s)``), and the saturated fractions of the last LM
            and EM images
    ======  ====================================================================

    Failed or unknown metrics read 0. The first 29 entries are unchanged from earlier
    versions of this env. ``observation="images"``: ``Dict(features=<that Box>,
    lm=Box(0, 255, (P, P, 1), uint8), em=...)`` with ``P = obs_image_px`` (64 by default).

    ## Rewards
    The fused reward ``R = sum_k w_k term_k`` over ``impact`` (image quality:
    :class:`~cryoopt.pipeline.ImageQualityIndex` of EM/LM CNR, EM FRC resolution and
    artifact fraction, or your fitted forecaster among ``evaluators=``), ``logic``
    (label on its labelled sites and absent elsewhere, across registered serial sections:
    the simulator's sites with ``structures="known"``, the same sites estimated from the
    segmented target structures otherwise, see :meth:`_label_site_options`), ``d_repro``
    (reproducibility under +-10 % dilution/time), ``meta`` (execution vs the
    simulator's optimal time) and ``novelty`` (vs this block's sections), weights
    :data:`DEFAULT_WEIGHTS` (AHP priorities of :data:`REWARD_JUDGMENTS`: impact 0.55,
    logic 0.21, d_repro 0.12, meta 0.07, novelty 0.06) or ``weights=``; its breakdown is
    ``info["reward_terms"]``, the pipeline's scores ``info["scores"]``
    (``Scores.to_dict()``). A failed evaluation (a NaN metric a term needs, or images
    the pipeline refuses, e.g. saturated) gives ``failure_reward`` (-1 by default) and
    ``info["evaluation_failed"] = True``; a failed ribbon gives ``failure_reward`` and
    ``info["section_failed"] = True``. A section whose EM field has nothing to measure
    (no target structure, or one filling the field) is "no measurement": reward 0,
    ``info["no_measurement"] = True``, left out of the block's mean fused score and not
    counted as a failure. Never NaN.

    ## Starting State
    All setpoints from the scenario's start ranges (or, for the knobs named in
    ``reset(options={"setpoints": {name: value}})``, those values clipped to the
    instrument profile's limits: the outer loop's starting protocol). The specimen seed
    (``options["specimen_seed"]``, the scenario's, or drawn from ``np_random``) fixes the
    phantom and the block's conditions (knife wear, edge debris rate, temperature
    drift; :meth:`block_conditions`), so blocks on one specimen seed are paired;
    ``options["noise_seed"]`` and ``options["image_seed"]`` fix the process and image
    noise (default: drawn).

    ## Episode End
    Terminated on stop (action ``stop`` > 0.5), when the block is used up
    (``scenario.block_sections``) or after ``failure_limit`` consecutive failed ribbons.
    Truncated at ``max_episode_steps=20`` (registration). Every ``info`` carries
    ``prep_time_h`` (this block so far) and ``quality_summary`` (mean fused score,
    EM/LM CNR, EM FRC resolution nm, prep time h, section counts): the last one of an
    episode is the block's summary for the outer loop.

    ## Version History
    * v0: initial version; the Tokuyasu bench (drift readbacks appended to the
      observation, "no measurement" sections, image-quality-led weights) keeps the id.
    """

    action_groups: dict[str, slice] = {
        "sectioning": slice(0, 5), "staining": slice(5, 9), "imaging": slice(9, 12), "stop": slice(12, 13),
    }

    def __init__(self, *, observation: str = "scalar", image_size: int = 256, obs_image_px: int = 64,
                 registration: str | None = None, structures: str | None = None, weights: Any = None,
                 failure_reward: float = -1.0, failure_limit: int = 3, evaluators: Sequence[Evaluator] | None = None,
                 open_beam: bool | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if observation not in ("scalar", "images"):
            raise ValueError(f"observation must be 'scalar' or 'images', got {observation!r}")
        self.observation = observation
        self.image_size, self.obs_image_px = int(image_size), int(obs_image_px)
        self.registration = registration or ("known" if self.chain.user_bench is None else "estimate")
        if self.registration not in ("known", "estimate"):
            raise ValueError(f"registration must be 'known' or 'estimate', got {self.registration!r}")
        self.structures = structures or ("known" if self.chain.user_bench is None else "estimate")
        if self.structures not in ("known", "estimate"):
            raise ValueError(f"structures must be 'known' or 'estimate', got {self.structures!r}")
        if open_beam not in (None, True, False):
            raise ValueError(f"open_beam must be None, True or False, got {open_beam!r}")
        if open_beam and not self.chain.simulated:
            raise ValueError("open_beam=True needs a bench that reports the EM dose and gain (a simulated one); "
                             "on your bench pass None or False")
        self.open_beam = self.structures == "estimate" and open_beam is not False and self.chain.simulated
        self.weights = DEFAULT_WEIGHTS if weights is None else weights
        self.failure_reward, self.failure_limit = float(failure_reward), int(failure_limit)
        self.user_evaluators = evaluators
        self.action_space = spaces.Box(-1.0, 1.0, (13,), np.float32)
        features = spaces.Box(-1.0, 1.0, (len(CLEM_FEATURES),), np.float32)
        if observation == "images":
            img = spaces.Box(0, 255, (self.obs_image_px, self.obs_image_px, 1), np.uint8)
            self.observation_space = spaces.Dict({"features": features, "lm": img, "em": img})
        else:
            self.observation_space = features
        self.setpoints: dict[str, dict[str, float]] = {}

    # -- evaluation ---------------------------------------------------------------------
    def _predictor(self, protocol: Mapping[str, Any]) -> dict[str, float]:
        from cryoopt.sim.diffusion import StainingProtocol, scales_for
        from cryoopt.sim.fast import fast_staining

        p = self._staining_protocol(protocol)
        s = scales_for(p, self._tissue)
        return {"optimal_time_min": math.log(10.0) / s.k_obs_per_s / 60.0, "uniformity": fast_staining(p, tissue=self._tissue).uniformity}

    def _staining_protocol(self, protocol: Mapping[str, Any]) -> Any:
        from cryoopt.sim.diffusion import StainingProtocol

        return StainingProtocol(
            section_thickness_nm=min(max(float(protocol["section_thickness_nm"]), 10.0), 1e6),
            antibody_dilution=min(max(float(protocol["antibody_dilution"]), 1.0), 1e5),
            incubation_min=min(max(float(protocol["incubation_min"]), 0.01), 10080.0),
            temperature_c=min(max(float(protocol["temperature_c"]), 0.0), 45.0),
            wash_cycles=int(protocol["wash_cycles"]), wash_min=self.chain.wash_min,
        )

    def _label_score(self, protocol: Mapping[str, Any]) -> float:
        from cryoopt.sim.fast import fast_staining

        s = fast_staining(self._staining_protocol(protocol), tissue=self._tissue)
        return s.mean_label * s.uniformity

    def _evaluators(self) -> list[Evaluator]:
        if self.user_evaluators is not None:
            return list(self.user_evaluators)
        return [
            LogicConsistencyEvaluator(),
            _Safe(ImageQualityIndex(), ("impact",)),
            _Safe(ExecutionEvaluator(self._predictor, log_tolerance=1.0), ("meta", "execution_time_ratio", "execution_uniformity")),
            _Safe(NoveltyEvaluator(self.database), ("novelty", "novelty_distance")),
            _Safe(ReproducibilityEvaluator(self._label_score, {"antibody_dilution": 0.0, "incubation_min": 0.0}, n_samples=8,
                                           seed=len(self.previous)), ("repro", "repro_std", "d_repro")),
        ]

    def _evaluate(self, lm: np.ndarray, em: np.ndarray, protocol: dict[str, Any]) -> tuple[Scores | None, Any]:
        lm_px, em_px = self.chain.pixel_size_nm("LM"), self.chain.pixel_size_nm("EM")
        evs = self._evaluators()
        for ev in evs:  # perturbation of +-10 % of this protocol's dilution and time
            inner = getattr(ev, "inner", ev)
            if isinstance(inner, ReproducibilityEvaluator):
                inner.variation = {"antibody_dilution": 0.1 * protocol["antibody_dilution"],
                                   "incubation_min": 0.1 * protocol["incubation_min"]}
        centre = self._field_centre()
        ctx = EvaluationContext(lm_pixel_size_nm=lm_px, em_pixel_size_nm=em_px, protocol=protocol,
                                previous_sections=self._registered_previous(centre, em_px, em.shape), evaluators=tuple(evs),
                                target_structures=self._target_structures(), **self._label_site_options(),
                                em_reference_intensity=self._open_beam_intensity(),
                                **self._known_structures(em.shape, lm_px / em_px))
        stages = list(DEFAULT_STAGES)
        if self.registration == "known":
            matrix = centred_lm_to_em(self.image_size, self.image_size, lm_px, em_px)
            stages = [(name, known_registration_stage(matrix) if name == "register" else fn) for name, fn in stages]
        sites = self._known_label_sites(lm.shape)
        if sites is not None:
            at = [name for name, _ in stages].index("metrics") + 1
            stages.insert(at, ("known_label_cnr", known_label_cnr_stage(sites)))
        try:
            st = Pipeline(stages).run(lm, em, context=ctx)
        except EvaluationError as exc:
            return None, str(exc)
        if st.label_mask is not None and st.target_mask is not None:
            self.previous.append((st.label_mask, st.target_mask, centre))
        return Scores(st.scores), ""

    def _unmeasurable(self, scores: Scores | None) -> bool:
        """Whether this section's EM field has nothing to measure: no target structure, or one that
        fills the field (no surroundings to contrast with). On a simulated bench with known
        structures the ground truth decides (a saturated or noisy image of a measurable field is
        a failed evaluation, not "no measurement"); elsewhere an undefined ``em_cnr`` does, the same
        rule read on the estimated target structures (``em_target_fraction``): a target that is
        there but whose contrast is undefined (its surroundings saturated) is a failed evaluation."""
        truth = getattr(self.chain.physics.get("microscope"), "last_truth", None)
        if self.structures == "known" and truth is not None and self.chain.simulated:
            mask = np.zeros(truth.cells.shape, bool)
            for kind in self._target_structures():
                mask |= truth.masks.get(_TRUTH_KIND.get(kind, kind), np.zeros_like(mask))
            frac = float(mask.mean())
            return frac < 1e-3 or frac > 0.995
        if scores is None or "em_cnr" not in scores or math.isfinite(float(scores["em_cnr"].value)):
            return False
        if "em_target_fraction" not in scores or not math.isfinite(float(scores["em_target_fraction"].value)):
            return True
        frac = float(scores["em_target_fraction"].value)
        return frac < 1e-3 or frac > 0.995

    def _field_centre(self) -> tuple[float, float] | None:
        """Specimen ``(x, y)`` nm of the latest section's field on a simulated bench, else None."""
        scope = self.chain.physics.get("microscope")
        if scope is None or not hasattr(scope, "field_centre") or not self.chain.simulated:
            return None
        return scope.field_centre(self.chain.latest())

    def _registered_previous(self, centre: tuple[float, float] | None, em_px: float,
                             shape: tuple[int, ...]) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        """The last 3 sections' ``(label, target)`` masks in this section's field: serial sections are
        compared registered, so a field re-centred on the next labelled structure shifts the older masks
        by the known offset (simulated benches; elsewhere the masks are used as they are)."""
        out = []
        px = em_px * max(1, math.ceil(max(shape) / 512))  # the pipeline's working grid
        for lab, tgt, old in self.previous[-3:]:
            if centre is None or old is None or old == centre:
                out.append((lab, tgt))
                continue
            dr, dc = round((old[1] - centre[1]) / px), round((old[0] - centre[0]) / px)
            out.append((_shifted(lab, dr, dc), _shifted(tgt, dr, dc)))
        return tuple(out)

    def _known_structures(self, shape: tuple[int, ...], lm_to_em: float) -> dict[str, Any]:
        """The simulator's EM structure masks and labelled sites (``structures="known"``), else nothing.

        The labelled sites are dilated by one LM pixel: the label cannot be placed more
        finely than the LM image resolves it. They are what ``logic`` compares the label
        with; with estimated structures the pipeline estimates the same sites in the same
        geometry (:meth:`_label_site_options`)."""
        truth = getattr(self.chain.physics.get("microscope"), "last_truth", None)
        if self.structures != "known" or truth is None or truth.cells.shape != tuple(shape):
            return {}
        from scipy import ndimage as ndi

        sites = truth.targets
        if sites.any():
            sites = ndi.binary_dilation(sites, iterations=max(1, int(round(lm_to_em))))
        masks = {"cells": truth.cells > 0, "nuclei": truth.nuclei, "mitochondria": truth.mitochondria,
                 "membranes": truth.membranes}
        if "beads" in self._target_structures():  # fiducial beads are the structures the label marks
            masks["beads"] = truth.targets
        return {"structure_masks": masks, "label_target_mask": sites}

    def _open_beam_intensity(self) -> float | None:
        """The raw EM intensity of the open beam for the latest EM image (``open_beam``), else None.

        A microscope knows it from its dose and detector gain (or measures it through a hole
        or on bare resin); the simulated one images the open beam at ``dose x gain`` ADU
        (:func:`cryoopt.sim.imaging.image_em`), so it is read from its last EM acquisition."""
        if not self.open_beam:
            return None
        acq = getattr(self.chain.physics.get("microscope"), "last_acquisition", None) or {}
        if acq.get("modality") != 1.0 or "dose_e_per_px" not in acq:
            return None
        return max(float(acq["dose_e_per_px"]), 1.0) * float(acq.get("gain", 1.0))

    def _known_label_sites(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """The labelled sites of the latest section on the LM grid (``structures="known"`` on a simulated bench), else None."""
        scope = self.chain.physics.get("microscope")
        if self.structures != "known" or scope is None or not self.chain.simulated or not hasattr(scope, "truth"):
            return None
        lm_px = self.chain.pixel_size_nm("LM")
        if lm_px * max(1, math.ceil(max(shape) / 512)) != lm_px:  # the pipeline's working grid must be the LM grid
            return None
        truth = scope.truth(self.chain.latest(), size=int(shape[0]), pixel_size_nm=lm_px, organelles=False)
        return truth.target_density > 0 if truth.cells.shape == tuple(shape) else None

    def _label_site_options(self) -> dict[str, Any]:
        """How the estimate path finds the labelled sites (``EvaluationContext.label_sites``), so that
        ``logic`` measures with estimated structures what it measures with the simulator's sites.

        A marker of whole structures (every mitochondrion; fiducial beads) labels every target
        structure: the segmented ones, grown by one LM pixel. A punctate marker (puncta on the
        neurites, ``target_site: neurites``) labels sites the EM does not show: one disc of the
        sites' radius (the phantom's ``target_radius_um``, what a user states for the marker) at
        each label spot on the segmented cells, grown by one LM pixel."""
        specimen = getattr(self.chain.physics.get("microscope"), "specimen", None)
        site = getattr(specimen, "target_site", "mitochondria")
        capsules = getattr(getattr(specimen, "targets", None), "capsules", np.zeros((0, 7)))
        if site in ("mitochondria", "free", "cells") or not len(capsules):
            return {"label_sites": "structures"}
        return {"label_sites": "spots", "label_site_radius_nm": float(np.median(capsules[:, 6]))}

    def _target_structures(self) -> tuple[str, ...]:
        """EM structures the label is meant for (and whose contrast ``em_cnr`` measures),
        from the specimen's ``target_site``: mitochondria, the beads themselves (``free``
        targets: fiducial beads on a film, whose EM contrast is against the film around
        them), or the cells (neurites, somata)."""
        site = getattr(getattr(self.chain.physics.get("microscope"), "specimen", None), "target_site", "mitochondria")
        return {"mitochondria": ("mitochondria",), "free": ("beads",)}.get(site, ("cells",))

    # -- observation ------------------------------------------------------------------------
    def _features(self) -> np.ndarray:
        sec = self.last_section
        wear = float(sec.get("wear", self._initial_wear)) if sec else self._initial_wear
        f = sectioning_features(sec or None, self._norm(SECTIONING_KNOBS, self.setpoints["sectioning"]), wear,
                                measured_thickness_nm=self.last_measured)
        st = self.last_staining
        head = [float(np.clip(st.get(k, 0.0), 0.0, 1.0)) for k in ("label_intensity", "uniformity", "background")] if st else [0.0] * 3
        thick = SECTIONING_KNOBS[0].normalize(self.setpoints["sectioning"]["section_thickness_nm"], self.profiles["ultramicrotome"])
        f += head + self._norm(STAINING_KNOBS, self.setpoints["staining"]) + [thick]
        sc = self.last_scores

        def val(name: str) -> float:
            v = sc.get(name, math.nan)
            return float(v) if math.isfinite(v) else math.nan

        def ratio(v: float) -> float:
            return 0.0 if not math.isfinite(v) else float(max(v, 0.0) / (1.0 + max(v, 0.0)))

        frc = val("em_frc_resolution_nm")
        art = val("em_artifact_fraction")
        f += self._norm(IMAGING_KNOBS, self.setpoints["imaging"]) + [
            ratio(val("lm_cnr")), ratio(val("em_cnr")),
            0.0 if not math.isfinite(frc) else math.exp(-max(frc, 0.0) / 100.0),
            0.0 if not math.isfinite(art) else float(np.clip(art, 0.0, 1.0)),
            float(np.clip(self.last_reward, -1.0, 1.0)),
            min(1.0, self.n_cut / self.scenario.block_sections),
            1.0 - math.exp(-self.prep_time_h / 24.0),
        ]
        return np.asarray(f + self._readbacks(), np.float32)

    def _readbacks(self) -> list[float]:
        """:data:`READBACK_FEATURES`: instrument readbacks and the previous section's defect metrics (0 if unknown)."""
        sec, sp = self.last_section, self.setpoints["sectioning"]

        def offset(key: str, setpoint: str) -> float:
            if not sec or key not in sec:
                return 0.0
            return float(np.clip((float(sec[key]) - float(sp[setpoint])) / 10.0, -1.0, 1.0))

        sc = self.last_scores

        def metric(name: str, scale: float) -> float:
            v = float(sc.get(name, math.nan))
            return float(np.clip(v / scale, 0.0, 1.0)) if math.isfinite(v) else 0.0

        scope = self.chain.physics.get("microscope")
        dose = sum(getattr(scope, "_em_dose", {}).values()) if scope is not None else 0.0
        threshold = float(getattr(scope, "charge_threshold_e", 1.0) or 1.0)
        lm_ms = sum(getattr(scope, "_lm_exposure", {}).values()) if scope is not None else 0.0
        depth = float(sec.get("depth_nm", 0.0)) + float(sec.get("nominal_thickness_nm", 0.0)) if sec else 0.0
        return [
            offset("measured_specimen_temperature_c", "specimen_temperature_c"),
            offset("measured_knife_temperature_c", "knife_temperature_c"),
            min(1.0, self.chain.knife_cuts / 100.0),
            1.0 - math.exp(-depth / 2000.0),
            metric("em_knife_mark_index", 0.2), metric("em_chatter_index", 0.2), metric("em_crack_fraction", 0.2),
            metric("em_charging_fraction", 1.0),
            1.0 - math.exp(-dose / (4.0 * threshold)), 1.0 - math.exp(-lm_ms / 1000.0),
            self._saturated[0], self._saturated[1],
        ]

    def _obs(self) -> Any:
        feats = self._features()
        if self.observation == "scalar":
            return feats
        lm, em = self._images
        p = self.obs_image_px
        return {"features": feats, "lm": to_uint8(lm, p)[:, :, None], "em": to_uint8(em, p)[:, :, None]}

    def _summary(self) -> dict[str, Any]:
        def mean(xs: list[float]) -> float | None:
            xs = [x for x in xs if math.isfinite(x)]
            return float(np.mean(xs)) if xs else None

        return {
            "fused_score": mean(self.history["fused"]), "cnr": mean(self.history["em_cnr"]),
            "lm_cnr": mean(self.history["lm_cnr"]), "frc_resolution_nm": mean(self.history["frc"]),
            "prep_time_h": self.prep_time_h, "sections": self.n_cut, "failed_sections": self.n_failed,
            "failed_evaluations": self.n_eval_failed, "no_measurement_sections": self.n_no_measurement,
        }

    # -- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        opts = dict(options or {})
        unknown = sorted(set(opts) - {"setpoints", "specimen_seed", "noise_seed", "image_seed"})
        if unknown:
            raise ParameterError(f"unknown reset options {unknown}; known: setpoints, specimen_seed, noise_seed, image_seed")
        self._new_block(opts)
        self._tissue = self.chain._tissue()
        self.setpoints = {
            "sectioning": self._start(SECTIONING_KNOBS), "staining": self._start(STAINING_KNOBS), "imaging": self._start(IMAGING_KNOBS),
        }
        self._override_setpoints(opts.get("setpoints"))
        self.n_cut = self.fails = self.n_failed = self.n_eval_failed = self.n_no_measurement = 0
        self._saturated = (0.0, 0.0)
        self.prep_time_h = 0.0
        self.last_section: dict[str, Any] = {}
        self.last_staining: dict[str, Any] = {}
        self.last_scores: dict[str, float] = {}
        self.last_measured: float | None = None
        self.last_reward = 0.0
        self.previous: list[tuple[np.ndarray, np.ndarray, tuple[float, float] | None]] = []
        self.database = SampleDatabase()
        self.history: dict[str, list[float]] = {"fused": [], "em_cnr": [], "lm_cnr": [], "frc": []}
        info = {"setpoints": {g: dict(v) for g, v in self.setpoints.items()}, "prep_time_h": 0.0, "quality_summary": self._summary()}
        return self._obs(), info

    def _override_setpoints(self, requested: Mapping[str, Any] | None) -> None:
        """Start the block from ``requested`` setpoints (flat ``{knob name: value}``), clipped to
        the profile limits like any action; unknown names are refused, missing ones keep the draw."""
        if not requested:
            return
        knobs = {k.name: (group, k) for group, ks in (("sectioning", SECTIONING_KNOBS), ("staining", STAINING_KNOBS),
                                                      ("imaging", IMAGING_KNOBS)) for k in ks}
        unknown = sorted(set(requested) - set(knobs))
        if unknown:
            raise ParameterError(f"reset options 'setpoints': unknown setpoint(s) {unknown}; known: {sorted(knobs)}")
        for name, value in requested.items():
            if value is not None:
                group, knob = knobs[name]
                self.setpoints[group][name] = knob.clip(float(value), self.profiles[knob.device])

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        a = np.asarray(action, np.float64).reshape(-1)
        g = self.action_groups
        if float(a[g["stop"]][0]) > 0.5:
            info = {"reward_terms": {"stop": term(0.0)}, "stopped": True, "prep_time_h": self.prep_time_h,
                    "quality_summary": self._summary(), "evaluation_failed": False}
            return self._obs(), 0.0, True, False, info
        self.setpoints["sectioning"] = self._move(SECTIONING_KNOBS, self.setpoints["sectioning"], a[g["sectioning"]])
        self.setpoints["staining"] = self._move(STAINING_KNOBS, self.setpoints["staining"], a[g["staining"]])
        self.setpoints["imaging"] = self._move(IMAGING_KNOBS, self.setpoints["imaging"], a[g["imaging"]])
        sp_sec, sp_st, sp_im = self.setpoints["sectioning"], self.setpoints["staining"], self.setpoints["imaging"]
        section = self.chain.cut(sp_sec)
        self.n_cut += 1
        self.last_section = dict(section)
        self.last_measured = float(section.get("actual_thickness_nm", sp_sec["section_thickness_nm"])) + float(
            self.np_random.normal(0.0, self.scenario.noise.thickness_nm))
        window_mm = 1.0  # cutting window of the reference profile's start state
        cut_h = (window_mm / sp_sec["cutting_speed_mm_s"] + 0.1) / 3600.0
        self.prep_time_h += cut_h
        info: dict[str, Any] = {"section": dict(section), "evaluation_failed": False, "section_failed": False,
                                "no_measurement": False}
        terminated = False
        if not bool(section.get("ribbon_ok", True)):
            self.fails += 1
            self.n_failed += 1
            self._images = (None, None)
            self.last_staining, self.last_scores = {}, {}
            self._saturated = (0.0, 0.0)
            reward = self.failure_reward
            info.update(section_failed=True, reward_terms={"section_failed": term(self.failure_reward)}, scores={})
            terminated = self.fails >= self.failure_limit
        else:
            self.fails = 0
            stained = self.chain.stain(sp_st)
            self.last_staining = {k: stained.get(k, 0.0) for k in ("label_intensity", "uniformity", "background")}
            stain_h = (sp_st["time_min"] + round(sp_st["wash_cycles"]) * self.chain.wash_min) / 60.0
            lm = self.chain.image("LM", sp_im, self.image_size)
            em = self.chain.image("EM", sp_im, self.image_size)
            self._images = (lm, em)
            self._saturated = (float(np.mean(lm >= 65535)), float(np.mean(em >= 65535)))
            self.prep_time_h += stain_h + 2.0 * sp_im["exposure_ms"] / 3.6e6
            protocol = {
                "section_thickness_nm": sp_sec["section_thickness_nm"], "cutting_speed_mm_s": sp_sec["cutting_speed_mm_s"],
                "antibody_dilution": sp_st["dilution"], "incubation_min": sp_st["time_min"],
                "temperature_c": sp_st["temperature_c"], "wash_cycles": int(round(sp_st["wash_cycles"])),
                **sp_im,
            }
            scores, why = self._evaluate(lm, em, protocol)
            result = fused_reward(scores, self.weights) if scores is not None else None
            if (result is None or result.failed) and self._unmeasurable(scores):
                # no target structure with surroundings in the EM field: nothing to measure, not a failure
                self.n_no_measurement += 1
                reward = 0.0
                info.update(no_measurement=True, reward_terms={"no_measurement": term(0.0)})
            elif scores is None or result is None or result.failed or result.value is None:
                self.n_eval_failed += 1
                reward = self.failure_reward
                reason = why or (result.reason if result is not None else "")
                info.update(evaluation_failed=True, failure_reason=reason,
                            reward_terms=dict(result.reward_terms if result is not None else {}, evaluation_failed=term(self.failure_reward)))
            else:
                reward = float(result.value)
                info["reward_terms"] = result.reward_terms
                self.history["fused"].append(reward)
            self.last_scores = {k: v.value for k, v in scores.items()} if scores is not None else {}
            info["scores"] = scores.to_dict() if scores is not None else {}
            for key, name in (("em_cnr", "em_cnr"), ("lm_cnr", "lm_cnr"), ("frc", "em_frc_resolution_nm")):
                self.history[key].append(self.last_scores.get(name, math.nan))
            if scores is not None:
                try:
                    self.database.add(f"s{self.n_cut}", signature(self.last_scores))
                except EvaluationError:
                    pass
        self.last_reward = reward
        terminated = terminated or self.n_cut >= self.scenario.block_sections
        info.update(setpoints={k: dict(v) for k, v in self.setpoints.items()}, prep_time_h=self.prep_time_h,
                    quality_summary=self._summary(), stopped=False)
        return self._obs(), float(reward), bool(terminated), False, info

    def _render_images(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self._images[0] is not None:
            return self._images
        return super()._render_images()
