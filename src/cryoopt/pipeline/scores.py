"""``Score`` and ``Scores``: the pipeline's documented, serialisable result.

A :class:`Scores` is an immutable mapping ``name -> Score`` plus the
``pipeline_version`` that produced it. The campaign journal stores
:meth:`Scores.to_dict`; when :data:`PIPELINE_VERSION` changes, past trials can be
rescored from their stored images and compared like for like.

Every metric name the pipeline emits is listed in :data:`METRICS` with its unit and
meaning; :func:`score` builds a :class:`Score` from that table so units cannot drift.

Example:
    >>> s = Scores({"em_cnr": score("em_cnr", 4.2, uncertainty=0.1)})
    >>> s["em_cnr"].value, s["em_cnr"].unit
    (4.2, '1')
    >>> Scores.from_dict(s.to_dict()) == s
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cryoopt.exceptions import EvaluationError

__all__ = ["PIPELINE_VERSION", "METRICS", "Score", "Scores", "score"]

#: Bump when any metric definition, default or stage changes numbers.
PIPELINE_VERSION = "0.2.0"

#: name -> (unit, description). ``"1"`` means dimensionless.
METRICS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        # -- image quality (metrics.py) -------------------------------------
        "em_cnr": ("1", "EM contrast-to-noise ratio |mu_target - mu_background| / sigma_background, background 50-300 nm from the target structures"),
        "em_snr": ("1", "EM signal-to-noise ratio mu_target / sigma_background"),
        "lm_cnr": ("1", "LM label contrast-to-noise ratio |mu_label - mu_background| / sigma_background"),
        "lm_snr": ("1", "LM label signal-to-noise ratio mu_label / sigma_background"),
        "em_frc_resolution_nm": ("nm", "EM FRC resolution (1/7 threshold, single image checkerboard split)"),
        "em_frc_resolution_halfbit_nm": ("nm", "EM FRC resolution (half-bit threshold, van Heel & Schatz 2005)"),
        "lm_frc_resolution_nm": ("nm", "LM FRC resolution (1/7 threshold, single image checkerboard split)"),
        "em_sharpness": ("1", "EM sharpness 1 - blur_effect (Crete-Roffet et al. 2007), 1 = sharp"),
        "lm_sharpness": ("1", "LM sharpness 1 - blur_effect (Crete-Roffet et al. 2007), 1 = sharp"),
        "em_artifact_fraction": ("1", "fraction of EM field covered by charging, ice or section defects"),
        "em_charging_fraction": ("1", "fraction of EM field flagged as charging"),
        "em_ice_fraction": ("1", "fraction of EM field flagged as ice contamination"),
        "em_crack_fraction": ("1", "fraction of EM field flagged as holes/cracks in the section"),
        "em_knife_mark_index": ("1", "relative power of streaks along the cutting direction (0 = none)"),
        "em_chatter_index": ("1", "relative power of the strongest periodic modulation across the cut (0 = none)"),
        # -- parser ---------------------------------------------------------
        "n_nuclei": ("count", "number of segmented nuclei"),
        "n_mitochondria": ("count", "number of segmented mitochondria"),
        "n_targets": ("count", "number of segmented labelled targets (LM)"),
        "membrane_fraction": ("1", "fraction of EM field segmented as membrane"),
        "em_target_fraction": ("1", "fraction of EM field covered by the target structures (segmented or given)"),
        "label_in_target_fraction": ("1", "fraction of label objects contained in a target structure"),
        # -- registration ---------------------------------------------------
        "registration_tre_px": ("px", "expected RMS target registration error over the EM field, EM pixels"),
        "registration_tre_nm": ("nm", "expected RMS target registration error over the EM field"),
        "registration_fre_px": ("px", "RMS fiducial (matched structure centroid) residual, EM pixels"),
        "registration_n_matches": ("count", "number of structure centroids matched LM to EM"),
        "registration_verified": ("1", "1 when the images verified the LM-EM registration, 0 when the prior (stage) was used"),
        # -- evaluators -----------------------------------------------------
        "logic": ("1", "logic consistency: label-vs-target F1 times section-to-section agreement, [0, 1]"),
        "logic_precision": ("1", "fraction of label pixels on target structures"),
        "logic_recall": ("1", "fraction of target-structure pixels carrying label"),
        "logic_agreement": ("1", "agreement of label F1 and label masks across serial sections, [0, 1]"),
        "meta": ("1", "execution score: agreement of the done protocol with the simulator's optimum, [0, 1]"),
        "execution_time_ratio": ("1", "done incubation time / simulator-optimal time"),
        "execution_uniformity": ("1", "simulator-predicted staining uniformity for the done protocol, [0, 1]"),
        "novelty": ("1", "1 - exp(-d/scale), d = standardised distance to the nearest database sample, [0, 1]"),
        "novelty_distance": ("1", "standardised Euclidean distance to the nearest database signature"),
        "impact": ("1", "forecast downstream EM quality (model units, >= 0)"),
        "repro": ("1", "reproducibility 1 / (1 + CV) of the score under parameter/operator variation, (0, 1]"),
        "repro_std": ("1", "standard deviation of the score under parameter/operator variation"),
        "d_repro": ("1", "reproducibility change vs the campaign baseline, [-1, 1]"),
    }
)


@dataclass(frozen=True)
class Score:
    """One named number: ``value`` in ``unit``, with an optional 1-sigma ``uncertainty``.

    ``value`` may be NaN: that marks the metric as failed (the reward refuses it).
    """

    value: float
    unit: str
    uncertainty: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", float(self.value))
        if self.uncertainty is not None:
            u = float(self.uncertainty)
            if not (u >= 0 or math.isnan(u)):
                raise EvaluationError(f"uncertainty must be >= 0, got {u}")
            object.__setattr__(self, "uncertainty", u)

    @property
    def failed(self) -> bool:
        """True when the value is NaN or infinite."""
        return not math.isfinite(self.value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value if math.isfinite(self.value) else None,
            "unit": self.unit,
            "uncertainty": self.uncertainty if self.uncertainty is None or math.isfinite(self.uncertainty) else None,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Score:
        value = data.get("value")
        return cls(
            value=math.nan if value is None else float(value),
            unit=str(data["unit"]),
            uncertainty=data.get("uncertainty"),
            description=str(data.get("description", "")),
        )

    def __eq__(self, other: object) -> bool:  # NaN == NaN for round trips
        if not isinstance(other, Score):
            return NotImplemented
        same_value = self.value == other.value or (math.isnan(self.value) and math.isnan(other.value))
        return (
            same_value
            and self.unit == other.unit
            and self.uncertainty == other.uncertainty
            and self.description == other.description
        )

    __hash__ = None  # type: ignore[assignment]


def score(name: str, value: float, *, uncertainty: float | None = None) -> Score:
    """Build the :class:`Score` for a documented metric ``name`` (unit from :data:`METRICS`)."""
    try:
        unit, description = METRICS[name]
    except KeyError:
        raise EvaluationError(
            f"metric {name!r} is not documented in cryoopt.pipeline.scores.METRICS; "
            "construct Score(value, unit, description=...) directly for custom metrics"
        ) from None
    return Score(value, unit, uncertainty, description)


@dataclass(frozen=True)
class Scores(Mapping[str, Score]):
    """Immutable mapping of metric name -> :class:`Score`, tagged with the pipeline version."""

    _scores: Mapping[str, Score] = field(default_factory=dict)
    pipeline_version: str = PIPELINE_VERSION

    def __post_init__(self) -> None:
        items = dict(self._scores)
        for name, s in items.items():
            if not isinstance(s, Score):
                raise EvaluationError(f"Scores[{name!r}] must be a Score, got {type(s).__name__}")
        object.__setattr__(self, "_scores", MappingProxyType(items))

    def __getitem__(self, name: str) -> Score:
        try:
            return self._scores[name]
        except KeyError:
            raise KeyError(f"no score {name!r}; available: {', '.join(sorted(self._scores)) or '(none)'}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._scores)

    def __len__(self) -> int:
        return len(self._scores)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scores):
            return NotImplemented
        return self.pipeline_version == other.pipeline_version and dict(self._scores) == dict(other._scores)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v.value:.4g} {v.unit}" for k, v in self._scores.items())
        return f"Scores({body}; pipeline_version={self.pipeline_version!r})"

    @property
    def failed(self) -> list[str]:
        """Names of scores whose value is NaN/inf."""
        return [k for k, v in self._scores.items() if v.failed]

    def floats(self) -> dict[str, float]:
        """``{name: value}`` as plain floats."""
        return {k: v.value for k, v in self._scores.items()}

    def merge(self, other: Mapping[str, Score]) -> Scores:
        """A new Scores with ``other``'s entries added (a repeated name is an error)."""
        clash = set(self._scores) & set(other)
        if clash:
            raise EvaluationError(f"scores {sorted(clash)} would be overwritten; rename one of them")
        return Scores({**self._scores, **dict(other)}, pipeline_version=self.pipeline_version)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-safe dict (NaN stored as None)."""
        return {
            "pipeline_version": self.pipeline_version,
            "scores": {k: v.to_dict() for k, v in self._scores.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scores:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                {k: Score.from_dict(v) for k, v in data["scores"].items()},
                pipeline_version=str(data["pipeline_version"]),
            )
        except (KeyError, TypeError) as exc:
            raise EvaluationError(f"not a serialised Scores dict ({exc}); expected keys 'pipeline_version', 'scores'") from exc
