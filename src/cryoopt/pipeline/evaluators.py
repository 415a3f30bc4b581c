"""Stage 5, the evaluators: logic, execution (meta), novelty, impact, reproducibility.

An :class:`Evaluator` has one method, ``evaluate(evidence) -> Scores``; the five
standard ones are registered by name in :data:`evaluators`. Resources an evaluator
needs (a simulator callable, the sample database, a fitted model) go to its
constructor, so the pipeline never imports the simulator or the campaign.

==================  ==================================  ============================
name                class                               scores
==================  ==================================  ============================
``logic``           :class:`LogicConsistencyEvaluator`  logic, logic_precision, ...
``execution``       :class:`ExecutionEvaluator`         meta, execution_time_ratio, ...
``novelty``         :class:`NoveltyEvaluator`           novelty, novelty_distance
``impact``          :class:`ImpactForecaster`           impact (with uncertainty)
``reproducibility`` :class:`ReproducibilityEvaluator`   repro, repro_std, d_repro
==================  ==================================  ============================
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cryoopt.exceptions import EvaluationError
from cryoopt.pipeline.scores import Scores, score
from cryoopt.registry import Registry

__all__ = [
    "SIGNATURE_METRICS",
    "Evaluator",
    "Evidence",
    "ExecutionEvaluator",
    "ImageQualityIndex",
    "ImpactForecaster",
    "LogicConsistencyEvaluator",
    "NoveltyEvaluator",
    "ReproducibilityEvaluator",
    "SampleDatabase",
    "evaluators",
    "signature",
]

#: Metrics that form a sample's image signature (novelty), in this order.
SIGNATURE_METRICS: tuple[str, ...] = (
    "em_cnr", "lm_cnr", "em_sharpness", "em_artifact_fraction", "membrane_fraction",
    "n_nuclei", "n_mitochondria", "n_targets",
)


@dataclass(frozen=True)
class Evidence:
    """What the evaluators see of one section.

    Attributes:
        label_masks: label (LM, on the EM grid) per serial section, current last.
        target_masks: target-structure mask per serial section, current last.
        metrics: the section's metric values by name (see ``METRICS``).
        protocol: the protocol parameters that produced it.
    """

    label_masks: Sequence[np.ndarray] = ()
    target_masks: Sequence[np.ndarray] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)
    protocol: Mapping[str, Any] = field(default_factory=dict)


class Evaluator(ABC):
    """One evaluation layer: ``evaluate`` validates nothing the pipeline has not; it
    reads the :class:`Evidence` it needs and raises :class:`EvaluationError` if it
    is missing."""

    @abstractmethod
    def evaluate(self, evidence: Evidence) -> Scores:
        """Scores of this layer for one section."""


#: Evaluator classes by name.
evaluators: Registry = Registry("evaluator")


def signature(metrics: Mapping[str, float], names: Sequence[str] = SIGNATURE_METRICS) -> np.ndarray:
    """A sample's image signature: the vector of ``names`` metrics (missing -> error)."""
    missing = [n for n in names if n not in metrics]
    if missing:
        raise EvaluationError(f"signature needs metrics {missing}; run the metrics stage first")
    v = np.array([float(getattr(metrics[n], "value", metrics[n])) for n in names])
    if not np.all(np.isfinite(v)):
        raise EvaluationError(f"signature has non-finite entries {dict(zip(names, v))}")
    return v


