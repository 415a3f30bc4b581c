"""Low-magnification overview of a ribbon of serial sections, with the truth of each section.

What an operator (or automated screening) sees before committing EM time: the ribbon
of sections floating on water in the knife boat, or picked up on a slot grid, imaged
in reflected light at about 1 um per pixel. Each section is a block-face-shaped patch
whose colour is the thin-film interference colour of its thickness (the ultramicrotomist's
thickness gauge: grey < 60 nm, silver 60-90, gold 90-150, purple 150-190, blue 190-240;
Peachey 1958, J. Biophys. Biochem. Cytol. 4:233), computed from the Airy reflectance of
a film of index 1.5 on water at three wavelengths (Born & Wolf, *Principles of Optics*,
sec. 7.6). Defects are drawn on it:

- **folded**: part of the section lies doubled over a fold line (twice the thickness);
- **cracked**: through-cracks across the section show the water beneath;
- **contaminated**: ice crystals or debris, dark specks covering part of the section;
- **too thick**: a thickness above ``too_thick_nm`` (default 150 nm, purple and beyond:
  too much overlap for high-resolution EM);
- compression shortens a section along the ribbon (the cutting direction) and chatter
  bands its thickness across it (both as the sectioning model reports them).

The ribbon runs along the image rows; consecutive sections meet at a junction that
shows as a one-pixel line of water, and a failed cut leaves a gap.

Section qualities come from :class:`~cryoopt.sim.sectioning.SectioningModel` (thickness,
compression, chatter, crevasse density, ribbon failure) via :func:`cut_ribbon`, or from
any mappings with those keys. How often a section folds or catches contamination is not
in that model: ``fold_probability`` and ``contamination_probability`` are scenario
assumptions, as is the fraction of crevasses that run through the section
(``through_crack_fraction``).

Example:
    >>> ov = render_ribbon([{"thickness_nm": 80.0}] * 3, rng=0)
    >>> ov.image.shape[2], [s.label for s in ov.sections]
    (3, ['good', 'good', 'good'])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from cryoopt.sim._validation import as_generator, check_int, check_range

__all__ = [
    "SECTION_LABELS",
    "WAVELENGTHS_NM",
    "Overview",
    "RibbonSection",
    "cut_ribbon",
    "film_reflectance",
    "render_ribbon",
]

#: Truth labels, in the order a section is assigned the first that applies.
SECTION_LABELS: tuple[str, ...] = ("folded", "cracked", "contaminated", "too_thick", "good")
#: Red, green, blue wavelengths of the overview camera, nm.
WAVELENGTHS_NM: tuple[float, float, float] = (610.0, 545.0, 465.0)
#: Refractive indices: section (resin or sucrose-infused tissue), and the water beneath.
N_SECTION, N_WATER = 1.5, 1.333


def film_reflectance(thickness_nm: np.ndarray | float, *, wavelengths_nm: Sequence[float] = WAVELENGTHS_NM,
                     n_film: float = N_SECTION, n_substrate: float = N_WATER) -> np.ndarray:
    """Normal-incidence reflectance of a film of ``thickness_nm`` on water, per wavelength.

    Airy's formula for one film between air and a substrate:
    ``r = (r01 + r12 e^{2 i d}) / (1 + r01 r12 e^{2 i d})``, ``d = 2 pi n t / lambda``,
    ``R = |r|^2`` (Born & Wolf sec. 7.6.1). Returns an array of shape
    ``thickness.shape + (len(wavelengths),)``; thickness 0 is bare water.
    """
    t = np.asarray(thickness_nm, float)[..., None]
    lam = np.asarray(wavelengths_nm, float)
    r01 = (1.0 - n_film) / (1.0 + n_film)
    r12 = (n_film - n_substrate) / (n_film + n_substrate)
    e = np.exp(2j * (2.0 * np.pi * n_film * t / lam))
    r = (r01 + r12 * e) / (1.0 + r01 * r12 * e)
    return np.abs(r) ** 2


@dataclass
class RibbonSection:
    """Truth of one section of the overview.

    Attributes:
        index: position in the ribbon (cutting order).
        label: the first of :data:`SECTION_LABELS` that applies.
        defects: every defect that applies (``label`` is the first).
        thickness_nm: mean thickness.
        mask: the section's pixels in the overview.
        fold_fraction, crack_fraction, contamination_fraction: area fractions.
        quality: the sectioning model's record of this cut.
    """

    index: int
    label: str
    defects: tuple[str, ...]
    thickness_nm: float
    mask: np.ndarray = field(repr=False)
    fold_fraction: float = 0.0
    crack_fraction: float = 0.0
    contamination_fraction: float = 0.0
    quality: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def good(self) -> bool:
        return self.label == "good"


@dataclass
class Overview:
    """An RGB reflectance image (``H x W x 3``, float32) of a ribbon and its sections' truth."""

    image: np.ndarray
    pixel_size_nm: float
    sections: list[RibbonSection]
    params: dict[str, Any] = field(default_factory=dict)


