"""Screening: from a low-magnification overview of a ribbon to sections ranked for EM.

Automated cryo-EM screening goes atlas -> grid square -> hole, spending microscope time
only where the ice is good. The same for serial sections: one reflected-light overview
of the ribbon (about 1 um per pixel, seconds to take) is read section by section,

1. **find** the sections: the ribbon is what differs from the water (or support)
   around it; consecutive sections are split at the columns where the ribbon is
   interrupted (their junctions, or the gap of a failed cut);
2. **measure** each: its thickness from its interference colour (the ultramicrotomist's
   gauge, :func:`cryoopt.sim.overview.film_reflectance` inverted by nearest colour
   after normalising by the water's known reflectance), and the area fractions of
   fold (a strip about twice as thick), cracks (water inside the section's outline)
   and contamination (specks darker than water);
3. **classify** it ``good`` / ``folded`` / ``cracked`` / ``contaminated`` / ``too_thick``
   (the first that applies, thresholds in :class:`ScreeningThresholds`);
4. **rank** the good ones for EM: closest to the target thickness first, then the
   cleanest.

:func:`screening_context` turns a screened ribbon into a fixed-length feature vector
(:data:`CONTEXT_FEATURES`): a per-specimen context the outer-loop optimizer can
condition on before it commits a block.

Example:
    >>> from cryoopt.sim.overview import render_ribbon
    >>> ov = render_ribbon([{"thickness_nm": 90.0}, {"thickness_nm": 200.0}], rng=0)
    >>> [s.label for s in screen_ribbon(ov.image, pixel_size_nm=ov.pixel_size_nm).sections]
    ['good', 'too_thick']
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from cryoopt.exceptions import EvaluationError
from cryoopt.pipeline._validate import check_pixel_size

__all__ = [
    "CONTEXT_FEATURES",
    "SECTION_CLASSES",
    "ScreenedSection",
    "ScreeningResult",
    "ScreeningThresholds",
    "em_time_saved",
    "screen_ribbon",
    "screening_context",
]

#: Classes a section is put in, in priority order (the first that applies).
SECTION_CLASSES: tuple[str, ...] = ("folded", "cracked", "contaminated", "too_thick", "good")

#: Names of :func:`screening_context`'s vector, in order.
CONTEXT_FEATURES: tuple[str, ...] = (
    "good_fraction",
    "thickness_ratio",
    "thickness_cv",
    "fold_fraction",
    "crack_fraction",
    "contamination_fraction",
    "too_thick_fraction",
    "missing_fraction",
    "compression",
)


@dataclass(frozen=True)
class ScreeningThresholds:
    """Decision thresholds of :func:`screen_ribbon`.

    Attributes:
        too_thick_nm: a median thickness above this is ``too_thick`` (purple and
            beyond on the interference scale; Peachey 1958).
        fold_fraction: a section with more than this area about twice its own thickness
            is ``folded``.
        crack_fraction: more than this area of water inside the outline: ``cracked``.
        contamination_fraction: more than this area darker than water: ``contaminated``.
        min_section_um2: smaller foreground pieces are debris, not sections.
    """

    too_thick_nm: float = 150.0
    fold_fraction: float = 0.06
    crack_fraction: float = 0.002
    contamination_fraction: float = 0.01
    min_section_um2: float = 400.0


@dataclass
class ScreenedSection:
    """One section as screening sees it.

    Attributes:
        position: order along the ribbon (0 = first found from the left).
        label: its class (:data:`SECTION_CLASSES`).
        thickness_nm: median thickness from the interference colour.
        thickness_sd_nm: its spread over the section (chatter, folds).
        fold_fraction, crack_fraction, contamination_fraction: area fractions.
        area_um2: section area; length_um: along the ribbon; width_um: across it.
        mask: its pixels in the overview.
        rank: place in the EM queue (0 = first), None when not queued.
    """

    position: int
    label: str
    thickness_nm: float
    thickness_sd_nm: float
    fold_fraction: float
    crack_fraction: float
    contamination_fraction: float
    area_um2: float
    length_um: float
    width_um: float
    mask: np.ndarray = field(repr=False)
    rank: int | None = None


@dataclass
class ScreeningResult:
    """A screened ribbon: its sections in ribbon order and the EM queue.

    Attributes:
        sections: :class:`ScreenedSection` per section found.
        targets: positions of the sections to image in EM, best first.
        target_thickness_nm: the thickness asked for.
        gaps: sections missing from the ribbon (failed cuts), estimated from gap lengths.
    """

    sections: list[ScreenedSection]
    targets: list[int]
    target_thickness_nm: float
    gaps: int = 0

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.sections]


def _thickness_lut(max_nm: float = 420.0, step_nm: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    from cryoopt.sim.overview import film_reflectance

    t = np.arange(0.0, max_nm + step_nm, step_nm)
    return t, film_reflectance(t)


def _water_reflectance() -> np.ndarray:
    from cryoopt.sim.overview import film_reflectance

    return film_reflectance(0.0)


def _thickness_map(rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Thickness (nm) per pixel by the nearest interference colour (first order, up to 420 nm)."""
    from scipy.spatial import cKDTree

    t, lut = _thickness_lut()
    out = np.zeros(rgb.shape[:2])
    if valid.any():
        _, idx = cKDTree(lut).query(rgb[valid])
        out[valid] = t[idx]
    return out


