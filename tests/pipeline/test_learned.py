"""The learned segmenter: trains on labelled pairs, round-trips through its cache, and is
optional (the package and the classical segmenter work without PyTorch)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cryoopt.exceptions import EvaluationError

torch = pytest.importorskip("torch")

from cryoopt.pipeline.learned import LearnedSegmenter, TrainingConfig, load_or_train, train_segmenter  # noqa: E402

TINY = TrainingConfig(presets=("tissue_block",), seeds=(5,), sections=3, patch_px=32, steps=2, batch=2, channels=(4, 8))


def _pairs(n: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Bright resin with dark discs (cells) holding darker dots (mitochondria)."""
    out = []
    yy, xx = np.mgrid[0:48, 0:48]
    for _ in range(n):
        cells = np.zeros((48, 48), bool)
        mito = np.zeros((48, 48), bool)
        for _ in range(2):
            c = rng.uniform(8, 40, 2)
            cells |= (yy - c[0]) ** 2 + (xx - c[1]) ** 2 < rng.uniform(6, 10) ** 2
            mito |= ((yy - c[0]) ** 2 + (xx - c[1]) ** 2 < 4) & cells
        img = 1.0 - 0.3 * cells - 0.3 * mito + rng.normal(0, 0.05, (48, 48))
        y = np.stack([cells, np.zeros_like(cells), mito, np.zeros_like(cells)]).astype(np.float32)
        out.append((img.astype(np.float32), y))
    return out


@pytest.mark.slow
def test_a_small_unet_learns_cells_and_organelles():
    torch.manual_seed(0)
    cfg = TrainingConfig(patch_px=32, steps=300, batch=8, channels=(8, 16), lr=1e-2)
    model = train_segmenter(cfg, data=_pairs(24, np.random.default_rng(0)), progress=False)
    img, y = _pairs(1, np.random.default_rng(1))[0]
    seg = model.segment_section(img, pixel_size_nm=cfg.model_pixel_nm)
    cells = seg.mask("cells")
    iou = np.count_nonzero(cells & (y[0] > 0)) / np.count_nonzero(cells | (y[0] > 0))
    assert iou > 0.8
    assert not (seg.mask("mitochondria") & ~cells).any()  # nested: organelles only inside cells


