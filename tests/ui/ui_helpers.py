"""A cheap campaign for the page's tests: a free objective and an executor that keeps section images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cryoopt.config import CampaignConfig
from cryoopt.registry import Executor, TrialRequest


def value_of(params: dict[str, Any]) -> dict[str, float]:
    return {"objective": 1.0 - (params["x"] - 0.3) ** 2 - 0.01 * (params["y"] - 4) ** 2, "prep_time_h": 1.0 + params["x"]}


class ImageExecutor(Executor):
    """Free objective; keeps two 'sections' of tiny LM/EM PNGs per trial as the block executor does
    (``images/trial_NNNN/sNN_{lm,em}.png``, listed in the result's ``section_images``)."""

    idempotent = True

    def __init__(self) -> None:
        self.directory: Path | None = None

    def prepare(self, directory: Path) -> None:
        self.directory = Path(directory)

    def run(self, trial: TrialRequest) -> dict[str, Any]:
        from PIL import Image

        assert self.directory is not None
        rel = Path("images") / f"trial_{trial.id:04d}"
        (self.directory / rel).mkdir(parents=True, exist_ok=True)
        sections = []
        rng = np.random.default_rng(trial.id)
        for k in (1, 2):
            rec: dict[str, Any] = {"section": k, "reward": 0.5, "failed": False, "scores": {"em_cnr": 3.0 + k}}
            for kind in ("lm", "em"):
                path = rel / f"s{k:02d}_{kind}.png"
                Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(self.directory / path)
                rec[kind] = path.as_posix()
            sections.append(rec)
        return {**value_of(trial.params), "section_images": sections}


def make_config(**overrides: Any) -> CampaignConfig:
    data: dict[str, Any] = {
        "name": "page", "seed": 0,
        "space": {"parameters": {"x": {"type": "float", "low": 0, "high": 1, "unit": "mm"},
                                 "y": {"type": "int", "low": 0, "high": 10}}},
        "objectives": {"objective": "maximize", "prep_time_h": "minimize"},
        "optimizer": {"strategy": "sobol"},
        "budget": {"experiments": 4},
        "executor": {"type": "function", "target": "ui_helpers:value_of"},
        "tracking": {"enabled": False},
        "report": {"on_finish": False},
    }
    data.update(overrides)
    return CampaignConfig.from_dict(data)