@evaluators.register("logic")
class LogicConsistencyEvaluator(Evaluator):
    """Is the label where its labelled sites are, absent elsewhere, across sections?

    ``T`` is where the label belongs: the labelled sites, grown by one LM pixel (the finest
    the label can be placed). The pipeline gives the known sites when it is told them
    (``EvaluationContext.label_target_mask``, e.g. the simulator's) and otherwise estimates the
    same sites from the segmented target structures (``EvaluationContext.label_sites``), so
    the score means the same with and without ground truth.

    Per section ``s``: precision ``P_s = |L & T| / |L|`` (label on targets),
    recall ``R_s = |L & T| / |T|``, ``F1_s``. Agreement between consecutive sections
    is ``1 - |F1_s - F1_{s-1}|`` averaged with the Dice overlap of their label masks
    (sections assumed registered). ``logic = mean_s F1_s * agreement``; with one
    section the agreement is 1. An empty label and empty target give F1 = 1 (label
    absent where targets are absent); an empty label with targets present gives 0.
    """

    def evaluate(self, evidence: Evidence) -> Scores:
        ls, ts = list(evidence.label_masks), list(evidence.target_masks)
        if not ls or len(ls) != len(ts):
            raise EvaluationError(f"logic needs label and target masks per section; got {len(ls)} and {len(ts)}")
        p_all, r_all, f_all = [], [], []
        for lab, tgt in zip(ls, ts):
            lab, tgt = np.asarray(lab, bool), np.asarray(tgt, bool)
            if lab.shape != tgt.shape:
                raise EvaluationError(f"label {lab.shape} and target {tgt.shape} masks differ in shape")
            inter = np.count_nonzero(lab & tgt)
            nl, nt = np.count_nonzero(lab), np.count_nonzero(tgt)
            p = inter / nl if nl else (1.0 if nt == 0 else 0.0)
            r = inter / nt if nt else (1.0 if nl == 0 else 0.0)
            f = 2 * p * r / (p + r) if p + r > 0 else 0.0
            p_all.append(p)
            r_all.append(r)
            f_all.append(f)
        agree = []
        for s in range(1, len(ls)):
            a, b = np.asarray(ls[s - 1], bool), np.asarray(ls[s], bool)
            dice = 1.0 if a.shape != b.shape else (2 * np.count_nonzero(a & b) / max(1, a.sum() + b.sum()) if (a.any() or b.any()) else 1.0)
            agree.append(0.5 * (1 - abs(f_all[s] - f_all[s - 1])) + 0.5 * dice)
        agreement = float(np.mean(agree)) if agree else 1.0
        return Scores(
            {
                "logic": score("logic", float(np.mean(f_all)) * agreement),
                "logic_precision": score("logic_precision", p_all[-1]),
                "logic_recall": score("logic_recall", r_all[-1]),
                "logic_agreement": score("logic_agreement", agreement),
            }
        )


@evaluators.register("execution")
class ExecutionEvaluator(Evaluator):
    """What the simulator predicts for this protocol versus what was done (the ``meta`` term).

    Args:
        predictor: ``protocol -> {"optimal_time_min": t_opt, "uniformity": u}``, e.g. a
            wrapper around the staining diffusion simulator (not imported here).
        time_key: protocol key of the done incubation time (minutes).
        log_tolerance: width of the time penalty in natural-log units.

    ``meta = u * exp(-ln(t / t_opt)^2 / (2 * log_tolerance^2))`` in [0, 1].
    """

    def __init__(self, predictor: Callable[[Mapping[str, Any]], Mapping[str, float]], *, time_key: str = "incubation_min", log_tolerance: float = 0.5) -> None:
        self.predictor = predictor
        self.time_key = time_key
        self.log_tolerance = log_tolerance

    def evaluate(self, evidence: Evidence) -> Scores:
        if self.time_key not in evidence.protocol:
            raise EvaluationError(f"protocol has no {self.time_key!r}; pass the done incubation time")
        t = float(evidence.protocol[self.time_key])
        pred = self.predictor(evidence.protocol)
        t_opt, u = float(pred["optimal_time_min"]), float(pred["uniformity"])
        if not (t > 0 and t_opt > 0 and math.isfinite(u)):
            raise EvaluationError(f"need positive times and a finite uniformity; got t={t}, t_opt={t_opt}, u={u}")
        u = min(max(u, 0.0), 1.0)
        meta = u * math.exp(-math.log(t / t_opt) ** 2 / (2 * self.log_tolerance**2))
        return Scores(
            {
                "meta": score("meta", meta),
                "execution_time_ratio": score("execution_time_ratio", t / t_opt),
                "execution_uniformity": score("execution_uniformity", u),
            }
        )


