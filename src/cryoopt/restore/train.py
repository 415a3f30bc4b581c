"""Training loop, inference and checkpoints for the restoration networks.

Training pairs are ``(input, target)`` images normalised together by the input's
percentiles (:class:`~cryoopt.restore._image.Normalization`), cut into random
crops with flips/rotations, and fitted with :class:`~cryoopt.restore.losses.RestorationLoss`
by Adam with a cosine learning-rate schedule. Runs are deterministic for a given
``seed`` on one thread (all randomness from seeded generators).

Checkpoints are plain ``torch.save`` dictionaries of tensors, numbers and strings,
loaded with ``weights_only=True`` (no pickled code is ever executed).

Example:
    >>> rng = np.random.default_rng(0)
    >>> clean = rng.random((8, 32, 32)).astype(np.float32)
    >>> pairs = ImagePairs(clean + 0.1 * rng.normal(size=clean.shape), clean)
    >>> model = UNet(base_channels=4, depth=1)
    >>> result = train(model, pairs, config=TrainConfig(steps=2, batch_size=2, crop_px=16))
    >>> len(result.history) > 0
    True
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from cryoopt.exceptions import EvaluationError, ParameterError, StateError
from cryoopt.progress import Progress
from cryoopt.restore._image import Normalization, as_image
from cryoopt.restore.losses import RestorationLoss, ssim
from cryoopt.restore.unet import UNet, UNetConfig, count_parameters

__all__ = ["CHECKPOINT_FORMAT", "ImagePairs", "TrainConfig", "TrainResult", "load_model", "predict", "save_model", "train", "validation_scores"]

CHECKPOINT_FORMAT = "cryoopt.restore.unet/1"


@dataclass
class ImagePairs:
    """Corrupted inputs and clean targets, one pair per index.

    ``inputs``/``targets`` are arrays `N x H x W` (images) or `N x D x H x W` (stacks),
    or sequences of 2-D/3-D arrays of different sizes; input and target of a pair
    must have the same shape unless ``scale > 1`` (target ``scale`` times larger in
    H and W, for super-resolution).
    """

    inputs: Sequence[np.ndarray] | np.ndarray
    targets: Sequence[np.ndarray] | np.ndarray
    meta: list[dict[str, Any]] = field(default_factory=list)
    scale: int = 1

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.targets):
            raise EvaluationError(f"{len(self.inputs)} inputs but {len(self.targets)} targets; pass one target per input")
        if len(self.inputs) == 0:
            raise EvaluationError("no image pairs; pass at least one (input, target) pair")
        ins = [as_image(x, ndim=(2, 3), name=f"inputs[{i}]") for i, x in enumerate(self.inputs)]
        tgs = [as_image(y, ndim=(2, 3), name=f"targets[{i}]") for i, y in enumerate(self.targets)]
        for i, (x, y) in enumerate(zip(ins, tgs)):
            want = x.shape[:-2] + (x.shape[-2] * self.scale, x.shape[-1] * self.scale)
            if y.shape != want:
                raise EvaluationError(f"pair {i}: input {x.shape} needs a target of shape {want}, got {y.shape}")
        self.inputs, self.targets = ins, tgs

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def ndim(self) -> int:
        return self.inputs[0].ndim

    def subset(self, index: Sequence[int]) -> ImagePairs:
        return ImagePairs([self.inputs[i] for i in index], [self.targets[i] for i in index],
                          [self.meta[i] for i in index] if self.meta else [], scale=self.scale)


class TrainConfig(BaseModel):
    """Settings of :func:`train`.

    Attributes:
        steps: optimizer steps (mini-batches).
        batch_size: crops per step.
        crop_px: side of the square training crops (input pixels); stacks use
            ``crop_depth`` planes.
        lr: peak Adam learning rate (cosine decay to 5 % over ``steps``).
        l1_weight, structural_weight, structural: the loss (:class:`RestorationLoss`).
        augment: random flips and 90-degree rotations.
        val_every: steps between validation passes (0: only at the end).
        time_limit_s: stop early after this many seconds (None: run all steps).
        seed: seeds the crops, augmentations and weight initialisation.
    """

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(1000, ge=1)
    batch_size: int = Field(8, ge=1)
    crop_px: int = Field(64, ge=8)
    crop_depth: int = Field(8, ge=1)
    lr: float = Field(2e-3, gt=0)
    l1_weight: float = Field(1.0, ge=0)
    structural_weight: float = Field(0.2, ge=0)
    structural: str = Field("ssim", pattern="^(ssim|ms_ssim)$")
    augment: bool = True
    val_every: int = Field(0, ge=0)
    time_limit_s: float | None = Field(None, gt=0)
    seed: int = 0


@dataclass
class TrainResult:
    """What :func:`train` returns: the (trained, in place) model and its history.

    ``history`` has one dict per validation pass: ``step``, ``seconds``,
    ``train_loss`` (mean since the last pass) and, with validation data,
    ``val_loss``, ``val_psnr_db``, ``val_ssim``.
    """

    model: UNet
    history: list[dict[str, float]]
    seconds: float
    steps: int

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def _normalised(pairs: ImagePairs) -> tuple[list[np.ndarray], list[np.ndarray]]:
    xs, ys = [], []
    for x, y in zip(pairs.inputs, pairs.targets):
        norm = Normalization.from_image(x)
        xs.append(norm(x))
        ys.append(norm(y))
    return xs, ys


def _crop(x: np.ndarray, y: np.ndarray, crop: int, depth: int, scale: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = x.shape[-2:]
    ch, cw = min(crop, h), min(crop, w)
    r, c = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    if x.ndim == 3:
        d = min(depth, x.shape[0])
        z = int(rng.integers(0, x.shape[0] - d + 1))
        return x[z : z + d, r : r + ch, c : c + cw], y[z : z + d, r * scale : (r + ch) * scale, c * scale : (c + cw) * scale]
    return x[r : r + ch, c : c + cw], y[r * scale : (r + ch) * scale, c * scale : (c + cw) * scale]


def _augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    k = int(rng.integers(4))
    x, y = np.rot90(x, k, axes=(-2, -1)), np.rot90(y, k, axes=(-2, -1))
    if rng.random() < 0.5:
        x, y = x[..., ::-1], y[..., ::-1]
    return x, y


def _batch(xs: list[np.ndarray], ys: list[np.ndarray], cfg: TrainConfig, scale: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    bx, by = [], []
    for _ in range(cfg.batch_size):
        i = int(rng.integers(len(xs)))
        x, y = _crop(xs[i], ys[i], cfg.crop_px, cfg.crop_depth, scale, rng)
        if cfg.augment:
            x, y = _augment(x, y, rng)
        bx.append(np.ascontiguousarray(x))
        by.append(np.ascontiguousarray(y))
    # crops of small images may differ in size: cut all to the smallest
    shp = tuple(min(s) for s in zip(*(b.shape for b in bx)))
    bx = [b[tuple(slice(0, s) for s in shp)] for b in bx]
    by = [b[tuple(slice(0, s * (scale if k >= len(shp) - 2 else 1)) for k, s in enumerate(shp))] for b in by]
    return torch.from_numpy(np.stack(bx))[:, None], torch.from_numpy(np.stack(by))[:, None]


def _forward_full(model: UNet, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(np.ascontiguousarray(x))[None, None]).numpy()[0, 0]


def _validate(model: UNet, xs: list[np.ndarray], ys: list[np.ndarray], loss_fn: RestorationLoss) -> dict[str, float]:
    return validation_scores([_forward_full(model, x) for x in xs], ys, loss_fn)


def validation_scores(outputs: Sequence[np.ndarray], targets: Sequence[np.ndarray], loss_fn: RestorationLoss | None = None) -> dict[str, float]:
    """The validation metrics of :func:`train`'s history for any outputs (e.g. a baseline's).

    ``outputs`` and ``targets`` are on the training scale (both normalised by the
    input's :class:`~cryoopt.restore._image.Normalization`); returns ``val_psnr_db``,
    ``val_ssim`` (torch :func:`~cryoopt.restore.losses.ssim`, target range as
    ``data_range``) and, with ``loss_fn``, ``val_loss``. A baseline scored here
    compares number for number with the network's validation history.
    """
    losses, psnrs, ssims = [], [], []
    for o, y in zip(outputs, targets):
        p = torch.from_numpy(np.ascontiguousarray(o, dtype=np.float32))[None, None]
        t = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))[None, None]
        if loss_fn is not None:
            losses.append(float(loss_fn(p, t)))
        rng_ = float(y.max() - y.min()) or 1.0
        mse = float(torch.mean((p - t) ** 2))
        psnrs.append(10 * math.log10(rng_**2 / max(mse, 1e-12)))
        ssims.append(float(ssim(p, t, data_range=rng_)))
    out = {"val_psnr_db": float(np.mean(psnrs)), "val_ssim": float(np.mean(ssims))}
    if loss_fn is not None:
        out = {"val_loss": float(np.mean(losses)), **out}
    return out


def train(
    model: UNet,
    train_pairs: ImagePairs,
    val_pairs: ImagePairs | None = None,
    *,
    config: TrainConfig | None = None,
    callback: Callable[[dict[str, float]], bool | None] | None = None,
) -> TrainResult:
    """Fit ``model`` (in place) to map inputs to targets.

    Args:
        model: a :class:`UNet` whose ``dims`` matches the pairs (2 for images, 3 for stacks)
            and whose ``upscale`` equals ``train_pairs.scale``.
        train_pairs, val_pairs: training and (optional) validation pairs.
        config: :class:`TrainConfig` (defaults if None).
        callback: called with each history entry; returning False stops training.

    Returns:
        :class:`TrainResult`.
    """
    cfg = config or TrainConfig()
    if not isinstance(model, UNet):
        raise ParameterError(f"model must be a cryoopt.restore.UNet, got {type(model).__name__}")
    if train_pairs.ndim != model.config.dims:
        raise ParameterError(f"model has dims={model.config.dims} but the pairs are {train_pairs.ndim}-D; build UNet(dims={train_pairs.ndim})")
    if train_pairs.scale != model.config.upscale:
        raise ParameterError(f"pairs have scale={train_pairs.scale} but the model upscales by {model.config.upscale}")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    xs, ys = _normalised(train_pairs)
    vxs, vys = _normalised(val_pairs) if val_pairs is not None else ([], [])
    loss_fn = RestorationLoss(l1_weight=cfg.l1_weight, structural_weight=cfg.structural_weight, structural=cfg.structural)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    running: list[float] = []
    step = 0
    every = cfg.val_every or cfg.steps
    progress = Progress(f"training {type(model).__name__}", total=cfg.steps, unit="steps")
    for step in range(1, cfg.steps + 1):
        progress.set(step - 1)
        model.train()
        bx, by = _batch(xs, ys, cfg, train_pairs.scale, rng)
        loss = loss_fn(model(bx), by)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running.append(loss.item())
        out_of_time = cfg.time_limit_s is not None and time.perf_counter() - t0 > cfg.time_limit_s
        if step % every == 0 or step == cfg.steps or out_of_time:
            model.eval()
            entry = {"step": float(step), "seconds": time.perf_counter() - t0, "train_loss": float(np.mean(running))}
            if vxs:
                entry.update(_validate(model, vxs, vys, loss_fn))
            history.append(entry)
            running = []
            if (callback is not None and callback(entry) is False) or out_of_time:
                break
    progress.set(step)
    progress.close()
    model.eval()
    return TrainResult(model=model, history=history, seconds=time.perf_counter() - t0, steps=step)


def predict(model: UNet, image: np.ndarray, *, normalize: bool = True) -> np.ndarray:
    """Run ``model`` on one image (`H x W`) or stack (`D x H x W`); returns float32 in the input's units.

    The input is normalised by its own percentiles (as in training) and the output
    mapped back, unless ``normalize=False``.

    Raises:
        EvaluationError: non-image input, or an image of the wrong number of axes for the model.
    """
    img = as_image(image, ndim=model.config.dims)
    norm = Normalization.from_image(img) if normalize else Normalization(0.0, 1.0)
    model.eval()
    return norm.inverse(_forward_full(model, norm(img)))


def save_model(model: UNet, path: str | Path, *, meta: dict[str, Any] | None = None) -> Path:
    """Save architecture, weights and JSON-able ``meta`` (training settings, metrics) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"format": CHECKPOINT_FORMAT, "config": model.config.to_dict(), "state_dict": model.state_dict(),
         "meta": dict(meta or {}), "n_parameters": count_parameters(model)},
        path,
    )
    return path


def load_model(path: str | Path) -> tuple[UNet, dict[str, Any]]:
    """Load a model saved by :func:`save_model`; returns ``(model in eval mode, meta)``.

    Raises:
        StateError: missing file, not a cryoopt restoration checkpoint, or weights
            that do not fit the stored architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise StateError(f"no checkpoint at {path}; train one with cryoopt.restore.train_artifact_model or pass another path")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise StateError(f"{path} is not a readable torch checkpoint ({exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise StateError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint (format={ckpt.get('format') if isinstance(ckpt, dict) else None!r})")
    try:
        model = UNet(UNetConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, RuntimeError, ParameterError, KeyError) as exc:
        raise StateError(f"{path}: weights do not fit the stored architecture ({exc})") from None
    model.eval()
    return model, dict(ckpt.get("meta", {}))
