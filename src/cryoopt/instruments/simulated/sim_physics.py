"""Physics backends of the simulated devices backed by :mod:`cryoopt.sim`, registered as ``"sim"``.

This module is the one place where ``instruments/`` imports ``sim/`` (the
simulated-device backend, see DESIGN.md). Importing it registers:

- ``sectioning_backends["sim"]`` -> :class:`SimSectioning`: the stochastic defect
  model :class:`cryoopt.sim.sectioning.SectioningModel` (compression, chatter,
  crevasses, knife marks, ribbon failure, knife wear);
- ``staining_backends["sim"]`` -> :class:`SimStaining`: the tabulated
  diffusion-reaction solution :func:`cryoopt.sim.fast.fast_staining`;
- ``imaging_backends["sim"]`` -> :class:`SimImaging`: LM and EM images of the
  section of a seeded :class:`cryoopt.sim.specimen.Specimen` phantom formed by
  :func:`cryoopt.sim.imaging.image_lm` / :func:`~cryoopt.sim.imaging.image_em`: the
  label follows the staining result on the specimen's target structures, EM
  contrast follows the stain and the section's thickness defects (chatter, knife
  marks, cracks), charging follows the electron dose.

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

from cryoopt.instruments.simulated.physics import imaging_backends, sectioning_backends, staining_backends

__all__ = ["CONTRAST_REAGENTS", "LABEL_REAGENTS", "SimImaging", "SimSectioning", "SimStaining", "em_stain_contrast", "section_quality"]

#: Reagents whose step is the antibody incubation (the first one found is used).
LABEL_REAGENTS = ("PRIMARY", "SECONDARY")
#: Heavy-metal contrasting reagents and their uptake time constants (min).
CONTRAST_REAGENTS = {"UA": 10.0, "LEAD": 5.0}


def em_stain_contrast(protocol: Sequence[Mapping[str, Any]]) -> float | None:
    """Heavy-metal EM contrast of the UA/lead steps (1 = 10 min UA + 5 min lead), or None without any.

    Each reagent saturates as ``1 - exp(-t / tau)`` and contributes half the standard contrast
    at ``t = tau`` (uranyl acetate binds nucleic acids and membranes, lead citrate what UA bound).
    """
    steps = [s for s in protocol if str(s.get("reagent", "")).upper() in CONTRAST_REAGENTS]
    if not steps:
        return None
    norm = 0.5 / (1.0 - math.exp(-1.0))
    total = sum(norm * (1.0 - math.exp(-max(float(s.get("time_min", 0.0)), 0.0) / CONTRAST_REAGENTS[str(s["reagent"]).upper()]))
                for s in steps)
    return float(min(total, 5.0))


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
    antibody left, fraction of the bath), ``penetration_depth_nm``, ``reliable``, and
    ``em_stain_contrast`` (:func:`em_stain_contrast`) when the protocol has UA/lead steps.
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
        contrast = em_stain_contrast(protocol)
        extra = {} if contrast is None else {"em_stain_contrast": contrast}
        if label is None:
            return {"label_intensity": 0.0, "uniformity": 0.0, "background": 0.0, "penetration_depth_nm": 0.0, "reliable": True, **extra}
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
            **extra,
        }


@imaging_backends.register("sim")
class SimImaging:
    """LM/EM images of the current section of a seeded specimen phantom, formed by
    :func:`cryoopt.sim.imaging.image_lm` and :func:`cryoopt.sim.imaging.image_em`.

    ``acquire(settings, rng, *, sample)`` renders section ``sample["section_index"]``
    (thickness ``actual_thickness_nm``) of the specimen on a square grid of
    ``image_size_px`` at ``lm_pixel_size_nm``/``em_pixel_size_nm`` (the microscope
    profile's ``sim.pixel_size_nm`` should say the same), both centred on the labelled
    structure nearest the specimen's centre (:meth:`roi`), so the EM field lies in the
    middle of the LM field. The rendered section geometry is cached per section and grid.

    - LM (widefield, :func:`image_lm`): the label map is the specimen's labelled
      targets (``target_density``, the preset's ``target_site``) times the bound label
      density of the staining result (``label_intensity`` = fraction of sites bound,
      times the tissue's ``site_density_um``), plus unspecific background in the cells
      from the free antibody left (``background``); photons scale with
      ``exposure_ms / 50``; defocus ``dz = |focus_um - best_focus_um|`` widens the PSF
      by ``sqrt(1 + (dz / dof_um)^2)`` (an effective NA); ``gain`` is ADU per count.
    - EM (:func:`image_em`, dark = stained): Beer-Lambert contrast of the projected
      stain density times the local section thickness, ``stain_contrast`` from the
      sample's ``em_stain_contrast`` (UA/lead steps, see :class:`SimStaining`) or the
      standard post-stain (``stain_contrast``). Section defects are thickness defects:
      chatter modulates the thickness along the cut (axis 0, period ``chatter_period_nm``),
      knife marks are columns 30 % thinner, cracks are rows with no material.
      Electron dose ``em_dose_e_per_px * exposure_ms / 50`` sets the shot noise and,
      above ``charging_dose``, the charging strength ``dose / charging_dose - 1``
      (capped at 5). Ice, drift and scan noise come from the constructor (the env
      passes its scenario's ``imaging`` settings). Output is ``counts * gain``.
    - Section compression is not imaged (the grid stays square).

    Both images are clipped to ``uint16`` (high gain saturates).

    Args:
        preset: specimen preset name (``envs/<preset>.yaml``).
        specimen_seed: seed of the phantom.
        n_planes: planes sampled through the section thickness (1 is fastest).
        psf_nm: lateral FWHM of the LM PSF in focus, nm (sets the NA: ``0.51 * 520 / psf_nm``).
        dof_um: LM depth of field, um.
        lm_signal: photons per pixel per uM of bound label in a 100 nm section, /10, at 50 ms.
        lm_background: autofluorescence + stray light photons per pixel at 50 ms.
        em_signal: electrons per pixel at 50 ms, /5 (40 -> 200 e/px).
        charging_dose: the section charges above ``5 * charging_dose`` electrons per pixel
            (1000 e/px by default: exposures beyond 250 ms at ``em_signal=40``).
        lm_pixel_size_nm, em_pixel_size_nm: pixel sizes.
        z_start_fraction: depth of the field (fraction of the phantom's z extent) when the
            specimen has no labelled structure (see :meth:`roi`).
        stain_contrast: heavy-metal contrast when the sample says nothing (1 = standard).
        ice_coverage: fraction of the EM field covered by ice crystals (0 = off).
        drift_nm_per_line: EM stage drift per scan line, nm.
        scan_noise: EM line jitter, px.
        chatter_period_nm: wavelength of the chatter thickness modulation, nm.
        lead_sections: sections cut above the field's structure before section 0.
    """

    def __init__(self, *, preset: str = "neurons", specimen_seed: int = 0, n_planes: int = 1,
                 psf_nm: float = 250.0, dof_um: float = 0.8, lm_signal: float = 40.0, lm_background: float = 20.0,
                 em_signal: float = 40.0, charging_dose: float = 200.0,
                 lm_pixel_size_nm: float = 100.0, em_pixel_size_nm: float = 25.0,
                 z_start_fraction: float = 0.35, stain_contrast: float = 1.0, ice_coverage: float = 0.0,
                 drift_nm_per_line: float = 0.0, scan_noise: float = 0.0, chatter_period_nm: float = 300.0,
                 lead_sections: int = 1) -> None:
        self.z_start_fraction = float(z_start_fraction)
        self.pixel_size_nm = {"LM": float(lm_pixel_size_nm), "EM": float(em_pixel_size_nm)}
        self.preset, self.specimen_seed, self.n_planes = preset, int(specimen_seed), int(n_planes)
        self.psf_nm, self.dof_um = float(psf_nm), float(dof_um)
        self.lm_signal, self.lm_background, self.em_signal = float(lm_signal), float(lm_background), float(em_signal)
        self.charging_dose = float(charging_dose)
        self.stain_contrast = float(stain_contrast)
        self.ice_coverage = float(ice_coverage)
        self.drift_nm_per_line, self.scan_noise = float(drift_nm_per_line), float(scan_noise)
        self.chatter_period_nm = float(chatter_period_nm)
        self.lead_sections = int(lead_sections)
        self._roi: tuple[float, float, float] | None = None
        self._specimen: Any = None
        self._cache: dict[tuple[Any, ...], Any] = {}
        self.last_truth: Any = None
        self.last_image: Any = None

    @property
    def specimen(self) -> Any:
        if self._specimen is None:
            from cryoopt.sim.specimen import Specimen

            self._specimen = Specimen.from_preset(self.preset, seed=self.specimen_seed)
        return self._specimen

    def roi(self) -> tuple[float, float, float]:
        """Specimen ``(x, y, z)`` nm of the field of view: the labelled structure (the preset's
        ``target_site``) nearest the middle of the specimen, as an operator would pick it;
        without labelled structures, the cell nearest the middle at ``z_start_fraction``."""
        if self._roi is None:
            spec = self.specimen
            site = str(getattr(spec, "target_site", "neurites"))
            shapes = {"mitochondria": spec.mitochondria, "cells": spec.cells}.get(site, spec.targets)
            pts = [shapes.ellipsoids[:, :3], 0.5 * (shapes.capsules[:, :3] + shapes.capsules[:, 3:6])]
            centres = np.concatenate([p for p in pts if len(p)]) if any(len(p) for p in pts) else np.zeros((0, 3))
            mid = spec.extent_nm[:2] / 2.0
            z0 = self.z_start_fraction * float(spec.extent_nm[2])
            if len(centres):
                c = centres[int(np.argmin(np.hypot(*(centres[:, :2] - mid).T)))]
                self._roi = (float(c[0]), float(c[1]), float(c[2]))
            elif len(spec.cells.ellipsoids):
                ells = spec.cells.ellipsoids
                c = ells[int(np.argmin(np.hypot(*(ells[:, :2] - mid).T)))]
                self._roi = (float(c[0]), float(c[1]), z0)
            else:
                self._roi = (float(mid[0]), float(mid[1]), z0)
        return self._roi

    def truth(self, sample: Mapping[str, Any], *, size: int, pixel_size_nm: float) -> Any:
        """The section's :class:`~cryoopt.sim.specimen.SectionTruth` on this grid (cached).

        The block face lies ``lead_sections`` sections above the field's structure
        (:meth:`roi`), so the series cuts through it; section ``k`` is the ``k``-th slab
        below the face (wrapping at the bottom of the phantom)."""
        spec = self.specimen
        thick = float(min(max(float(sample.get("actual_thickness_nm", 100.0)), 10.0), 5000.0))
        n_slabs = max(1, int(float(spec.extent_nm[2]) // thick))
        cx, cy, cz = self.roi()
        first = max(int(cz // thick) - self.lead_sections, 0)
        index = (first + int(sample.get("section_index", 0))) % n_slabs
        key = (index, thick, int(size), float(pixel_size_nm))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        origin = (float(cx - size * pixel_size_nm / 2.0), float(cy - size * pixel_size_nm / 2.0))
        out = spec.section(index, thickness_nm=thick, shape=(size, size), pixel_size_nm=pixel_size_nm,
                           origin_nm=origin, n_planes=self.n_planes)
        if len(self._cache) >= 8:  # LM + EM of the last few sections
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = out
        return out

    def _thickness_profile(self, sample: Mapping[str, Any], rng: np.random.Generator, n: int, px: float) -> np.ndarray | None:
        """Local thickness relative to the mean (``n x n``, float32) from the section's defects, or None."""
        chatter = float(sample.get("chatter", 0.0))
        marks = int(sample.get("knife_marks", 0))
        cracks = float(sample.get("crack_density_per_um", 0.0)) * n * px / 1000.0
        n_cracks = int(rng.poisson(min(cracks, 50.0)))
        if chatter <= 0 and not marks and not n_cracks:
            return None
        rows = np.ones(n, np.float32)
        if chatter > 0:  # periodic thickness variation along the cut (axis 0)
            rows *= 1.0 + min(chatter, 1.0) * np.sin(2 * np.pi * np.arange(n) * px / self.chatter_period_nm).astype(np.float32)
        for r in rng.integers(0, n, size=n_cracks):  # crevasses across the cut: no material
            rows[int(r) : int(r) + max(1, int(round(30.0 / px)))] = 0.0
        cols = np.ones(n, np.float32)
        if marks:  # a nick in the edge leaves a thinner line along the cut
            cols[rng.integers(0, n, size=min(marks, n))] = 0.7
        return rows[:, None] * cols[None, :]

    def acquire(self, settings: Mapping[str, Any], rng: np.random.Generator, *,
                sample: Mapping[str, Any]) -> np.ndarray:
        from cryoopt.sim.imaging import IceContamination, image_em, image_lm

        n = int(settings.get("image_size_px", 128))
        em = str(settings.get("modality", "LM")).upper() == "EM"
        px = float(settings.get("pixel_size_nm", self.pixel_size_nm["EM" if em else "LM"]))
        scale = max(float(settings.get("exposure_ms", 50.0)), 1e-3) / 50.0
        gain = float(settings.get("gain", 1.0))
        truth = self.truth(sample, size=n, pixel_size_nm=px)
        self.last_truth = truth
        if not em:
            bound = min(max(float(sample.get("label_intensity", 0.0)), 0.0), 1.0)
            label = _Label(bound * float(self.specimen.tissue.site_density_um), max(float(sample.get("background", 0.0)), 0.0))
            dz = abs(float(settings.get("focus_um", 0.0)) - float(settings.get("best_focus_um", 0.0)))
            na = 0.51 * 520.0 / self.psf_nm / math.sqrt(1.0 + (dz / self.dof_um) ** 2)
            img = image_lm(truth, label, microscope="widefield", rng=rng, na=min(max(na, 0.1), 1.7),
                           photons_per_um_label=10.0 * self.lm_signal * scale,
                           background_photons=self.lm_background * scale)
            counts = img.image * gain
        else:
            from dataclasses import replace

            prof = self._thickness_profile(sample, rng, n, px)
            if prof is not None:
                truth = replace(truth, density=truth.density * prof)
            dose = 5.0 * self.em_signal * scale
            charging = min(max(dose / (5.0 * self.charging_dose) - 1.0, 0.0), 5.0)
            contrast = min(max(float(sample.get("em_stain_contrast", self.stain_contrast)), 0.0), 5.0)
            ice = IceContamination(coverage=min(self.ice_coverage, 0.5)) if self.ice_coverage > 0 else None
            img = image_em(truth, stain_contrast=contrast, charging=charging, ice=ice,
                           drift_nm_per_line=self.drift_nm_per_line, scan_noise=self.scan_noise,
                           dose_e_per_px=max(dose, 1.0), rng=rng)
            counts = img.image * dose * gain
        self.last_image = img
        return np.clip(counts, 0, 65535).astype(np.uint16)


class _Label:
    """What :func:`cryoopt.sim.imaging.image_lm` reads of a staining result."""

    __slots__ = ("free_antibody", "label_density_um")

    def __init__(self, label_density_um: float, free_antibody: float) -> None:
        self.label_density_um, self.free_antibody = label_density_um, free_antibody
