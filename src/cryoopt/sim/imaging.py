"""Light- and electron-microscope image formation with ground truth and artifacts.

LM: label map = labelled targets x label density from the staining result, plus
unspecific background from free antibody; Gaussian PSF with FWHM ``0.51 lambda/NA``
(widefield) or ``0.37 lambda/NA`` (confocal, ~1 AU pinhole) (Pawley, *Handbook of
Biological Confocal Microscopy*, 3rd ed., ch. 8), widefield haze, Poisson shot noise
and Gaussian read noise on a camera with offset.

EM: projected stain density through the section (Beer-Lambert, ``I = exp(-mu t rho)``,
so thicker sections give more contrast and more overlap), then artifacts:

- charging: charge deposited along the raster scan decays with time constant
  ``lambda`` and spreads laterally, ``Q(x, y, t) = sum J(x', y', t') exp(-(t - t')/lambda) K(x - x', y - y')``,
  computed in scan order with a first-order recursive filter and a Gaussian kernel
  K; Q brightens pixels (``+ charging * Q``) and deflects the beam along the line;
  insulating (unstained) regions charge more;
- ice-crystal contamination: fractal crystals from Laplacian growth
  (:mod:`cryoopt.sim.ice`) with requested fractal dimension and mean radius;
- stage drift (per-line shift) and scan noise (line jitter + shot noise);
- overlap: structures at different depths of the section project on top of each other,
  so a membrane inclined by ``theta`` images as a band ``t tan(theta)`` wide and the
  resolution a section allows coarsens with its thickness (the working rule that a
  section resolves about a tenth to a third of its thickness; Frank, *Electron
  Tomography*, 2nd ed. (2006), ch. 1); modelled as a Gaussian blur of the projected
  density with ``overlap_blur_nm`` (the bench passes ``0.25 t``).

Detectors (both modalities, optional): electrons (Poisson, plus read noise before the
gain) times an analog ``gain`` in ADU per electron, plus the converter's own noise
``adc_noise_adu`` after the gain, an offset, rounded and clipped at ``full_scale_adu``
(16 bit). Low gain buries weak signals in the converter noise (input-referred
``adc_noise_adu / gain`` electrons); high gain saturates bright pixels, whose signal
is then lost (Janesick, *Photon Transfer*, SPIE (2007), ch. 2-3). Photobleaching:
under constant illumination fluorophores bleach exponentially, so the photons one
exposure collects saturate as ``bleach_ms (1 - exp(-t / bleach_ms))`` and earlier
illumination of the same dyes leaves ``exp(-prior_ms / bleach_ms)`` of them
(Song, Hennink, Young & Tanke, Biophys. J. 68, 2588 (1995));
:func:`bleached_exposure_ms` gives the effective exposure.

Every image comes with :class:`ImageTruth`: clean image, masks, resolution in nm,
pixel->specimen affine (so LM->EM is ``inv(em.affine) @ lm.affine``) and artifact masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import fft, ndimage, signal

from cryoopt.sim._validation import as_generator, check_choice, check_range
from cryoopt.sim.ice import crystal_library
from cryoopt.sim.specimen import SectionTruth

__all__ = [
    "IceContamination",
    "ImageTruth",
    "MicroscopeImage",
    "bleached_exposure_ms",
    "detector_readout",
    "image_em",
    "image_lm",
    "lm_resolution_nm",
]


@dataclass
class ImageTruth:
    """Ground truth that comes with every simulated image."""

    clean: np.ndarray
    masks: dict[str, np.ndarray]
    resolution_nm: float
    pixel_size_nm: float
    affine: np.ndarray
    artifact_masks: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class MicroscopeImage:
    """A simulated image (``.image``, float32) and its ground truth (``.truth``)."""

    image: np.ndarray
    truth: ImageTruth
    modality: str


@dataclass(frozen=True)
class IceContamination:
    """Ice crystals on the section.

    Attributes:
        coverage: Target fraction of the field covered, 0-0.5.
        fractal_dimension: Box-counting dimension of each crystal, 1.40-1.68.
        mean_radius_nm: Mean crystal radius (half the bounding size), nm.
    """

    coverage: float = 0.05
    fractal_dimension: float = 1.58
    mean_radius_nm: float = 400.0

    def __post_init__(self) -> None:
        check_range("coverage", self.coverage, 0.0, 0.5)
        check_range("fractal_dimension", self.fractal_dimension, 1.40, 1.68)
        check_range("mean_radius_nm", self.mean_radius_nm, 1.0, 1e6)


def lm_resolution_nm(microscope: str, *, wavelength_nm: float = 520.0, na: float = 1.4) -> float:
    """Lateral FWHM of the PSF, nm."""
    check_choice("microscope", microscope, ("widefield", "confocal"))
    return (0.51 if microscope == "widefield" else 0.37) * wavelength_nm / na


def _label_density(label: Any) -> tuple[float, float, float]:
    """``(bound label density uM, free antibody fraction, non-specific label density uM)``
    from a staining result or a number."""
    if hasattr(label, "label_density_um"):
        return (float(label.label_density_um), float(getattr(label, "free_antibody", 0.0)),
                float(getattr(label, "background_um", 0.0)))
    return check_range("label", float(label), 0.0, 1e4), 0.0, 0.0


def bleached_exposure_ms(exposure_ms: float, *, bleach_ms: float, prior_ms: float = 0.0) -> float:
    """Exposure (ms) a non-bleaching dye would need for the photons a bleaching one gives.

    ``bleach_ms (1 - exp(-t / bleach_ms)) exp(-prior_ms / bleach_ms)``: linear for short
    exposures, saturating at the dye's photon budget, reduced by earlier illumination
    ``prior_ms`` at the same intensity (see the module docstring).
    """
    t = check_range("exposure_ms", exposure_ms, 0.0)
    b = check_range("bleach_ms", bleach_ms, 0.0, low_inclusive=False)
    prior = check_range("prior_ms", prior_ms, 0.0)
    return float(b * -np.expm1(-t / b) * np.exp(-prior / b))


def detector_readout(
    electrons: np.ndarray,
    *,
    gain: float,
    rng: np.random.Generator,
    read_noise_e: float = 0.0,
    adc_noise_adu: float = 0.0,
    offset_adu: float = 0.0,
    full_scale_adu: float | None = 65535.0,
) -> np.ndarray:
    """ADU of a detector from (already Poisson-drawn) ``electrons``: ``gain (e + read) + adc + offset``,
    rounded and clipped to ``[0, full_scale_adu]`` (see the module docstring)."""
    check_range("gain", gain, 0.0, low_inclusive=False)
    e = np.asarray(electrons, np.float32)
    adu = gain * e + offset_adu
    sigma = float(np.hypot(gain * read_noise_e, adc_noise_adu))  # independent Gaussians: one draw
    if sigma > 0:
        adu = adu + sigma * rng.standard_normal(e.shape, dtype=np.float32)
    adu = np.rint(adu)
    return np.clip(adu, 0.0, full_scale_adu if full_scale_adu is not None else np.inf).astype(np.float32)


#: above this sigma (px) a Gaussian blur is done in Fourier space: O(N log N), not O(N sigma)
_FFT_SIGMA_PX = 8.0
_NP_PAD_MODE = {"constant": "constant", "reflect": "symmetric"}  # ndimage's names -> numpy's


def _wide_gaussian(image: np.ndarray, sigma_px: float, *, mode: str) -> np.ndarray:
    """``ndimage.gaussian_filter(image, sigma_px, mode=mode)``, via the FFT for wide kernels.

    The image is padded by the spatial filter's support (4 sigma) with the same
    boundary rule, so the result matches the spatial filter to ~1e-4 of the range
    (the Fourier kernel is not truncated at 4 sigma).
    """
    if sigma_px < _FFT_SIGMA_PX:
        return ndimage.gaussian_filter(image, sigma_px, mode=mode)
    pad = int(4.0 * sigma_px + 0.5)
    h, w = image.shape
    extra = [fft.next_fast_len(n + 2 * pad, real=True) - n - 2 * pad for n in (h, w)]
    padded = np.pad(image, [(pad, pad + extra[0]), (pad, pad + extra[1])], mode=_NP_PAD_MODE[mode])
    spectrum = ndimage.fourier_gaussian(fft.rfft2(padded), sigma_px, n=padded.shape[1])
    out = fft.irfft2(spectrum, s=padded.shape)[pad:pad + h, pad:pad + w]
    return out.astype(image.dtype, copy=False)


def image_lm(
    truth: SectionTruth,
    label: Any,
    *,
    microscope: str = "widefield",
    rng: np.random.Generator | int | None = None,
    wavelength_nm: float = 520.0,
    na: float = 1.4,
    photons_per_um_label: float = 400.0,
    background_photons: float = 20.0,
    read_noise_e: float = 1.5,
    offset_adu: float = 100.0,
    gain: float = 1.0,
    adc_noise_adu: float = 0.0,
    full_scale_adu: float | None = None,
    autofluorescence_photons: float = 0.0,
) -> MicroscopeImage:
    """Fluorescence image of a section.

    Args:
        truth: Section ground truth sampled at the camera pixel size.
        label: A staining result (``label_density_um``, ``free_antibody``) or a label density in uM.
        microscope: ``"widefield"`` or ``"confocal"``.
        rng: Generator or seed (noise).
        wavelength_nm: Emission wavelength.
        na: Objective numerical aperture, 0.1-1.7.
        photons_per_um_label: Photons per pixel per uM of bound label in a 100 nm section.
        background_photons: Autofluorescence + stray light per pixel.
        read_noise_e: Camera read noise before the gain (electrons RMS).
        offset_adu: Camera offset.
        gain: ADU per electron (see :func:`detector_readout`).
        adc_noise_adu: Converter noise after the gain, ADU RMS.
        full_scale_adu: Saturation level, ADU (None: no clipping, no rounding).
        autofluorescence_photons: Photons per pixel from the cells' own fluorescence in a
            100 nm section (scales with thickness).

    Non-specific label (a staining result's ``background_um``) lies over the cells;
    free antibody left in the section (``free_antibody``) adds 0.2 of its bath fraction.
    """
    check_choice("microscope", microscope, ("widefield", "confocal"))
    check_range("na", na, 0.1, 1.7)
    gen = as_generator(rng)
    dens, free, background_um = _label_density(label)
    fwhm = lm_resolution_nm(microscope, wavelength_nm=wavelength_nm, na=na)
    sigma_px = fwhm / 2.3548 / truth.pixel_size_nm
    t_rel = truth.thickness_nm / 100.0
    signal_map = truth.target_density * dens * photons_per_um_label * t_rel
    cells = truth.cells > 0
    unspecific = cells * ((free * 0.2 + background_um) * photons_per_um_label + autofluorescence_photons) * t_rel
    obj = (signal_map + unspecific).astype(np.float32)
    clean = ndimage.gaussian_filter(obj, sigma_px, mode="constant")
    if microscope == "widefield":  # out-of-focus haze: a broad, weak copy
        clean = 0.85 * clean + 0.15 * _wide_gaussian(obj, 8 * sigma_px + 1, mode="constant")
    clean = clean + background_photons
    counts = gen.poisson(np.maximum(clean, 0)).astype(np.float32)
    if full_scale_adu is None and adc_noise_adu == 0 and gain == 1.0:
        image = counts + offset_adu + gen.normal(0.0, read_noise_e, clean.shape).astype(np.float32)
    else:
        image = detector_readout(counts, gain=gain, rng=gen, read_noise_e=read_noise_e, adc_noise_adu=adc_noise_adu,
                                 offset_adu=offset_adu, full_scale_adu=full_scale_adu)
    return MicroscopeImage(
        image=image.astype(np.float32),
        truth=ImageTruth(
            clean=(gain * clean + offset_adu).astype(np.float32),
            masks=dict(truth.masks),
            resolution_nm=fwhm,
            pixel_size_nm=truth.pixel_size_nm,
            affine=truth.affine.copy(),
            params={"microscope": microscope, "na": na, "wavelength_nm": wavelength_nm, "label_density_um": dens,
                    "background_um": background_um, "gain": gain},
        ),
        modality=f"lm-{microscope}",
    )


def _ice_mask(shape: tuple[int, int], pixel_nm: float, ice: IceContamination, gen: np.random.Generator) -> np.ndarray:
    H, W = shape
    mask = np.zeros(shape, bool)
    lib = crystal_library(round(ice.fractal_dimension, 2))
    target = ice.coverage * H * W
    tries = 0
    while mask.sum() < target and tries < 500:
        tries += 1
        proto = lib[gen.integers(len(lib))]
        radius_px = max(2.0, gen.lognormal(np.log(ice.mean_radius_nm / pixel_nm), 0.3))
        zoom = 2.0 * radius_px / max(proto.shape)
        crystal = ndimage.zoom(proto.astype(np.float32), zoom, order=1) > 0.3 if zoom > 0.2 else proto
        crystal = np.rot90(crystal, gen.integers(4))
        h, w = crystal.shape
        r0, c0 = gen.integers(-h // 2, H - h // 2), gen.integers(-w // 2, W - w // 2)
        rs, cs = slice(max(r0, 0), min(r0 + h, H)), slice(max(c0, 0), min(c0 + w, W))
        mask[rs, cs] |= crystal[rs.start - r0 : rs.stop - r0, cs.start - c0 : cs.stop - c0]
    return mask


def image_em(
    truth: SectionTruth,
    *,
    stain_contrast: float = 1.0,
    charging: float = 0.0,
    ice: IceContamination | None = None,
    drift_nm_per_line: float = 0.0,
    scan_noise: float = 0.0,
    dose_e_per_px: float = 200.0,
    charge_decay_lines: float = 20.0,
    charge_spread_nm: float = 200.0,
    overlap_blur_nm: float = 0.0,
    gain: float | None = None,
    adc_noise_adu: float = 0.0,
    full_scale_adu: float | None = 65535.0,
    rng: np.random.Generator | int | None = None,
) -> MicroscopeImage:
    """Bright-field / back-scatter style EM image of a section (dark = stained).

    Args:
        truth: Section ground truth sampled at the EM pixel size.
        stain_contrast: Heavy-metal stain strength, 0-5 (1 = standard uranyl/lead).
        charging: Charging strength, 0 (off, conductive) to 5.
        ice: Ice contamination, or None (off).
        drift_nm_per_line: Stage drift along x per scan line, nm.
        scan_noise: Line-jitter amplitude in pixels (0 = off).
        dose_e_per_px: Electrons per pixel (shot noise).
        charge_decay_lines: Discharge time constant ``lambda`` in line times.
        charge_spread_nm: Lateral spread of deposited charge, nm.
        overlap_blur_nm: Gaussian sigma of the projection overlap through the section, nm
            (0: none; see the module docstring).
        gain: Detector ADU per electron; None returns the image in units of the dose
            (electrons / ``dose_e_per_px``) as before, a number returns ADU
            (:func:`detector_readout` with ``adc_noise_adu``, ``full_scale_adu``).
        adc_noise_adu: Converter noise after the gain, ADU RMS (with ``gain``).
        full_scale_adu: Saturation level, ADU (with ``gain``).
        rng: Generator or seed.
    """
    check_range("stain_contrast", stain_contrast, 0.0, 5.0)
    check_range("charging", charging, 0.0, 5.0)
    check_range("scan_noise", scan_noise, 0.0, 50.0)
    check_range("dose_e_per_px", dose_e_per_px, 1.0, 1e7)
    check_range("charge_decay_lines", charge_decay_lines, 1e-3, 1e6)
    gen = as_generator(rng)
    check_range("overlap_blur_nm", overlap_blur_nm, 0.0, 1e5)
    H, W = truth.shape
    density = truth.density
    if overlap_blur_nm > 0:
        density = ndimage.gaussian_filter(density, overlap_blur_nm / truth.pixel_size_nm, mode="reflect")
    mass = density * (truth.thickness_nm / 100.0) * stain_contrast
    clean = np.exp(-1.2 * mass).astype(np.float32)
    artifacts: dict[str, np.ndarray] = {}
    image = clean.copy()
    if ice is not None and ice.coverage > 0:
        im = _ice_mask((H, W), truth.pixel_size_nm, ice, gen)
        image = np.where(im, 0.35, image)  # crystalline ice scatters strongly: dark
        artifacts["ice"] = im
    if charging > 0:
        insulating = 1.0 - np.clip(truth.density * stain_contrast, 0, 1)
        J = (0.2 + insulating).astype(np.float64).ravel()
        a = np.exp(-1.0 / (charge_decay_lines * W))  # decay per pixel dwell
        Q = signal.lfilter([1.0 - a], [1.0, -a], J).reshape(H, W)
        Q = _wide_gaussian(Q, charge_spread_nm / truth.pixel_size_nm, mode="reflect")
        Q = (Q - Q.min()) / (np.ptp(Q) + 1e-12)
        shift = charging * 2.0 * (Q.mean(axis=1) - Q.mean())  # beam deflection along each line, px
        image = image + charging * 0.4 * Q.astype(np.float32)
        image = _shift_rows(image, shift)
        artifacts["charging"] = Q > 0.6
        artifacts["charge_density"] = Q.astype(np.float32)
    row_shift = np.arange(H) * drift_nm_per_line / truth.pixel_size_nm
    if scan_noise > 0:
        row_shift = row_shift + gen.normal(0.0, scan_noise, H)
    if np.any(row_shift != 0):
        image = _shift_rows(image, row_shift)
        artifacts["row_shift_px"] = row_shift.astype(np.float32)
    electrons = gen.poisson(np.maximum(image, 0) * dose_e_per_px).astype(np.float32)
    line_noise = gen.normal(0, 0.02 * scan_noise, (H, 1)).astype(np.float32) if scan_noise > 0 else None
    if gain is None:
        counts = electrons / dose_e_per_px
        if line_noise is not None:  # line-to-line gain noise
            counts += line_noise
    else:
        if line_noise is not None:
            electrons *= 1.0 + line_noise
        counts = detector_readout(electrons, gain=gain, rng=gen, adc_noise_adu=adc_noise_adu, full_scale_adu=full_scale_adu)
    return MicroscopeImage(
        image=counts.astype(np.float32),
        truth=ImageTruth(
            clean=clean,
            masks=dict(truth.masks),
            resolution_nm=max(2.0 * truth.pixel_size_nm, 1.0 + 0.05 * truth.thickness_nm, 2.3548 * overlap_blur_nm),
            pixel_size_nm=truth.pixel_size_nm,
            affine=truth.affine.copy(),
            artifact_masks=artifacts,
            params={"stain_contrast": stain_contrast, "charging": charging, "ice": ice, "drift_nm_per_line": drift_nm_per_line,
                    "overlap_blur_nm": overlap_blur_nm, "gain": gain, "dose_e_per_px": dose_e_per_px},
        ),
        modality="em",
    )


def _shift_rows(image: np.ndarray, shift_px: np.ndarray) -> np.ndarray:
    """Shift each row by a fractional number of pixels (linear interpolation, edge clamped)."""
    H, W = image.shape
    cols = np.arange(W, dtype=np.float32)[None, :] - shift_px.astype(np.float32)[:, None]
    c0 = np.clip(np.floor(cols).astype(np.int64), 0, W - 1)
    c1 = np.clip(c0 + 1, 0, W - 1)
    f = np.clip(cols - np.floor(cols), 0, 1)
    rows = np.arange(H)[:, None]
    return (image[rows, c0] * (1 - f) + image[rows, c1] * f).astype(np.float32)