def test_weights_round_trip_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYOOPT_CACHE_DIR", str(tmp_path))
    first = load_or_train(TINY, progress=False)  # trains on rendered sections, caches
    files = list(tmp_path.glob("segmenter-*.pt"))
    assert len(files) == 1 and TINY.key() in files[0].name
    import cryoopt.pipeline.learned as learned

    monkeypatch.setattr(learned, "train_segmenter", lambda *a, **k: pytest.fail("a cached model was trained again"))
    again = load_or_train(TINY, progress=False)
    img = np.random.default_rng(0).uniform(0, 1, (40, 40))
    np.testing.assert_allclose(again.probabilities(img, pixel_size_nm=25.0), first.probabilities(img, pixel_size_nm=25.0))
    files[0].write_bytes(b"not a model")  # a corrupt cache file is retrained, not trusted, and kept aside
    monkeypatch.setattr(learned, "train_segmenter", train_segmenter)
    with pytest.warns(RuntimeWarning, match="could not be loaded"):
        assert isinstance(load_or_train(TINY, progress=False), LearnedSegmenter)
    aside = list(tmp_path.glob("segmenter-*.pt.unreadable-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"not a model"
    with pytest.raises(EvaluationError, match="pixel_size_nm"):
        again.segment_section(img, pixel_size_nm=float("nan"))


def test_package_and_classical_segmenter_work_without_torch(tmp_path):
    """Without PyTorch the classical segmenter works, asking for the learned one says what to
    install, and a cached model is left where it is (a missing backend is no corrupt file)."""
    code = textwrap.dedent("""
        import sys

        class NoTorch:  # as if PyTorch were not installed
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, NoTorch())
        import numpy as np
        from cryoopt.exceptions import BackendUnavailableError
        from cryoopt.pipeline import parse_section, segmenters
        img = np.random.default_rng(0).poisson(200, (64, 64)).astype(float)
        parse_section(img, structures=("cells",), pixel_size_nm=30.0, with_graph=False)
        from cryoopt.pipeline.learned import TrainingConfig, cache_dir
        (cache_dir() / f"segmenter-{TrainingConfig().key()}.pt").write_bytes(b"weights")
        try:
            segmenters.get("learned")()
        except BackendUnavailableError as e:
            assert "hierarchical" in str(e)
            print("ok")
    """)
    env = {**os.environ, "CRYOOPT_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
    kept = list(tmp_path.glob("segmenter-*"))  # (the simulator keeps its chromatin lattice in this cache too)
    assert len(kept) == 1 and kept[0].name.endswith(".pt") and kept[0].read_bytes() == b"weights"


def test_cache_key_follows_the_training_data_and_the_class_weights(monkeypatch):
    """Weights trained on an earlier simulator are not picked up: the key hashes the data."""
    import cryoopt.pipeline.learned as learned

    key = TINY.key()
    assert TrainingConfig(**{**TINY.__dict__, "pos_weight": (1.0, 1.0, 2.0, 9.0)}).key() != key
    monkeypatch.setattr(learned, "data_fingerprint", lambda presets, seeds: "another simulator")
    assert TINY.key() != key


def test_class_weights_are_checked_by_name():
    with pytest.raises(EvaluationError, match="pos_weight"):
        TrainingConfig(pos_weight=(1.0, 2.0))
    with pytest.raises(EvaluationError, match="class_weight"):
        TrainingConfig(class_weight=(1.0, 1.0, 0.0, 1.0))


def test_the_optical_density_channel_is_minus_log_of_the_transmission():
    from cryoopt.pipeline.learned import N_INPUTS, _inputs

    img = np.random.default_rng(0).uniform(200.0, 900.0, (24, 32))
    known = _inputs(img, 1000.0)
    assert known.shape == (N_INPUTS, 24, 32)
    np.testing.assert_allclose(known[1], -np.log(img / 1000.0), rtol=1e-6)
    assert np.all(known[2] == 1.0)
    unknown = _inputs(img, None)
    np.testing.assert_array_equal(unknown[0], known[0])  # the stretched image does not depend on the open beam
    assert not unknown[1:].any()


def test_sectioning_defects_scale_the_optical_density_by_a_thickness_profile():
    """On a uniform film of transmission t0 the defects give t0 ** profile: chatter a sine along
    the cut at a drawn wavelength, thickness between 0 and twice the mean, no new material."""
    from cryoopt.pipeline.learned import _section_defects

    t0, px, band = 0.5, 25.0, (150.0, 600.0)
    for seed in range(20):
        out = _section_defects(np.full((96, 96), t0), np.random.default_rng(seed), pixel_nm=px, chatter_period_nm=band)
        thickness = np.log(out) / np.log(t0)
        assert thickness.min() >= 0.0 and thickness.max() <= 2.0 + 1e-9
        rows = np.median(thickness, axis=1)  # knife marks are a few columns, cracks a few rows
        spectrum = np.abs(np.fft.rfft(rows - rows.mean()))
        k = int(np.argmax(spectrum[1:])) + 1
        assert band[0] / px * 0.8 <= 96 / k <= band[1] / px * 1.25 or spectrum[k] < 1e-6 * 96


def test_open_beam_and_defect_settings_are_checked():
    with pytest.raises(EvaluationError, match="defects"):
        TrainingConfig(defects=1.5)
    with pytest.raises(EvaluationError, match="chatter_period_nm"):
        TrainingConfig(chatter_period_nm=(600.0, 150.0))
    model = train_segmenter(TINY, data=_pairs(2, np.random.default_rng(0)), progress=False)
    with pytest.raises(EvaluationError, match="reference_intensity"):
        model.probabilities(np.ones((16, 16)), pixel_size_nm=25.0, reference_intensity=0.0)
