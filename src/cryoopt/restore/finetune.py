"""Fine-tune a restoration network on a user's own images (a folder of TIFFs), in one call.

Two folder layouts:

* ``FOLDER/input/*.tif`` + ``FOLDER/target/*.tif`` with matching names: real
  (corrupted, clean) pairs, used as they are;
* ``FOLDER/*.tif``: good images of the user's specimen; the simulator's artifact
  engine (:func:`~cryoopt.restore.data.corrupt_image`: charging, ice, shot noise)
  corrupts each one ``variants`` times to make the inputs.

Files are split by name into training and validation (85/15, at least one each
when there are two or more). The checkpoint is written with the settings and
validation metrics in its ``meta``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cryoopt.exceptions import EvaluationError
from cryoopt.restore._image import as_image
from cryoopt.restore.artifact import DEFAULT_MODEL
from cryoopt.restore.data import ArtifactSettings, corrupt_image
from cryoopt.restore.train import ImagePairs, TrainConfig, TrainResult, load_model, save_model, train
from cryoopt.restore.unet import build_unet

__all__ = ["FINETUNE_TRAINING", "finetune", "load_folder"]

FINETUNE_TRAINING = TrainConfig(steps=300, batch_size=8, crop_px=64, lr=5e-4, val_every=100)


def _tiffs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".tif", ".tiff"))


def _read(path: Path) -> np.ndarray:
    import tifffile

    arr = np.squeeze(tifffile.imread(path))
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # RGB(A): luminance
        arr = arr[..., :3].astype(np.float32).mean(-1)
    return as_image(arr, name=path.name, min_size=16)


def load_folder(folder: str | Path, *, variants: int = 4, settings: ArtifactSettings | None = None, seed: int = 0) -> tuple[ImagePairs, list[str]]:
    """Training pairs from a folder (see the module docstring); returns ``(pairs, file names)``.

    Raises:
        EvaluationError: missing folder, no TIFFs, unmatched input/target names, or non-image files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"{folder} is not a folder; pass a folder of .tif/.tiff images")
    if (folder / "input").is_dir() and (folder / "target").is_dir():
        ins = {p.name: p for p in _tiffs(folder / "input")}
        tgs = {p.name: p for p in _tiffs(folder / "target")}
        names = sorted(set(ins) & set(tgs))
        if not names or set(ins) != set(tgs):
            raise EvaluationError(f"input/ and target/ must hold TIFFs with the same names; unmatched: {sorted(set(ins) ^ set(tgs))}")
        return ImagePairs([_read(ins[n]) for n in names], [_read(tgs[n]) for n in names], [{"file": n} for n in names]), names
    files = _tiffs(folder)
    if not files:
        raise EvaluationError(f"no .tif/.tiff files in {folder}")
    rng = np.random.default_rng(seed)
    xs, ys, meta = [], [], []
    for p in files:
        clean = _read(p)
        for _ in range(variants):
            xs.append(corrupt_image(clean, settings=settings, seed=rng))
            ys.append(clean)
            meta.append({"file": p.name})
    return ImagePairs(xs, ys, meta), [p.name for p in files]


def finetune(
    folder: str | Path,
    *,
    out: str | Path,
    checkpoint: str | Path | None = None,
    config: TrainConfig = FINETUNE_TRAINING,
    variants: int = 4,
    settings: ArtifactSettings | None = None,
    seed: int = 0,
) -> tuple[Path, TrainResult]:
    """Fine-tune ``checkpoint`` (or train the default network from scratch) on ``folder``; save to ``out``."""
    pairs, names = load_folder(folder, variants=variants, settings=settings, seed=seed)
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(len(names)))
    n_val = max(1, int(round(0.15 * len(names)))) if len(names) >= 2 else 0
    val_names = {names[i] for i in order[:n_val]}
    tr_idx = [i for i, m in enumerate(pairs.meta) if m["file"] not in val_names]
    va_idx = [i for i, m in enumerate(pairs.meta) if m["file"] in val_names]
    if checkpoint is not None:
        model, meta = load_model(checkpoint)
    else:
        model, meta = build_unet(DEFAULT_MODEL, seed=seed), {}
    crop = min(config.crop_px, *(min(x.shape[-2:]) for x in pairs.inputs))
    cfg = config.model_copy(update={"seed": seed, "crop_px": crop})
    result = train(model, pairs.subset(tr_idx), pairs.subset(va_idx) if va_idx else None, config=cfg)
    info: dict[str, Any] = {"finetuned_from": str(checkpoint) if checkpoint else None, "folder": Path(folder).name,
                            "files": len(names), "val_files": sorted(val_names), "training": cfg.model_dump(),
                            "final": result.final, "base_meta": {k: v for k, v in meta.items() if isinstance(v, (str, int, float))}}
    return save_model(model, out, meta=info), result
