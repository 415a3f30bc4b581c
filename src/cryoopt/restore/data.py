"""Synthetic training data: simulated EM fields with charging and ice-crystal artifacts.

Each sample is a field of a seeded specimen phantom (:mod:`cryoopt.sim.specimen`)
imaged by :func:`cryoopt.sim.imaging.image_em`; the input is the image with
shot noise, charging (scan-order charge build-up, brightening and beam deflection)
and ice crystals (fractal, from Laplacian growth), the target is the simulator's
clean image of the same field. Artifact intensity and spatial distribution vary
from sample to sample: charging strength and ice coverage are drawn uniformly up
to the configured maxima, crystal radii are log-normal about the configured mean,
and fields are placed at random positions, depths and orientations.

Beam settings map to the simulator's inputs with first-order SEM relations:

* dose (electrons detected per pixel) ``= 6.2415 * I[pA] * dwell[us] * DQE`` with
  ``DQE = 0.25`` (1 pA for 1 us is 6.24 electrons);
* material contrast falls with landing energy, ``contrast = stain * (5 kV / V)^0.3``
  (lower voltage, shallower interaction volume, more surface contrast);
* charging grows with current and voltage,
  ``charging = strength * sqrt(I / 100 pA) * (V / 5 kV)^0.5``, clipped to the
  simulator's range.

Splits are kept apart by construction: train, validation and test fields come
from disjoint specimen phantoms (different seeds), 70/15/15 of the samples.

Example:
    >>> data = make_artifact_dataset(8, shape=(32, 32), seed=0)
    >>> len(data.train), data.train.inputs[0].shape
    (6, (32, 32))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cryoopt.exceptions import ParameterError
from cryoopt.restore._image import as_image
from cryoopt.restore.train import ImagePairs

__all__ = ["ArtifactDataset", "ArtifactSettings", "corrupt_image", "make_artifact_dataset", "split_counts"]

_DQE = 0.25
_E_PER_PA_US = 6.2415


class ArtifactSettings(BaseModel):
    """Settings of the artifact generator (the knobs :func:`~cryoopt.restore.tune_generator` tunes).

    Attributes:
        beam_current_pa: probe current, pA (dose and charging).
        voltage_kv: landing energy, kV (contrast and charging).
        dwell_us: pixel dwell time, us.
        charging_strength: maximum charging factor before the beam scaling; each
            sample draws uniformly from [0, max].
        ice_coverage: maximum fraction of the field covered by ice; each sample
            draws uniformly from [0, max].
        ice_fractal_dimension: box-counting dimension ``D`` of the crystals (1.40-1.68).
        ice_radius_nm: mean crystal radius ``r``, nm.
        artifact_probability: chance that a sample carries any artifact at all.
        stain_contrast: heavy-metal stain strength (1 = standard).
        thickness_nm: section thickness range, nm.
        pixel_size_nm: EM pixel size, nm.
        presets: specimen presets the phantoms are drawn from.
    """

    model_config = ConfigDict(extra="forbid")

    beam_current_pa: float = Field(100.0, ge=1.0, le=2000.0)
    voltage_kv: float = Field(5.0, ge=0.5, le=30.0)
    dwell_us: float = Field(1.0, gt=0.0, le=100.0)
    charging_strength: float = Field(1.5, ge=0.0, le=5.0)
    ice_coverage: float = Field(0.08, ge=0.0, le=0.5)
    ice_fractal_dimension: float = Field(1.55, ge=1.40, le=1.68)
    ice_radius_nm: float = Field(250.0, ge=20.0, le=5000.0)
    artifact_probability: float = Field(0.9, ge=0.0, le=1.0)
    stain_contrast: float = Field(1.0, ge=0.1, le=5.0)
    thickness_nm: tuple[float, float] = (70.0, 150.0)
    pixel_size_nm: float = Field(50.0, gt=0.0)
    presets: tuple[str, ...] = ("neurons", "tissue_block")

    def dose_e_per_px(self) -> float:
        return _E_PER_PA_US * self.beam_current_pa * self.dwell_us * _DQE

    def effective_contrast(self) -> float:
        return float(np.clip(self.stain_contrast * (5.0 / self.voltage_kv) ** 0.3, 0.0, 5.0))

    def effective_charging(self) -> float:
        return float(np.clip(self.charging_strength * math.sqrt(self.beam_current_pa / 100.0) * math.sqrt(self.voltage_kv / 5.0), 0.0, 5.0))


@dataclass
class ArtifactDataset:
    """Train / validation / test :class:`~cryoopt.restore.train.ImagePairs` from disjoint specimens."""

    train: ImagePairs
    val: ImagePairs
    test: ImagePairs
    settings: ArtifactSettings


def split_counts(n: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> tuple[int, int, int]:
    """Integer split of ``n`` samples, each part at least one sample (needs ``n >= 3``)."""
    if n < 3:
        raise ParameterError(f"need at least 3 samples for train/val/test splits, got n={n}")
    if len(fractions) != 3 or any(f <= 0 for f in fractions):
        raise ParameterError(f"fractions must be three positive numbers, got {fractions}")
    tot = sum(fractions)
    n_val = max(1, int(round(n * fractions[1] / tot)))
    n_test = max(1, int(round(n * fractions[2] / tot)))
    while n_val + n_test > n - 1:  # keep at least one training sample
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n - n_val - n_test, n_val, n_test


def _d_grid(d: float) -> float:
    """Fractal dimension on a 0.02 grid: each distinct D grows (and caches) a crystal library (~0.5 s)."""
    return float(np.clip(round(d / 0.02) * 0.02, 1.40, 1.68))


def _sample_em(settings: ArtifactSettings, spec: Any, shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    from cryoopt.sim.imaging import IceContamination, image_em

    H, W = shape
    t_nm = float(rng.uniform(*settings.thickness_nm))
    px = settings.pixel_size_nm
    extent = np.asarray(spec.extent_nm, float)
    n_sections = max(1, int(extent[2] // t_nm) - 1)
    span = (extent[:2] - np.array([W, H]) * px).clip(min=0.0)
    best, best_std = None, -1.0
    for _ in range(6):  # prefer fields with structure (empty resin or bare cytoplasm teaches little)
        origin = (float(rng.uniform(0, span[0])), float(rng.uniform(0, span[1])))
        cand = spec.section(int(rng.integers(n_sections)), thickness_nm=t_nm, shape=(H, W), pixel_size_nm=px,
                            origin_nm=origin, rotation_deg=float(rng.uniform(0, 360)))
        sd = float(cand.density.std())
        if sd > best_std:
            best, best_std = cand, sd
        if sd > 0.08:
            break
    truth = best
    with_art = rng.random() < settings.artifact_probability
    charging = settings.effective_charging() * float(rng.uniform(0, 1)) if with_art else 0.0
    cov = settings.ice_coverage * float(rng.uniform(0, 1)) if with_art else 0.0
    ice = IceContamination(coverage=cov, fractal_dimension=_d_grid(settings.ice_fractal_dimension), mean_radius_nm=settings.ice_radius_nm) if cov > 0 else None
    m = image_em(truth, stain_contrast=settings.effective_contrast(), charging=charging, ice=ice,
                 dose_e_per_px=settings.dose_e_per_px(), rng=rng)
    meta = {"charging": charging, "ice_coverage": cov, "thickness_nm": t_nm, "pixel_size_nm": px}
    return m.image, m.truth.clean, meta


@lru_cache(maxsize=64)
def _phantom(preset: str, seed: int) -> Any:
    """The specimen phantom of ``preset`` and ``seed``, built once per process.

    A phantom depends only on its preset and seed, and imaging it only reads it; datasets that
    differ only in their artifact settings (a tuned and a default run) share their phantoms
    instead of rebuilding them (about 0.1 s each).
    """
    from cryoopt.sim.specimen import Specimen

    return Specimen.from_preset(preset, seed=seed)


def make_artifact_dataset(
    n_images: int,
    *,
    settings: ArtifactSettings | None = None,
    shape: tuple[int, int] = (64, 64),
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    specimens_per_split: int = 2,
) -> ArtifactDataset:
    """Simulate ``n_images`` (corrupted, clean) EM pairs split 70/15/15 over disjoint specimens.

    Args:
        n_images: total samples (>= 3).
        settings: :class:`ArtifactSettings` (defaults if None).
        shape: image size ``(H, W)`` in pixels.
        seed: seeds specimens (train/val/test use disjoint phantom seeds) and noise.
        fractions: train/val/test fractions.
        specimens_per_split: phantoms per split per preset.
    """
    settings = settings or ArtifactSettings()
    counts = split_counts(n_images, fractions)
    splits = []
    for k, (name, n) in enumerate(zip(("train", "val", "test"), counts)):
        ss = np.random.SeedSequence([seed, k, 9091])
        rng = np.random.default_rng(ss)
        specs = [_phantom(p, int(1_000_003 * k + 7919 * seed + j + 31 * i))
                 for i, p in enumerate(settings.presets) for j in range(specimens_per_split)]
        xs, ys, meta = [], [], []
        for _ in range(n):
            x, y, m = _sample_em(settings, specs[int(rng.integers(len(specs)))], shape, rng)
            m["split"] = name
            xs.append(x)
            ys.append(y)
            meta.append(m)
        splits.append(ImagePairs(np.stack(xs), np.stack(ys), meta))
    return ArtifactDataset(*splits, settings=settings)


def corrupt_image(image: np.ndarray, *, settings: ArtifactSettings | None = None, seed: int | np.random.Generator = 0) -> np.ndarray:
    """Apply the simulator's charging, ice and shot noise to a user's (clean) image.

    The image is mapped to transmission ``T`` in [0.05, 1] by its 1st/99.9th
    percentiles, read as the stain density ``-ln(T) / 1.2`` of a 100 nm section,
    imaged by :func:`~cryoopt.sim.imaging.image_em` with the settings' artifacts,
    and mapped back to the image's units; used to fine-tune on real images
    (:func:`~cryoopt.restore.finetune`).
    """
    from cryoopt.sim.specimen import SectionTruth, pixel_affine

    img = as_image(image)
    rng = np.random.default_rng(seed) if not isinstance(seed, np.random.Generator) else seed
    lo, hi = np.percentile(img, (1.0, 99.9))
    hi = hi if hi > lo else lo + 1.0
    t = np.clip(0.05 + 0.95 * (img - lo) / (hi - lo), 0.05, 1.0)
    density = (-np.log(t) / 1.2).astype(np.float32)
    z = np.zeros(img.shape, bool)
    truth = SectionTruth(index=0, z_nm=50.0, thickness_nm=100.0, pixel_size_nm=settings.pixel_size_nm if settings else 50.0,
                         affine=pixel_affine((0.0, 0.0), settings.pixel_size_nm if settings else 50.0),
                         cells=np.ones(img.shape, np.int32), nuclei=z, mitochondria=z, membranes=z, targets=z,
                         density=density, target_density=np.zeros(img.shape, np.float32))

    class _Spec:
        def section(self, *a: Any, **k: Any) -> SectionTruth:
            return truth

    s = (settings or ArtifactSettings()).model_copy(update={"stain_contrast": 1.0, "voltage_kv": 5.0, "artifact_probability": 1.0})
    from cryoopt.sim.imaging import IceContamination, image_em

    charging = s.effective_charging() * float(rng.uniform(0, 1))
    cov = s.ice_coverage * float(rng.uniform(0, 1))
    ice = IceContamination(coverage=cov, fractal_dimension=_d_grid(s.ice_fractal_dimension), mean_radius_nm=s.ice_radius_nm) if cov > 0 else None
    out = image_em(truth, stain_contrast=1.0, charging=charging, ice=ice, dose_e_per_px=s.dose_e_per_px(), rng=rng).image
    return ((out - 0.05) / 0.95 * (hi - lo) + lo).astype(np.float32)