def cut_ribbon(setpoints: Any, n_sections: int, *, rng: np.random.Generator | int | None = None,
               knife_wear: float = 0.0) -> list[dict[str, Any]]:
    """Cut ``n_sections`` with :class:`~cryoopt.sim.sectioning.SectioningModel` at ``setpoints``
    (a :class:`SectioningSetpoints` or a mapping of its fields); returns their qualities."""
    from cryoopt.sim.sectioning import SectioningModel, SectioningSetpoints

    sp = setpoints if isinstance(setpoints, SectioningSetpoints) else SectioningSetpoints(**dict(setpoints))
    model = SectioningModel(rng=as_generator(rng), knife_wear=knife_wear)
    return [model.cut(sp).to_dict() for _ in range(check_int("n_sections", n_sections, 1, 10_000))]


def _section_shape(length_px: int, width_px: int, taper: float) -> np.ndarray:
    """A trapezoid (the trimmed block face): full width at one cut edge, ``1 - taper`` at the other."""
    rows = np.arange(width_px)[:, None] - (width_px - 1) / 2.0
    frac = np.linspace(1.0, 1.0 - taper, length_px)[None, :]
    return np.abs(rows) <= frac * width_px / 2.0


def render_ribbon(
    qualities: Sequence[Mapping[str, Any]],
    *,
    pixel_size_nm: float = 1000.0,
    face_um: tuple[float, float] = (80.0, 120.0),
    target_thickness_nm: float = 100.0,
    too_thick_nm: float = 150.0,
    fold_probability: float = 0.08,
    contamination_probability: float = 0.08,
    through_crack_fraction: float = 0.01,
    noise: float = 0.004,
    rng: np.random.Generator | int | None = None,
) -> Overview:
    """Render the overview of a ribbon, one section per quality mapping, in cutting order.

    Args:
        qualities: per section ``thickness_nm`` (required), and optionally ``compression``,
            ``chatter``, ``crack_density_per_um`` and ``ribbon_ok`` (a failed cut leaves a gap).
        pixel_size_nm: overview pixel size (about 1 um at 10x).
        face_um: block face ``(length along the cut, width)``, um.
        target_thickness_nm: the thickness asked for (recorded in ``params``).
        too_thick_nm: thicker sections are labelled ``too_thick``.
        fold_probability, contamination_probability: chance a section folds at pick-up or
            catches ice/debris (scenario assumptions).
        through_crack_fraction: fraction of the model's crevasses that crack through the
            section and show at this magnification (an assumption).
        noise: camera noise, in reflectance units.
        rng: seed or Generator.
    """
    gen = as_generator(rng)
    px_um = check_range("pixel_size_nm", pixel_size_nm, 50.0, 20_000.0) / 1000.0
    if not qualities:
        raise ValueError("qualities is empty; pass one mapping per section")
    length_um, width_um = (check_range("face_um", v, 5.0, 5000.0) for v in face_um)
    width_px = max(4, int(round(width_um / px_um)))
    comps = [min(max(float(q.get("compression", 0.3)), 0.0), 0.9) for q in qualities]
    lengths = [max(4, int(round(length_um * (1.0 - c) / px_um))) for c in comps]
    margin = max(6, width_px // 3)
    H = width_px + 2 * margin
    W = sum(lengths) + len(lengths) + 2 * margin
    thick = np.zeros((H, W), np.float32)  # local film thickness, nm (0 = water)
    dark = np.zeros((H, W), np.float32)  # contamination opacity
    sections: list[RibbonSection] = []
    x0 = margin
    taper = 0.15
    for i, (q, length_px) in enumerate(zip(qualities, lengths)):
        t = check_range(f"qualities[{i}]['thickness_nm']", float(q["thickness_nm"]), 1.0, 5000.0)
        shape = _section_shape(length_px, width_px, taper if i % 2 == 0 else 0.0)
        if not bool(q.get("ribbon_ok", True)):
            x0 += length_px + 1  # a failed cut: no section, a gap in the ribbon
            continue
        mask = np.zeros((H, W), bool)
        mask[margin:margin + width_px, x0:x0 + length_px] = shape
        local = np.where(mask, t, 0.0).astype(np.float32)
        chatter = float(q.get("chatter", 0.0))
        if chatter > 0:  # bands across the cut (along the section's width)
            xs = np.arange(W)[None, :]
            local *= 1.0 + min(chatter, 0.5) * np.sin(2 * np.pi * xs / max(3.0, 0.1 * length_px) + gen.uniform(0, 6.3)).astype(np.float32)
        defects: list[str] = []
        # fold: the section doubles over a line across it; the folded strip is twice as thick
        fold_frac = 0.0
        if gen.random() < fold_probability:
            a = gen.uniform(0.15, 0.4) * length_px
            start = x0 + int(gen.uniform(0.0, length_px - a))
            band = mask & (np.arange(W)[None, :] >= start) & (np.arange(W)[None, :] < start + int(a))
            local[band] *= 2.0
            fold_frac = float(band.sum() / mask.sum())
            defects.append("folded")
        # cracks: lines across part of the section where it parted (water shows)
        n_cracks = int(gen.poisson(float(q.get("crack_density_per_um", 0.0)) * width_um * through_crack_fraction))
        crack = np.zeros((H, W), bool)
        for _ in range(n_cracks):
            cx = x0 + gen.uniform(0.1, 0.9) * length_px
            ang = gen.uniform(-0.4, 0.4)
            span = gen.uniform(0.4, 1.0) * width_px
            r0 = margin + (width_px - span) * (0 if gen.random() < 0.5 else 1)
            for s in np.linspace(0.0, span, int(span * 2) + 1):
                rr, cc = int(round(r0 + s)), int(round(cx + s * math.tan(ang)))
                if 0 <= rr < H and 0 <= cc < W:
                    crack[rr, cc] = True
        grow = int(round(1.0 / px_um)) - 1  # cracks open about 1 um
        if grow >= 1:
            crack = ndi.binary_dilation(crack, iterations=grow)
        crack &= mask
        if crack.any():
            local[crack] = 0.0
            defects.append("cracked")
        crack_frac = float(crack.sum() / mask.sum())
        # contamination: ice crystals / debris, opaque specks
        cont_frac = 0.0
        if gen.random() < contamination_probability:
            cover = gen.uniform(0.03, 0.25)
            specks = np.zeros((H, W), bool)
            area = mask.sum()
            while specks.sum() < cover * area:
                r, c = gen.integers(margin, margin + width_px), gen.integers(x0, x0 + length_px)
                rad = max(1, int(gen.lognormal(math.log(max(1.0, 3.0 / px_um)), 0.4)))
                specks[max(r - rad, 0):r + rad + 1, max(c - rad, 0):c + rad + 1] = True
            specks &= mask
            dark[specks] = np.maximum(dark[specks], gen.uniform(0.6, 0.9))
            cont_frac = float(specks.sum() / mask.sum())
            defects.append("contaminated")
        if t > too_thick_nm:
            defects.append("too_thick")
        thick = np.maximum(thick, local)
        label = next((lab for lab in SECTION_LABELS if lab in defects), "good")
        sections.append(RibbonSection(i, label, tuple(d for d in SECTION_LABELS if d in defects), t, mask, fold_frac,
                                      crack_frac, cont_frac, dict(q)))
        x0 += length_px + 1  # the junction between two sections shows as a one-pixel line
    refl = film_reflectance(thick).astype(np.float32)
    refl *= (1.0 - dark)[..., None]
    # illumination: a broad vignette and a slight colour cast, camera noise
    yy, xx = np.mgrid[0:H, 0:W]
    vignette = 1.0 - 0.15 * (((xx - W / 2) / (W / 2)) ** 2 + ((yy - H / 2) / max(H, W) * 2) ** 2)
    cast = np.array([1.0, 1.0, 1.0]) * gen.uniform(0.95, 1.05, 3)
    image = refl * vignette[..., None].astype(np.float32) * cast.astype(np.float32)
    image = image + gen.normal(0.0, noise, image.shape).astype(np.float32)
    return Overview(image.astype(np.float32), float(pixel_size_nm), sections,
                    {"target_thickness_nm": float(target_thickness_nm), "too_thick_nm": float(too_thick_nm),
                     "face_um": (length_um, width_um)})