def _split_ribbon(fg: np.ndarray, contrast: np.ndarray) -> list[tuple[int, int]]:
    """Column ranges of the sections along the ribbon.

    ``contrast`` is each raw pixel's colour minus water's (``H x W x 3``); its mean over
    the ribbon's rows (noise averages out before the norm is taken) drops at a junction
    between two sections (a line of water one pixel wide) and stays low over the gap a
    failed cut leaves."""
    rows = np.flatnonzero(fg.mean(axis=1) > 0.2 * fg.mean(axis=1).max()) if fg.any() else np.array([], int)
    if rows.size == 0:
        return []
    profile = np.linalg.norm(contrast[rows[0]:rows[-1] + 1].mean(axis=0), axis=1)
    cover = fg[rows[0]:rows[-1] + 1].mean(axis=0)
    local = ndi.median_filter(profile, size=15, mode="nearest")
    present = (cover > 0.2) & (profile > 0.3 * local)
    runs, start = [], None
    for x, p in enumerate(present):
        if p and start is None:
            start = x
        elif not p and start is not None:
            runs.append((start, x))
            start = None
    if start is not None:
        runs.append((start, len(present)))
    if len(runs) < 2:
        return runs
    # a crack straight across a section interrupts it too: touching pieces that together
    # are no longer than a section are one section
    typical = float(np.percentile([b - a for a, b in runs], 75))
    merged = [runs[0]]
    for a, b in runs[1:]:
        pa, pb = merged[-1]
        if a - pb <= 2 and (b - pa) <= 1.2 * typical:
            merged[-1] = (pa, b)
        else:
            merged.append((a, b))
    return merged


def _cracks(outline: np.ndarray, material: np.ndarray, water_like: np.ndarray, dark: np.ndarray) -> np.ndarray:
    """Water inside a section's outline that runs as a line (>= 6 px long, 3x longer than wide),
    away from its edge and from contamination (whose rims pass through water's brightness)."""
    from skimage.measure import label, regionprops

    inner = ndi.binary_erosion(outline, iterations=2)
    cand = inner & water_like & ~dark
    out = np.zeros(outline.shape, bool)
    for rp in regionprops(label(cand, connectivity=2)):
        length = rp.axis_major_length
        if length >= 6.0 and length >= 3.0 * max(rp.axis_minor_length, 1.0):
            out[tuple(rp.coords.T)] = True
    return out


