"""The restoration benchmark's own bookkeeping (the training runs themselves are too slow for the test suite)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "restore.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("restore_benchmark", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_time_to_quality_is_the_first_validation_pass_at_the_target(bench):
    hist = [{"seconds": 5.0, "val_ssim": 0.5, "val_psnr_db": 12.0}, {"seconds": 9.0, "val_ssim": 0.71, "val_psnr_db": 10.0},
            {"seconds": 12.0, "val_ssim": 0.69, "val_psnr_db": 13.0}, {"seconds": 20.0, "val_ssim": 0.8, "val_psnr_db": 12.5}]
    per_seed = [{"seed": 0, "history": hist}, {"seed": 1, "history": hist}]
    targets = {0: {"val_ssim": 0.7, "val_psnr_db": 11.0}, 1: {"val_ssim": 0.9, "val_psnr_db": 12.9}}
    assert bench.time_to_quality(per_seed, targets) == [9.0, None]
    assert bench.time_to_quality(per_seed, targets, ("val_psnr_db",)) == [5.0, 12.0]
    assert bench.time_to_quality(per_seed, targets, ("val_ssim", "val_psnr_db")) == [20.0, None]


def test_load_wait_returns_at_once_below_the_limit(bench):
    assert bench._wait_for_load(1e9, 0.0) < 1e9
    # above the limit it gives up after max_wait_s and still reports the load
    assert bench._wait_for_load(-1.0, 0.0) >= 0.0
