from __future__ import annotations

import numpy as np
import pytest

from cryoopt.exceptions import EvaluationError, ParameterError
from cryoopt.restore import TrainConfig
from cryoopt.restore.zssr import bicubic_upscale, zero_shot_sr

TINY = TrainConfig(steps=3, batch_size=2, crop_px=8)


def test_zssr_output_shape_and_determinism():
    img = np.random.default_rng(0).random((24, 20)).astype(np.float32)
    a = zero_shot_sr(img, scale=2, config=TINY, seed=0)
    b = zero_shot_sr(img, scale=2, config=TINY, seed=0)
    assert a.image.shape == (48, 40)
    np.testing.assert_array_equal(a.image, b.image)


def test_bicubic_keeps_constant():
    np.testing.assert_allclose(bicubic_upscale(np.full((8, 8), 3.0), 2), 3.0, rtol=1e-6)


def test_zssr_refuses_bad_input():
    with pytest.raises(ParameterError):
        zero_shot_sr(np.zeros((16, 16)), scale=1, config=TINY)
    with pytest.raises(ParameterError):
        zero_shot_sr(np.random.default_rng(0).random((5, 5)), scale=2, config=TINY)
    with pytest.raises(EvaluationError):
        zero_shot_sr(np.zeros((4, 16, 16)), config=TINY)
