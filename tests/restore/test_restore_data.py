from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from cryoopt.exceptions import ParameterError
from cryoopt.restore import ArtifactSettings, corrupt_image, image_quality, make_artifact_dataset, split_counts
from cryoopt.restore.evaluate import BASELINES, estimate_noise_sigma


@pytest.mark.parametrize("n,expected", [(20, (14, 3, 3)), (100, (70, 15, 15)), (3, (1, 1, 1)), (4, (2, 1, 1))])
def test_split_counts_70_15_15(n, expected):
    assert split_counts(n) == expected


def test_split_counts_refuses_too_few():
    with pytest.raises(ParameterError):
        split_counts(2)


def test_dataset_shapes_and_disjoint_splits():
    data = make_artifact_dataset(10, shape=(32, 32), seed=0, specimens_per_split=1)
    assert (len(data.train), len(data.val), len(data.test)) == (6, 2, 2)
    assert data.train.inputs[0].shape == data.train.targets[0].shape == (32, 32)
    assert {m["split"] for m in data.val.meta} == {"val"}
    # different phantoms and noise: no image is shared between splits
    flat = {s: {x.tobytes() for x in getattr(data, s).targets} for s in ("train", "val", "test")}
    assert not (flat["train"] & flat["val"]) and not (flat["train"] & flat["test"]) and not (flat["val"] & flat["test"])
    # artifacts make the input differ from its target
    assert any(image_quality(x, y, frc=False)["psnr_db"] < 30 for x, y in zip(data.train.inputs, data.train.targets))


def test_dataset_is_seeded():
    a = make_artifact_dataset(4, shape=(16, 16), seed=3, specimens_per_split=1)
    b = make_artifact_dataset(4, shape=(16, 16), seed=3, specimens_per_split=1)
    np.testing.assert_array_equal(a.test.inputs[0], b.test.inputs[0])


def test_shared_phantoms_give_the_datasets_of_fresh_ones():
    """Phantoms are built once per (preset, seed) and shared: imaging them must leave them unchanged."""
    from cryoopt.restore.data import _phantom

    _phantom.cache_clear()
    fresh = make_artifact_dataset(6, shape=(24, 24), seed=3)
    other = make_artifact_dataset(6, shape=(24, 24), seed=3, settings=ArtifactSettings(ice_coverage=0.0))
    assert _phantom.cache_info().hits > 0  # the second dataset reused the first one's phantoms
    shared = make_artifact_dataset(6, shape=(24, 24), seed=3)
    for split in ("train", "val", "test"):
        assert np.array_equal(getattr(shared, split).targets, getattr(fresh, split).targets)
        assert np.array_equal(getattr(shared, split).inputs, getattr(fresh, split).inputs)
    assert not np.array_equal(other.train.inputs, fresh.train.inputs)


def test_settings_are_validated():
    with pytest.raises(ValidationError):
        ArtifactSettings(ice_fractal_dimension=2.5)
    with pytest.raises(ValidationError):
        ArtifactSettings(unknown_knob=1)
    s = ArtifactSettings(beam_current_pa=400, voltage_kv=5)
    assert s.effective_charging() == pytest.approx(2 * s.charging_strength)


def test_corrupt_user_image_keeps_shape_and_units():
    rng = np.random.default_rng(0)
    img = (1000 + 500 * rng.random((48, 40))).astype(np.uint16)
    out = corrupt_image(img, settings=ArtifactSettings(ice_coverage=0.2, charging_strength=2.0), seed=1)
    assert out.shape == img.shape and np.isfinite(out).all()
    assert 500 < float(np.median(out)) < 2500


def test_noise_sigma_estimate():
    rng = np.random.default_rng(0)
    assert estimate_noise_sigma(rng.normal(0, 0.1, (128, 128))) == pytest.approx(0.1, rel=0.05)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_keep_shape(name):
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    assert BASELINES[name](img).shape == img.shape


def test_quality_is_perfect_on_truth():
    clean = np.random.default_rng(1).random((32, 32))
    q = image_quality(clean, clean)
    assert q["ssim"] == pytest.approx(1.0) and q["psnr_db"] == np.inf and q["frc_px"] == pytest.approx(2.0)


def test_split_counts_keeps_a_training_sample():
    assert split_counts(4, (0.01, 0.98, 0.01)) == (1, 2, 1)
