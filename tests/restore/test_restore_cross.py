from __future__ import annotations

import numpy as np
import pytest

from cryoopt.restore import TrainConfig, UNetConfig
from cryoopt.restore.cross import cross_microscope_gains, rl_sigma_px, simulate_lm_pairs
from cryoopt.restore.evaluate import richardson_lucy


def test_rl_kernel_is_the_psf_difference():
    # FWHM 0.51 vs 0.37 lambda/NA (Pawley ch. 8): sigma_diff = sqrt(0.51^2 - 0.37^2) * 520/1.4 / 2.3548 nm
    expected = np.sqrt(0.51**2 - 0.37**2) * 520 / 1.4 / 2.3548 / 50.0
    assert rl_sigma_px(50.0) == pytest.approx(expected, rel=1e-9)


def test_simulated_pairs_2d_and_stacks():
    d2 = simulate_lm_pairs(4, shape=(24, 24), seed=0)
    assert (len(d2.train), len(d2.val), len(d2.test)) == (2, 1, 1)
    assert d2.train.inputs[0].shape == (24, 24) and d2.test_truth[0].shape == (24, 24)
    d3 = simulate_lm_pairs(3, shape=(24, 24), depth=3, seed=0)
    assert d3.train.inputs[0].shape == (3, 24, 24)


def test_richardson_lucy_stack_keeps_shape():
    img = np.random.default_rng(0).random((2, 16, 16)).astype(np.float32) + 1
    assert richardson_lucy(img, sigma_px=1.0, num_iter=3).shape == img.shape


def test_cross_gains_runs_tiny():
    out = cross_microscope_gains((0,), n=4, shape=(24, 24), depth=2, config=TrainConfig(steps=2, batch_size=2, crop_px=16, crop_depth=2),
                                 model_config=UNetConfig(base_channels=4, depth=1, dims=3), rl_iter=2)
    assert set(out["absolute"]) == {"widefield", "richardson_lucy", "unet"}
    assert np.isfinite(out["gains"]["vs_richardson_lucy"]["psnr_db"]["mean"])
