"""Dogfooding: choose the artifact generator's settings with cryoopt's own optimizer.

The counterpart of the reference work's RL validation loop: each trial simulates a
training set with candidate generator settings (beam current, voltage, charging
strength, ice coverage, ice fractal dimension ``D`` and radius ``r``), trains a
fresh network briefly, and returns its SSIM on a *fixed* validation set drawn from
the reference artifact distribution (:class:`ArtifactSettings` defaults, or the
caller's); :func:`cryoopt.optimize` (Bayesian optimisation by default) maximises it.
The test split is never seen during tuning.

:func:`tuned_vs_default` is the check that tuning pays: it trains the network on
tuned and on default generator settings with the same budget (images, steps,
seed) and scores both on the same held-out test split of the reference
distribution.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryoopt.restore.artifact import DEFAULT_MODEL, DEFAULT_TRAINING, evaluate_restoration, train_artifact_model
from cryoopt.restore.data import ArtifactSettings, make_artifact_dataset
from cryoopt.restore.evaluate import summarize
from cryoopt.restore.train import ImagePairs, TrainConfig, predict, train
from cryoopt.restore.unet import UNetConfig, build_unet

__all__ = ["GENERATOR_SPACE", "TuneResult", "tune_generator", "tuned_vs_default"]

#: The tuned generator settings and their ranges (names are ArtifactSettings fields).
GENERATOR_SPACE: dict[str, dict[str, Any]] = {
    "beam_current_pa": {"type": "float", "low": 10.0, "high": 1000.0, "log": True},
    "voltage_kv": {"type": "float", "low": 1.0, "high": 30.0, "log": True},
    "charging_strength": {"type": "float", "low": 0.0, "high": 4.0},
    "ice_coverage": {"type": "float", "low": 0.0, "high": 0.3},
    "ice_fractal_dimension": {"type": "float", "low": 1.40, "high": 1.68},
    "ice_radius_nm": {"type": "float", "low": 50.0, "high": 2000.0, "log": True},
}


@dataclass
class TuneResult:
    """Best generator settings, their validation SSIM, and the optimizer's full result."""

    best_settings: ArtifactSettings
    best_val_ssim: float
    result: Any
    val_pairs: ImagePairs


def tune_generator(
    *,
    budget: int = 10,
    seed: int = 0,
    strategy: str = "bo",
    reference: ArtifactSettings | None = None,
    n_images: int = 60,
    n_val: int = 40,
    shape: tuple[int, int] = (64, 64),
    model_config: UNetConfig = DEFAULT_MODEL,
    config: TrainConfig | None = None,
    space: dict[str, dict[str, Any]] | None = None,
) -> TuneResult:
    """Maximise validation SSIM over the generator settings with :func:`cryoopt.optimize`.

    Args:
        budget: trials (each simulates ``n_images`` and trains for ``config.steps``).
        reference: the artifact distribution the validation set is drawn from.
        n_val: images simulated for the fixed validation set (its val split is used).
        space: search space (default :data:`GENERATOR_SPACE`).
    """
    from cryoopt.optim import optimize

    reference = reference or ArtifactSettings()
    cfg = config or TrainConfig(steps=80, batch_size=8, crop_px=48, lr=3e-3)
    # fixed validation images: reference distribution, a seed no training set uses
    val = make_artifact_dataset(max(n_val, 3), settings=reference, shape=shape, seed=10_000 + seed,
                                fractions=(0.01, 0.98, 0.01)).val

    def objective(params: dict[str, Any]) -> float:
        settings = reference.model_copy(update=dict(params))
        settings = ArtifactSettings.model_validate(settings.model_dump())
        data = make_artifact_dataset(n_images, settings=settings, shape=shape, seed=seed)
        model = build_unet(model_config, seed=seed)
        res = train(model, data.train, val, config=cfg.model_copy(update={"seed": seed, "val_every": 0}))
        return float(res.final["val_ssim"])

    result = optimize(objective, space or GENERATOR_SPACE, budget=budget, seed=seed, strategy=strategy, progress=False)
    if result.best is None:
        raise RuntimeError("every tuning trial failed; see result.history")  # pragma: no cover
    best = ArtifactSettings.model_validate(reference.model_copy(update=dict(result.best.params)).model_dump())
    return TuneResult(best_settings=best, best_val_ssim=float(result.best.value), result=result, val_pairs=val)


def tuned_vs_default(
    seeds: Sequence[int] = (0, 1, 2),
    *,
    tuned: ArtifactSettings | TuneResult,
    reference: ArtifactSettings | None = None,
    n_images: int = 200,
    shape: tuple[int, int] = (96, 96),
    model_config: UNetConfig = DEFAULT_MODEL,
    config: TrainConfig = DEFAULT_TRAINING,
    log: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Train on ``tuned`` and on ``reference`` (default) generator settings, same budget; score on one test split.

    Per seed both networks get ``n_images`` simulated pairs (70 % for training),
    the same initial weights and ``config``; both are scored (PSNR, SSIM, median FRC
    px) on the test split of the *reference* distribution for that seed - disjoint
    specimens, never seen by the tuner or either training run.

    Returns ``{"per_seed": [...], "default": {metric: summary}, "tuned": {...},
    "tuned_minus_default": {...}}`` (summaries as :func:`summarize`; FRC difference
    is ``default - tuned`` so a positive number means the tuned run resolves finer).
    """
    reference = reference or ArtifactSettings()
    settings = tuned.best_settings if isinstance(tuned, TuneResult) else tuned
    per_seed = []
    for seed in seeds:
        test = make_artifact_dataset(n_images, settings=reference, shape=shape, seed=seed).test
        row: dict[str, Any] = {"seed": seed}
        for name, st in (("default", reference), ("tuned", settings)):
            t0 = time.perf_counter()
            run = train_artifact_model(settings=st, n_images=n_images, shape=shape, model_config=model_config, config=config, seed=seed)
            row[name] = {**evaluate_restoration(lambda x, m=run.model: predict(m, x), test), "train_seconds": time.perf_counter() - t0}
        per_seed.append(row)
        if log:
            log(f"seed {seed}: " + ", ".join(f"{k} psnr {row[k]['psnr_db']:.2f} ssim {row[k]['ssim']:.3f} frc {row[k]['frc_px_median']:.2f}"
                                            for k in ("default", "tuned")))
    metrics = ("psnr_db", "ssim", "frc_px_median")
    out: dict[str, Any] = {"per_seed": per_seed, "tuned_settings": settings.model_dump(mode="json")}
    for name in ("default", "tuned"):
        out[name] = {m: summarize([r[name][m] for r in per_seed]) for m in metrics}
    def gain(m: str, tuned: float, default: float) -> float:  # equal values differ by 0, unresolved (inf) FRCs included
        return 0.0 if tuned == default else (-1 if m.startswith("frc") else 1) * (tuned - default)

    out["tuned_minus_default"] = {m: summarize([gain(m, r["tuned"][m], r["default"][m]) for r in per_seed]) for m in metrics}
    return out
