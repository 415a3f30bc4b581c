from __future__ import annotations

import numpy as np
import pytest

from cryoopt.exceptions import StateError
from cryoopt.pipeline.preprocess import Restorer, restorers
from cryoopt.restore import CHECKPOINT_ENV, UNet, UNetRestorer, register_checkpoint, save_model


def test_unet_is_registered_in_the_pipeline_hook():
    assert "unet" in restorers


def test_registered_factory_loads_env_checkpoint(tmp_path, monkeypatch):
    path = save_model(UNet(base_channels=4, depth=1), tmp_path / "u.pt")
    monkeypatch.setenv(CHECKPOINT_ENV, str(path))
    restorer = restorers.get("unet")()
    assert isinstance(restorer, Restorer)
    img = np.random.default_rng(0).integers(0, 4096, (40, 36)).astype(np.uint16)
    out = restorer.restore(img)
    assert out.shape == img.shape and out.dtype == np.float32
    # untrained residual net: identity up to float32 normalisation round-off
    np.testing.assert_allclose(out, img, rtol=1e-5, atol=1e-2)


def test_factory_without_checkpoint_says_what_to_do(monkeypatch):
    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    with pytest.raises(StateError, match=CHECKPOINT_ENV):
        restorers.get("unet")()


def test_register_checkpoint_by_name(tmp_path):
    path = save_model(UNet(base_channels=4, depth=1), tmp_path / "u.pt")
    register_checkpoint("unet-test-tiny", path, replace=True)
    assert isinstance(restorers.get("unet-test-tiny")(), UNetRestorer)
    with pytest.raises(StateError):
        register_checkpoint("unet-test-missing", tmp_path / "nope.pt")


def test_restorer_refuses_3d_or_upscaling_models():
    with pytest.raises(StateError):
        UNetRestorer(UNet(base_channels=4, depth=1, dims=3))
