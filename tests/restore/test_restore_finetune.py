from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from cryoopt.exceptions import EvaluationError
from cryoopt.restore import UNet, UNetConfig, load_model, save_model
from cryoopt.restore.__main__ import main
from cryoopt.restore.finetune import load_folder

from ._helpers import blobs


def _folder(tmp_path, n=3):
    d = tmp_path / "imgs"
    d.mkdir()
    for i, img in enumerate(blobs(n, 32, seed=5)):
        tifffile.imwrite(d / f"cell{i}.tif", (img * 4000).astype(np.uint16))
    return d


def test_load_folder_corrupts_clean_images(tmp_path):
    pairs, names = load_folder(_folder(tmp_path), variants=2)
    assert len(pairs) == 6 and names == ["cell0.tif", "cell1.tif", "cell2.tif"]
    assert not np.array_equal(pairs.inputs[0], pairs.targets[0])


def test_load_folder_real_pairs(tmp_path):
    for sub in ("input", "target"):
        (tmp_path / sub).mkdir()
        tifffile.imwrite(tmp_path / sub / "a.tif", np.ones((20, 20), np.uint16))
    pairs, names = load_folder(tmp_path)
    assert len(pairs) == 1 and names == ["a.tif"]
    tifffile.imwrite(tmp_path / "input" / "b.tif", np.ones((20, 20), np.uint16))
    with pytest.raises(EvaluationError, match="same names"):
        load_folder(tmp_path)


def test_load_folder_errors(tmp_path):
    with pytest.raises(EvaluationError):
        load_folder(tmp_path / "nope")
    with pytest.raises(EvaluationError, match="no .tif"):
        load_folder(tmp_path)


def test_cli_finetune_one_command(tmp_path, capsys):
    base = save_model(UNet(UNetConfig(base_channels=4, depth=1)), tmp_path / "base.pt")
    out = tmp_path / "tuned.pt"
    rc = main(["finetune", str(_folder(tmp_path)), "--out", str(out), "--checkpoint", str(base), "--steps", "2",
               "--batch-size", "2", "--crop", "16", "--variants", "1", "--threads", "1"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"] == 2 and "val_ssim" in report
    model, meta = load_model(out)
    assert meta["files"] == 3 and len(meta["val_files"]) == 1 and model.config.base_channels == 4


def test_cli_reports_errors(tmp_path, capsys):
    assert main(["finetune", str(tmp_path / "missing"), "--out", str(tmp_path / "x.pt")]) == 2
    assert "not a folder" in capsys.readouterr().err
