"""Physics backends of the simulated devices backed by :mod:`cryoopt.sim`, registered as ``"sim"``.

This module is the one place where ``instruments/`` imports ``sim/`` (the
simulated-device backend, see DESIGN.md). Importing it registers:

- ``sectioning_backends["sim"]`` -> :class:`SimSectioning`: the stochastic defect
  model :class:`cryoopt.sim.sectioning.SectioningModel` (compression, chatter,
  crevasses, knife marks, ribbon failure, knife wear);
- ``staining_backends["sim"]`` -> :class:`SimStaining`: the tabulated
  diffusion-reaction solution :func:`cryoopt.sim.fast.fast_staining`;
- ``imaging_backends["sim"]`` -> :class:`SimImaging`: LM and EM images of the
  section of a seeded :class:`cryoopt.sim.specimen.Specimen` phantom (rendered here
  from the specimen's ground truth: PSF blur and defocus, Poisson-Gaussian noise,
  label and background from the staining features; EM contrast from the stain and
  section quality, chatter, knife marks, cracks and charging from the dose).

The same objects are called directly by the environments' ``backend="direct"``
mode, so the simulated bench and the direct path share one physics.

Example:
    >>> from cryoopt.instruments import open_bench
    >>> import cryoopt.instruments.simulated.sim_physics  # registers "sim"
    >>> bench = open_bench(seed=0, physics={"ultramicrotome": "sim", "stainer": "sim"})
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from cryoopt.instruments.simulated.physics import imaging_backends, sectioning_backends, staining_backends

__all__ = ["LABEL_REAGENTS", "SimImaging", "SimSectioning", "SimStaining", "section_quality"]

#: Reagents whose step is the antibody incubation (the first one found is used).
LABEL_REAGENTS = ("PRIMARY", "SECONDARY")


def section_quality(features: Mapping[str, Any]) -> float:
    """Scalar section quality in [0, 1]: 0 for a failed ribbon, else
    ``(1 - compression)(1 - chatter) exp(-crack_density_per_um)``."""
    if not bool(features.get("ribbon_ok", True)):
        return 0.0
    comp = float(features.get("compression", 0.0))
    chat = float(features.get("chatter", 0.0))
    crack = float(features.get("crack_density_per_um", 0.0))
    return float(min(max((1.0 - comp) * (1.0 - chat) * math.exp(-crack), 0.0), 1.0))


@sectioning_backends.register("sim")
class SimSectioning:
    """``cut(setpoints, rng)`` through :class:`cryoopt.sim.sectioning.SectioningModel`.

    Args:
        initial_wear: knife wear (0 new, 1 unusable) of a fresh block on the current edge.
        wear_per_cut: passed to the model.

    The model keeps its own wear in [0, 1]; when the device reports ``knife_wear == 0``
    (a fresh edge segment) it restarts at ``initial_wear``. Setpoints are clipped to the
    model's domain (temperatures above 0 degC count as 0 degC, where no ribbon forms).
    Output keys: the model's :class:`SectionQuality` fields, plus
    ``actual_thickness_nm``, ``nominal_thickness_nm`` and ``quality``
    (:func:`section_quality`), which the staining and imaging backends read.
    """

    def __init__(self, *, initial_wear: float = 0.0, wear_per_cut: float = 2e-4) -> None:
        self.initial_wear = float(initial_wear)
        self.wear_per_cut = float(wear_per_cut)
        self._model: Any = None
        self._rng: np.random.Generator | None = None

    @property
    def wear(self) -> float:
        return self.initial_wear if self._model is None else float(self._model.wear)

    def cut(self, setpoints: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        from cryoopt.sim.sectioning import SectioningModel, SectioningSetpoints

        t = float(setpoints.get("section_thickness_nm", 100.0))
        if str(setpoints.get("mode", "SECT")).upper() == "TRIM":
            return {"actual_thickness_nm": t, "nominal_thickness_nm": t, "trimmed": 1.0, "quality": 0.0, "ribbon_ok": False}
        if self._model is None or self._rng is not rng:
            self._model = SectioningModel(rng=rng, knife_wear=self.initial_wear, wear_per_cut=self.wear_per_cut)
            self._rng = rng
        if int(setpoints.get("knife_wear", 1)) == 0 and self._model.cuts:
            self._model.wear = self.initial_wear

        def temp(name: str) -> float:
            v = float(setpoints.get(f"measured_{name}_temperature_c", setpoints.get(f"{name}_temperature_c", -150.0)))
            return min(max(v, -196.0), 0.0)

        sp = SectioningSetpoints(
            section_thickness_nm=min(max(t, 5.0), 1000.0),
            cutting_speed_mm_s=min(max(float(setpoints.get("cutting_speed_mm_s", 1.0)), 0.01), 100.0),
            specimen_temp_c=temp("specimen"),
            knife_temp_c=temp("knife"),
            chamber_temp_c=temp("chamber"),
        )
        q = self._model.cut(sp)
        out: dict[str, Any] = q.to_dict()
        out.update(actual_thickness_nm=float(q.thickness_nm), nominal_thickness_nm=t)
        out["quality"] = section_quality(out)
        return out


@staining_backends.register("sim")
class SimStaining:
    """``run(protocol, rng, *, section)`` through :func:`cryoopt.sim.fast.fast_staining`.

    The antibody step is the first step whose reagent is in :data:`LABEL_REAGENTS`
    (dilution, time, temperature; clipped to the model's 0-45 degC); every step's
    ``wash_cycles`` of ``wash_min`` each are the washes. The section thickness is the
    section's ``actual_thickness_nm`` (100 nm if unknown). Outputs: ``label_intensity``
    (= ``mean_label``, fraction of sites bound), ``uniformity``, ``background`` (free
    antibody left, fraction of the bath), ``penetration_depth_nm``, ``reliable``.
    No antibody step gives zero label. ``rng`` is unused (the model is deterministic;
    measurement noise belongs to the readout).

    Args:
        tissue: :class:`cryoopt.sim.diffusion.TissueProperties` (default: the model's).
        wash_min: minutes per wash cycle (match the platform's ``sim.wash_time_s``).
    """

    def __init__(self, *, tissue: Any = None, wash_min: float = 1.0) -> None:
        self.tissue = tissue
        self.wash_min = float(wash_min)

    def run(self, protocol: Sequence[Mapping[str, Any]], rng: np.random.Generator, *,
            section: Mapping[str, Any]) -> dict[str, Any]:
        from cryoopt.sim.diffusion import StainingProtocol
        from cryoopt.sim.fast import fast_staining

        thickness = float(section.get("actual_thickness_nm", 100.0))
        washes = int(sum(int(s.get("wash_cycles", 0)) for s in protocol))
        label = next((s for s in protocol if str(s.get("reagent", "")).upper() in LABEL_REAGENTS), None)
        if label is None:
            return {"label_intensity": 0.0, "uniformity": 0.0, "background": 0.0, "penetration_depth_nm": 0.0, "reliable": True}
        p = StainingProtocol(
            section_thickness_nm=min(max(thickness, 10.0), 1e6),
            antibody_dilution=min(max(float(label.get("dilution", 100.0)), 1.0), 1e5),
            incubation_min=min(max(float(label.get("time_min", 10.0)), 0.0), 10080.0),
            temperature_c=min(max(float(label.get("temperature_c", 20.0)), 0.0), 45.0),
            wash_cycles=min(washes, 50),
            wash_min=self.wash_min,
        )
        s = fast_staining(p, tissue=self.tissue)
        return {
            "label_intensity": float(min(max(s.mean_label, 0.0), 1.0)),
            "uniformity": float(s.uniformity),
            "background": float(min(max(s.free_antibody, 0.0), 1.0)),
            "penetration_depth_nm": float(s.penetration_depth_nm),
            "reliable": bool(s.reliable),
        }


@imaging_backends.register("sim")
class SimImaging:
    """LM/EM images of the current section of a seeded specimen phantom.

    ``acquire(settings, rng, *, sample)`` renders section ``sample["section_index"]``
    (thickness ``actual_thickness_nm``) of the specimen on a square grid of
    ``image_size_px`` at ``lm_pixel_size_nm``/``em_pixel_size_nm`` (the microscope
    profile's ``sim.pixel_size_nm`` should say the same), centred on the specimen (EM field centred inside the LM field, both on the cell nearest the specimen's centre).

    - LM: ``expo*gain*(lm_signal*label*uniformity*quality*targets + lm_background*background*cells + dark)``
      blurred by a Gaussian PSF of sigma ``psf_nm/px*sqrt(1+(dz/dof_um)^2)``, Poisson + read noise.
    - EM: ``expo*gain*em_signal*(1 - contrast*density)``, ``contrast = 0.2 + 0.6*quality``,
      chatter as a periodic modulation along the cut (axis 0), knife marks as column
      streaks, cracks as dark lines, charging as bright patches once ``expo*gain``
      exceeds ``charging_dose``.

    Args:
        preset: specimen preset name (``envs/<preset>.yaml``).
        specimen_seed: seed of the phantom.
        n_planes: planes sampled through the section thickness (1 is fastest).
        z_start_fraction: depth of the block face (fraction of the phantom's z extent);
            section ``k`` is the ``k``-th slab below it (wrapping at the bottom).
    """

    def __init__(self, *, preset: str = "neurons", specimen_seed: int = 0, n_planes: int = 1,
                 psf_nm: float = 250.0, dof_um: float = 0.8, lm_signal: float = 40.0, lm_background: float = 20.0,
                 em_signal: float = 40.0, charging_dose: float = 200.0,
                 lm_pixel_size_nm: float = 100.0, em_pixel_size_nm: float = 25.0,
                 z_start_fraction: float = 0.35) -> None:
        self.z_start_fraction = float(z_start_fraction)
        self.pixel_size_nm = {"LM": float(lm_pixel_size_nm), "EM": float(em_pixel_size_nm)}
        self.preset, self.specimen_seed, self.n_planes = preset, int(specimen_seed), int(n_planes)
        self.psf_nm, self.dof_um = float(psf_nm), float(dof_um)
        self.lm_signal, self.lm_background, self.em_signal = float(lm_signal), float(lm_background), float(em_signal)
        self.charging_dose = float(charging_dose)
        self._specimen: Any = None
        self.last_truth: Any = None

    @property
    def specimen(self) -> Any:
        if self._specimen is None:
            from cryoopt.sim.specimen import Specimen

            self._specimen = Specimen.from_preset(self.preset, seed=self.specimen_seed)
        return self._specimen

    def truth(self, sample: Mapping[str, Any], *, size: int, pixel_size_nm: float) -> Any:
        spec = self.specimen
        thick = float(min(max(float(sample.get("actual_thickness_nm", 100.0)), 10.0), 5000.0))
        n_slabs = max(1, int(float(spec.extent_nm[2]) // thick))
        index = (int(self.z_start_fraction * n_slabs) + int(sample.get("section_index", 0))) % n_slabs
        centre = spec.extent_nm[:2] / 2.0
        ells = spec.cells.ellipsoids
        if len(ells):  # centre the fields on the cell nearest the middle of the specimen
            centre = ells[int(np.argmin(np.hypot(*(ells[:, :2] - centre).T))), :2]
        origin = (float(centre[0] - size * pixel_size_nm / 2.0), float(centre[1] - size * pixel_size_nm / 2.0))
        return spec.section(index, thickness_nm=thick, shape=(size, size), pixel_size_nm=pixel_size_nm,
                            origin_nm=origin, n_planes=self.n_planes)

    def acquire(self, settings: Mapping[str, Any], rng: np.random.Generator, *,
                sample: Mapping[str, Any]) -> np.ndarray:
        n = int(settings.get("image_size_px", 128))
        em = str(settings.get("modality", "LM")).upper() == "EM"
        px = float(settings.get("pixel_size_nm", self.pixel_size_nm["EM" if em else "LM"]))
        expo = float(settings.get("exposure_ms", 50.0))
        gain = float(settings.get("gain", 1.0))
        dose = expo * gain
        truth = self.truth(sample, size=n, pixel_size_nm=px)
        self.last_truth = truth
        quality = float(sample.get("quality", 1.0))
        if not em:
            label = float(sample.get("label_intensity", 0.0)) * float(sample.get("uniformity", 1.0))
            bg = float(sample.get("background", 0.0))
            tgt = truth.target_density if truth.target_density.any() else truth.targets.astype(np.float32)
            cells = (truth.cells > 0).astype(np.float32)
            mean = self.lm_signal * label * quality * tgt + self.lm_background * bg * cells + 0.5
            dz = abs(float(settings.get("focus_um", 0.0)) - float(settings.get("best_focus_um", 0.0)))
            sigma = self.psf_nm / px * math.sqrt(1.0 + (dz / self.dof_um) ** 2)
            mean = ndi.gaussian_filter(mean.astype(np.float32), min(sigma, n / 4.0)) * (dose / 50.0)
        else:
            contrast = 0.2 + 0.6 * quality
            img = 1.0 - contrast * truth.density
            rows = np.arange(n, dtype=np.float32)[:, None]
            chatter = float(sample.get("chatter", 0.0))
            if chatter > 0:
                img = img * (1.0 + chatter * np.sin(2 * np.pi * rows / 12.0))
            marks = int(sample.get("knife_marks", 0))
            if marks:
                cols = rng.integers(0, n, size=min(marks, n))
                img[:, cols] *= 0.85
            cracks = float(sample.get("crack_density_per_um", 0.0)) * n * px / 1000.0
            for _ in range(int(rng.poisson(min(cracks, 50.0)))):
                r = int(rng.integers(0, n))
                img[r : r + 1, :] *= 0.3
            if dose > self.charging_dose:
                frac = min(1.0, (dose - self.charging_dose) / (10.0 * self.charging_dose))
                blob = ndi.gaussian_filter(rng.random((n, n)).astype(np.float32), n / 16.0)
                img = img + 2.0 * (blob > np.quantile(blob, 1.0 - 0.3 * frac))
            mean = self.em_signal * img * (dose / 50.0)
        out = rng.poisson(np.maximum(mean, 0.0)).astype(np.float64) + rng.normal(0.0, 2.0, mean.shape)
        return np.clip(out, 0, 65535).astype(np.uint16)
