"""Dogfooding: choose the artifact generator's settings with cryoopt's own optimizer.

The counterpart of the reference work's RL validation loop: each trial simulates a
training set with candidate generator settings (beam current, voltage, charging
strength, ice coverage, ice fractal dimension ``D`` and radius ``r``), trains a
fresh network briefly, and returns its SSIM on a *fixed* validation set drawn from
the reference artifact distribution (:class:`ArtifactSettings` defaults, or the
caller's); :func:`cryoopt.optimize` (Bayesian optimisation by default) maximises it.
The test split is never seen during tuning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryoopt.restore.artifact import DEFAULT_MODEL
from cryoopt.restore.data import ArtifactSettings, make_artifact_dataset
from cryoopt.restore.train import ImagePairs, TrainConfig, train
from cryoopt.restore.unet import UNetConfig, build_unet

__all__ = ["GENERATOR_SPACE", "TuneResult", "tune_generator"]

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