class SampleDatabase:
    """The campaign's samples as image signatures (small feature vectors).

    Distances are Euclidean after standardising each feature by ``scale`` (default:
    the database's per-feature standard deviation, 1 where it is 0).
    """

    def __init__(self, names: Sequence[str] = SIGNATURE_METRICS, *, scale: Sequence[float] | None = None) -> None:
        self.names = tuple(names)
        self.scale = None if scale is None else np.asarray(scale, float)
        self._ids: list[str] = []
        self._rows: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, sample_id: str, sig: np.ndarray | Mapping[str, float]) -> None:
        v = signature(sig, self.names) if isinstance(sig, Mapping) else np.asarray(sig, float)
        if v.shape != (len(self.names),) or not np.all(np.isfinite(v)):
            raise EvaluationError(f"signature must be {len(self.names)} finite numbers, got {v}")
        if sample_id in self._ids:
            raise EvaluationError(f"sample {sample_id!r} is already in the database")
        self._ids.append(str(sample_id))
        self._rows.append(v)

    def nearest(self, sig: np.ndarray) -> tuple[str, float]:
        """(id, standardised distance) of the closest stored sample."""
        if not self._ids:
            raise EvaluationError("the sample database is empty")
        x = np.array(self._rows)
        scale = self.scale if self.scale is not None else x.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        d = np.sqrt((((x - np.asarray(sig, float)) / scale) ** 2).sum(axis=1))
        k = int(np.argmin(d))
        return self._ids[k], float(d[k])

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "scale": None if self.scale is None else self.scale.tolist(), "ids": list(self._ids), "rows": [r.tolist() for r in self._rows]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SampleDatabase:
        db = cls(data["names"], scale=data.get("scale"))
        for i, r in zip(data["ids"], data["rows"]):
            db.add(i, np.asarray(r, float))
        return db


@evaluators.register("novelty")
class NoveltyEvaluator(Evaluator):
    """``novelty = 1 - exp(-d / length)``, ``d`` the standardised distance of this sample's
    signature to the nearest in ``database``; 1 for an empty database."""

    def __init__(self, database: SampleDatabase, *, length: float = 1.0) -> None:
        self.database = database
        self.length = length

    def evaluate(self, evidence: Evidence) -> Scores:
        sig = signature(evidence.metrics, self.database.names)
        if len(self.database) == 0:
            d = math.inf
        else:
            _, d = self.database.nearest(sig)
        nov = 1.0 if math.isinf(d) else 1.0 - math.exp(-d / self.length)
        return Scores({"novelty": score("novelty", nov), "novelty_distance": score("novelty_distance", d if math.isfinite(d) else math.nan)})


