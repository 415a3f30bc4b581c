from __future__ import annotations

from cryoopt.restore import ArtifactSettings, TrainConfig, UNetConfig
from cryoopt.restore.tune import GENERATOR_SPACE, tune_generator, tuned_vs_default


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


def test_tuned_vs_default_scores_both_on_the_reference_test_split():
    tiny = dict(n_images=6, shape=(24, 24), model_config=UNetConfig(base_channels=4, depth=1),
                config=TrainConfig(steps=2, batch_size=2, crop_px=16))
    same = tuned_vs_default([0], tuned=ArtifactSettings(), **tiny)
    # identical settings, seed and budget: the two runs are the same run
    for m in ("psnr_db", "ssim", "frc_px_median"):
        assert same["tuned"][m]["mean"] == same["default"][m]["mean"]
        assert same["tuned_minus_default"][m]["mean"] == 0.0
    other = tuned_vs_default([0, 1], tuned=ArtifactSettings(charging_strength=0.0, ice_coverage=0.0, beam_current_pa=1000.0), **tiny)
    assert other["default"]["ssim"]["n"] == 2 and len(other["per_seed"]) == 2
    assert other["tuned_settings"]["beam_current_pa"] == 1000.0
    # the default runs do not depend on what the tuned settings are
    assert other["per_seed"][0]["default"]["ssim"] == same["per_seed"][0]["default"]["ssim"]
    assert other["per_seed"][0]["tuned"]["ssim"] != other["per_seed"][0]["default"]["ssim"]
