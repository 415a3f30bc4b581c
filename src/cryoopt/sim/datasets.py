"""Labelled LM/EM images rendered from the specimen phantoms, for training and scoring
segmenters and LM-EM registration.

:func:`em_section` images one field of one section in EM with its ground-truth masks
(the same physics as the benches: :meth:`Specimen.section` then
:func:`~cryoopt.sim.imaging.image_em`); :func:`clem_pair` adds the LM image of a field
around it under a known rotation, pixel size and offset, and optionally the EM image of
a *compressed* section (the LM shows the block face or the section before it deformed),
with the exact LM -> EM mapping (:class:`Deformation`) so target registration errors
can be measured. :func:`random_em_sections` draws fields, depths and imaging conditions
from stated ranges (a held-out set is just other seeds).

Fiducial beads (presets whose ``target_site`` is ``free``, e.g. ``bead_calibration``) are
electron dense, so they are added to the EM stain density here
(``visible_targets``); labelled sites in cells are not (immunolabel is invisible in EM
without gold).

Example:
    >>> spec = Specimen.from_preset("tissue_block", seed=3)
    >>> s = em_section(spec, centre_nm=(20000, 20000, 5000), size=64, pixel_size_nm=25, rng=0)
    >>> s.em.shape, sorted(s.masks)
    ((64, 64), ['cells', 'mitochondria', 'membranes', 'nuclei', 'targets'])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import ndimage

from cryoopt.exceptions import ParameterError
from cryoopt.sim._validation import as_generator, check_int, check_range
from cryoopt.sim.imaging import IceContamination, image_em, image_lm
from cryoopt.sim.specimen import SectionTruth, Specimen, pixel_affine

__all__ = [
    "CLEMPair",
    "Deformation",
    "Fiducials",
    "EMSection",
    "clem_pair",
    "edge_on_membranes",
    "em_section",
    "field_centres",
    "has_em_beads",
    "random_clem_pairs",
    "random_em_sections",
    "section_truth",
    "with_em_beads",
]

#: Stain density given to electron-dense fiducial beads (a membrane is 0.75, a mitochondrion 0.55):
#: the model's densest (section densities are capped at 1). Gold fiducials (Z = 79, 19.3 g/cm3)
#: scatter more than any heavy-metal-stained structure and are the darkest features of an EM
#: image, which is why they serve as alignment markers (Kremer, Mastronarde & McIntosh,
#: J. Struct. Biol. 116, 71 (1996)).
BEAD_DENSITY = 1.0


@dataclass(frozen=True)
class Fiducials:
    """Fiducial beads that both LM and EM show, applied to the section (opt-in; none by default).

    The practice of Kukulski et al. (2011, J. Cell Biol. 192:111; protocol in Kukulski et
    al. 2012, Methods Cell Biol. 111:235): fluorescent, electron-dense beads (TetraSpeck,
    0.1 um) are put on the section, imaged in both microscopes and used as the registration
    landmarks; they report precision below 100 nm. Beads stay where they were put on the
    section material, so they move with it when the section compresses.

    Attributes:
        diameter_nm: bead diameter (TetraSpeck 0.1 um, as in Kukulski et al. 2012).
        density_per_um2: beads per square micrometre of section. Not a published number:
            chosen so that a 20 um EM field holds about 40 beads, about 3 um apart, far
            beyond the LM resolution (a lab dilutes the bead stock until a field holds
            enough to register by; Kukulski et al. aim for several per tomogram field).
        photons_per_bead: LM photons collected from one bead per exposure (a 0.1 um
            TetraSpeck bead is far brighter than an immunolabelled site; a choice, not a
            measurement).
        em_density: stain density of a bead in EM (electron dense: :data:`BEAD_DENSITY`).
        seed: seed of the bead positions; the pair's own draws (pose, noise) are untouched,
            so a pair with beads is the same pair as the one without them.
    """

    diameter_nm: float = 200.0
    density_per_um2: float = 0.1
    photons_per_bead: float = 2000.0
    em_density: float = BEAD_DENSITY
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("diameter_nm", self.diameter_nm, 5.0, 2000.0)
        check_range("density_per_um2", self.density_per_um2, 0.0, 10.0)
        check_range("photons_per_bead", self.photons_per_bead, 0.0, 1e7)
        check_range("em_density", self.em_density, 0.0, 5.0)

    def scatter(self, centre_nm: tuple[float, float], half_side_nm: float, rng: np.random.Generator) -> np.ndarray:
        """Bead centres (x, y) nm, Poisson-distributed over the square ``centre +- half_side``."""
        area_um2 = (2.0 * half_side_nm / 1000.0) ** 2
        n = int(rng.poisson(self.density_per_um2 * area_um2))
        return np.asarray(centre_nm, float) + rng.uniform(-half_side_nm, half_side_nm, (n, 2))


def _paint_discs(shape: tuple[int, int], centres_px: np.ndarray, radius_px: float, *, supersample: int = 4) -> np.ndarray:
    """Fraction of each pixel covered by discs of ``radius_px`` at ``centres_px`` (x, y)."""
    out = np.zeros(shape, np.float32)
    H, W = shape
    k = np.arange(supersample) + 0.5
    sub = k / supersample - 0.5  # sub-pixel sample offsets
    for x, y in np.asarray(centres_px, float).reshape(-1, 2):
        r0, r1 = max(int(math.floor(y - radius_px - 1)), 0), min(int(math.ceil(y + radius_px + 1)) + 1, H)
        c0, c1 = max(int(math.floor(x - radius_px - 1)), 0), min(int(math.ceil(x + radius_px + 1)) + 1, W)
        if r0 >= r1 or c0 >= c1:
            continue
        rows = (np.arange(r0, r1)[:, None] + sub[None, :]).ravel()
        cols = (np.arange(c0, c1)[:, None] + sub[None, :]).ravel()
        inside = ((rows[:, None] - y) ** 2 + (cols[None, :] - x) ** 2) <= radius_px**2
        cover = inside.reshape(r1 - r0, supersample, c1 - c0, supersample).mean(axis=(1, 3))
        out[r0:r1, c0:c1] = np.maximum(out[r0:r1, c0:c1], cover)
    return out


@dataclass
class EMSection:
    """An EM image of one field and its truth (masks on the image's grid).

    Attributes:
        em: the image (float32 counts, dark = stained).
        masks: ``cells``, ``nuclei``, ``mitochondria``, ``membranes``, ``targets`` (bool).
        pixel_size_nm: EM pixel size.
        truth: the section's :class:`SectionTruth` (undeformed grid).
        params: the drawn imaging and section conditions.
    """

    em: np.ndarray
    masks: dict[str, np.ndarray]
    pixel_size_nm: float
    truth: SectionTruth = field(repr=False)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Deformation:
    """Compression of a section along its cutting direction (image rows), varying across it.

    A point at undeformed EM pixel ``(x, y)`` lies at ``y' = yc + (y - yc) * (1 - c(x))``
    in the image of the compressed section, with
    ``c(x) = compression + gradient * (x - xc) / width + ripple * sin(2 pi x / period + phase)``
    (thicker or softer parts of a section compress more; Al-Amoudi et al., J. Struct. Biol.
    150, 109 (2005) measured 20-60 % along the cut).
    """

    compression: float = 0.0
    gradient: float = 0.0
    ripple: float = 0.0
    period_px: float = 200.0
    phase: float = 0.0
    centre: tuple[float, float] = (0.0, 0.0)
    width_px: float = 1.0

    def c(self, x: np.ndarray) -> np.ndarray:
        xc = self.centre[0]
        return (self.compression + self.gradient * (np.asarray(x, float) - xc) / self.width_px
                + self.ripple * np.sin(2 * np.pi * np.asarray(x, float) / self.period_px + self.phase))

    def forward(self, xy: np.ndarray) -> np.ndarray:
        """Undeformed EM (x, y) px -> deformed (imaged) EM px, `N x 2`."""
        p = np.asarray(xy, float).reshape(-1, 2)
        yc = self.centre[1]
        return np.column_stack([p[:, 0], yc + (p[:, 1] - yc) * (1.0 - self.c(p[:, 0]))])

    def inverse(self, xy: np.ndarray) -> np.ndarray:
        """Deformed EM (x, y) px -> undeformed EM px, `N x 2`."""
        p = np.asarray(xy, float).reshape(-1, 2)
        yc = self.centre[1]
        return np.column_stack([p[:, 0], yc + (p[:, 1] - yc) / (1.0 - self.c(p[:, 0]))])

    @property
    def is_identity(self) -> bool:
        return self.compression == 0 and self.gradient == 0 and self.ripple == 0


@dataclass
class CLEMPair(EMSection):
    """An EM section plus the LM image of a field around it and the true LM -> EM mapping.

    Attributes:
        lm: LM image (float32 counts, bright = label).
        lm_pixel_size_nm: LM pixel size.
        lm_affine: LM pixel -> undeformed EM pixel, `3 x 3` (``(x, y, 1)``).
        deformation: undeformed -> imaged EM pixels (identity when not compressed).
        lm_masks: truth masks on the LM grid.
        fiducials_lm: `N x 2` LM (x, y) px of the fiducial beads, when the pair has them
            (their EM pixels: :meth:`lm_to_em`); empty otherwise.
    """

    lm: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    lm_pixel_size_nm: float = 100.0
    lm_affine: np.ndarray = field(default_factory=lambda: np.eye(3))
    deformation: Deformation = Deformation()
    lm_masks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    fiducials_lm: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)), repr=False)

    def lm_to_em(self, lm_xy: np.ndarray) -> np.ndarray:
        """True EM (x, y) pixel of LM (x, y) pixels, `N x 2` (compression included)."""
        p = np.asarray(lm_xy, float).reshape(-1, 2)
        q = p @ self.lm_affine[:2, :2].T + self.lm_affine[:2, 2]
        return self.deformation.forward(q)

    def target_points_em(self) -> np.ndarray:
        """Centroids (x, y) of the labelled targets seen in the section (or, without them, its
        mitochondria) inside the EM field, in imaged EM pixels: where a target registration
        error counts."""
        from scipy import ndimage as ndi

        seen = self.truth.target_density > 0  # anywhere through the thickness: the projection shows them
        m = seen if seen.any() else self.masks["mitochondria"]
        lab, n = ndi.label(m)
        if n == 0:
            return np.zeros((0, 2))
        c = np.array(ndi.center_of_mass(np.ones(m.shape), lab, range(1, n + 1)), float).reshape(-1, 2)
        return c[:, ::-1]


def field_centres(spec: Specimen) -> np.ndarray:
    """Specimen ``(x, y, z)`` nm of structures to centre fields on: somata, neurite
    midpoints, mitochondria and labelled targets (as an operator would frame a field)."""
    pts = []
    for shapes in (spec.cells, spec.mitochondria, spec.targets):
        if len(shapes.ellipsoids):
            pts.append(shapes.ellipsoids[:, :3])
        if len(shapes.capsules):
            pts.append(0.5 * (shapes.capsules[:, :3] + shapes.capsules[:, 3:6]))
    if not pts:
        return np.column_stack([spec.extent_nm[:2] / 2, [spec.extent_nm[2] / 2]]).reshape(1, 3)
    return np.concatenate(pts)


def edge_on_membranes(planes: Sequence[np.ndarray]) -> np.ndarray:
    """Pixels where a membrane crosses the section nearly edge-on, from its membrane masks
    in planes through the thickness (each a line about a pixel wide, :meth:`Specimen.section`).

    A pixel is membrane when, within its 3 x 3 neighbourhood, every two planes' membranes
    lie within one pixel of each other (a pixel of the one has the other on it or on one of
    its four neighbours), and it holds membrane in one plane at least. So the membrane moves
    laterally by at most about a pixel between the outermost planes, and the projection
    (the image is the planes' mean) shows it as a sharp line one to three pixels wide. A
    membrane inclined further images as a faint band ``t tan(theta)`` wide and is no line
    (how a membrane appears in a section depends on its angle to the beam: Williams &
    Kallman, J. Biophys. Biochem. Cytol. 1, 301 (1955); projection overlap: Frank,
    *Electron Tomography*, 2nd ed. (2006), ch. 1); nor is a membrane that ends within the
    slab (a surface cut tangentially, missing from some plane). With the three planes of
    :func:`section_truth` (at 1/6, 1/2 and 5/6 of the thickness) a flat membrane is a
    continuous line when it moves by up to 1.5 px through the whole thickness (1-2 px wide
    at 0.5 px, up to 3 px at 1.5 px: the planes' lines together), in places at 2-2.5 px
    (where the rasterised lines fall), and none from 3 px on.

    This replaces a majority vote of the planes, which kept a pixel only where two planes'
    rasterised lines overlap: an inclined membrane falls on a slightly different row of
    pixels in each plane, so where the planes' lines are offset by about a pixel (and along
    curved membranes) the vote left a dotted subset of the line the image shows. The distance is asked of every pair of planes, not of
    the pixel to each plane: a pixel of the middle plane is within a pixel of both outer
    planes when these are two pixels apart.
    """
    masks = np.asarray([np.asarray(m, bool) for m in planes])
    if masks.ndim != 3 or masks.shape[0] == 0:
        raise ParameterError(f"planes must be one or more 2-D masks of one shape, got shape {masks.shape}")
    cross = ndimage.generate_binary_structure(2, 1)
    within_1px = np.array([ndimage.binary_dilation(m, cross) for m in masks])
    out = masks.any(axis=0)
    for j in range(len(masks)):
        for k in range(len(masks)):
            if j != k and out.any():  # plane j's pixels with plane k's membrane within a pixel, near each pixel
                out &= ndimage.binary_dilation(masks[j] & within_1px[k], np.ones((3, 3), bool))
    return out


def section_truth(spec: Specimen, index: int, *, thickness_nm: float, shape: tuple[int, int], pixel_size_nm: float,
                  origin_nm: tuple[float, float], rotation_deg: float = 0.0, n_planes: int = 3) -> SectionTruth:
    """:meth:`Specimen.section` with masks that say what the section *shows*.

    ``Specimen.section`` averages the stain density over ``n_planes`` planes through the
    thickness (a projection image) but takes its masks from the mid-plane alone, so a
    nucleus above or below the mid-plane of a thick section darkens the image without
    being in the truth. Here each plane is rendered on its own (to the nearest 10 nm) and
    a pixel belongs to a structure when it does in most planes; the density is the same
    plane average. Membranes are :func:`edge_on_membranes` of the planes' membranes: where
    a membrane crosses the slab nearly edge-on, so the projection shows it as a line."""
    if n_planes <= 1:
        return spec.section(index, thickness_nm=thickness_nm, shape=shape, pixel_size_nm=pixel_size_nm,
                            origin_nm=origin_nm, rotation_deg=rotation_deg, n_planes=1)
    z_mid = (index + 0.5) * thickness_nm
    planes = []
    for k in range(n_planes):
        z = z_mid + thickness_nm * (k + 0.5 - n_planes / 2) / n_planes
        planes.append(spec.section(max(int(round(z / 10.0 - 0.5)), 0), thickness_nm=10.0, shape=shape, pixel_size_nm=pixel_size_nm,
                                   origin_nm=origin_nm, rotation_deg=rotation_deg, n_planes=1))
    need = n_planes // 2 + 1

    def vote(name: str) -> np.ndarray:
        return np.sum([np.asarray(getattr(t, name), bool) for t in planes], axis=0) >= need

    cell = np.sum([t.cells > 0 for t in planes], axis=0) >= need
    owner = np.max([t.cells for t in planes], axis=0)
    return SectionTruth(
        index=index, z_nm=z_mid, thickness_nm=float(thickness_nm), pixel_size_nm=float(pixel_size_nm), affine=planes[0].affine,
        cells=np.where(cell, owner, 0).astype(np.int32), nuclei=vote("nuclei") & cell, mitochondria=vote("mitochondria") & cell,
        membranes=edge_on_membranes([t.membranes for t in planes]) & cell, targets=vote("targets"),
        density=np.mean([t.density for t in planes], axis=0).astype(np.float32),
        target_density=np.mean([t.target_density for t in planes], axis=0).astype(np.float32),
    )


def has_em_beads(spec: Any) -> bool:
    """Whether the phantom's labelled targets are electron-dense fiducial beads (``target_site: free``,
    e.g. ``bead_calibration``); labelled sites in cells are invisible in EM without gold."""
    return getattr(spec, "target_site", "") == "free"


def with_em_beads(truth: SectionTruth) -> SectionTruth:
    """``truth`` with its fiducial beads in the EM stain density: :data:`BEAD_DENSITY` where a
    bead fills at least a third of the section's planes (``target_density``), less at its
    rim; the masks are unchanged. Returns ``truth`` itself when the field holds no bead.

    Call it only for phantoms with :func:`has_em_beads` (elsewhere the targets are label, not
    material). Shared by :func:`em_section` and the simulated microscope's EM
    (:class:`cryoopt.instruments.simulated.sim_physics.SimImaging`), so both image beads alike."""
    if not truth.target_density.any():
        return truth
    dens = np.maximum(truth.density, BEAD_DENSITY * np.clip(truth.target_density * 3.0, 0.0, 1.0)).astype(np.float32)
    return replace(truth, density=dens)


def _visible(spec: Specimen, visible_targets: bool | None) -> bool:
    return has_em_beads(spec) if visible_targets is None else bool(visible_targets)


def _em_truth(truth: SectionTruth, visible_targets: bool) -> SectionTruth:
    return with_em_beads(truth) if visible_targets else truth


def _deform_truth(truth: SectionTruth, d: Deformation, margin: int) -> SectionTruth:
    """The truth of the imaged (compressed) grid from one rendered ``margin`` px larger on each side."""
    from skimage.transform import warp

    H, W = truth.shape[0] - 2 * margin, truth.shape[1] - 2 * margin
    rows, cols = np.mgrid[0:H, 0:W].astype(float)
    und = d.inverse(np.column_stack([cols.ravel(), rows.ravel()]))
    coords = np.stack([und[:, 1].reshape(H, W) + margin, und[:, 0].reshape(H, W) + margin])

    def w(a: np.ndarray, order: int) -> np.ndarray:
        return warp(a.astype(np.float32), coords, order=order, mode="edge", preserve_range=True)

    cells = w(truth.cells, 0).astype(np.int32)
    return SectionTruth(
        index=truth.index, z_nm=truth.z_nm, thickness_nm=truth.thickness_nm, pixel_size_nm=truth.pixel_size_nm,
        affine=truth.affine @ np.array([[1, 0, margin], [0, 1, margin], [0, 0, 1.0]]),
        cells=cells, nuclei=w(truth.nuclei, 0) > 0.5, mitochondria=w(truth.mitochondria, 0) > 0.5,
        membranes=w(truth.membranes, 0) > 0.5, targets=w(truth.targets, 0) > 0.5,
        density=w(truth.density, 1).astype(np.float32), target_density=w(truth.target_density, 1).astype(np.float32),
    )


def em_section(
    spec: Specimen,
    *,
    centre_nm: tuple[float, float, float],
    size: int | tuple[int, int] = 256,
    pixel_size_nm: float = 25.0,
    thickness_nm: float = 100.0,
    stain_contrast: float = 1.0,
    dose_e_per_px: float = 200.0,
    charging: float = 0.0,
    ice_coverage: float = 0.0,
    rotation_deg: float = 0.0,
    deformation: Deformation | None = None,
    visible_targets: bool | None = None,
    n_planes: int = 3,
    fiducials_nm: np.ndarray | None = None,
    fiducials: Fiducials | None = None,
    rng: np.random.Generator | int | None = None,
) -> EMSection:
    """EM image and truth of the section through ``centre_nm`` (z picks the section).

    Args:
        spec: the phantom.
        centre_nm: specimen ``(x, y, z)`` of the field centre, nm.
        size: image side (or ``(H, W)``), px.
        pixel_size_nm: EM pixel size, nm.
        thickness_nm: section thickness, nm (10-5000).
        stain_contrast, dose_e_per_px, charging: as :func:`image_em`.
        ice_coverage: fraction of the field under ice crystals (0 = none).
        rotation_deg: rotation of the EM grid in the specimen plane.
        deformation: compression of the section (EM pixels of the undeformed grid).
        visible_targets: add fiducial beads to the EM density (default: for ``free`` targets).
        n_planes: planes sampled through the thickness.
        fiducials_nm: `N x 2` specimen (x, y) nm of fiducial beads on the section, drawn
            as electron-dense discs of ``fiducials`` (opt-in; none by default). They move
            with the section when it is compressed.
        fiducials: the beads' size and density (default :class:`Fiducials`).
        rng: noise.
    """
    gen = as_generator(rng)
    H, W = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    check_int("size", H, 8, 8192)
    check_range("pixel_size_nm", pixel_size_nm, 0.1, 10_000.0)
    check_range("thickness_nm", thickness_nm, 10.0, 5000.0)
    d = deformation if deformation is not None and not deformation.is_identity else None
    margin = 0 if d is None else int(math.ceil(0.8 * max(H, W))) + 2
    cx, cy, cz = (float(v) for v in centre_nm)
    index = max(int(cz // thickness_nm), 0)
    # pixel (0, 0) such that the grid centre lands on (cx, cy) under the rotation
    a = pixel_affine((0.0, 0.0), pixel_size_nm, rotation_deg)
    off = a[:2, :2] @ np.array([(W - 1) / 2.0 + margin, (H - 1) / 2.0 + margin])
    truth = section_truth(spec, index, thickness_nm=thickness_nm, shape=(H + 2 * margin, W + 2 * margin),
                          pixel_size_nm=pixel_size_nm, origin_nm=(cx - off[0], cy - off[1]),
                          rotation_deg=rotation_deg, n_planes=n_planes)
    if d is not None:
        truth = _deform_truth(truth, d, margin)
    if fiducials_nm is not None and len(fiducials_nm):
        fid = fiducials if fiducials is not None else Fiducials()
        grid = np.linalg.inv(pixel_affine((cx - off[0], cy - off[1]), pixel_size_nm, rotation_deg))
        px = np.asarray(fiducials_nm, float).reshape(-1, 2) @ grid[:2, :2].T + grid[:2, 2] - margin
        if d is not None:
            px = d.forward(px)
        cover = _paint_discs((H, W), px, 0.5 * fid.diameter_nm / pixel_size_nm)
        truth = replace(truth, density=np.maximum(truth.density, fid.em_density * cover).astype(np.float32))
    ice = IceContamination(coverage=min(float(ice_coverage), 0.5)) if ice_coverage > 0 else None
    img = image_em(_em_truth(truth, _visible(spec, visible_targets)), stain_contrast=stain_contrast,
                   charging=charging, ice=ice, dose_e_per_px=dose_e_per_px, rng=gen)
    masks = {k: np.asarray(v, bool) for k, v in truth.masks.items()}
    artifacts = {k: v for k, v in img.truth.artifact_masks.items() if k in ("ice", "charging")}
    params = {"thickness_nm": float(thickness_nm), "stain_contrast": float(stain_contrast), "dose_e_per_px": float(dose_e_per_px),
              "charging": float(charging), "ice_coverage": float(ice_coverage), "centre_nm": (cx, cy, cz),
              "specimen": spec.name, "artifact_masks": artifacts}
    return EMSection(img.image.astype(np.float32) * float(dose_e_per_px), masks, float(pixel_size_nm), truth, params)


def clem_pair(
    spec: Specimen,
    *,
    centre_nm: tuple[float, float, float],
    em_size: int = 256,
    em_pixel_size_nm: float = 25.0,
    lm_size: int = 128,
    lm_pixel_size_nm: float = 100.0,
    rotation_deg: float = 0.0,
    lm_offset_nm: tuple[float, float] = (0.0, 0.0),
    deformation: Deformation | None = None,
    label_density_um: float = 2.0,
    free_antibody: float = 0.0,
    lm_photons: float = 400.0,
    lm_background_photons: float = 20.0,
    fiducials: Fiducials | None = None,
    rng: np.random.Generator | int | None = None,
    **em_kwargs: Any,
) -> CLEMPair:
    """An LM/EM pair of one section with the true LM -> EM mapping.

    The EM grid is axis-aligned and centred on ``centre_nm``; the LM grid is centred
    ``lm_offset_nm`` away and rotated by ``rotation_deg`` (the coverslip on the LM stage
    versus the grid in the EM). ``deformation`` compresses the EM's section (the LM then
    shows it before compression, e.g. the block face). ``fiducials`` (opt-in) puts
    beads on the section that both images show (see :class:`Fiducials`); without them
    the pair is exactly what it is with them, less the beads.
    """
    gen = as_generator(rng)
    em_kwargs.setdefault("thickness_nm", 100.0)
    d = deformation
    if d is not None and not d.is_identity:
        d = replace(d, centre=((em_size - 1) / 2.0, (em_size - 1) / 2.0), width_px=float(em_size))
    cx, cy, _ = (float(v) for v in centre_nm)
    beads = None
    if fiducials is not None:
        # over both fields whatever the rotation; a generator of its own, so the pair's draws are unchanged
        half = (math.hypot(em_size * em_pixel_size_nm, lm_size * lm_pixel_size_nm) / 2.0
                + max(abs(lm_offset_nm[0]), abs(lm_offset_nm[1])))
        fid_rng = np.random.default_rng([int(fiducials.seed), int(round(cx)), int(round(cy)), int(round(centre_nm[2]))])
        beads = fiducials.scatter((cx, cy), half, fid_rng)
        em_kwargs = dict(em_kwargs, fiducials_nm=beads, fiducials=fiducials)
    sec = em_section(spec, centre_nm=centre_nm, size=em_size, pixel_size_nm=em_pixel_size_nm, deformation=d, rng=gen, **em_kwargs)
    a = pixel_affine((0.0, 0.0), lm_pixel_size_nm, rotation_deg)
    off = a[:2, :2] @ np.array([(lm_size - 1) / 2.0, (lm_size - 1) / 2.0])
    origin = (cx + lm_offset_nm[0] - off[0], cy + lm_offset_nm[1] - off[1])
    index = sec.truth.index
    lm_truth = section_truth(spec, index, thickness_nm=sec.truth.thickness_nm, shape=(lm_size, lm_size),
                             pixel_size_nm=lm_pixel_size_nm, origin_nm=origin, rotation_deg=rotation_deg, n_planes=3)

    class _Label:
        def __init__(self) -> None:
            self.label_density_um, self.free_antibody = float(label_density_um), float(free_antibody)

    if beads is not None and len(beads) and fiducials is not None:
        lm_truth = _with_lm_beads(lm_truth, beads, fiducials, label_density_um * lm_photons * lm_truth.thickness_nm / 100.0)
    lm = image_lm(lm_truth, _Label(), rng=gen, photons_per_um_label=lm_photons, background_photons=lm_background_photons)
    em_aff = pixel_affine(((cx - (em_size - 1) / 2.0 * em_pixel_size_nm), (cy - (em_size - 1) / 2.0 * em_pixel_size_nm)),
                          em_pixel_size_nm)
    lm_aff = np.linalg.inv(em_aff) @ lm_truth.affine
    return CLEMPair(
        em=sec.em, masks=sec.masks, pixel_size_nm=sec.pixel_size_nm, truth=sec.truth, params=dict(sec.params, rotation_deg=rotation_deg),
        lm=lm.image.astype(np.float32), lm_pixel_size_nm=float(lm_pixel_size_nm), lm_affine=lm_aff,
        deformation=d if d is not None else Deformation(), lm_masks={k: np.asarray(v, bool) for k, v in lm_truth.masks.items()},
        fiducials_lm=np.zeros((0, 2)) if beads is None else _to_pixels(lm_truth.affine, beads),
    )


def _to_pixels(affine: np.ndarray, xy_nm: np.ndarray) -> np.ndarray:
    inv = np.linalg.inv(affine)
    return np.asarray(xy_nm, float).reshape(-1, 2) @ inv[:2, :2].T + inv[:2, 2]


def _with_lm_beads(lm_truth: SectionTruth, beads_nm: np.ndarray, fid: Fiducials, photons_per_unit_density: float) -> SectionTruth:
    """The LM truth with the beads' fluorescence added to its label density: each bead a
    point source of ``fid.photons_per_bead`` (split over the four nearest pixels; the
    microscope's PSF, far wider than the bead, does the rest)."""
    px = _to_pixels(lm_truth.affine, beads_nm)
    H, W = lm_truth.shape
    extra = np.zeros((H, W), np.float64)
    x0, y0 = np.floor(px[:, 0]).astype(int), np.floor(px[:, 1]).astype(int)
    fx, fy = px[:, 0] - x0, px[:, 1] - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        c, r = x0 + dx, y0 + dy
        ok = (c >= 0) & (c < W) & (r >= 0) & (r < H)
        np.add.at(extra, (r[ok], c[ok]), w[ok])
    scale = fid.photons_per_bead / max(photons_per_unit_density, 1e-9)
    return replace(lm_truth, target_density=(lm_truth.target_density + scale * extra).astype(np.float32))


#: Ranges of :func:`random_em_sections` (uniform; log-uniform for dose): the env's imaging
#: (exposure 10-200 ms at 200 e/px per 50 ms) and section window (50-250 nm).
SECTION_RANGES: dict[str, tuple[float, float]] = {
    "thickness_nm": (50.0, 250.0),
    "stain_contrast": (0.6, 1.6),
    "dose_e_per_px": (40.0, 800.0),
    "pixel_size_nm": (15.0, 40.0),
}


def _draw(gen: np.random.Generator, ranges: dict[str, tuple[float, float]], key: str) -> float:
    lo, hi = ranges[key]
    if key == "dose_e_per_px":
        return float(math.exp(gen.uniform(math.log(lo), math.log(hi))))
    return float(gen.uniform(lo, hi))


def _centre(spec: Specimen, gen: np.random.Generator, jitter_nm: float) -> tuple[float, float, float]:
    pts = field_centres(spec)
    c = pts[gen.integers(len(pts))]
    x, y = c[:2] + gen.normal(0.0, jitter_nm, 2)
    z = float(np.clip(c[2] + gen.normal(0.0, 300.0), 0.0, spec.extent_nm[2] - 1.0))
    return float(np.clip(x, 0, spec.extent_nm[0])), float(np.clip(y, 0, spec.extent_nm[1])), z


def random_em_sections(
    presets: Sequence[str] = ("neurons", "tissue_block", "bead_calibration"),
    *,
    seeds: Sequence[int] = (0,),
    per_specimen: int = 8,
    size: int | Callable[[float], int] = 128,
    ranges: dict[str, tuple[float, float]] | None = None,
    artifacts: bool = False,
    rng: np.random.Generator | int | None = None,
) -> Iterator[EMSection]:
    """EM sections of each preset's phantom for each specimen seed: fields centred near a
    random structure, at a random depth, imaged under conditions drawn from ``ranges``
    (default :data:`SECTION_RANGES`); with ``artifacts``, a third get charging or ice.
    ``size`` is the image side, or a function of the drawn pixel size giving it (a
    field of fixed physical extent)."""
    gen = as_generator(rng)
    rg = {**SECTION_RANGES, **(ranges or {})}
    for preset in presets:
        for seed in seeds:
            spec = Specimen.from_preset(preset, seed=int(seed))
            for _ in range(int(per_specimen)):
                px = _draw(gen, rg, "pixel_size_nm")
                side = int(size(px)) if callable(size) else int(size)
                kw: dict[str, Any] = {k: _draw(gen, rg, k) for k in ("thickness_nm", "stain_contrast", "dose_e_per_px")}
                if artifacts and gen.random() < 1 / 3:
                    if gen.random() < 0.5:
                        kw["charging"] = float(gen.uniform(0.5, 2.0))
                    else:
                        kw["ice_coverage"] = float(gen.uniform(0.02, 0.08))
                yield em_section(spec, centre_nm=_centre(spec, gen, 0.25 * side * px), size=side, pixel_size_nm=px, rng=gen, **kw)


def random_clem_pairs(
    presets: Sequence[str] = ("neurons", "tissue_block", "bead_calibration"),
    *,
    seeds: Sequence[int] = (0,),
    per_specimen: int = 4,
    em_size: int = 384,
    em_pixel_size_nm: tuple[float, float] = (40.0, 60.0),
    lm_size: int = 256,
    lm_pixel_size_nm: tuple[float, float] = (80.0, 130.0),
    compression: tuple[float, float] = (0.0, 0.0),
    fiducials: Fiducials | None = None,
    rng: np.random.Generator | int | None = None,
) -> Iterator[CLEMPair]:
    """LM/EM pairs under random rotation (0-360 deg), pixel sizes (so the scale is unknown
    to a method not told them), LM offset (up to a quarter of the EM field) and, when
    ``compression`` is not ``(0, 0)``, a compressed EM section (mean compression uniform in
    that range, +-5 % across the section, a 2 % ripple). ``fiducials`` (opt-in) adds beads
    to the same pairs (see :class:`Fiducials`): the same fields, poses, sections and noise
    stream, so the two sets pair up one to one (the noise realisation differs from the
    first bead on: Poisson draws of other means consume the stream differently)."""
    gen = as_generator(rng)
    for preset in presets:
        for seed in seeds:
            spec = Specimen.from_preset(preset, seed=int(seed))
            for _ in range(int(per_specimen)):
                epx = float(gen.uniform(*em_pixel_size_nm))
                lpx = float(gen.uniform(*lm_pixel_size_nm))
                field_nm = em_size * epx
                d = None
                if compression[1] > 0:
                    d = Deformation(compression=float(gen.uniform(*compression)), gradient=float(gen.uniform(-0.05, 0.05)),
                                    ripple=0.02, period_px=float(gen.uniform(0.5, 1.5) * em_size), phase=float(gen.uniform(0, 2 * np.pi)))
                kw = dict(centre_nm=_centre(spec, gen, 0.1 * field_nm), em_size=em_size, em_pixel_size_nm=epx,
                          lm_size=lm_size, lm_pixel_size_nm=lpx, rotation_deg=float(gen.uniform(0.0, 360.0)),
                          lm_offset_nm=tuple(gen.uniform(-0.25, 0.25, 2) * field_nm), deformation=d,
                          thickness_nm=float(gen.uniform(80.0, 150.0)), dose_e_per_px=float(gen.uniform(150.0, 600.0)),
                          label_density_um=float(gen.uniform(1.0, 3.0)))
                if fiducials is None:
                    yield clem_pair(spec, rng=gen, **kw)
                    continue
                # the noise of a field with beads draws differently: render the pair without them
                # to move the stream on as it would, and the beads' pair from the same state
                twin = np.random.Generator(type(gen.bit_generator)())
                twin.bit_generator.state = gen.bit_generator.state
                clem_pair(spec, rng=gen, **kw)
                yield clem_pair(spec, fiducials=fiducials, rng=twin, **kw)