@evaluators.register("impact")
class ImpactForecaster(Evaluator):
    """Forecast of downstream EM quality from preservation and contrast metrics.

    Bayesian linear regression (Gaussian prior on the weights, Gaussian noise) with
    the prior and noise precisions set by evidence maximisation (MacKay 1992;
    Bishop 2006, *PRML* sections 3.3 and 3.5.2, the method of
    ``sklearn.linear_model.BayesianRidge``), fitted on the campaign history. The
    predictive standard deviation is the score's uncertainty. Predictions are
    clipped at 0 (impact enters the reward as ``log(1 + impact)``).
    """

    def __init__(self, features: Sequence[str] = ("em_cnr", "em_frc_resolution_nm", "em_artifact_fraction", "em_sharpness")) -> None:
        self.features = tuple(features)
        self._fit: tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray, float] | None = None

    def fit(self, history: Sequence[Mapping[str, float]], quality: Sequence[float], *, n_iter: int = 100) -> ImpactForecaster:
        """Fit on past sections' metrics and their measured downstream quality."""
        x = np.array([signature(h, self.features) for h in history], float)
        y = np.asarray(quality, float)
        if len(x) < 3 or len(x) != len(y) or not np.all(np.isfinite(y)):
            raise EvaluationError(f"need >= 3 finite history rows with one quality each; got {len(x)} and {len(y)}")
        mu, sd = x.mean(0), np.where(x.std(0) > 0, x.std(0), 1.0)
        z = np.column_stack([np.ones(len(x)), (x - mu) / sd])
        ym = float(y.mean())
        t = y - ym
        alpha, beta = 1.0, 1.0 / max(float(t.var()), 1e-12)
        eig = np.linalg.eigvalsh(z.T @ z)
        for _ in range(n_iter):
            a = alpha * np.eye(z.shape[1]) + beta * z.T @ z
            m = beta * np.linalg.solve(a, z.T @ t)
            gamma = float(np.sum(beta * eig / (alpha + beta * eig)))
            alpha_new = gamma / max(float(m @ m), 1e-12)
            beta_new = max(len(t) - gamma, 1e-6) / max(float(np.sum((t - z @ m) ** 2)), 1e-12)
            done = abs(alpha_new - alpha) < 1e-6 * alpha and abs(beta_new - beta) < 1e-6 * beta
            alpha, beta = alpha_new, beta_new
            if done:
                break
        a = alpha * np.eye(z.shape[1]) + beta * z.T @ z
        cov = np.linalg.inv(a)
        m = beta * cov @ z.T @ t
        self._fit = (mu, sd, m, ym, cov, beta)
        return self

    def predict(self, metrics: Mapping[str, float]) -> tuple[float, float]:
        """(mean, standard deviation) of the forecast quality."""
        if self._fit is None:
            raise EvaluationError("ImpactForecaster is not fitted; call fit(history, quality) first")
        mu, sd, m, ym, cov, beta = self._fit
        z = np.concatenate([[1.0], (signature(metrics, self.features) - mu) / sd])
        return float(ym + z @ m), float(math.sqrt(1.0 / beta + z @ cov @ z))

    def evaluate(self, evidence: Evidence) -> Scores:
        mean, std = self.predict(evidence.metrics)
        return Scores({"impact": score("impact", max(0.0, mean), uncertainty=std)})


@evaluators.register("image_quality")
class ImageQualityIndex(Evaluator):
    """A fixed forecast of downstream quality from the section's own image metrics (``impact``).

    For campaigns with no rated history to fit :class:`ImpactForecaster` on (every
    simulated one, and a real one's first blocks):
    ``impact = scale * s(em_cnr) * sqrt(s(lm_cnr)) * r * a`` with the saturating
    ``s(c) = c / (c + cnr_half)`` (half credit at ``cnr_half``, default 3, below the Rose
    criterion of 5 for reliably seeing a structure; the LM factor enters as a square root:
    the LM's job in CLEM is to find the label, which the ``logic`` term scores, and the
    index forecasts the EM's value), ``r = res_half / (res_half +
    em_frc_resolution_nm)`` (half credit at ``res_half``, default 100 nm, the size of a
    synaptic vesicle cluster or a mitochondrial crista spacing a CLEM study resolves) and
    ``a = 1 / (1 + em_artifact_fraction / artifact_half)`` (half credit when
    ``artifact_half`` of the field, default 10 %, is lost to charging, ice or cracks:
    artifacts tend to sit on the structures one came to see). The product is in [0, 1):
    both modalities must show their structure, resolved and free of artifacts. ``scale``
    (default ``e - 1``) puts the reward's ``log(1 + impact)`` on [0, 1), the range of the
    other terms, so that the fusion weights compare like with like. An infinite
    resolution (FRC below threshold at every frequency: nothing resolved) gives 0; a
    missing or NaN metric raises (a failed term).
    """

    features: tuple[str, ...] = ("em_cnr", "lm_cnr", "em_frc_resolution_nm", "em_artifact_fraction")

    def __init__(self, *, cnr_half: float = 3.0, res_half_nm: float = 100.0, artifact_half: float = 0.1,
                 scale: float = math.e - 1.0) -> None:
        if not (cnr_half > 0 and res_half_nm > 0 and artifact_half > 0 and scale > 0):
            raise EvaluationError("cnr_half, res_half_nm, artifact_half and scale must be positive, "
                                  f"got {cnr_half}, {res_half_nm}, {artifact_half}, {scale}")
        self.cnr_half, self.res_half_nm, self.artifact_half = float(cnr_half), float(res_half_nm), float(artifact_half)
        self.scale = float(scale)

    def evaluate(self, evidence: Evidence) -> Scores:
        missing = [n for n in self.features if n not in evidence.metrics]
        if missing:
            raise EvaluationError(f"image quality needs metrics {missing}; run the metrics stage first")
        em_cnr, lm_cnr, res, art = (float(getattr(evidence.metrics[n], "value", evidence.metrics[n])) for n in self.features)
        if any(math.isnan(v) for v in (em_cnr, lm_cnr, res, art)) or math.isinf(em_cnr) or math.isinf(lm_cnr):
            raise EvaluationError(f"image quality needs finite {self.features}, got {(em_cnr, lm_cnr, res, art)}")
        em_cnr, lm_cnr, res, art = max(em_cnr, 0.0), max(lm_cnr, 0.0), max(res, 0.0), min(max(art, 0.0), 1.0)
        impact = (em_cnr / (em_cnr + self.cnr_half)) * math.sqrt(lm_cnr / (lm_cnr + self.cnr_half))
        impact *= self.res_half_nm / (self.res_half_nm + res) / (1.0 + art / self.artifact_half)
        return Scores({"impact": score("impact", self.scale * impact)})


