from __future__ import annotations

from cryoopt.restore import ArtifactSettings, TrainConfig, UNetConfig
from cryoopt.restore.tune import GENERATOR_SPACE, tune_generator


def test_space_covers_the_issue_knobs():
    assert set(GENERATOR_SPACE) == {"beam_current_pa", "voltage_kv", "charging_strength", "ice_coverage",
                                    "ice_fractal_dimension", "ice_radius_nm"}
    for name, spec in GENERATOR_SPACE.items():  # every range is valid for the generator
        ArtifactSettings(**{name: spec["low"]})
        ArtifactSettings(**{name: spec["high"]})


def test_tune_generator_tiny_budget():
    out = tune_generator(budget=2, strategy="random", n_images=4, n_val=4, shape=(24, 24),
                         model_config=UNetConfig(base_channels=4, depth=1), config=TrainConfig(steps=2, batch_size=2, crop_px=16))
    assert len(out.result.history) == 2
    assert isinstance(out.best_settings, ArtifactSettings)
    assert -1.0 <= out.best_val_ssim <= 1.0
    assert {m["split"] for m in out.val_pairs.meta} == {"val"}
