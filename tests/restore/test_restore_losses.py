from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from cryoopt.exceptions import ParameterError
from cryoopt.restore import RestorationLoss, ms_ssim, ssim


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssim_matches_skimage(seed):
    # reference: skimage's SSIM with the Wang et al. (2004) Gaussian window settings
    rng = np.random.default_rng(seed)
    a = rng.random((48, 48))
    b = np.clip(a + 0.2 * rng.normal(size=a.shape), 0, 1)
    ref = structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    got = float(ssim(torch.tensor(a)[None, None], torch.tensor(b)[None, None]))
    assert got == pytest.approx(ref, abs=1e-6)


def test_identical_images_are_perfect():
    x = torch.rand(2, 1, 40, 40, dtype=torch.float64)
    assert float(ssim(x, x)) == pytest.approx(1.0)
    assert float(ms_ssim(x, x)) == pytest.approx(1.0)
    assert float(RestorationLoss()(x, x)) == pytest.approx(0.0, abs=1e-9)


def test_ssim_3d_and_small_images():
    x = torch.rand(1, 1, 4, 8, 8)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ParameterError):
        ssim(torch.rand(1, 1, 2, 2), torch.rand(1, 1, 2, 2))


def test_loss_terms_and_weights():
    torch.manual_seed(0)
    p, t = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    terms = RestorationLoss(l1_weight=2.0, structural_weight=0.5).terms(p, t)
    assert float(terms["loss"]) == pytest.approx(2.0 * float(terms["l1"]) + 0.5 * float(terms["structural"]), rel=1e-6)
    ms = RestorationLoss(structural="ms_ssim")(p, t)
    assert torch.isfinite(ms)


@pytest.mark.parametrize("kwargs", [{"l1_weight": -1}, {"l1_weight": 0, "structural_weight": 0}, {"structural": "vgg"}])
def test_bad_loss_settings(kwargs):
    with pytest.raises(ParameterError):
        RestorationLoss(**kwargs)
