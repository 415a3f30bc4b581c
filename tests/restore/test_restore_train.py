from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoopt.exceptions import EvaluationError, ParameterError, StateError
from cryoopt.restore import ImagePairs, TrainConfig, UNet, load_model, predict, save_model, train, validation_scores

from ._helpers import noisy_pairs

TINY = TrainConfig(steps=6, batch_size=2, crop_px=16, val_every=3, seed=0)


def _fit(seed: int = 0):
    torch.manual_seed(123)  # train() must reseed: this must not matter
    model = UNet(base_channels=4, depth=1)
    pairs = noisy_pairs(6)
    return model, train(model, pairs.subset([0, 1, 2, 3]), pairs.subset([4, 5]), config=TINY.model_copy(update={"seed": seed}))


def test_training_is_deterministic():
    m1, r1 = _fit(0)
    m2, r2 = _fit(0)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert [h["val_loss"] for h in r1.history] == [h["val_loss"] for h in r2.history]
    m3, _ = _fit(1)
    assert not all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m3.state_dict().values()))


def test_history_has_validation_metrics():
    _, res = _fit()
    assert len(res.history) == 2 and res.steps == 6
    assert {"train_loss", "val_loss", "val_psnr_db", "val_ssim", "seconds"} <= set(res.final)


def test_training_lowers_the_loss():
    pairs = noisy_pairs(6, sigma=0.1, seed=3)
    model = UNet(base_channels=4, depth=1)
    res = train(model, pairs, pairs, config=TrainConfig(steps=40, batch_size=4, crop_px=24, val_every=20, lr=5e-3))
    first = predict(UNet(base_channels=4, depth=1), pairs.inputs[0])  # untrained = identity
    err0 = np.abs(first - pairs.targets[0]).mean()
    err1 = np.abs(predict(model, pairs.inputs[0]) - pairs.targets[0]).mean()
    assert err1 < err0
    assert res.history[-1]["val_loss"] < res.history[0]["train_loss"]


def test_save_load_round_trip(tmp_path):
    model, _ = _fit()
    path = save_model(model, tmp_path / "m" / "unet.pt", meta={"note": "tiny", "psnr": 1.5})
    loaded, meta = load_model(path)
    assert meta == {"note": "tiny", "psnr": 1.5}
    x = noisy_pairs(1).inputs[0]
    np.testing.assert_array_equal(predict(loaded, x), predict(model, x))


def test_load_refuses_bad_files(tmp_path):
    with pytest.raises(StateError, match="no checkpoint"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(StateError):
        load_model(tmp_path / "junk.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(StateError, match="format"):
        load_model(tmp_path / "other.pt")


def test_stack_training_3d():
    rng = np.random.default_rng(0)
    clean = rng.random((2, 4, 16, 16)).astype(np.float32)
    pairs = ImagePairs(clean + 0.1, clean)
    model = UNet(base_channels=4, depth=1, dims=3)
    res = train(model, pairs, config=TrainConfig(steps=2, batch_size=2, crop_px=16, crop_depth=3))
    assert res.steps == 2
    assert predict(model, clean[0]).shape == (4, 16, 16)


@pytest.mark.parametrize(
    "bad", ["image.tif", None, np.array([["a", "b"], ["c", "d"]]), np.zeros((8, 8), complex), np.full((8, 8), np.nan),
            np.zeros(16), np.zeros((2, 8, 8, 3)), np.zeros((0, 8)), [[1, 2], [3]]],
)
def test_refuses_non_image_input(bad):
    with pytest.raises(EvaluationError):
        predict(UNet(base_channels=4, depth=1), bad)


def test_pairs_and_model_mismatch_refused():
    with pytest.raises(EvaluationError, match="targets"):
        ImagePairs(np.zeros((2, 8, 8)), np.zeros((3, 8, 8)))
    with pytest.raises(EvaluationError, match="shape"):
        ImagePairs(np.zeros((1, 8, 8)), np.zeros((1, 8, 9)))
    with pytest.raises(ParameterError, match="dims"):
        train(UNet(base_channels=4, depth=1, dims=3), noisy_pairs(2), config=TINY)
    with pytest.raises(ParameterError):
        train("not a model", noisy_pairs(2), config=TINY)  # type: ignore[arg-type]


def test_validation_scores_match_the_training_history():
    pairs = noisy_pairs(6, seed=2)
    model = UNet(base_channels=4, depth=1)
    res = train(model, pairs.subset([0, 1, 2, 3]), pairs.subset([4, 5]), config=TINY)
    val = pairs.subset([4, 5])
    from cryoopt.restore._image import Normalization
    from cryoopt.restore.losses import RestorationLoss

    xs, ys = [], []
    for x, y in zip(val.inputs, val.targets):
        n = Normalization.from_image(x)
        xs.append(n(predict(model, x)))
        ys.append(n(y))
    got = validation_scores(xs, ys, RestorationLoss())
    for k in ("val_loss", "val_psnr_db", "val_ssim"):
        assert abs(got[k] - res.final[k]) < 1e-4, k
    perfect = validation_scores(ys, ys)
    assert perfect["val_ssim"] > 0.999 and "val_loss" not in perfect
    noisy = validation_scores([y + 0.2 for y in ys], ys)
    assert noisy["val_psnr_db"] < perfect["val_psnr_db"] and noisy["val_ssim"] < perfect["val_ssim"]
