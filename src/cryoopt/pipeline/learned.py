"""A learned EM segmenter: a small U-Net trained on simulator output, in physical units.

:class:`LearnedSegmenter` implements :class:`~cryoopt.pipeline.segmentation.SectionSegmenter`:
the image is resampled to a canonical pixel size (``model_pixel_nm``, 25 nm), scaled by
robust percentiles (and, where the open-beam intensity is known, given with its optical
density ``-ln(I / I0)`` as a second channel), passed through a U-Net (Ronneberger, Fischer & Brox 2015, MICCAI,
LNCS 9351:234) with four sigmoid outputs (``cells``, ``nuclei``, ``mitochondria``,
``membranes``: nested structures are independent labels, not exclusive classes), and
the probabilities are resampled back and thresholded at 0.5.

Training (:func:`train_segmenter`) uses labelled sections rendered from the specimen
phantoms (:func:`cryoopt.sim.datasets.random_em_sections`: several presets, specimen
seeds, section thicknesses, stain contrasts, doses and pixel sizes), with augmentation
(the defects of an ultramicrotome's cut: chatter, knife marks, cracks; flips, 90-degree
turns, gain, offset and gamma, extra noise, a little blur; crops as small as a 1.3 um
field; the open beam known in half of them) and a
loss of binary cross-entropy plus soft Dice per output (Milletari et al. 2016, 3DV,
for the thin membrane class). The default :class:`TrainingConfig` (6000 steps of 8
crops, 640 rendered sections; at 3000 the harder crops above left it underfit, held-out
mitochondria IoU 0.43 against 0.72) takes about 17 CPU minutes on one idle core; the weights
are cached (``$CRYOOPT_CACHE_DIR`` or ``~/.cache/cryoopt``), never shipped.

PyTorch is imported only when a model is built, so :mod:`cryoopt.pipeline` imports and
the classical :class:`~cryoopt.pipeline.segmentation.HierarchicalSegmenter` works
without it; without torch, asking for ``"learned"`` raises
:class:`~cryoopt.exceptions.BackendUnavailableError` saying what to install.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import pickle
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cryoopt.exceptions import BackendUnavailableError, EvaluationError
from cryoopt.pipeline._validate import check_image, check_pixel_size
from cryoopt.pipeline.segmentation import STRUCTURE_KINDS, Segmentation, nuclear_envelope

__all__ = ["LearnedSegmenter", "TrainingConfig", "cache_dir", "load_or_train", "train_segmenter"]


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is installed wherever the tests run
        raise BackendUnavailableError(
            "the learned segmenter needs PyTorch (pip install 'torch>=2.8,<3', the CPU build is enough); "
            "the classical segmenter 'hierarchical' works without it"
        ) from exc
    return torch


def cache_dir() -> Path:
    """Where trained weights are kept: ``$CRYOOPT_CACHE_DIR`` or ``~/.cache/cryoopt``."""
    return Path(os.environ.get("CRYOOPT_CACHE_DIR") or Path.home() / ".cache" / "cryoopt")


@dataclass(frozen=True)
class TrainingConfig:
    """How :func:`train_segmenter` trains (the cache key is a hash of this).

    Attributes:
        presets: specimen presets rendered for training.
        seeds: specimen seeds used (keep other seeds for evaluation).
        sections: training sections rendered in total.
        patch_px: training crop side on the canonical grid.
        steps: optimizer steps; batch: crops per step.
        lr: Adam learning rate.
        channels: U-Net widths per level.
        model_pixel_nm: the canonical pixel size the model sees.
        seed: torch and sampling seed.
        pos_weight: weight of each class's positive pixels in the cross-entropy
            (:data:`STRUCTURE_KINDS` order): membranes (the plasma membrane and the
            nuclear envelope's bilayers, a few % of the pixels) and mitochondria are thin
            or rare and weighted up.
        class_weight: weight of each class's loss (cross-entropy + Dice) in the total:
            nuclei, which only their envelope and chromatin tell from cytoplasm, and the
            membranes count more than the cells.
        min_patch_px: each step's crop side is drawn from the multiples of 8 between this
            and ``patch_px``: a 128 px field at 10 nm is 51 px on the 25 nm grid, smaller
            than the default crop, and the net must not need a wider context than it has.
        defects: fraction of crops given sectioning defects (:func:`_section_defects`):
            chatter (thickness banded along the cut), knife marks, cracks. A section cut
            on an ultramicrotome carries them and the sections rendered for training do
            not; without them the net took chatter bands for chromatin.
        chatter_period_nm: range of the chatter wavelengths drawn (the simulated
            ultramicrotome's is 300 nm).
        open_beam: fraction of crops that show the net their optical density (the open
            beam known, :attr:`LearnedSegmenter` input channels); the others show it
            only the stretched image, as a microscope that reports no dose does.
        stain_contrast: range of heavy-metal stain strengths rendered (1 = standard):
            wider below than the sections drawn for evaluation, down to the weak
            contrast of thin sections with short staining.

    The cache key hashes these fields and a fingerprint of the rendered training data
    (:func:`data_fingerprint`), so weights trained on an earlier simulator are not reused.
    """

    presets: tuple[str, ...] = ("neurons", "tissue_block", "bead_calibration")
    seeds: tuple[int, ...] = (100, 101, 102, 103)
    sections: int = 640
    patch_px: int = 80
    steps: int = 6000
    batch: int = 8
    lr: float = 3e-3
    channels: tuple[int, ...] = (12, 24, 48, 64)
    model_pixel_nm: float = 25.0
    seed: int = 0
    pos_weight: tuple[float, ...] = (1.0, 1.0, 2.0, 6.0)
    class_weight: tuple[float, ...] = (1.0, 2.0, 1.0, 1.5)
    min_patch_px: int = 48
    defects: float = 0.5
    chatter_period_nm: tuple[float, float] = (150.0, 600.0)
    open_beam: float = 0.5
    stain_contrast: tuple[float, float] = (0.3, 1.6)

    def __post_init__(self) -> None:
        for name in ("defects", "open_beam"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise EvaluationError(f"{name} is a fraction of the training crops, in [0, 1]; got {getattr(self, name)!r}")
        lo, hi = self.chatter_period_nm
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
            raise EvaluationError("chatter_period_nm must be a range (low, high) of positive wavelengths, "
                                  f"got {self.chatter_period_nm!r}")
        for name in ("pos_weight", "class_weight"):
            w = getattr(self, name)
            if len(w) != len(STRUCTURE_KINDS) or not all(math.isfinite(x) and x > 0 for x in w):
                raise EvaluationError(f"{name} must be {len(STRUCTURE_KINDS)} positive weights "
                                      f"(one per {', '.join(STRUCTURE_KINDS)}), got {w!r}")

    def key(self) -> str:
        text = json.dumps({**asdict(self), "data": data_fingerprint(self.presets, self.seeds)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=8)
def data_fingerprint(presets: tuple[str, ...], seeds: tuple[int, ...]) -> str:
    """A hash of what the simulator renders for training: one small EM section and its
    truth across the first cell (nucleus, cytoplasm, membranes) of each preset's first seed.
    It changes when the phantoms or the image formation change, so a cached model is
    keyed by the data it was trained on, not only by how it was trained."""
    from cryoopt.sim.datasets import em_section
    from cryoopt.sim.specimen import Specimen

    h = hashlib.sha256()
    for preset in presets:
        spec = Specimen.from_preset(preset, seed=int(seeds[0]) if seeds else 0)
        cells = spec.cells.ellipsoids
        cx, cy, cz, a = (cells[0, :4] if len(cells) else (*(0.5 * spec.extent_nm), 2000.0))
        sec = em_section(spec, centre_nm=(cx + 0.5 * a, cy, cz), size=48, pixel_size_nm=max(a, 1000.0) / 24.0, rng=0)
        h.update(np.round(sec.em.astype(np.float64), 4).tobytes())
        for k in STRUCTURE_KINDS:
            h.update(np.ascontiguousarray(sec.masks[k], bool).tobytes())
    return h.hexdigest()[:16]


def _build_unet(channels: Sequence[int], n_out: int) -> Any:
    torch = _torch()
    nn = torch.nn

    def block(cin: int, cout: int) -> Any:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.down = nn.ModuleList()
            cin = N_INPUTS
            for c in channels:
                self.down.append(block(cin, c))
                cin = c
            self.up = nn.ModuleList()
            self.merge = nn.ModuleList()
            for c_skip, c_in in zip(channels[-2::-1], channels[:0:-1]):
                self.up.append(nn.ConvTranspose2d(c_in, c_skip, 2, stride=2))
                self.merge.append(block(2 * c_skip, c_skip))
            self.head = nn.Conv2d(channels[0], n_out, 1)

        def forward(self, x: Any) -> Any:
            skips = []
            for i, d in enumerate(self.down):
                x = d(x)
                if i < len(self.down) - 1:
                    skips.append(x)
                    x = torch.nn.functional.max_pool2d(x, 2)
            for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
                x = up(x)
                x = merge(torch.cat([x, skip], dim=1))
            return self.head(x)

    return UNet()


#: the net's input channels: the image stretched by its percentiles; its optical density
#: ``-ln(I / I0)`` where the open beam ``I0`` is known, else 0; and 1 where it is known, else 0
N_INPUTS = 3


def _inputs(image: np.ndarray, open_beam: float | None) -> np.ndarray:
    """The `3 x H x W` input of an image (on the canonical grid) and its open-beam intensity, if known."""
    stretched = _normalise(image)
    if open_beam is None:
        return np.stack([stretched, np.zeros_like(stretched), np.zeros_like(stretched)])
    od = -np.log(np.clip(image / open_beam, 1e-3, None))
    return np.stack([stretched, od.astype(np.float32), np.ones_like(stretched)])


def _normalise(image: np.ndarray) -> np.ndarray:
    """Robust [0, 1]-ish scaling: the 1st and 99th percentiles map to 0 and 1."""
    lo, hi = np.percentile(image, (1.0, 99.0))
    return ((image - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)


def _to_grid(image: np.ndarray, factor: float, *, order: int) -> np.ndarray:
    from skimage.transform import rescale

    if abs(factor - 1.0) < 1e-3:
        return image
    return rescale(image, factor, order=order, anti_aliasing=factor < 1 and order > 0, preserve_range=True, mode="reflect")


def _pad_to(x: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)], mode="reflect"), (h, w)


def _targets(masks: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([np.asarray(masks[k], np.float32) for k in STRUCTURE_KINDS])


def _section_defects(t: np.ndarray, rng: np.random.Generator, *, pixel_nm: float,
                     chatter_period_nm: tuple[float, float]) -> np.ndarray:
    """A crop's transmission ``t = I / I0`` with the defects of a section cut on an ultramicrotome.

    The local thickness is scaled by a profile and the transmission raised to it
    (``exp(-OD * profile)``): chatter, a periodic thickness variation along the cut
    (relative amplitude 0.05-1, wavelength drawn from ``chatter_period_nm``); knife marks,
    lines along the cut where a nick left the section 10-30 % thinner; and, in a quarter
    of the crops, cracks across the cut, open about a section thickness wide and 0.2-1 um
    long, where no material is left (the open beam, with the crop's noise). The labels are
    kept: the structures are there, only their section is thinner (as the simulated
    microscope's truth keeps them)."""
    n_rows, n_cols = t.shape
    rows = 1.0 + rng.uniform(0.05, 1.0) * np.sin(
        2 * np.pi * np.arange(n_rows) * pixel_nm / rng.uniform(*chatter_period_nm) + rng.uniform(0, 2 * np.pi))
    cols = np.ones(n_cols)
    cols[rng.integers(0, n_cols, size=int(rng.integers(0, 4)))] = rng.uniform(0.7, 0.9)
    prof = np.clip(rows[:, None] * cols[None, :], 0.0, None)
    out = np.clip(t, 1e-3, None) ** prof
    if rng.random() < 0.25:
        noise = float(np.median(np.abs(np.diff(t, axis=1)))) / 0.954  # MAD of pixel differences -> sigma
        width = max(1, int(round(rng.uniform(50.0, 120.0) / pixel_nm)))
        for _ in range(int(rng.integers(1, 3))):
            r, c0 = int(rng.integers(0, n_rows)), int(rng.integers(0, n_cols))
            half = int(rng.uniform(200.0, 1000.0) / pixel_nm) // 2
            block = out[r:r + width, max(c0 - half, 0):c0 + half + 1]
            block[...] = 1.0 + rng.normal(0.0, noise, block.shape)
    return out


def _augment(t: np.ndarray, y: np.ndarray, rng: np.random.Generator, config: TrainingConfig) -> tuple[np.ndarray, np.ndarray]:
    """A training crop's input (:func:`_inputs`) from its transmission ``t = I / I0``: sectioning
    defects (``config.defects``), flips, 90-degree turns, a little blur and extra noise; then
    gain, offset and gamma on the stretched channel, and the open beam known (within +-10 %,
    a calibration's error) in ``config.open_beam`` of the crops."""
    from scipy import ndimage as ndi

    if rng.random() < config.defects:
        t = _section_defects(t, rng, pixel_nm=config.model_pixel_nm, chatter_period_nm=config.chatter_period_nm)
    k = int(rng.integers(4))
    t, y = np.rot90(t, k), np.rot90(y, k, axes=(1, 2))
    if rng.random() < 0.5:
        t, y = t[:, ::-1], y[:, :, ::-1]
    if rng.random() < 0.2:
        t = ndi.gaussian_filter(t, rng.uniform(0.3, 1.0))
    if rng.random() < 0.3:
        t = t + rng.normal(0, rng.uniform(0.02, 0.15) * max(float(np.ptp(t)), 1e-3), t.shape)
    x = _inputs(t, rng.uniform(0.9, 1.1) if rng.random() < config.open_beam else None)
    s = x[0] * rng.uniform(0.8, 1.25) + rng.normal(0, 0.1)
    if rng.random() < 0.3:
        s = np.sign(s) * np.abs(s) ** rng.uniform(0.8, 1.25)
    x[0] = s
    return np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.float32)


def _render(config: TrainingConfig, progress: Callable[[str], None] | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Canonical-grid (transmission ``I / I0``, targets) pairs rendered from the phantoms."""
    from cryoopt.sim.datasets import random_em_sections

    rng = np.random.default_rng(config.seed)
    per = max(1, config.sections // (len(config.presets) * len(config.seeds)))
    out = []
    side = config.patch_px + 8
    for sec in random_em_sections(config.presets, seeds=config.seeds, per_specimen=per, rng=rng,
                                  ranges={"stain_contrast": config.stain_contrast},
                                  size=lambda px: int(math.ceil(side * config.model_pixel_nm / px))):
        f = sec.pixel_size_nm / config.model_pixel_nm
        x = (_to_grid(sec.em.astype(float), f, order=1) / sec.params["dose_e_per_px"]).astype(np.float32)
        y = np.stack([_to_grid(t.astype(float), f, order=1) > 0.5 for t in _targets(sec.masks)]).astype(np.float32)
        out.append((x, y))
        if progress is not None and len(out) % 64 == 0:
            progress(f"rendered {len(out)} training sections")
    return out


def train_segmenter(
    config: TrainingConfig = TrainingConfig(),
    *,
    data: Iterable[tuple[np.ndarray, np.ndarray]] | None = None,
    progress: bool = True,
) -> LearnedSegmenter:
    """Train a :class:`LearnedSegmenter` (see the module docstring).

    Args:
        config: what to render and how long to train.
        data: canonical-grid ``(image, targets)`` pairs instead of rendering them
            (``targets`` is `4 x H x W`, :data:`STRUCTURE_KINDS` order; the image a
            transmission ``I / I0``, bright resin near 1, for the sectioning defects).
            Each crop is scaled by its own percentiles, as a field is at inference.
        progress: show a progress bar (tqdm).
    """
    torch = _torch()
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed + 1)
    say = (lambda m: tqdm.write(m)) if progress else None
    pairs = list(data) if data is not None else _render(config, say)
    if not pairs:
        raise EvaluationError("no training data")
    net = _build_unet(config.channels, len(STRUCTURE_KINDS))
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.steps)
    sides = [v for v in range(8, config.patch_px + 1, 8) if v >= min(config.min_patch_px, config.patch_px)] or [config.patch_px]
    # thin and rare classes weighted up (TrainingConfig.pos_weight, class_weight)
    pos_weight = torch.tensor(config.pos_weight, dtype=torch.float32).view(1, -1, 1, 1)
    class_weight = torch.tensor(config.class_weight, dtype=torch.float32)
    class_weight = class_weight / class_weight.sum()
    net.train()
    bar = tqdm(range(config.steps), desc="training segmenter", disable=not progress, mininterval=2.0)
    losses = []
    for _ in bar:
        xs, ys = [], []
        p = sides[int(rng.integers(len(sides)))]
        for _ in range(config.batch):
            x, y = pairs[int(rng.integers(len(pairs)))]
            r0 = int(rng.integers(0, max(1, x.shape[0] - p + 1)))
            c0 = int(rng.integers(0, max(1, x.shape[1] - p + 1)))
            xc, yc = x[r0:r0 + p, c0:c0 + p], y[:, r0:r0 + p, c0:c0 + p]
            if xc.shape != (p, p):
                xc = np.pad(xc, [(0, p - xc.shape[0]), (0, p - xc.shape[1])], mode="reflect")
                yc = np.pad(yc, [(0, 0), (0, p - yc.shape[1]), (0, p - yc.shape[2])], mode="reflect")
            xc, yc = _augment(xc, yc, rng, config)
            xs.append(xc)
            ys.append(yc)
        xb, yb = torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
        logits = net(xb)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, yb, pos_weight=pos_weight, reduction="none")
        prob = torch.sigmoid(logits)
        inter = (prob * yb).sum(dim=(0, 2, 3))
        dice = 1 - (2 * inter + 1) / (prob.sum(dim=(0, 2, 3)) + yb.sum(dim=(0, 2, 3)) + 1)
        loss = (class_weight * (bce.mean(dim=(0, 2, 3)) + dice)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if progress and len(losses) % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    net.eval()
    return LearnedSegmenter(net, config=config, final_loss=float(np.mean(losses[-50:])))


@dataclass
class LearnedSegmenter:
    """A trained U-Net behind the :class:`SectionSegmenter` protocol (see the module docstring).

    Args:
        net: the torch module (`1 x H x W` in, `4 x H x W` logits out).
        config: the training configuration (its ``model_pixel_nm`` is the model's grid).
        threshold: probability above which a pixel is labelled.
        envelope: add the nuclear envelope below the edge of the segmented nuclei
            (:func:`~cryoopt.pipeline.segmentation.nuclear_envelope`, where the image shows
            that edge) to the membranes: the net finds a quarter to two fifths of the
            envelope's pixels (a step at 15-50 nm pixels rather than lines) while its nuclei
            are right. Post-processing only (the weights and their cache key are unchanged);
            on the bench's held-out sections it raises the membranes' boundary F-score, not
            their pixel IoU.
    """

    net: Any = field(repr=False)
    config: TrainingConfig = TrainingConfig()
    threshold: float = 0.5
    final_loss: float = math.nan
    envelope: bool = True

    def probabilities(self, image: np.ndarray, *, pixel_size_nm: float,
                      reference_intensity: float | None = None) -> np.ndarray:
        """`4 x H x W` probabilities of :data:`STRUCTURE_KINDS` on the image's grid.

        ``reference_intensity`` is the open beam (or bare resin) in the image's units with
        its zero kept: the net then sees the optical density as well, which tells resin
        from cytoplasm in a field holding one of them only."""
        torch = _torch()
        img = check_image(image, name="em_image", min_size=8)
        px = check_pixel_size(pixel_size_nm, name="pixel_size_nm")
        if reference_intensity is not None and not (math.isfinite(reference_intensity) and reference_intensity > 0):
            raise EvaluationError("reference_intensity must be a positive finite intensity (the open beam in the "
                                  f"image's units), got {reference_intensity!r}")
        f = px / self.config.model_pixel_nm
        x = _inputs(_to_grid(img, f, order=1), None if reference_intensity is None else float(reference_intensity))
        depth = 2 ** (len(self.config.channels) - 1)
        xp, (h, w) = _pad_to(x, depth)
        with torch.no_grad():
            prob = torch.sigmoid(self.net(torch.from_numpy(np.ascontiguousarray(xp, np.float32))[None]))[0].numpy()
        prob = prob[:, :h, :w]
        from skimage.transform import resize

        return np.stack([resize(p, img.shape, order=1, mode="edge", anti_aliasing=False) for p in prob])

    def segment_section(
        self, image: np.ndarray, *, pixel_size_nm: float, reference_intensity: float | None = None,
        ignore: np.ndarray | None = None,
    ) -> Segmentation:
        from scipy import ndimage as ndi

        prob = self.probabilities(image, pixel_size_nm=pixel_size_nm, reference_intensity=reference_intensity)
        masks = {k: prob[i] > self.threshold for i, k in enumerate(STRUCTURE_KINDS)}
        if ignore is not None:
            ign = np.asarray(ignore, bool)
            if ign.shape != masks["cells"].shape:
                raise EvaluationError(f"ignore has shape {ign.shape}; it must be on the image's grid {masks['cells'].shape}")
            masks = {k: m & ~ign for k, m in masks.items()}
        masks["nuclei"] &= masks["cells"]
        masks["mitochondria"] &= masks["cells"] & ~masks["nuclei"]
        if self.envelope:
            masks["membranes"] |= nuclear_envelope(image, masks["nuclei"], pixel_size_nm)
        labels = {k: ndi.label(m)[0].astype(np.int32) for k, m in masks.items()}
        return Segmentation(labels, float(pixel_size_nm), {"model": "unet", "key": self.config.key()})

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        torch = _torch()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        torch.save({"state": self.net.state_dict(), "config": asdict(self.config), "final_loss": self.final_loss}, tmp)
        os.replace(tmp, out)  # atomic: a killed save never leaves half a file
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LearnedSegmenter:
        torch = _torch()
        data = torch.load(Path(path), map_location="cpu", weights_only=True)
        cfg = data["config"]
        config = TrainingConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
        net = _build_unet(config.channels, len(STRUCTURE_KINDS))
        net.load_state_dict(data["state"])
        net.eval()
        return cls(net, config=config, final_loss=float(data.get("final_loss", math.nan)))


def load_or_train(config: TrainingConfig = TrainingConfig(), *, progress: bool = True) -> LearnedSegmenter:
    """The cached model for ``config``, trained now (and cached) on first use."""
    _torch()  # no PyTorch: refuse before the cache is touched (a missing backend is no corrupt file)
    path = cache_dir() / f"segmenter-{config.key()}.pt"
    if path.exists():
        try:
            return LearnedSegmenter.load(path)
        except BackendUnavailableError:
            raise
        except (RuntimeError, KeyError, ValueError, TypeError, OSError, EOFError, pickle.UnpicklingError) as err:
            # a corrupt or foreign file: kept aside for inspection (weights cost CPU-minutes), then train afresh
            aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%dT%H%M%S')}")
            path.replace(aside)
            warnings.warn(f"the cached segmenter {path} could not be loaded ({type(err).__name__}: {err}); "
                          f"moved it to {aside} and training a new one", RuntimeWarning, stacklevel=2)
    t0 = time.perf_counter()
    model = train_segmenter(config, progress=progress)
    model.save(path)
    if progress:
        print(f"trained the learned segmenter in {time.perf_counter() - t0:.0f} s; cached at {path}")
    return model