def screen_ribbon(
    overview: np.ndarray,
    *,
    pixel_size_nm: float,
    target_thickness_nm: float = 100.0,
    thresholds: ScreeningThresholds = ScreeningThresholds(),
    expected_length_um: float | None = None,
) -> ScreeningResult:
    """Find, measure, classify and rank the sections of a ribbon overview (see the module).

    Args:
        overview: ``H x W x 3`` reflectance image (linear, any positive scale), the ribbon
            running along the rows, on water or a clear support.
        pixel_size_nm: overview pixel size.
        target_thickness_nm: the thickness asked for (ranks the good sections).
        thresholds: decision thresholds.
        expected_length_um: a section's length along the ribbon, to count missing sections
            from gap widths (default: the median length found).

    Raises:
        EvaluationError: not an RGB image, NaN pixels, or no ribbon found.
    """
    img = np.asarray(overview, dtype=np.float64)
    if img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 8:
        raise EvaluationError(f"overview must be an H x W x 3 colour image, got shape {img.shape}")
    if not np.all(np.isfinite(img)):
        raise EvaluationError("overview has NaN/inf pixels; mask or inpaint them first")
    px_um = check_pixel_size(pixel_size_nm, name="pixel_size_nm") / 1000.0
    if not (math.isfinite(target_thickness_nm) and target_thickness_nm > 0):
        raise EvaluationError(f"target_thickness_nm must be positive, got {target_thickness_nm!r}")
    sm = ndi.gaussian_filter(img, (1.0, 1.0, 0))
    # the water around the ribbon: the border, per channel; it calibrates illumination and colour
    border = np.concatenate([sm[:3].reshape(-1, 3), sm[-3:].reshape(-1, 3)])
    water = np.median(border, axis=0)
    if np.any(water <= 0):
        raise EvaluationError("the overview's border (water or support) has no positive reflectance; pass a linear reflectance image")
    norm = sm / water * _water_reflectance()
    spread = np.median(np.abs(border / water - 1.0), axis=0) * 1.4826 + 1e-6
    dev = np.abs(norm / _water_reflectance() - 1.0) / spread
    lum = norm.sum(axis=2) / _water_reflectance().sum()
    dark = lum < 0.6  # far darker than water: opaque contamination
    fg = (dev.max(axis=2) > 6.0) | dark
    fg = ndi.binary_opening(fg, iterations=1)
    raw = img / water * _water_reflectance()
    runs = _split_ribbon(fg, raw - _water_reflectance())
    # unsmoothed: a crack is a line of water one pixel wide
    raw_border = np.concatenate([img[:3].reshape(-1, 3), img[-3:].reshape(-1, 3)]) / water
    raw_spread = np.median(np.abs(raw_border - 1.0), axis=0) * 1.4826 + 1e-6
    raw_dev = np.abs(raw / _water_reflectance() - 1.0) / raw_spread
    water_like = raw_dev.max(axis=2) < 3.0
    raw_lum = raw.sum(axis=2) / _water_reflectance().sum()
    min_px = thresholds.min_section_um2 / px_um**2
    sections: list[ScreenedSection] = []
    for x0, x1 in runs:
        sub = np.zeros(fg.shape, bool)
        sub[:, x0:x1] = fg[:, x0:x1]
        lab, n = ndi.label(sub)
        if n == 0:
            continue
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        main = lab == int(np.argmax(sizes))
        if main.sum() < min_px:
            continue
        # the section's outline: the convex hull of its pieces within the run (a trimmed block
        # face is a trapezoid), so specks and cracks at its edge stay inside it
        from skimage.morphology import convex_hull_image

        pieces = sub & ndi.binary_dilation(main, iterations=3)
        outline = convex_hull_image(pieces)
        # contamination: far darker than this section, and not water (a crack) either
        sec_lum = float(np.median(lum[outline & fg & ~dark])) if (outline & fg & ~dark).any() else 1.0
        inner = ndi.binary_erosion(outline, iterations=2)  # edge pixels mix section and water
        # a speck dims the section's own colour; a fold changes it (another interference order)
        base = outline & fg & ~dark
        chroma = norm / np.maximum(norm.sum(axis=2, keepdims=True), 1e-12)
        sec_chroma = np.median(chroma[base], axis=0) if base.any() else np.full(3, 1 / 3)
        off_colour = np.linalg.norm(chroma - sec_chroma, axis=2) > 0.05
        specks = inner & ((lum < 0.35 * sec_lum) | ((lum < 0.55 * sec_lum) & ~off_colour))
        material = outline & fg & ~specks
        thick = _thickness_map(norm, material)
        vals = thick[material]
        if vals.size < 10:
            continue
        med = float(np.median(vals))
        area = float(outline.sum())
        fold = float(np.count_nonzero(material & (thick > 1.6 * med) & (thick > 40.0)) / area)
        speck_zone = ndi.binary_dilation(specks | (inner & (raw_lum < 0.7 * sec_lum) & ~water_like), iterations=1)
        crack = float(np.count_nonzero(_cracks(outline, material, water_like, speck_zone)) / area)
        cont = float(np.count_nonzero(specks) / area)
        checks = {
            "folded": fold > thresholds.fold_fraction,
            "cracked": crack > thresholds.crack_fraction,
            "contaminated": cont > thresholds.contamination_fraction,
            "too_thick": med > thresholds.too_thick_nm,
        }
        label = next((c for c in SECTION_CLASSES if checks.get(c, c == "good")), "good")
        rows = np.flatnonzero(outline.any(axis=1))
        cols = np.flatnonzero(outline.any(axis=0))
        sd = float(np.std(vals[vals <= 1.6 * med])) if np.any(vals <= 1.6 * med) else 0.0
        sections.append(ScreenedSection(
            position=len(sections), label=label, thickness_nm=med, thickness_sd_nm=sd, fold_fraction=fold,
            crack_fraction=crack, contamination_fraction=cont, area_um2=area * px_um**2,
            length_um=float(cols.size) * px_um, width_um=float(rows.size) * px_um, mask=outline,
        ))
    if not sections:
        raise EvaluationError("no section found in the overview: is the ribbon in the field and along the rows?")
    good = [s for s in sections if s.label == "good"]
    good.sort(key=lambda s: (abs(s.thickness_nm - target_thickness_nm) / target_thickness_nm
                             + s.crack_fraction + s.contamination_fraction + s.fold_fraction))
    for r, s in enumerate(good):
        s.rank = r
    # missing sections: gaps between runs wider than a junction, in section lengths
    length = expected_length_um or float(np.median([s.length_um for s in sections]))
    gaps = 0
    for (a0, a1), (b0, b1) in zip(runs[:-1], runs[1:]):
        gaps += int(round(max(0.0, (b0 - a1 - 1) * px_um) / max(length, 1e-9)))
    return ScreeningResult(sections, [s.position for s in good], float(target_thickness_nm), gaps)


