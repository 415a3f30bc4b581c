"""Physics backends of the simulated devices backed by :mod:`cryoopt.sim`, registered as ``"sim"``.

This module is the one place where ``instruments/`` imports ``sim/`` (the
simulated-device backend, see DESIGN.md). Importing it registers:

- ``sectioning_backends["sim"]`` -> :class:`SimSectioning`: the Tokuyasu sectioning model
  :class:`cryoopt.sim.sectioning.SectioningModel` (ribbon failure, thickness as cut and as
  imaged, compression, chatter, carried-over crevasses, knife marks, smearing, wear and
  edge debris, temperature drift, running depth);
- ``staining_backends["sim"]`` -> :class:`SimStaining`: the tabulated
  diffusion-reaction labelling :func:`cryoopt.sim.fast.fast_staining` plus the
  non-specific background :func:`cryoopt.sim.labelling.nonspecific_label_um`;
- ``imaging_backends["sim"]`` -> :class:`SimImaging`: LM and EM images of the section of
  a seeded :class:`cryoopt.sim.specimen.Specimen` phantom, cut at the block's running
  depth, the field re-centred on a labelled structure of each section, with detector
  gain and saturation, photobleaching and charging that accumulate over a block.

The same objects are called directly by the environments' ``backend="direct"``
mode, so the simulated bench and the direct path share one physics. One object of
each kind serves one sample block: they keep the block's state (knife, drift, depth,
charge and bleaching on the grid).

Example:
    >>> from cryoopt.instruments import open_bench
    >>> import cryoopt.instruments.simulated.sim_physics  # registers "sim"
    >>> bench = open_bench(seed=0, physics={"ultramicrotome": "sim", "stainer": "sim"})
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from cryoopt.instruments.simulated.physics import imaging_backends, sectioning_backends, staining_backends

__all__ = [
    "CONTRAST_REAGENTS",
    "LABEL_REAGENTS",
    "BlockConditions",
    "SimImaging",
    "SimSectioning",
    "SimStaining",
    "em_stain_contrast",
    "section_quality",
]

#: Reagents whose step is the antibody incubation (the first one found is used).
LABEL_REAGENTS = ("PRIMARY", "SECONDARY")
#: Heavy-metal contrasting reagents and their uptake time constants (min).
CONTRAST_REAGENTS = {"UA": 10.0, "LEAD": 5.0}


@dataclass(frozen=True)
class BlockConditions:
    """What differs from one sample block to the next besides the specimen (drawn per block).

    Attributes:
        knife_wear: Wear of the knife's edge region at the block's first cut, 0-1.
        debris_per_cut: Debris and frost the edge picks up per 100 nm cut (0-0.2).
        temperature_drift_c_per_cut: Growth per cut of the offset between the measured
            specimen/knife temperatures and their setpoints, C.
    """

    knife_wear: float = 0.0
    debris_per_cut: float = 0.0
    temperature_drift_c_per_cut: float = 0.0


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
        initial_wear: knife wear (0 new, 1 unusable) of the edge region at the first cut.
        wear_per_cut: passed to the model.
        debris_per_cut: passed to the model (edge debris per 100 nm cut).
        temperature_drift_c_per_cut: passed to the model (temperature offset growth per cut).

    The model keeps the block's state (wear, debris, temperature offset, an open crack,
    depth). When the device reports ``knife_wear == 0`` after cuts (the knife was moved to
    a fresh edge region) the edge restarts at ``initial_wear`` without debris.
    Temperatures are the device's measured ones when it reports them (``measured_*``),
    else the setpoints, clipped to the model's -196..0 C. Output keys: the model's
    :class:`~cryoopt.sim.sectioning.SectionQuality` fields, plus ``actual_thickness_nm``
    (as cut), ``nominal_thickness_nm``, ``measured_specimen_temperature_c`` and
    ``measured_knife_temperature_c`` (the readbacks, drift included) and ``quality``
    (:func:`section_quality`), which the staining and imaging backends read.
    """

    def __init__(self, *, initial_wear: float = 0.0, wear_per_cut: float = 2e-4, debris_per_cut: float = 0.0,
                 temperature_drift_c_per_cut: float = 0.0) -> None:
        self.initial_wear = float(initial_wear)
        self.wear_per_cut = float(wear_per_cut)
        self.debris_per_cut = float(debris_per_cut)
        self.temperature_drift_c_per_cut = float(temperature_drift_c_per_cut)
        self._model: Any = None
        self._rng: np.random.Generator | None = None

    @classmethod
    def for_block(cls, conditions: BlockConditions, **kwargs: Any) -> SimSectioning:
        """A sectioning backend for a block with these :class:`BlockConditions`."""
        return cls(initial_wear=conditions.knife_wear, debris_per_cut=conditions.debris_per_cut,
                   temperature_drift_c_per_cut=conditions.temperature_drift_c_per_cut, **kwargs)

    @property
    def wear(self) -> float:
        return self.initial_wear if self._model is None else float(self._model.wear)

    @property
    def model(self) -> Any:
        """The block's :class:`~cryoopt.sim.sectioning.SectioningModel` (None before the first cut)."""
        return self._model

    def cut(self, setpoints: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        from cryoopt.sim.sectioning import SectioningModel, SectioningSetpoints

        t = float(setpoints.get("section_thickness_nm", 100.0))
        if str(setpoints.get("mode", "SECT")).upper() == "TRIM":
            return {"actual_thickness_nm": t, "nominal_thickness_nm": t, "trimmed": 1.0, "quality": 0.0, "ribbon_ok": False}
        if self._model is None or self._rng is not rng:
            self._model = SectioningModel(rng=rng, knife_wear=self.initial_wear, wear_per_cut=self.wear_per_cut,
                                          debris_per_cut=min(max(self.debris_per_cut, 0.0), 0.2),
                                          temperature_drift_c_per_cut=min(max(self.temperature_drift_c_per_cut, -5.0), 5.0))
            self._rng = rng
        if int(setpoints.get("knife_wear", 1)) == 0 and self._model.cuts:
            self._model.fresh_edge(wear=self.initial_wear)

        def temp(name: str) -> float:
            v = float(setpoints.get(f"measured_{name}_temperature_c", setpoints.get(f"{name}_temperature_c", -120.0)))
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
        out.update(actual_thickness_nm=float(q.thickness_nm), nominal_thickness_nm=t,
                   measured_specimen_temperature_c=float(q.specimen_temp_c), measured_knife_temperature_c=float(q.knife_temp_c))
        out["quality"] = section_quality(out)
        return out


@staining_backends.register("sim")
class SimStaining:
    """``run(protocol, rng, *, section)`` through :func:`cryoopt.sim.fast.fast_staining` and
    :func:`cryoopt.sim.labelling.nonspecific_label_um`.

    The antibody step is the first step whose reagent is in :data:`LABEL_REAGENTS`
    (dilution, time, temperature; clipped to the model's 0-45 degC); every step's
    ``wash_cycles`` of ``wash_min`` each are the washes. The section thickness is the
    section's ``actual_thickness_nm`` (as cut; 100 nm if unknown). Outputs:
    ``label_intensity`` (= ``mean_label``, fraction of antigen sites bound),
    ``uniformity``, ``background_um`` (non-specifically bound antibody, uM),
    ``background`` (the same relative to the antigen site density, the scale of
    ``label_intensity``), ``free_antibody`` (fraction of the bath left in the section),
    ``penetration_depth_nm``, ``reliable``, ``extraction`` (fraction of the section's
    stainable material lost while it sat thawed in the antibody and the washes:
    ``1 - exp(-t / extraction_min)`` with ``t`` the incubation plus washing time, faster
    when warm (Arrhenius, 50 kJ/mol); thawed sections lose material during labelling,
    which damages their structure (Liou, Geuze & Slot, Histochem. Cell Biol. 106, 41
    (1996)); ``extraction_min`` is a model choice, 600 min at 20 C: 5 % in 30 min), and
    ``em_stain_contrast`` (:func:`em_stain_contrast`) when the protocol has UA/lead steps.
    No antibody step gives zero label. ``rng`` is unused (the model is deterministic;
    measurement noise belongs to the readout).

    Args:
        tissue: :class:`cryoopt.sim.diffusion.TissueProperties` (default: the model's).
        nonspecific: :class:`cryoopt.sim.labelling.NonspecificBinding` (default: the model's).
        wash_min: minutes per wash cycle (match the platform's ``sim.wash_time_s``).
        extraction_min: time constant of material extraction at 20 C, min.
    """

    def __init__(self, *, tissue: Any = None, nonspecific: Any = None, wash_min: float = 1.0,
                 extraction_min: float = 600.0) -> None:
        self.tissue = tissue
        self.nonspecific = nonspecific
        self.wash_min = float(wash_min)
        self.extraction_min = float(extraction_min)

    def run(self, protocol: Sequence[Mapping[str, Any]], rng: np.random.Generator, *,
            section: Mapping[str, Any]) -> dict[str, Any]:
        from cryoopt.sim.diffusion import StainingProtocol, TissueProperties
        from cryoopt.sim.fast import fast_staining
        from cryoopt.sim.labelling import nonspecific_label_um
        from cryoopt.sim.temperature import arrhenius_factor

        thickness = float(section.get("actual_thickness_nm", 100.0))
        washes = int(sum(int(s.get("wash_cycles", 0)) for s in protocol))
        label = next((s for s in protocol if str(s.get("reagent", "")).upper() in LABEL_REAGENTS), None)
        contrast = em_stain_contrast(protocol)
        extra = {} if contrast is None else {"em_stain_contrast": contrast}
        if label is None:
            return {"label_intensity": 0.0, "uniformity": 0.0, "background": 0.0, "background_um": 0.0, "free_antibody": 0.0,
                    "penetration_depth_nm": 0.0, "reliable": True, **extra}
        p = StainingProtocol(
            section_thickness_nm=min(max(thickness, 10.0), 1e6),
            antibody_dilution=min(max(float(label.get("dilution", 100.0)), 1.0), 1e5),
            incubation_min=min(max(float(label.get("time_min", 10.0)), 0.0), 10080.0),
            temperature_c=min(max(float(label.get("temperature_c", 20.0)), 0.0), 45.0),
            wash_cycles=min(washes, 50),
            wash_min=self.wash_min,
        )
        tissue = self.tissue or TissueProperties()
        s = fast_staining(p, tissue=tissue)
        bg_um = nonspecific_label_um(p, self.nonspecific)
        thawed_min = p.incubation_min + p.wash_total_min
        extraction = -math.expm1(-thawed_min / self.extraction_min * arrhenius_factor(p.temperature_c, 50.0))
        return {
            "label_intensity": float(min(max(s.mean_label, 0.0), 1.0)),
            "uniformity": float(s.uniformity),
            "background_um": float(bg_um),
            "background": float(bg_um / tissue.site_density_um),
            "free_antibody": float(min(max(s.free_antibody, 0.0), 1.0)),
            "penetration_depth_nm": float(s.penetration_depth_nm),
            "reliable": bool(s.reliable),
            "extraction": float(extraction),
            **extra,
        }


@imaging_backends.register("sim")
class SimImaging:
    """LM/EM images of the current section of a seeded specimen phantom, formed by
    :func:`cryoopt.sim.imaging.image_lm` and :func:`cryoopt.sim.imaging.image_em`.

    ``acquire(settings, rng, *, sample)`` renders the section of ``sample`` on a square
    grid of ``image_size_px`` at ``lm_pixel_size_nm``/``em_pixel_size_nm`` (the microscope
    profile's ``sim.pixel_size_nm`` should say the same).

    Geometry: the block face at the first cut lies ``lead_nm`` above the labelled
    structure nearest the middle of the specimen (:meth:`roi`); a section is the slab
    ``[z_start + depth_nm, + actual_thickness_nm)`` (``depth_nm`` is the running sum of
    the feeds the ultramicrotome reports). As a lab does, the field of each section is
    centred on the labelled structure of that section nearest the previous field's
    centre (:meth:`field_centre`), LM and EM on the same point. The residual compression
    of the section stretches the specimen along the cut (axis 0). Rendered geometry is
    cached per section and grid.

    - LM (widefield, :func:`image_lm`): the labelled targets (``target_density``, the
      preset's ``target_site``) times the bound label density (``label_intensity`` x the
      tissue's ``site_density_um``), non-specific label ``background_um`` over the cells,
      autofluorescence, stray light. The dye bleaches: an exposure of ``t`` ms collects
      the photons of :func:`~cryoopt.sim.imaging.bleached_exposure_ms` (``bleach_ms``),
      and every earlier LM exposure of the block pre-bleaches this section by
      ``bleach_spill`` of its illumination (the sections of a ribbon lie side by side on
      one grid and the epi-illumination field reaches past the camera's field).
      Defocus ``dz = |focus_um - best_focus_um|`` widens the PSF by
      ``sqrt(1 + (dz / dof_um)^2)``.
    - EM (:func:`image_em`, dark = stained): Beer-Lambert contrast of the projected stain
      density over the thickness as cut (drying collapses the section but keeps its mass
      per area) less what labelling extracted (the sample's ``extraction``), blurred by the
      projection overlap ``overlap_fraction x thickness`` plus
      the smearing of a too-warm cut; ``stain_contrast`` from the sample's
      ``em_stain_contrast`` (UA/lead steps) or the constructor's. Section defects are
      thickness defects: chatter modulates the thickness along the cut (axis 0, period
      ``chatter_period_nm``), knife marks are columns 30 % thinner, cracks are crevasses
      across the cut with no material, as wide as the section is thick and 0.2-1 um long.
      Fiducial beads (``em_beads``; phantoms whose targets are free beads, e.g.
      ``bead_calibration``) are electron dense: they enter the stain density as
      :func:`cryoopt.sim.datasets.with_em_beads` renders them for the datasets' sections
      (``BEAD_DENSITY``), after the labelling's extraction (gold is not extracted) and
      before the thickness defects (a crevasse holds no bead either); other phantoms' label
      is invisible in EM. Dose ``em_dose_per_ms x exposure_ms`` e/px sets the shot noise and the
      charge: charge left in the support film by the block's earlier acquisitions decays
      by ``exp(-1 / charge_memory_sections)`` per section, and the section charges with
      strength ``(Q / charge_threshold_e - 1) x t / 70 nm`` (capped at 5) when the total
      ``Q`` exceeds the threshold (insulators charge in proportion to the dose until
      the charge leaks away; Cazaux, Microsc. Microanal. 10, 670 (2004)).
    - Detectors (:func:`~cryoopt.sim.imaging.detector_readout`): ``gain`` ADU per electron,
      converter noise ``adc_noise_adu`` after the gain, 16-bit saturation: low gain
      drowns weak signals in converter noise, high gain saturates bright pixels.

    Setting ``preview=True`` in ``settings`` renders without recording the acquisition
    (no bleaching or charge left behind; for rendering).

    Args:
        preset: specimen preset name (``envs/<preset>.yaml``).
        specimen_seed: seed of the phantom.
        n_planes: planes sampled through the section thickness (1 is fastest).
        psf_nm: lateral FWHM of the LM PSF in focus, nm (sets the NA: ``0.51 * 520 / psf_nm``).
        dof_um: LM depth of field, um (``lambda n / NA^2`` = 0.4 um at 520 nm, oil, NA 1.4; Inoue &
            Spring, *Video Microscopy*, 2nd ed. (1997), ch. 2).
        lm_photons_per_um_ms: photons per pixel per uM of bound label in a 100 nm section per ms.
        lm_autofluorescence_per_ms: photons per pixel per ms from the cells' own fluorescence (100 nm).
        lm_background_per_ms: stray-light photons per pixel per ms.
        bleach_ms: exposure at which the dye has emitted 63 % of its photons, ms.
        bleach_spill: fraction of each LM exposure that later sections of the block receive.
        em_dose_per_ms: electrons per pixel per ms of exposure.
        charge_threshold_e: charge (electrons per pixel, decayed sum) above which a section charges.
        charge_memory_sections: decay of the support film's charge, in sections.
        overlap_fraction: projection-overlap blur sigma per nm of section thickness.
        adc_noise_adu: converter noise after the gain (both detectors), ADU.
        lm_pixel_size_nm, em_pixel_size_nm: pixel sizes.
        stain_contrast: heavy-metal contrast when the sample says nothing (1 = standard).
        ice_coverage: fraction of the EM field covered by ice crystals (0 = off).
        drift_nm_per_line: EM stage drift per scan line, nm.
        scan_noise: EM line jitter, px.
        chatter_period_nm: wavelength of the chatter thickness modulation, nm.
        lead_nm: depth of the block face above the first field's labelled structure, nm.
        em_beads: render the labelled targets in EM as electron-dense fiducial beads; None (default):
            when the phantom's targets are beads (:func:`cryoopt.sim.datasets.has_em_beads`).
    """

    def __init__(self, *, preset: str = "neurons", specimen_seed: int = 0, n_planes: int = 1,
                 psf_nm: float = 250.0, dof_um: float = 0.4, lm_photons_per_um_ms: float = 20.0,
                 lm_autofluorescence_per_ms: float = 0.3, lm_background_per_ms: float = 0.2,
                 bleach_ms: float = 500.0, bleach_spill: float = 0.15,
                 em_dose_per_ms: float = 20.0, charge_threshold_e: float = 6000.0, charge_memory_sections: float = 3.0,
                 overlap_fraction: float = 0.25, adc_noise_adu: float = 40.0,
                 lm_pixel_size_nm: float = 100.0, em_pixel_size_nm: float = 10.0,
                 stain_contrast: float = 1.0, ice_coverage: float = 0.0,
                 drift_nm_per_line: float = 0.0, scan_noise: float = 0.0, chatter_period_nm: float = 300.0,
                 lead_nm: float = 100.0, em_beads: bool | None = None) -> None:
        self.pixel_size_nm = {"LM": float(lm_pixel_size_nm), "EM": float(em_pixel_size_nm)}
        self.preset, self.specimen_seed, self.n_planes = preset, int(specimen_seed), int(n_planes)
        self.psf_nm, self.dof_um = float(psf_nm), float(dof_um)
        self.lm_photons_per_um_ms = float(lm_photons_per_um_ms)
        self.lm_autofluorescence_per_ms = float(lm_autofluorescence_per_ms)
        self.lm_background_per_ms = float(lm_background_per_ms)
        self.bleach_ms, self.bleach_spill = float(bleach_ms), float(bleach_spill)
        self.em_dose_per_ms = float(em_dose_per_ms)
        self.charge_threshold_e, self.charge_memory_sections = float(charge_threshold_e), float(charge_memory_sections)
        self.overlap_fraction, self.adc_noise_adu = float(overlap_fraction), float(adc_noise_adu)
        self.stain_contrast = float(stain_contrast)
        self.ice_coverage = float(ice_coverage)
        self.drift_nm_per_line, self.scan_noise = float(drift_nm_per_line), float(scan_noise)
        self.chatter_period_nm = float(chatter_period_nm)
        self.lead_nm = float(lead_nm)
        self._em_beads = None if em_beads is None else bool(em_beads)
        self._roi: tuple[float, float, float] | None = None
        self._specimen: Any = None
        self._sites: np.ndarray | None = None
        self._centres: dict[int, tuple[float, float]] = {}
        self._lm_exposure: dict[int, float] = {}
        self._em_dose: dict[int, float] = {}
        self._cache: dict[tuple[Any, ...], Any] = {}
        self.last_truth: Any = None
        self.last_image: Any = None
        self.last_acquisition: dict[str, float] = {}

    @property
    def specimen(self) -> Any:
        if self._specimen is None:
            from cryoopt.sim.specimen import Specimen

            self._specimen = Specimen.from_preset(self.preset, seed=self.specimen_seed)
        return self._specimen

    @property
    def em_beads(self) -> bool:
        """Whether EM images show the labelled targets as electron-dense fiducial beads."""
        if self._em_beads is None:
            from cryoopt.sim.datasets import has_em_beads

            self._em_beads = has_em_beads(self.specimen)
        return self._em_beads

    def _labelled_sites(self) -> np.ndarray:
        """Labelled structures a field may be centred on: for puncta, those outside the somata
        (a punctum inside a soma has no extracellular surroundings to contrast with)."""
        if self._sites is None:
            spec = self.specimen
            sites = spec.labelled_sites()
            if spec.target_site not in ("mitochondria", "cells") and len(sites):
                away = ~spec.inside_soma(sites[:, :3], margin_nm=300.0)
                sites = sites[away] if away.any() else sites
            self._sites = sites
        return self._sites

    def roi(self) -> tuple[float, float, float]:
        """Specimen ``(x, y, z)`` nm of the first field: the labelled structure nearest the
        middle of the specimen (in x, y and in z among the labelled structures), as an
        operator would pick it; the middle of the specimen when nothing is labelled."""
        if self._roi is None:
            spec, sites = self.specimen, self._labelled_sites()
            mid = spec.extent_nm[:2] / 2.0
            if len(sites):
                z_mid = float(np.median(sites[:, 2]))
                d = np.hypot(*(sites[:, :2] - mid).T) + 3.0 * np.abs(sites[:, 2] - z_mid)
                d = d + 1e6 * ~self._has_surroundings(sites[:, :2], sites[:, 2])
                c = sites[int(np.argmin(d))]
                self._roi = (float(c[0]), float(c[1]), float(c[2]))
            else:
                self._roi = (float(mid[0]), float(mid[1]), 0.5 * float(spec.extent_nm[2]))
        return self._roi

    @property
    def z_start_nm(self) -> float:
        """Depth in the specimen of the block face at the first cut, nm."""
        return max(self.roi()[2] - self.lead_nm, 0.0)

    def _slab(self, sample: Mapping[str, Any]) -> tuple[int, float, float]:
        index = int(sample.get("section_index", 0))
        thick = float(min(max(float(sample.get("actual_thickness_nm", 100.0)), 10.0), 5000.0))
        depth = float(sample.get("depth_nm", index * float(sample.get("nominal_thickness_nm", thick))))
        return index, self.z_start_nm + depth, thick

    def field_centre(self, sample: Mapping[str, Any]) -> tuple[float, float]:
        """Specimen ``(x, y)`` nm of this section's field: the labelled structure cut by the
        section nearest the previous section's field centre (the ROI's for the first),
        among those at a cell edge when there are any (an operator centres where the label
        meets a visible structure)."""
        index, z_top, thick = self._slab(sample)
        hit = self._centres.get(index)
        if hit is not None:
            return hit
        prev = self._centres.get(index - 1) or self._centres.get(max(self._centres, default=-1)) or self.roi()[:2]
        sites = self._labelled_sites()
        if not len(sites):
            centre = (float(prev[0]), float(prev[1]))
        else:
            z_mid = z_top + 0.5 * thick
            cut = np.abs(sites[:, 2] - z_mid) < 0.8 * sites[:, 3]  # the structure crosses the section's middle
            pool = sites[cut] if cut.any() else sites
            d = np.hypot(pool[:, 0] - prev[0], pool[:, 1] - prev[1])
            if not cut.any():
                d = d + 3.0 * np.abs(pool[:, 2] - z_mid)
            order = np.argsort(d)
            near = order[:16]  # the nearest few; an edge to see is preferred, never required
            edge = self._has_surroundings(pool[near, :2], z_mid)
            c = pool[near[int(np.argmax(edge))] if edge.any() else order[0]]
            centre = (float(c[0]), float(c[1]))
        self._centres[index] = centre
        return centre

    def _has_surroundings(self, xy: np.ndarray, z: np.ndarray | float, *, radius_nm: float = 250.0) -> np.ndarray:
        """Whether a field centred on each point shows a cell edge at depth ``z``: of 8 probes
        ``radius_nm`` around it, at least 2 inside a cell and 2 outside (labelled puncta; a
        mitochondrion always lies in its cell's cytoplasm)."""
        spec = self.specimen
        if spec.target_site in ("mitochondria", "cells"):
            return np.ones(len(xy), bool)
        ang = np.arange(8) * (np.pi / 4.0)
        probes = (xy[:, None, :] + radius_nm * np.stack([np.cos(ang), np.sin(ang)], axis=1)[None]).reshape(-1, 2)
        zs = np.repeat(np.broadcast_to(np.asarray(z, float), (len(xy),)), 8)
        inside = spec.inside_cells(np.column_stack([probes, zs])).reshape(len(xy), 8).sum(axis=1)
        return (inside >= 2) & (inside <= 6)

    def truth(self, sample: Mapping[str, Any], *, size: int, pixel_size_nm: float, organelles: bool = True) -> Any:
        """The section's :class:`~cryoopt.sim.specimen.SectionTruth` on this grid (cached); LM fields skip
        the organelles (``organelles=False``), which the fluorescence image does not show."""
        index, z_top, thick = self._slab(sample)
        cx, cy = self.field_centre(sample)
        stretch = 1.0 / (1.0 - min(max(float(sample.get("compression", 0.0)), 0.0), 0.6))
        key = (index, round(z_top, 3), round(thick, 3), int(size), float(pixel_size_nm), cx, cy, round(stretch, 4), organelles)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        origin = (float(cx - (size - 1) * pixel_size_nm / 2.0), float(cy - (size - 1) * pixel_size_nm / 2.0))
        out = self.specimen.section_at(z_top, thickness_nm=thick, shape=(size, size), pixel_size_nm=pixel_size_nm,
                                       origin_nm=origin, n_planes=self.n_planes, stretch=stretch, index=index,
                                       organelles=organelles)
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
        cols = np.ones(n, np.float32)
        if marks:  # a nick in the edge leaves a thinner line along the cut
            cols[rng.integers(0, n, size=min(marks, n))] = 0.7
        prof = rows[:, None] * cols[None, :]
        # crevasses across the cut, open about as wide as the section is thick, 0.2-1 um long: no material
        width = max(1, int(round(float(sample.get("actual_thickness_nm", 70.0)) / px)))
        for _ in range(n_cracks):
            r, c0 = int(rng.integers(0, n)), int(rng.integers(0, n))
            length = max(1, int(rng.uniform(200.0, 1000.0) / px))
            prof[r : r + width, max(c0 - length // 2, 0) : c0 + length // 2 + 1] = 0.0
        return prof

    def charge_e(self, index: int, dose: float) -> float:
        """Charge (electrons per pixel) on the film when section ``index`` is imaged at ``dose``."""
        keep = math.exp(-1.0 / max(self.charge_memory_sections, 1e-6))
        return dose + sum(d * keep ** (index - j) for j, d in self._em_dose.items() if j < index)

    def prior_lm_exposure_ms(self, index: int) -> float:
        """LM illumination (ms at the imaging intensity) section ``index`` received before its own image."""
        return self.bleach_spill * sum(e for j, e in self._lm_exposure.items() if j < index)

    def acquire(self, settings: Mapping[str, Any], rng: np.random.Generator, *,
                sample: Mapping[str, Any]) -> np.ndarray:
        from cryoopt.sim.imaging import IceContamination, bleached_exposure_ms, image_em, image_lm

        n = int(settings.get("image_size_px", 128))
        em = str(settings.get("modality", "LM")).upper() == "EM"
        px = float(settings.get("pixel_size_nm", self.pixel_size_nm["EM" if em else "LM"]))
        exposure = max(float(settings.get("exposure_ms", 50.0)), 1e-3)
        gain = min(max(float(settings.get("gain", 1.0)), 1e-3), 1e4)
        record = not bool(settings.get("preview", False))
        index = int(sample.get("section_index", 0))
        truth = self.truth(sample, size=n, pixel_size_nm=px, organelles=em)
        self.last_truth = truth
        if not em:
            prior = self.prior_lm_exposure_ms(index)
            effective = bleached_exposure_ms(exposure, bleach_ms=self.bleach_ms, prior_ms=prior)
            bound = min(max(float(sample.get("label_intensity", 0.0)), 0.0), 1.0)
            site = float(self.specimen.tissue.site_density_um)
            label = _Label(bound * site, 0.0, max(float(sample.get("background_um", 0.0)), 0.0))
            dz = abs(float(settings.get("focus_um", 0.0)) - float(settings.get("best_focus_um", 0.0)))
            na = 0.51 * 520.0 / self.psf_nm / math.sqrt(1.0 + (dz / self.dof_um) ** 2)
            img = image_lm(truth, label, microscope="widefield", rng=rng, na=min(max(na, 0.1), 1.7),
                           photons_per_um_label=self.lm_photons_per_um_ms * effective,
                           autofluorescence_photons=self.lm_autofluorescence_per_ms * effective,
                           background_photons=self.lm_background_per_ms * exposure,
                           gain=gain, adc_noise_adu=self.adc_noise_adu, full_scale_adu=65535.0)
            if record:
                self._lm_exposure[index] = exposure
            self.last_acquisition = {"modality": 0.0, "exposure_ms": exposure, "effective_exposure_ms": effective,
                                     "prior_exposure_ms": prior, "gain": gain,
                                     "saturated_fraction": float(np.mean(img.image >= 65535.0))}
        else:
            prof = self._thickness_profile(sample, rng, n, px)
            kept = 1.0 - min(max(float(sample.get("extraction", 0.0)), 0.0), 1.0)  # material extracted while thawed
            if self.em_beads:
                from cryoopt.sim.datasets import with_em_beads

                if kept < 1.0:  # extraction takes stainable material, not the gold of the beads
                    truth, kept = replace(truth, density=truth.density * kept), 1.0
                truth = with_em_beads(truth)
            if prof is not None or kept < 1.0:
                truth = replace(truth, density=truth.density * (kept if prof is None else prof * kept))
            dose = self.em_dose_per_ms * exposure
            q = self.charge_e(index, dose)
            charging = min(max(q / self.charge_threshold_e - 1.0, 0.0) * truth.thickness_nm / 70.0, 5.0)
            contrast = min(max(float(sample.get("em_stain_contrast", self.stain_contrast)), 0.0), 5.0)
            ice = IceContamination(coverage=min(self.ice_coverage, 0.5)) if self.ice_coverage > 0 else None
            blur = self.overlap_fraction * truth.thickness_nm + max(float(sample.get("smear_nm", 0.0)), 0.0)
            img = image_em(truth, stain_contrast=contrast, charging=charging, ice=ice,
                           drift_nm_per_line=self.drift_nm_per_line, scan_noise=self.scan_noise,
                           dose_e_per_px=max(dose, 1.0), overlap_blur_nm=blur, gain=gain,
                           adc_noise_adu=self.adc_noise_adu, full_scale_adu=65535.0, rng=rng)
            if record:
                self._em_dose[index] = dose
            self.last_acquisition = {"modality": 1.0, "exposure_ms": exposure, "dose_e_per_px": dose, "charge_e_per_px": q,
                                     "charging": charging, "gain": gain,
                                     "saturated_fraction": float(np.mean(img.image >= 65535.0))}
        self.last_image = img
        return np.clip(img.image, 0, 65535).astype(np.uint16)


class _Label:
    """What :func:`cryoopt.sim.imaging.image_lm` reads of a staining result."""

    __slots__ = ("background_um", "free_antibody", "label_density_um")

    def __init__(self, label_density_um: float, free_antibody: float, background_um: float = 0.0) -> None:
        self.label_density_um, self.free_antibody, self.background_um = label_density_um, free_antibody, background_um