@evaluators.register("reproducibility")
class ReproducibilityEvaluator(Evaluator):
    """Expected variation of a score under the known variation of parameters and operators.

    Either from replicates (``evidence.metrics`` entries named in ``replicate_keys``),
    or by perturbation: ``score_fn`` evaluated at ``n_samples`` protocols drawn with
    independent Gaussian noise of standard deviation ``variation[param]`` (seeded).
    ``repro = 1 / (1 + CV)`` with ``CV = std / |mean|``; ``d_repro = repro - baseline``
    (the campaign's current reference reproducibility), in [-1, 1].
    """

    def __init__(
        self,
        score_fn: Callable[[Mapping[str, Any]], float] | None = None,
        variation: Mapping[str, float] | None = None,
        *,
        n_samples: int = 32,
        baseline: float = 0.0,
        replicate_keys: Sequence[str] = (),
        seed: int = 0,
    ) -> None:
        if score_fn is None and not replicate_keys:
            raise EvaluationError("pass score_fn and variation (perturbation) or replicate_keys (replicates)")
        self.score_fn, self.variation = score_fn, dict(variation or {})
        self.n_samples, self.baseline, self.replicate_keys, self.seed = n_samples, baseline, tuple(replicate_keys), seed

    def evaluate(self, evidence: Evidence) -> Scores:
        if self.replicate_keys:
            vals = np.array([float(evidence.metrics[k]) for k in self.replicate_keys])
        else:
            rng = np.random.default_rng(self.seed)
            vals = []
            for _ in range(self.n_samples):
                p = dict(evidence.protocol)
                for k, s in self.variation.items():
                    if k not in p:
                        raise EvaluationError(f"variation names {k!r}, which the protocol lacks")
                    p[k] = float(p[k]) + s * rng.normal()
                vals.append(float(self.score_fn(p)))  # type: ignore[misc]
            vals = np.array(vals)
        if vals.size < 2 or not np.all(np.isfinite(vals)):
            raise EvaluationError(f"reproducibility needs >= 2 finite score samples, got {vals}")
        std = float(vals.std(ddof=1))
        mean = float(vals.mean())
        cv = std / abs(mean) if mean != 0 else (0.0 if std == 0 else math.inf)
        repro = 1.0 / (1.0 + cv)
        return Scores(
            {
                "repro": score("repro", repro),
                "repro_std": score("repro_std", std),
                "d_repro": score("d_repro", float(np.clip(repro - self.baseline, -1.0, 1.0))),
            }
        )