def screening_context(result: ScreeningResult, *, face_length_um: float | None = None) -> np.ndarray:
    """A block's screening as a fixed-length vector (:data:`CONTEXT_FEATURES`), for a GP context.

    ``good_fraction``: good sections / sections cut (found + missing); ``thickness_ratio``:
    median thickness / target; ``thickness_cv``: spread of section thicknesses over their
    mean; ``fold_fraction``, ``crack_fraction``, ``contamination_fraction``,
    ``too_thick_fraction``: fractions of sections with that label; ``missing_fraction``:
    failed cuts / sections cut; ``compression``: ``1 - length / face_length_um`` (0 when
    the block face length is not given). All finite, most in [0, 1].
    """
    secs = result.sections
    n = len(secs) + result.gaps
    t = np.array([s.thickness_nm for s in secs])
    counts = {c: sum(s.label == c for s in secs) for c in SECTION_CLASSES}
    comp = 0.0
    if face_length_um:
        comp = float(np.clip(1.0 - np.median([s.length_um for s in secs]) / face_length_um, 0.0, 1.0))
    vec = np.array([
        counts["good"] / n,
        float(np.median(t)) / result.target_thickness_nm,
        float(t.std() / t.mean()) if t.mean() > 0 else 0.0,
        counts["folded"] / n,
        counts["cracked"] / n,
        counts["contaminated"] / n,
        counts["too_thick"] / n,
        result.gaps / n,
        comp,
    ])
    return vec


def em_time_saved(
    predicted_good: np.ndarray, truly_good: np.ndarray, *, em_minutes_per_section: float = 20.0,
    overview_minutes: float = 2.0,
) -> dict[str, float]:
    """EM time of imaging only the sections screening calls good, versus imaging every section.

    Returns minutes without and with screening, the fraction saved, minutes spent on bad
    sections either way, and good sections missed. ``em_minutes_per_section`` covers
    navigation, focusing and acquisition of one section's EM field; ``overview_minutes``
    the overview itself.
    """
    pred = np.asarray(predicted_good, bool)
    true = np.asarray(truly_good, bool)
    if pred.shape != true.shape or pred.ndim != 1:
        raise EvaluationError("predicted_good and truly_good must be 1-D boolean arrays of the same length")
    n = pred.size
    without = n * em_minutes_per_section
    with_ = int(pred.sum()) * em_minutes_per_section + overview_minutes
    return {
        "minutes_without": float(without),
        "minutes_with": float(with_),
        "fraction_saved": float(1.0 - with_ / without) if without else 0.0,
        "bad_minutes_without": float(np.count_nonzero(~true) * em_minutes_per_section),
        "bad_minutes_with": float(np.count_nonzero(pred & ~true) * em_minutes_per_section),
        "good_missed": float(np.count_nonzero(true & ~pred)),
    }
