"""Cross-microscope enhancement: widefield images (or stacks) -> confocal-quality images.

Training pairs are the same field imaged on both microscopes, registered onto the
confocal grid (:class:`~cryoopt.restore.pairs.PairStore` for real pairs, or
simulated by :func:`simulate_lm_pairs`). The network learns widefield -> confocal
*image* (noisy, as a real pair provides); on simulated held-out pairs it is scored
against the confocal ground truth (noise-free) and compared with Richardson-Lucy
deconvolution, the classical way to sharpen a widefield image. The RL kernel is the
Gaussian that turns the confocal PSF into the widefield one,
``sigma = sqrt(sigma_wf^2 - sigma_cf^2)``, so RL targets the confocal resolution
rather than an (unreachable) delta function.

Stacks (``D x H x W``, consecutive sections) use a 3-D U-Net (``dims=3``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cryoopt.restore.data import split_counts
from cryoopt.restore.evaluate import image_quality, richardson_lucy, summarize
from cryoopt.restore.train import ImagePairs, TrainConfig, predict, train
from cryoopt.restore.unet import UNetConfig, build_unet

__all__ = ["CROSS_MODEL_2D", "CROSS_MODEL_3D", "CrossDataset", "cross_microscope_gains", "rl_sigma_px", "simulate_lm_pairs"]

CROSS_MODEL_2D = UNetConfig(base_channels=16, depth=2)
CROSS_MODEL_3D = UNetConfig(base_channels=8, depth=2, dims=3)


@dataclass
class CrossDataset:
    """Widefield -> confocal pairs per split; ``test_truth`` holds the confocal clean images of the test split."""

    train: ImagePairs
    val: ImagePairs
    test: ImagePairs
    test_truth: list[np.ndarray]
    pixel_size_nm: float


def rl_sigma_px(pixel_size_nm: float, *, wavelength_nm: float = 520.0, na: float = 1.4) -> float:
    """Gaussian sigma (px) of the kernel between the confocal and widefield PSFs."""
    from cryoopt.sim.imaging import lm_resolution_nm

    wf = lm_resolution_nm("widefield", wavelength_nm=wavelength_nm, na=na) / 2.3548
    cf = lm_resolution_nm("confocal", wavelength_nm=wavelength_nm, na=na) / 2.3548
    return math.sqrt(wf**2 - cf**2) / pixel_size_nm


def simulate_lm_pairs(
    n: int,
    *,
    shape: tuple[int, int] = (64, 64),
    depth: int | None = None,
    pixel_size_nm: float = 50.0,
    thickness_nm: float = 200.0,
    label_um: float = 5.0,
    seed: int = 0,
    preset: str = "tissue_block",
) -> CrossDataset:
    """Simulate ``n`` registered widefield/confocal pairs (2-D, or stacks of ``depth`` sections), split 70/15/15.

    Splits use disjoint specimen phantoms. Both microscopes see the same field on
    the same grid (the registration step is exercised by :class:`PairStore`).
    """
    from cryoopt.sim.imaging import image_lm
    from cryoopt.sim.specimen import Specimen

    counts = split_counts(n)
    out: list[ImagePairs] = []
    truth: list[np.ndarray] = []
    H, W = shape
    for k, (name, m) in enumerate(zip(("train", "val", "test"), counts)):
        rng = np.random.default_rng(np.random.SeedSequence([seed, k, 4242]))
        specs = [Specimen.from_preset(preset, seed=1_000_003 * k + 7919 * seed + j) for j in range(2)]
        xs, ys, cl, meta = [], [], [], []
        for _ in range(m):
            spec = specs[int(rng.integers(len(specs)))]
            nz = max(1, int(spec.extent_nm[2] // thickness_nm) - (depth or 1) - 1)
            for _ in range(10):  # fields with labelled structure (an empty field has no resolution to gain)
                z0 = int(rng.integers(nz))
                origin = tuple(float(v) for v in rng.uniform(0, np.maximum(spec.extent_nm[:2] - np.array([W, H]) * pixel_size_nm, 1.0)))
                probe = spec.section(z0, thickness_nm=thickness_nm, shape=shape, pixel_size_nm=pixel_size_nm, origin_nm=origin)
                if float(np.mean(probe.target_density > 0)) > 0.03:
                    break
            planes_wf, planes_cf, planes_cl = [], [], []
            for z in range(z0, z0 + (depth or 1)):
                tr = spec.section(z, thickness_nm=thickness_nm, shape=shape, pixel_size_nm=pixel_size_nm, origin_nm=origin)
                wf = image_lm(tr, label_um, microscope="widefield", rng=rng)
                cf = image_lm(tr, label_um, microscope="confocal", rng=rng)
                planes_wf.append(wf.image)
                planes_cf.append(cf.image)
                planes_cl.append(cf.truth.clean)
            st = (lambda p: np.stack(p)) if depth else (lambda p: p[0])
            xs.append(st(planes_wf))
            ys.append(st(planes_cf))
            cl.append(st(planes_cl))
            meta.append({"split": name, "z0": z0, "origin_nm": origin})
        out.append(ImagePairs(xs, ys, meta))
        if name == "test":
            truth = cl
    return CrossDataset(*out, test_truth=truth, pixel_size_nm=pixel_size_nm)


def _scores(outs: Sequence[np.ndarray], truth: Sequence[np.ndarray]) -> dict[str, float]:
    qs = [image_quality(o, t) for o, t in zip(outs, truth)]
    res = {k: float(np.mean([q[k] for q in qs])) for k in ("psnr_db", "ssim")}
    res["frc_px_median"] = float(np.median([q["frc_px"] for q in qs]))
    return res


def cross_microscope_gains(
    seeds: Sequence[int] = (0, 1, 2),
    *,
    n: int = 60,
    shape: tuple[int, int] = (64, 64),
    depth: int | None = None,
    config: TrainConfig | None = None,
    model_config: UNetConfig | None = None,
    rl_iter: int = 15,
) -> dict[str, Any]:
    """Widefield -> confocal network vs Richardson-Lucy on held-out simulated pairs, over seeds.

    Returns absolute scores (vs the confocal ground truth) per method and the gains
    (mean, sd over seeds) of the network over the widefield input and over RL.
    """
    mc = model_config or (CROSS_MODEL_3D if depth else CROSS_MODEL_2D)
    cfg = config or TrainConfig(steps=300, batch_size=8, crop_px=48, crop_depth=4, val_every=100)
    per_seed = []
    for seed in seeds:
        data = simulate_lm_pairs(n, shape=shape, depth=depth, seed=seed)
        model = build_unet(mc, seed=seed)
        res = train(model, data.train, data.val, config=cfg.model_copy(update={"seed": seed}))
        sig = rl_sigma_px(data.pixel_size_nm)
        methods = {
            "widefield": list(data.test.inputs),
            "richardson_lucy": [richardson_lucy(x, sigma_px=sig, num_iter=rl_iter) for x in data.test.inputs],
            "unet": [predict(model, x) for x in data.test.inputs],
        }
        per_seed.append({"seed": seed, "train_seconds": res.seconds, "scores": {k: _scores(v, data.test_truth) for k, v in methods.items()}})
    names = ("widefield", "richardson_lucy", "unet")
    absolute = {m: {k: summarize([s["scores"][m][k] for s in per_seed]) for k in ("psnr_db", "ssim", "frc_px_median")} for m in names}
    gains = {}
    for ref in ("widefield", "richardson_lucy"):
        gains[f"vs_{ref}"] = {k: summarize([sign * (s["scores"]["unet"][k] - s["scores"][ref][k]) for s in per_seed])
                              for k, sign in (("psnr_db", 1), ("ssim", 1), ("frc_px_median", -1))}
    return {"per_seed": per_seed, "absolute": absolute, "gains": gains, "depth": depth}
