"""Evaluation pipeline: images of a section in, documented scores out.

Stages: :mod:`~cryoopt.pipeline.preprocess` -> :mod:`~cryoopt.pipeline.parser` ->
:mod:`~cryoopt.pipeline.metrics` -> :mod:`~cryoopt.pipeline.registration` ->
:mod:`~cryoopt.pipeline.evaluators`, run by :class:`Pipeline`. Results are
:class:`Scores` (see :data:`METRICS` for every name and unit).

Segmentation works in physical units (:mod:`~cryoopt.pipeline.segmentation`, the
classical :class:`HierarchicalSegmenter`; :mod:`~cryoopt.pipeline.learned`, a U-Net
trained on simulator output at first use). :mod:`~cryoopt.pipeline.screening` reads a
low-magnification overview of a ribbon and ranks its sections for EM.
"""

from cryoopt.pipeline.evaluators import (
    Evaluator,
    Evidence,
    ExecutionEvaluator,
    ImageQualityIndex,
    ImpactForecaster,
    LogicConsistencyEvaluator,
    NoveltyEvaluator,
    ReproducibilityEvaluator,
    SampleDatabase,
    evaluators,
    signature,
)
from cryoopt.pipeline.metrics import (
    artifact_fraction,
    contrast_to_noise_ratio,
    fourier_ring_correlation,
    frc_resolution,
    section_defects,
    sharpness,
    signal_to_noise_ratio,
)
from cryoopt.pipeline.parser import ParseResult, Segmenter, parse_section, segmenters, structure_graph
from cryoopt.pipeline.pipeline import EvaluationContext, Pipeline, SectionState, evaluate_section
from cryoopt.pipeline.preprocess import Restorer, restorers
from cryoopt.pipeline.registration import RegistrationError, RegistrationResult, register_lm_em
from cryoopt.pipeline.scores import METRICS, PIPELINE_VERSION, Score, Scores, score
from cryoopt.pipeline.screening import CONTEXT_FEATURES, ScreeningResult, screen_ribbon, screening_context
from cryoopt.pipeline.segmentation import HierarchicalSegmenter, SectionSegmenter, Segmentation

__all__ = [
    "CONTEXT_FEATURES",
    "HierarchicalSegmenter",
    "METRICS",
    "PIPELINE_VERSION",
    "EvaluationContext",
    "Evaluator",
    "Evidence",
    "ExecutionEvaluator",
    "ImageQualityIndex",
    "ImpactForecaster",
    "LogicConsistencyEvaluator",
    "NoveltyEvaluator",
    "ParseResult",
    "Pipeline",
    "RegistrationError",
    "RegistrationResult",
    "ReproducibilityEvaluator",
    "Restorer",
    "SampleDatabase",
    "Score",
    "Scores",
    "ScreeningResult",
    "SectionSegmenter",
    "SectionState",
    "Segmentation",
    "Segmenter",
    "artifact_fraction",
    "contrast_to_noise_ratio",
    "evaluate_section",
    "evaluators",
    "fourier_ring_correlation",
    "frc_resolution",
    "parse_section",
    "register_lm_em",
    "restorers",
    "score",
    "screen_ribbon",
    "screening_context",
    "section_defects",
    "sharpness",
    "signal_to_noise_ratio",
    "segmenters",
    "signature",
    "structure_graph",
]
