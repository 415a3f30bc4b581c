"""Whole-section EM segmentation in physical units: membranes -> cells -> organelles.

A :class:`SectionSegmenter` turns one EM image and its pixel size into a
:class:`Segmentation`: integer label images for ``cells``, ``nuclei``,
``mitochondria`` and ``membranes`` on the image's grid. Every size it uses is in
nanometres (or um^2), so the same segmenter works at 10 nm and at 50 nm pixels.

:class:`HierarchicalSegmenter` is the classical one, built from :mod:`skimage`
morphology and thresholds, in the order a microscopist reads a section:

1. **Membranes** (a stained bilayer blurred to the pixel) are closed over first
   (grey closing with a disc wider than a membrane), so they neither count as a
   stained region nor merge two.
2. **Cells**: with membranes and organelle-sized dark objects removed (a grey
   closing with a disc wider than a mitochondrion), the section is a few flat
   stain levels: embedding resin (brightest), cytoplasm, nucleus. The levels are
   Otsu / multi-Otsu thresholds (:func:`skimage.filters.threshold_multiotsu`),
   kept only when the classes are several noise sigmas apart and cover at least
   ``min_region_um2``. Which level is resin is decided by the transmitted fraction
   when ``reference_intensity`` (the open-beam or bare-resin intensity) is known
   (optical density below ``resin_max_od``, or a stained matrix ``matrix_od_ratio``
   below the darkest level; a dark organelle-sized object with ``cell_in_matrix_od_ratio``
   times the brightest level's optical density is a cell in the matrix, e.g. a neurite
   crossing a small field, not a mitochondrion); without it, by where the mitochondria
   lie (their surroundings are cytoplasm) and, failing that, by the brightest level
   being resin.
3. **Organelles**, inside cells only: mitochondria are dark compact objects
   (black top-hat of the membrane-free image) of mitochondrial width and area,
   refined at full resolution by the half-maximum between the blob and its
   surroundings, and kept where that profile is about a mitochondrion's width (>= 170 nm) and
   its edge carries most of its step below the cytoplasm round it
   (:mod:`cryoopt.pipeline.segmentation_mitochondria`). **Nuclei** are told by their chromatin: granular euchromatin and
   a dense heterochromatin band under a double envelope (Fawcett, *The Cell*, 1981),
   against a cytoplasm that is smooth between its organelles. The texture measure
   is the smaller eigenvalue of the structure tensor at the chromatin's scale (an
   edge, oriented, raises only the larger one), over its value for the image's
   noise alone; regions of nuclear size where it stands above the noise, darker
   than the cytoplasm around them, are nuclei, their edge placed on the strongest
   gradient between an inner and an outer marker (watershed), i.e. on the envelope.
   Compact organelles are left out of the texture (their outline turns every way,
   as chromatin does), and a mitochondrion beside a nucleus bounds it rather than
   being taken in; one well inside it is dense chromatin and stays nucleus. A nucleus
   is one body several um across, dark throughout: a textured region whose dark pixels
   keep no disc wider than the widest organelle (an opening; mitochondria side by side
   with cytoplasm between them, a neurite) is no nucleus, and such dark bodies apart
   from a nucleus's body are no part of it.
4. **Membranes**: a bilayer (5-10 nm) is thinner than the pixel, so a membrane is a line
   of one pixel darker than both its flanks: an oriented matched filter in noise sigmas,
   non-maximum suppression across the line, hysteresis thresholds, kept at and next to
   the cells, and only where the line is at least ``membrane_occupancy`` of the field's
   strongest lines (a membrane inclined through the slab fills its pixels for part of the
   thickness: fainter lines, one per depth), then drawn as wide as the section shows them (a
   membrane moving by up to a pixel through the slab darkens the pixel beside its line too:
   a neighbour across the line with a response near the line's joins it). Inside a nucleus the only membranes are its
   envelope's: at 15-50 nm pixels its two bilayers (37.5 nm apart) image as the step from
   cytoplasm to heterochromatin, so they are placed at their published depths below the
   nucleus's edge (moved to half maximum), two lines where the pixel resolves them, one
   where not, and only where the image shows that edge (a gradient above the noise), grown by a
   pixel across the edge (the segmented edge is placed to about a pixel).

Sizes come from cell biology textbooks: mitochondria 0.2-1 um wide and 0.5-several
um long (Alberts et al., *Molecular Biology of the Cell*, 6th ed., ch. 14); nuclei
5-10 um across (ch. 4); membranes 5-10 nm (ch. 10), so at most a pixel or two wide
at the 10-50 nm pixels of an EM overview.

A learned segmenter (:mod:`cryoopt.pipeline.learned`) implements the same protocol
and is registered as ``"learned"`` in :data:`cryoopt.pipeline.parser.segmenters`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from scipy import ndimage as ndi

from cryoopt.exceptions import EvaluationError
from cryoopt.pipeline._robust import median_sigma
from cryoopt.pipeline._validate import check_image, check_pixel_size
from cryoopt.pipeline.preprocess import block_mean
from cryoopt.pipeline.segmentation_mitochondria import mitochondrial_profiles

__all__ = [
    "STRUCTURE_KINDS",
    "BeadSegmenter",
    "HierarchicalSegmenter",
    "SectionSegmenter",
    "Segmentation",
    "boundary_f_score",
    "noise_sigma",
    "nuclear_envelope",
]

#: The EM structure kinds a :class:`SectionSegmenter` labels, in nesting order.
STRUCTURE_KINDS: tuple[str, ...] = ("cells", "nuclei", "mitochondria", "membranes")


@dataclass(frozen=True)
class Segmentation:
    """EM structures of one section: an int32 label image per kind (0 = none).

    Attributes:
        labels: ``cells``, ``nuclei``, ``mitochondria``, ``membranes`` -> label image.
        pixel_size_nm: the grid's pixel size.
        info: what the segmenter decided (levels found, which one is resin, ...).
    """

    labels: Mapping[str, np.ndarray]
    pixel_size_nm: float
    info: Mapping[str, object] = field(default_factory=dict)

    def mask(self, kind: str) -> np.ndarray:
        if kind not in self.labels:
            raise EvaluationError(f"no structure {kind!r} in this segmentation; it has {sorted(self.labels)}")
        return self.labels[kind] > 0

    def area_um2(self, kind: str) -> float:
        return float(np.count_nonzero(self.mask(kind))) * self.pixel_size_nm**2 / 1e6


@runtime_checkable
class SectionSegmenter(Protocol):
    """Anything that segments an EM image into :data:`STRUCTURE_KINDS` given its pixel size.

    ``ignore`` marks pixels to disregard (charging, ice); ``reference_intensity`` is the
    intensity of unstained resin (or the open beam) when the instrument reports it.
    """

    def segment_section(
        self, image: np.ndarray, *, pixel_size_nm: float, reference_intensity: float | None = None,
        ignore: np.ndarray | None = None,
    ) -> Segmentation: ...


def noise_sigma(image: np.ndarray, pairs: np.ndarray | None = None) -> float:
    """Pixel noise sigma from the robust spread of diagonal differences (structure-free);
    ``pairs`` (boolean, one row and column smaller than ``image``) keeps only some of them."""
    d = image[1:, 1:] - image[:-1, :-1]
    return median_sigma(d if pairs is None else d[pairs])[1] / math.sqrt(2.0)


#: more pixels than this at an image's maximum mean its brightest level was clipped at the
#: detector's full scale (a percentile normalisation to [0, 1] puts 0.5 % there by construction)
CLIPPED_FRACTION = 0.01


def unclipped_noise_sigma(image: np.ndarray) -> float:
    """:func:`noise_sigma` of an image whose brightest level may be clipped (a saturated detector).

    A film under an open beam brighter than the detector's full scale reads one value over most
    of the field; its diagonal differences are zero and their robust spread says the noise is
    zero, so any pixel below the film would be "significant" and none is tested. A clipped
    pixel carries no noise information, so where more than :data:`CLIPPED_FRACTION` of the
    field sits at the maximum the noise comes from the pixel pairs with no clipped pixel in
    their 3 x 3 neighbourhood (the unsaturated structures: beads, dense stain); elsewhere it is
    :func:`noise_sigma`, unchanged."""
    img = np.asarray(image, float)
    clipped = img >= img.max()
    if clipped.mean() <= CLIPPED_FRACTION:
        return noise_sigma(img)
    valid = ~ndi.binary_dilation(clipped, structure=np.ones((3, 3), bool))
    ok = valid[1:, 1:] & valid[:-1, :-1]
    return noise_sigma(img, ok) if np.count_nonzero(ok) > 16 else 0.0


def boundary_f_score(pred: np.ndarray, truth: np.ndarray, *, tolerance_px: float) -> tuple[float, float, float]:
    """Boundary precision, recall and F-score of two thin-structure masks within a distance tolerance.

    The measure of boundary and membrane detection (BSDS: Martin, Fowlkes & Malik 2004,
    IEEE TPAMI 26:530; used for EM membranes in the ISBI 2012 and CREMI challenges):
    a predicted pixel is right when a true one lies within ``tolerance_px`` (Euclidean),
    and a true pixel is found when a predicted one does; ``F = 2 P R / (P + R)``. The
    matching is by distance transform rather than BSDS's one-to-one assignment, so a
    doubled line is not penalised. A mask pixel-IoU scores a one-pixel offset of a
    one-pixel line as 0; this does not. Empty masks: P (or R) is 1 when there is
    nothing to get wrong (nothing predicted, or nothing true); F is 1 when both are empty.
    """
    a, b = np.asarray(pred, bool), np.asarray(truth, bool)
    if a.shape != b.shape:
        raise EvaluationError(f"pred has shape {a.shape} and truth {b.shape}; pass masks on one grid")
    if not (math.isfinite(tolerance_px) and tolerance_px >= 0):
        raise EvaluationError(f"tolerance_px must be a finite distance >= 0 pixels, got {tolerance_px!r}")
    if not a.any() and not b.any():
        return 1.0, 1.0, 1.0
    near_truth = ndi.distance_transform_edt(~b) <= tolerance_px if b.any() else np.zeros(a.shape, bool)
    near_pred = ndi.distance_transform_edt(~a) <= tolerance_px if a.any() else np.zeros(a.shape, bool)
    precision = float(np.count_nonzero(a & near_truth) / np.count_nonzero(a)) if a.any() else 1.0
    recall = float(np.count_nonzero(b & near_pred) / np.count_nonzero(b)) if b.any() else 1.0
    f = 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f


def _disk(radius_px: float) -> object:
    """A disc footprint; decomposed into crosses above radius 3 (10x faster, same shape to a pixel)."""
    from skimage.morphology import disk

    r = max(1, int(round(radius_px)))
    return disk(r, decomposition="crosses") if r > 3 else disk(r)


def _dilate_disk(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """``binary_dilation(mask, disk(radius_px))``, exactly, from one distance transform: a pixel is
    in the dilation when the mask lies within the disc's radius of it (a large disc as a
    footprint costs its area per pixel)."""
    if not mask.any():
        return np.zeros(mask.shape, bool)
    return ndi.distance_transform_edt(~mask) <= radius_px


def _erode_disk(mask: np.ndarray, radius_px: int, *, border_value: int = 0) -> np.ndarray:
    """``binary_erosion(mask, disk(radius_px), border_value=...)``, exactly, from one distance
    transform: a pixel stays when nothing outside the mask lies within the disc's radius
    (outside the image counts as outside the mask unless ``border_value``)."""
    if border_value:
        return mask.copy() if mask.all() else ndi.distance_transform_edt(mask) > radius_px
    r = int(radius_px) + 1
    return (ndi.distance_transform_edt(np.pad(mask, r, constant_values=False)) > radius_px)[r:-r, r:-r]


def _masked_noise_sigma(image: np.ndarray, valid: np.ndarray) -> float:
    """:func:`noise_sigma` from the diagonal differences of valid pixel pairs only."""
    ok = valid[1:, 1:] & valid[:-1, :-1]
    d = (image[1:, 1:] - image[:-1, :-1])[ok]
    return median_sigma(d)[1] / math.sqrt(2.0) if d.size > 16 else noise_sigma(image)


def _opening_disk(mask: np.ndarray, radius_px: float) -> np.ndarray:
    from skimage.morphology import opening

    return opening(mask, _disk(radius_px))


@functools.lru_cache(maxsize=64)
def _noise_eigenvalue(sd: float, si: float) -> float:
    """Mean smaller structure-tensor eigenvalue of unit white noise at these scales (px),
    measured once on a fixed noise field (the texture measure's noise floor)."""
    from skimage.feature import structure_tensor, structure_tensor_eigenvalues

    n = 4 * int(math.ceil(4 * (sd + si))) + 64
    noise = np.random.default_rng(0).standard_normal((n, n))
    lam = structure_tensor_eigenvalues(structure_tensor(ndi.gaussian_filter(noise, sd), sigma=si, mode="reflect"))[1]
    m = n // 4
    return float(lam[m:-m, m:-m].mean())


def _upsample(a: np.ndarray, f: int, shape: tuple[int, int]) -> np.ndarray:
    """A block-mean grid back on the full grid (linear, edges held), cropped/padded to ``shape``."""
    if f <= 1:
        return np.asarray(a, float)
    z = ndi.zoom(np.asarray(a, float), f, order=1, mode="nearest", grid_mode=True)
    out = np.pad(z, [(0, max(0, shape[0] - z.shape[0])), (0, max(0, shape[1] - z.shape[1]))], mode="edge")
    return out[: shape[0], : shape[1]]


def _remove_small(mask: np.ndarray, min_px: float) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    areas = np.bincount(lab.ravel())
    keep = areas >= min_px
    keep[0] = False
    return keep[lab]


@functools.lru_cache(maxsize=16)
def _line_kernels(along_px: float, n_angles: int = 12) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Per orientation, the two halves of an oriented matched filter for a thin dark line
    (Chaudhuri et al. 1989, IEEE Trans. Med. Imaging 8:263, for retinal vessels): each
    flank (2 px from the line) minus the line, with the profile of a line thinner than the
    pixel (the pixel itself: Gaussian sigma 0.5 px), averaged along the line over a
    Gaussian of ``along_px``; zero-mean, and scaled so that their mean has unit norm."""
    h = int(math.ceil(3.0 * along_px))
    y, x = np.mgrid[-h:h + 1, -h:h + 1].astype(float)
    kernels = []
    for i in range(n_angles):
        phi = math.pi * i / n_angles
        along = y * math.cos(phi) + x * math.sin(phi)
        across = -y * math.sin(phi) + x * math.cos(phi)
        w = np.exp(-0.5 * (along / along_px) ** 2)
        centre = np.exp(-2.0 * across**2) * w
        halves = [np.exp(-2.0 * (across - side) ** 2) * w - centre for side in (-2.0, 2.0)]
        halves = [k - k.mean() for k in halves]
        norm = math.sqrt(float(np.sum((0.5 * (halves[0] + halves[1])) ** 2)))
        kernels.append((halves[0] / norm, halves[1] / norm))
    return tuple(kernels)


def _line_response(img: np.ndarray, along_px: float, flank_z: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """How much darker than its flanks a thin line is at each pixel (the mean of the two
    halves of :func:`_line_kernels`, best orientation), in noise sigmas (unit norm: white
    noise of sigma ``s`` answers with sigma ``s``; shot noise scaled by the local intensity),
    zero unless each flank alone is brighter than the line by ``flank_z`` noise sigmas (a
    step edge between two stain levels is dark on one side only: no membrane); and where it peaks
    across the line (non-maximum suppression along the line's normal)."""
    from scipy.signal import fftconvolve

    kernels = _line_kernels(along_px)
    med = float(np.median(img))
    local = ndi.gaussian_filter(img, 4.0)
    scale = np.sqrt(np.clip(local / med, 0.2, 5.0)) if med > 0 else np.ones(img.shape)  # Poisson: variance follows the intensity
    noise = np.maximum(noise_sigma(img) * scale, 1e-30)
    h = kernels[0][0].shape[0] // 2
    padded = np.pad(img, h, mode="symmetric")  # ndimage's "reflect"
    resp = []
    for k1, k2 in kernels:  # by FFT: 24 kernels up to 25 px wide (direct correlation took seconds per image)
        a, b = (fftconvolve(padded, k[::-1, ::-1], mode="valid") / noise for k in (k1, k2))
        resp.append(np.where(np.minimum(a, b) > flank_z, 0.5 * (a + b), 0.0))
    resp = np.stack(resp)
    best = resp.argmax(axis=0)
    r = resp.max(axis=0)
    phi = math.pi * best / len(kernels)
    nr, nc = -np.sin(phi), np.cos(phi)  # the normal to the line, (row, col)
    rows, cols = np.mgrid[0:img.shape[0], 0:img.shape[1]].astype(float)
    fwd = ndi.map_coordinates(r, [rows + nr, cols + nc], order=1, mode="nearest")
    back = ndi.map_coordinates(r, [rows - nr, cols - nc], order=1, mode="nearest")
    return r, (r >= fwd) & (r >= back)


def _half_maximum_edge(img: np.ndarray, mask: np.ndarray, px: float, search_nm: float) -> np.ndarray:
    """``mask`` with its edge moved to half maximum between the local levels just outside
    and just inside it (within ``search_nm`` of the edge; the levels from rings 150 nm wide,
    averaged along the edge over 300 nm), so the edge sits where the stained object starts
    rather than where a coarser step put it."""
    mask = np.asarray(mask, bool)
    sm = ndi.gaussian_filter(img, 1.0)
    din, dout = ndi.distance_transform_edt(mask), ndi.distance_transform_edt(~mask)
    ring = max(2.0, 150.0 / px)
    inner = mask & (din >= 2) & (din <= 2 + ring)
    outer = ~mask & (dout >= 3) & (dout <= 3 + ring)
    if np.count_nonzero(inner) < 10 or np.count_nonzero(outer) < 10:
        return mask
    w = max(3.0, 300.0 / px)

    def level(where: np.ndarray) -> np.ndarray:  # normalised convolution: the ring's mean spread along the edge
        return ndi.gaussian_filter(np.where(where, sm, 0.0), w) / np.maximum(ndi.gaussian_filter(where.astype(float), w), 1e-6)

    band = max(1.0, search_nm / px)
    core = mask & (din > band)
    zone = (mask & (din <= band)) | (~mask & (dout <= band))
    moved = np.where(zone, sm < 0.5 * (level(inner) + level(outer)), mask)
    moved = ndi.binary_opening(moved) | core
    lab, n = ndi.label(moved)
    if n == 0 or not core.any():
        return mask
    keep = np.zeros(n + 1, bool)
    keep[np.unique(lab[core])] = True
    keep[0] = False
    return keep[lab]


def _depth_bands(mask: np.ndarray, px: float, depths_nm: tuple[float, ...]) -> np.ndarray:
    """Pixels of ``mask`` whose centre lies within half a pixel of one of ``depths_nm`` below
    its edge (the edge half a pixel outside the outermost pixels' centres). Two depths
    closer than a pixel or so give one line; further apart, two."""
    if not mask.any():
        return np.zeros(mask.shape, bool)
    depth = (ndi.distance_transform_edt(np.pad(mask, 1, mode="edge"))[1:-1, 1:-1] - 0.5) * px
    out = np.zeros(mask.shape, bool)
    for d in depths_nm:
        out |= mask & (np.abs(depth - d) < 0.5 * px)
    return out


def nuclear_envelope(image: np.ndarray, nuclei: np.ndarray, pixel_size_nm: float, *,
                     depths_nm: tuple[float, ...] = (3.75, 41.25), edge_z: float = 4.0, spread_px: int = 0) -> np.ndarray:
    """The nuclear envelope's bilayers as pixels below the edge of segmented ``nuclei``.

    At 15-50 nm pixels the envelope's two 7.5 nm bilayers around a 30 nm perinuclear space
    (centres 3.75 and 41.25 nm below the nucleus's surface; Alberts et al., *Molecular
    Biology of the Cell*, 6th ed., ch. 12; Fawcett 1981) fill fractions of a pixel and image
    as the step from cytoplasm to heterochromatin, not as lines: they are placed at
    ``depths_nm`` below the mask's edge (two lines where the pixel resolves them, one where
    not; :func:`_depth_bands`), only where the image shows that edge: a gradient (Gaussian
    derivative at 1 px, whose answer to white noise of sigma ``s`` has sigma
    ``s / sqrt(8 pi)``) above ``edge_z`` noise sigmas within a pixel.

    ``spread_px`` (0: off) grows those pixels by as many pixels across the edge (within that many
    outside it and one more inside): the edge of a segmented nucleus is placed to about a pixel
    (a half maximum of a step blurred over a pixel), and the envelope's two bilayers and the
    space between them (45 nm) fall on whichever pixels straddle the true surface.
    """
    img = check_image(image, name="em_image", min_size=8)
    px = check_pixel_size(pixel_size_nm, name="pixel_size_nm")
    if not (isinstance(spread_px, (int, np.integer)) and 0 <= spread_px <= 5):
        raise EvaluationError(f"spread_px must be a whole number of pixels in 0-5, got {spread_px!r}")
    nuc = np.asarray(nuclei, bool)
    if nuc.shape != img.shape:
        raise EvaluationError(f"nuclei has shape {nuc.shape}; it must be on the image's grid {img.shape}")
    if not nuc.any():
        return np.zeros(img.shape, bool)
    grad = ndi.gaussian_gradient_magnitude(img, 1.0) / max(noise_sigma(img) / math.sqrt(8.0 * math.pi), 1e-30)
    env = _depth_bands(nuc, px, depths_nm) & (ndi.maximum_filter(grad, 3) > edge_z)
    if spread_px and env.any():
        near = (ndi.distance_transform_edt(~nuc) <= spread_px) & ~(ndi.distance_transform_edt(nuc) > spread_px + 1)
        env |= ndi.binary_dilation(env, iterations=int(spread_px)) & near
    return env


@dataclass(frozen=True)
class HierarchicalSegmenter:
    """Classical EM segmentation, membranes -> cells -> organelles (see the module docstring).

    Args:
        smoothing_nm: Gaussian smoothing before thresholds (noise vs edge blur).
        coarse_pixel_nm: region-scale steps run on a block-averaged grid of about
            this pixel size (speed; organelles are several such pixels wide).
        membrane_nm: width a membrane shows at (stained bilayer, blurred).
        mitochondrion_width_nm, mitochondrion_area_um2: accepted ranges of a
            mitochondrion's minor axis and area in the section.
        mitochondrion_min_width_nm: least width of a mitochondrial profile at full resolution
            (:mod:`cryoopt.pipeline.segmentation_mitochondria`; the coarse grid's 100 nm bound above
            only admits candidates): a plasma membrane inclined through the slab images as a dark band
            of 50-150 nm, no mitochondrion. A mitochondrion is 0.2-1 um wide (Alberts et al., ch. 14),
            but a section through its flank shows a narrower chord: on the development sections (seeds
            300-309, edge step 0.65) 150 / 170 / 200 nm gave pooled IoU 0.390 / 0.394 / 0.392 (neurons)
            and 0.656 / 0.661 / 0.667 (tissue block), mean per-section change +0.039 / +0.023 / -0.026
            (neurons), so 170.
        mitochondrion_edge_step: least fraction of a profile's step below its surroundings that lies
            across its own edge (its whole outline steps down from the cytoplasm round it; a profile the
            half-maximum threshold cut out of a larger dark body, e.g. noise in a neurite taken for an
            organelle, has that body's level round it). Chosen on development sections (specimen seeds
            300-309; with a 200 nm least width): 0.5 / 0.6 / 0.7 gave pooled mitochondria IoU 0.36 /
            0.40 / 0.41 (neurons) and 0.64 / 0.66 / 0.68 (tissue block); above 0.6 mitochondria at 40
            nm pixels are lost (the pixel outside the edge still holds a third of the blurred step:
            0.64-0.65 of it is across the edge of an isolated disc in the synthetic CLEM pair's EM,
            ``tests/pipeline/_synth.py``), so 0.6.
        organelle_max_width_nm: dark objects narrower than this are organelles, not
            stain levels (the top-hat disc's diameter).
        nucleus_min_area_um2: smallest nuclear profile kept.
        min_region_um2: smallest area a stain level must cover to count.
        level_separation: least distance between stain levels, in noise sigmas of
            the smoothed image.
        detection_z: mitochondria must be this many noise sigmas darker than
            their surroundings.
        resin_max_od: largest optical density ``-ln(I / reference_intensity)`` of
            bare resin (used only when the reference intensity is known).
        matrix_od_ratio: with the reference intensity known, the levels whose optical density
            the darkest level's exceeds this many times are the embedding matrix
            (stain uptake of a 12 % gelatin matrix vs cytoplasm vs nucleus about 0.08 : 0.25 :
            0.40, the phantoms' densities, so matrix -> cytoplasm ~3x, cytoplasm -> nucleus ~1.6x).
        cell_in_matrix_od_ratio: with the reference intensity known and one stain level in the
            field, a dark organelle-sized object whose optical density exceeds the level's by
            more than this is a cell (a neurite) in the stained matrix, not an organelle in
            cytoplasm: the two ratios are cytoplasm : matrix ~3.1 (0.25 : 0.08) and
            mitochondrion : cytoplasm ~2.2 (0.55 : 0.25, the phantoms' densities), and the
            decision lies at their geometric mean (a neurite 0.6-0.9 um wide is as wide as a
            mitochondrion, so width cannot tell them apart).
        context_min_area_um2: smallest dark object taken as an organelle when deciding
            which stain level is cytoplasm (a 200 nm bead in resin is 0.03 um^2).
        membrane_z, membrane_z_seed: hysteresis thresholds of the membrane line response,
            in noise sigmas of the response (a line continues above the first where it
            reaches the second somewhere).
        membrane_along_nm: Gaussian sigma along a membrane over which the line detector
            averages (membranes are straight over tens of nm; at least 1.5 px).
        membrane_flank_z: each flank of a membrane alone is brighter than it by this many
            noise sigmas (a step between two stain levels is no membrane).
        membrane_occupancy: a membrane pixel's line response is at least this fraction of
            the field's strongest lines (a membrane inclined through the slab fills a pixel
            for part of the thickness only).
        membrane_full_percentile: percentile of the detected lines' response taken as a
            membrane filling its pixel through the whole thickness.
        membrane_spread: a pixel beside a membrane line (across it) is membrane too where its
            line response is at least this fraction of the line's (a membrane moving by up to
            a pixel or so through the slab darkens both; chosen on development sections).
        envelope_depths_nm: depths of the nuclear envelope's two bilayer centres below the
            nucleus's outer surface: 7.5 nm bilayers around a 30 nm perinuclear space
            (Alberts et al., ch. 12; Fawcett 1981), i.e. 3.75 and 41.25 nm.
        envelope_search_nm: how far from the segmented nucleus's edge the envelope is looked for.
        envelope_spread_px: the envelope's pixels are grown by this many pixels across the nuclear edge
            (:func:`nuclear_envelope`): the segmented edge is placed to about a pixel. On development
            sections (seeds 300-309) 1 raised the pooled membrane IoU at every pixel size (15-40 nm).
        envelope_edge_z: the envelope is placed only where the nuclear edge's gradient stands
            this many noise sigmas above the noise (not along a nucleus's edge the image does not show).
        chromatin_nm: scale of the chromatin texture: granules and fibres 20-30 nm,
            clustered into domains of 100-300 nm (Fawcett 1981; Ou et al. 2017, Science
            357:eaag0025): the structure tensor's derivative scale (Gaussian sigma).
        texture_window_nm: the structure tensor's integration scale (Gaussian sigma).
        texture_smoothing_nm: the texture map's smoothing before its threshold.
        texture_ratio: a nucleus's texture (the structure tensor's smaller eigenvalue)
            exceeds this many times its value for the noise alone.
        nucleus_darkening: a nucleus is darker than the cytoplasm around it by at least
            this fraction of the cytoplasm's intensity (chromatin binds the heavy-metal
            stains more than cytoplasm does; Fawcett 1981).
        nucleus_edge_min_area_um2: smallest part of a nucleus kept where the field's
            edge cuts it (``nucleus_min_area_um2`` elsewhere).
        grain_resolved_nm: at pixels finer than this the grain of resin and cytoplasm is resolved
            and stands above the noise's texture (3-16x at 10 nm pixels in the simulator's
            sections, 0.9-1.3x at 16-39 nm), so a textured region filling the field with nothing
            beside it to compare is no nucleus there; at coarser pixels texture alone decides.
    """

    smoothing_nm: float = 25.0
    coarse_pixel_nm: float = 50.0
    membrane_nm: float = 20.0
    mitochondrion_width_nm: tuple[float, float] = (100.0, 1200.0)
    mitochondrion_area_um2: tuple[float, float] = (0.02, 2.5)
    mitochondrion_min_width_nm: float = 170.0
    mitochondrion_edge_step: float = 0.6
    organelle_max_width_nm: float = 1400.0
    nucleus_min_area_um2: float = 1.0
    min_region_um2: float = 0.1
    level_separation: float = 6.0
    detection_z: float = 5.0
    resin_max_od: float = 0.04
    matrix_od_ratio: float = 2.2
    cell_in_matrix_od_ratio: float = 2.6
    context_min_area_um2: float = 0.06
    membrane_z: float = 2.5
    membrane_z_seed: float = 4.0
    membrane_along_nm: float = 40.0
    membrane_flank_z: float = 1.0
    membrane_occupancy: float = 0.6
    membrane_full_percentile: float = 97.0
    membrane_spread: float = 0.6
    envelope_depths_nm: tuple[float, ...] = (3.75, 41.25)
    envelope_search_nm: float = 100.0
    envelope_edge_z: float = 4.0
    envelope_spread_px: int = 1
    chromatin_nm: float = 25.0
    texture_window_nm: float = 100.0
    texture_smoothing_nm: float = 200.0
    texture_ratio: float = 1.3
    nucleus_darkening: float = 0.05
    nucleus_edge_min_area_um2: float = 0.25
    grain_resolved_nm: float = 15.0

    # -- helpers ------------------------------------------------------------------
    def _levels(self, base: np.ndarray, valid: np.ndarray, sigma: float, min_px: float) -> list[float]:
        """Thresholds between flat stain levels (0, 1 or 2 of them)."""
        from skimage.filters import threshold_multiotsu, threshold_otsu

        v = base[valid]
        if v.size < 3 * min_px or np.ptp(v) == 0:
            return []
        t = float(threshold_otsu(v))
        lo, hi = v[v <= t], v[v > t]
        if not (lo.size > min_px and hi.size > min_px and hi.mean() - lo.mean() > self.level_separation * sigma):
            return []
        try:
            t3 = [float(x) for x in threshold_multiotsu(v, classes=3)]
        except ValueError:
            return [t]
        parts = (v[v <= t3[0]], v[(v > t3[0]) & (v <= t3[1])], v[v > t3[1]])
        if min(p.size for p in parts) > min_px and all(
            parts[i + 1].mean() - parts[i].mean() > self.level_separation * sigma for i in range(2)
        ):
            return t3
        return [t]

    def _organelles(self, tophat: np.ndarray, sigma: float, pixel_nm: float, within: np.ndarray, *,
                    compact: bool = True, min_area_um2: float | None = None) -> np.ndarray:
        """Top-hat regions of mitochondrial width and area (``compact``: at most 6x longer than wide,
        the width the minor axis of the region's ellipse). Otherwise the width is the region's
        local thickness: a mitochondrion crossing a small field, or two side by side that the
        top-hat joins, fills an ellipse as wide as it is long."""
        from skimage.measure import label, regionprops

        w_lo, w_hi = self.mitochondrion_width_nm
        a_lo, a_hi = self.mitochondrion_area_um2
        a_lo = a_lo if min_area_um2 is None else max(a_lo, min_area_um2)
        out = np.zeros(tophat.shape, bool)
        for rp in regionprops(label((tophat > self.detection_z * sigma) & within)):
            area = rp.area * pixel_nm**2 / 1e6
            if compact:
                width = rp.axis_minor_length * pixel_nm
            else:  # local thickness: twice the largest inscribed radius (the field's edge bounds it)
                width = (2.0 * float(ndi.distance_transform_edt(np.pad(rp.image, 1)).max()) - 1.0) * pixel_nm
            long = rp.axis_major_length > 6.0 * max(rp.axis_minor_length, 1.0)
            if a_lo <= area <= a_hi and w_lo <= width <= w_hi and not (compact and long):
                out[tuple(rp.coords.T)] = True
        return out

    def _resin_by_od(self, no_mem: np.ndarray, cls: np.ndarray, k_levels: int,
                     reference_intensity: float) -> tuple[list[int], str, list[float]]:
        """The levels that are bare resin (optical density below ``resin_max_od``) or, failing
        that, a stained matrix (``matrix_od_ratio`` below the darkest level), with the rule used
        and every level's optical density."""
        od = [-math.log(max(float(np.median(no_mem[cls == k])), 1e-12) / reference_intensity) if (cls == k).any() else math.inf
              for k in range(k_levels)]
        resin = [k for k in range(k_levels) if od[k] < self.resin_max_od]
        why = "optical density"
        if not resin and k_levels >= 2 and od[-1] > 0 and od[0] / od[-1] > self.matrix_od_ratio:
            # a stained embedding matrix (gelatin) is no bare resin, but the cytoplasm next to it
            # takes up several times its stain, a nucleus only about 1.6x the cytoplasm's; every
            # level that far below the darkest is matrix (a small field can split it in two)
            resin, why = [k for k in range(k_levels) if od[0] / max(od[k], 1e-12) > self.matrix_od_ratio], "optical density ratio"
        return resin, why, od

    def _cells_in_matrix(self, org_lab: np.ndarray, n_org: int, no_mem: np.ndarray, organelles: np.ndarray,
                         valid: np.ndarray, reference_intensity: float) -> np.ndarray:
        """The dark objects that are cells in a stained matrix, not organelles in cytoplasm: their
        optical density over that of the level ``valid`` (away from the objects) exceeds
        ``cell_in_matrix_od_ratio`` (optical densities are ratios of stain uptake whatever the
        thickness and stain)."""
        level = valid & ~ndi.binary_dilation(org_lab > 0, iterations=2)
        if not level.any():
            return np.zeros(org_lab.shape, bool)
        od_level = -math.log(max(float(np.median(no_mem[level])), 1e-12) / reference_intensity)
        if not od_level > 0:
            return np.zeros(org_lab.shape, bool)
        ids = np.arange(1, n_org + 1)
        medians = np.asarray(ndi.median(no_mem, np.where(organelles, org_lab, 0), ids), float)
        od = -np.log(np.maximum(medians, 1e-12) / reference_intensity)
        is_cell = np.concatenate([[False], np.nan_to_num(od, nan=0.0) > self.cell_in_matrix_od_ratio * od_level])
        return is_cell[org_lab]

    def _rings(self, labels: np.ndarray, pixel_nm: float) -> tuple[np.ndarray, np.ndarray]:
        """The surroundings (about 200 nm wide) of every labelled object at once: each ring
        pixel's owner label (the largest label nearby where rings meet) and the ring mask."""
        from skimage.morphology import disk

        width = max(2, int(round(200.0 / pixel_nm)))
        owner = ndi.grey_dilation(labels, footprint=disk(width))
        return owner, (owner > 0) & (labels == 0)

    def _membrane_response(self, img: np.ndarray, px: float) -> tuple[np.ndarray, np.ndarray]:
        """:func:`_line_response` at this segmenter's membrane scale: the line response (noise
        sigmas) and where it peaks across the line."""
        return _line_response(img, max(1.5, self.membrane_along_nm / px), self.membrane_flank_z)

    def _membrane_lines(self, img: np.ndarray, px: float, cells: np.ndarray | None = None, *,
                        response: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Membranes a pixel's stain says hold a bilayer through most of the section: thin dark
        lines darker than both flanks (:func:`_line_response`, in noise sigmas), kept where
        the response peaks across the line (a one-pixel line: a bilayer is thinner than the
        pixel), by hysteresis between ``membrane_z`` (low) and ``membrane_z_seed`` (high)
        noise sigmas, and where the line is at least ``membrane_occupancy`` of the field's
        strongest lines (``membrane_full_percentile`` of the detected line response): a membrane
        inclined through the slab fills a pixel for part of the thickness only and shows as
        fainter lines, one per depth, which are no membrane of the truth (what a pixel holds
        through most of the section's thickness). ``cells`` (optional) limits the lines to the
        stained compartments and their edge. ``response``: :meth:`_membrane_response` of
        ``img``, when already computed."""
        from skimage.filters import apply_hysteresis_threshold

        resp, peak = self._membrane_response(img, px) if response is None else response
        lines = apply_hysteresis_threshold(np.where(peak, resp, 0.0), self.membrane_z, self.membrane_z_seed)
        if cells is not None:
            lines &= ndi.binary_dilation(cells, iterations=2)
        if np.count_nonzero(lines) >= 10:
            full = float(np.percentile(resp[lines], self.membrane_full_percentile))
            keep = self.membrane_occupancy * full
            lines &= apply_hysteresis_threshold(np.where(lines, resp, 0.0), 0.8 * keep, keep)
        return lines

    def _membrane_width(self, lines: np.ndarray, resp: np.ndarray) -> np.ndarray:
        """The membrane ``lines`` (one pixel wide) with the width the section shows them at:
        a membrane that moves laterally by a fraction of a pixel to a pixel or so through the
        section's thickness darkens each pixel it crosses for part of the thickness, so its
        projection is a line one to three pixels wide (the truth,
        :func:`cryoopt.sim.datasets.edge_on_membranes`). A line's neighbour across it (4-connected)
        joins the membrane where its line response is at least ``membrane_spread`` of the
        strongest line pixel beside it."""
        if not lines.any():
            return lines
        beside = ndi.binary_dilation(lines) & ~lines
        line_level = ndi.grey_dilation(np.where(lines, resp, 0.0), size=3)
        return lines | (beside & (resp > 0) & (resp >= self.membrane_spread * line_level))

    def _texture(self, img: np.ndarray, px: float, valid: np.ndarray | None = None,
                 organelles: np.ndarray | None = None) -> np.ndarray:
        """Chromatin texture over noise: the structure tensor's smaller eigenvalue (isotropic
        structure at ``chromatin_nm``; an edge raises only the larger one) divided by its
        value for the image's noise alone (white, with Poisson variance scaled to the local
        intensity), smoothed over ``texture_smoothing_nm``. About 1 in cytoplasm and resin."""
        from skimage.feature import structure_tensor, structure_tensor_eigenvalues

        sd, si = max(0.5, self.chromatin_nm / px), max(1.0, self.texture_window_nm / px)
        lam = structure_tensor_eigenvalues(structure_tensor(ndi.gaussian_filter(img, sd), sigma=si, mode="reflect"))[1]
        sn = noise_sigma(img) if valid is None else _masked_noise_sigma(img, valid)
        local = ndi.gaussian_filter(img, self.texture_smoothing_nm / px)
        med = float(np.median(img))
        scale = np.clip(local / med, 0.2, 5.0) if med > 0 else 1.0  # Poisson: variance follows the intensity
        ratio = lam / max(_noise_eigenvalue(round(sd, 2), round(si, 2)) * sn**2, 1e-30) / scale
        if organelles is None or not organelles.any():
            return ndi.gaussian_filter(ratio, self.texture_smoothing_nm / px)
        # a compact organelle's outline turns every way (isotropic as chromatin): it is left out
        # and the map filled in from around it (normalised convolution)
        w = (~organelles).astype(float)
        num = ndi.gaussian_filter(ratio * w, self.texture_smoothing_nm / px)
        den = ndi.gaussian_filter(w, self.texture_smoothing_nm / px)
        return np.where(den > 0.05, num / np.maximum(den, 1e-6), 1.0)

    def _nuclear_regions(self, img: np.ndarray, px: float, cells: np.ndarray, ignore: np.ndarray,
                         organelles: np.ndarray | None = None, *, within_cells: bool = False) -> np.ndarray:
        """Regions of nuclear size whose chromatin texture stands above the noise and that are
        darker than the cytoplasm round them (module docstring); edges still blurred by the
        texture map's smoothing (:meth:`_nuclear_edges` places them). ``within_cells`` (optical
        density has told the matrix): only in ``cells``, and compared with cytoplasm only (the
        matrix's grain is as textured as chromatin at fine pixels, it holds no nucleus, and a cell
        is darker than it whether or not it holds one).

        A candidate must also hold a nuclear body: its dark pixels keep a disc wider than any
        organelle (``organelle_max_width_nm``) over ``nucleus_min_area_um2`` (a group of
        mitochondria, a neurite crossing the field keep none); the candidates that fail only that
        are returned as well (second array): stained material darker than what is round it."""
        ratio = self._texture(img, px, ~ignore if ignore.any() else None, organelles)
        textured = (ratio > self.texture_ratio) & ~ignore
        if within_cells:
            textured &= cells
        if not textured.any():
            return textured, textured
        cand = _opening_disk(textured, 250.0 / px)
        lab, n = ndi.label(cand)
        if n == 0:
            return cand, cand
        area = np.bincount(lab.ravel(), minlength=n + 1) * px**2 / 1e6
        edge = np.zeros(n + 1, bool)
        edge[np.unique(np.r_[lab[0], lab[-1], lab[:, 0], lab[:, -1]])] = True
        keep = (area >= self.nucleus_min_area_um2) | (edge & (area >= self.nucleus_edge_min_area_um2))
        keep[0] = False
        smooth = ndi.gaussian_filter(img, max(0.7, 60.0 / px))
        body_r = max(1, int(round(0.5 * self.organelle_max_width_nm / px)))
        r = max(2, int(round(300.0 / px)))
        bodies, stained = np.zeros(img.shape, bool), np.zeros(img.shape, bool)
        for i in np.flatnonzero(keep):
            comp = lab == i
            # the cytoplasm round it; else the field's cytoplasm; else whatever surrounds it (film,
            # resin); a region filling the field with nothing beside it to compare is kept where the
            # texture alone tells chromatin (pixels of grain_resolved_nm and coarser), else dropped
            near = _dilate_disk(comp, r)
            ring = _dilate_disk(comp, 2 * r) & ~near & ~textured & ~ignore
            # (a region filling most of a small field leaves no ring: what is left of the field beside it)
            rest = ~comp & ~textured & ~ignore & (~organelles if organelles is not None else True)
            refs = (ring & cells, cells & ~textured & ~ignore & ~near) + (() if within_cells else (ring, rest))
            for ref in refs:
                if np.count_nonzero(ref) > 20:
                    break
            if np.count_nonzero(ref) > 20:
                around = float(np.median(smooth[ref]))
                if around > 0 and 1.0 - float(np.median(smooth[comp])) / around < self.nucleus_darkening:
                    keep[i] = False  # as bright as the cytoplasm round it: edges or organelles, no chromatin
                    continue
                # a nucleus is one body several um across, dark throughout with chromatin (its light
                # domains enclosed by it): the dark pixels round it keep a disc wider than any organelle
                # (an opening; the field's edge continues what crosses it, so a nucleus cut by it counts
                # its chord); dark bodies of an organelle's width (mitochondria side by side with
                # cytoplasm between them, a neurite) keep none, and are no part of it
                dark = ndi.binary_fill_holes(near & (smooth < around * (1.0 - self.nucleus_darkening)))
                pad = 2 * body_r + 1  # a whole disc fits in what continues past the edge
                body = _dilate_disk(_erode_disk(np.pad(dark, pad, mode="edge"), body_r), body_r)[pad:-pad, pad:-pad]
                min_um2 = self.nucleus_edge_min_area_um2 if edge[i] else self.nucleus_min_area_um2
                if np.count_nonzero(body & comp) * px**2 / 1e6 < min_um2:
                    keep[i] = False
                    stained |= comp & dark  # still stained material darker than round it: no resin
                    continue
                # the candidate near that body and the dark bodies touching it (the thin ends of a nucleus
                # the field's edge cuts at a slant; a mitochondrion against it is left to the edge
                # watershed), its overshoot into the cytoplasm kept for that watershed; the dark bodies
                # apart from it, and the cytoplasm among them, are no part of it
                apart, n_apart = ndi.label(dark & ~body)
                touch = np.zeros(n_apart + 1, bool)
                touch[np.unique(apart[ndi.binary_dilation(body)])] = True
                touch[0] = False
                bodies |= comp & _dilate_disk(body | touch[apart], r)
            elif px < self.grain_resolved_nm:
                keep[i] = False  # grain resolved, nothing beside it to compare: texture alone makes no nucleus
            else:
                bodies |= comp
        return ndi.binary_fill_holes(bodies), stained

    def _nuclear_edges(self, img: np.ndarray, px: float, regions: np.ndarray, ignore: np.ndarray,
                       mito: np.ndarray) -> np.ndarray:
        """The nuclear edge: watershed of the gradient between markers 400 nm inside and outside
        the textured regions, i.e. on the envelope; a mitochondrion mostly outside the regions
        is outside (one beside a nucleus is not swallowed by it; the regions hold no organelle
        apart from the nuclear body, :meth:`_nuclear_regions`)."""
        from skimage.segmentation import watershed

        if not regions.any():
            return regions
        r = max(2, int(round(400.0 / px)))
        inner = _erode_disk(regions, r)
        if not inner.any():  # a small part of a nucleus at the field's edge: a thinner inner marker
            inner = _erode_disk(regions, max(1, r // 2), border_value=1)
        outer = ~_dilate_disk(regions, r)
        if mito.any():
            mlab, nm = ndi.label(mito)
            share = np.bincount(mlab.ravel(), weights=regions.ravel(), minlength=nm + 1) / np.maximum(np.bincount(mlab.ravel(), minlength=nm + 1), 1)
            share[0] = 1.0
            outer |= (share < 0.5)[mlab]
            inner &= ~outer
        nuclei = regions
        if inner.any() and outer.any():
            markers = np.where(inner, 2, np.where(outer, 1, 0)).astype(np.int32)
            grad = ndi.gaussian_gradient_magnitude(ndi.gaussian_filter(img, max(0.7, 40.0 / px)), 1.0)
            nuclei = watershed(grad, markers) == 2
            # a tongue into the cytoplasm where the flood crossed a weak stretch of envelope is cut off
            nuclei = _opening_disk(nuclei, 250.0 / px) | inner
        return nuclei & ~ignore

    # -- the protocol ---------------------------------------------------------------
    def segment_section(
        self, image: np.ndarray, *, pixel_size_nm: float, reference_intensity: float | None = None,
        ignore: np.ndarray | None = None,
    ) -> Segmentation:
        """Segment one EM image (dark = stained); see the class and module docstrings."""
        from skimage.morphology import closing, opening

        img = check_image(image, name="em_image", min_size=8)
        px = check_pixel_size(pixel_size_nm, name="pixel_size_nm")
        if reference_intensity is not None and not (math.isfinite(reference_intensity) and reference_intensity > 0):
            raise EvaluationError(f"reference_intensity must be a positive intensity, got {reference_intensity!r}")
        shape = img.shape
        ign = np.zeros(shape, bool) if ignore is None else np.asarray(ignore, bool)
        if ign.shape != shape:
            raise EvaluationError(f"ignore has shape {ign.shape}; it must be on the image's grid {shape}")
        if ign.any():  # artifacts take the median of the section: they are no structure
            img = np.where(ign, float(np.median(img[~ign])) if (~ign).any() else 0.0, img)

        # 1. membranes are closed over (grey closing a membrane wide) wherever stain levels are read;
        # their lines are found at full resolution in step 4
        s = ndi.gaussian_filter(img, max(0.7, self.smoothing_nm / px))

        # 2. cells: stain levels on a coarse grid with membranes and organelles closed over
        f = max(1, int(self.coarse_pixel_nm / px))
        pc = px * f
        co = block_mean(img, f)
        valid_c = block_mean((~ign).astype(float), f) > 0.5
        sig_c = unclipped_noise_sigma(co) / (2.0 * math.sqrt(math.pi))  # after a 1-px Gaussian
        sc = ndi.gaussian_filter(co, 1.0)
        no_mem = closing(sc, _disk(max(1.0, self.membrane_nm / pc)))
        bg = closing(no_mem, _disk(0.5 * self.organelle_max_width_nm / pc))
        tophat = bg - no_mem
        min_px_c = self.min_region_um2 * 1e6 / pc**2

        # compact dark objects over the whole field: where they lie tells cytoplasm from resin
        # (only organelle-sized ones: a 200 nm bead or particle in resin is no mitochondrion)
        organelles = self._organelles(tophat, sig_c, pc, np.ones(co.shape, bool), min_area_um2=self.context_min_area_um2)
        base = np.where(ndi.binary_dilation(organelles), bg, no_mem)
        thresholds = self._levels(base, valid_c, sig_c, min_px_c)
        k_levels = len(thresholds) + 1
        cls = np.digitize(base, thresholds)

        org_lab, n_org = ndi.label(organelles)
        by_od = None if reference_intensity is None else self._resin_by_od(no_mem, cls, k_levels, reference_intensity)
        if by_od is not None and (k_levels == 1 or not by_od[0]) and n_org:
            # no level is matrix: are the dark "organelles" cells in a matrix that is the brightest level?
            brightest = valid_c & (cls == k_levels - 1)
            cells_in_matrix = self._cells_in_matrix(org_lab, n_org, no_mem, organelles & valid_c, brightest, reference_intensity)
            if cells_in_matrix.any():  # two levels: those cells, and the matrix around them
                organelles = organelles & ~cells_in_matrix
                base = np.where(ndi.binary_dilation(organelles), bg, no_mem)
                level = brightest & ~ndi.binary_dilation(organelles | cells_in_matrix, iterations=2)
                thresholds = [0.5 * (float(np.median(no_mem[cells_in_matrix])) + float(np.median(no_mem[level])))]
                k_levels = 2
                cls = np.digitize(base, thresholds)
                org_lab, n_org = ndi.label(organelles)
                by_od = self._resin_by_od(no_mem, cls, k_levels, reference_intensity)  # the levels changed
        owner, in_ring = self._rings(org_lab, pc)
        org_level = []
        for i in range(1, n_org + 1):
            lv = cls[in_ring & (owner == i)]
            if lv.size:
                org_level.append(int(np.bincount(lv, minlength=k_levels).argmax()))
        od: list[float] = []
        if by_od is not None:
            resin, why, od = by_od
        elif k_levels == 3:
            resin, why = [2], "three levels"
        elif k_levels == 2:
            if org_level and np.mean(np.array(org_level) == 0) < 0.5:
                resin, why = [], "organelles in the brighter level"
            else:
                resin, why = [1], "brighter level"
        else:
            resin, why = ([], "one level with organelles") if org_level else ([0], "one level, no organelles")
        cell_levels = [k for k in range(k_levels) if k not in resin]
        cell_c = np.isin(cls, cell_levels) & valid_c
        # nuclei by their chromatin (full resolution); their core, on the coarse grid, tells the
        # organelle step what is nucleus
        # compact organelles left out of the chromatin texture: those smaller than a nucleus, or
        # whole in the field (a nucleus cut by the field's edge can look like one)
        org_lab, n_org = ndi.label(organelles)
        org_area = np.bincount(org_lab.ravel(), minlength=n_org + 1) * pc**2 / 1e6
        at_edge = np.zeros(n_org + 1, bool)
        at_edge[np.unique(np.r_[org_lab[0], org_lab[-1], org_lab[:, 0], org_lab[:, -1]])] = True
        small = (org_area < self.nucleus_min_area_um2) | ~at_edge
        small[0] = False
        compact = _upsample(ndi.binary_dilation(small[org_lab], iterations=2).astype(float), f, shape) > 0.5
        nuc_cand, stained = self._nuclear_regions(img, px, _upsample(cell_c.astype(float), f, shape) > 0.5, ign, compact,
                                         within_cells=reference_intensity is not None and bool(resin))
        n_core = max(1, int(round(2 * self.texture_smoothing_nm / px)))
        # (an n-fold erosion by the 4-neighbour cross is the city-block distance above n: one transform)
        nuc_core = nuc_cand.copy() if nuc_cand.all() else ndi.distance_transform_cdt(nuc_cand, metric="taxicab") > n_core
        nuc_c = block_mean(nuc_core.astype(float), f)[: co.shape[0], : co.shape[1]] > 0.5

        # 3. organelles: darker than the cell around them (resin counts as cytoplasm here,
        # so a thin neurite in resin is no organelle, and a mitochondrion in it is)
        bg_cell = bg
        mito_c = np.zeros(co.shape, bool)
        if cell_c.any():
            level = float(np.median(no_mem[cell_c & ~nuc_c])) if (cell_c & ~nuc_c).any() else float(np.median(no_mem[cell_c]))
            # the cell's edge pixels mix in resin through the smoothing: they take the cell level too
            # the nucleus (its dark heterochromatin rim included) is background here, save the
            # compact organelles found in it or at its edge
            nuc_bg = (block_mean(nuc_cand.astype(float), f)[: co.shape[0], : co.shape[1]] > 0.5) & ~ndi.binary_dilation(organelles)
            filled = np.where(ndi.binary_erosion(cell_c, iterations=2) & ~nuc_bg, no_mem, max(level, 0.0))
            bg_cell = closing(filled, _disk(0.5 * self.organelle_max_width_nm / pc))
            cand = self._organelles(bg_cell - filled, sig_c, pc, cell_c, compact=False)
            cand_lab, n_cand = ndi.label(cand)
            if n_cand:
                owner, in_ring = self._rings(cand_lab, pc)
                idx = owner[in_ring]
                count = np.bincount(idx, minlength=n_cand + 1).astype(float)
                in_cell = np.bincount(idx, weights=cell_c[in_ring], minlength=n_cand + 1)
                in_nuc = np.bincount(idx, weights=nuc_c[in_ring], minlength=n_cand + 1)
                # a candidate that mostly *is* the nuclear level is the nucleus (a part of one at the
                # field's edge has a mitochondrion's size), not an organelle in it
                size = np.bincount(cand_lab.ravel(), minlength=n_cand + 1).astype(float)
                is_nuc = np.bincount(cand_lab.ravel(), weights=nuc_c.ravel(), minlength=n_cand + 1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    keep = (count > 0) & (in_cell / count > 0.6) & (in_nuc / count <= 0.6) & (is_nuc / size <= 0.5)
                keep[0] = False
                mito_c = keep[cand_lab]

        # full-resolution refinement of the coarse decisions
        no_mem_f = closing(s, _disk(max(1.0, self.membrane_nm / px)))
        bg_f = _upsample(bg_cell, f, shape)
        mito_zone = _upsample(ndi.binary_dilation(mito_c, iterations=2), f, shape) > 0.5
        organelle_zone = _upsample(ndi.binary_dilation(organelles | mito_c, iterations=2), f, shape) > 0.5
        base_f = np.where(organelle_zone, _upsample(bg, f, shape), no_mem_f)
        cls_f = np.digitize(base_f, thresholds)
        cells = np.isin(cls_f, cell_levels)
        if cells.any():
            cells = opening(cells, _disk(60.0 / px))
        mito = np.zeros(shape, bool)
        dark_profiles = mito
        if mito_c.any():
            zone_lab, n_zone = ndi.label(mito_zone)
            for sl, i in zip(ndi.find_objects(zone_lab), range(1, n_zone + 1)):
                reg = zone_lab[sl] == i
                low = float(np.percentile(s[sl][reg], 5))
                high = float(np.median(bg_f[sl][reg]))
                mito[sl] |= reg & (s[sl] < 0.5 * (low + high))  # half maximum: unbiased edges
            mito = _remove_small(opening(mito, _disk(max(1.0, 50.0 / px))), self.mitochondrion_area_um2[0] * 1e6 / px**2)
            # a mitochondrion's width, and its whole step from the cytoplasm at its edge (not noise or a
            # membrane band cut out of a darker body by the threshold); what fails is still stained material
            dark_profiles = mito
            mito = mitochondrial_profiles(mito, s, bg_f, px, min_width_nm=self.mitochondrion_min_width_nm,
                                          edge_step=self.mitochondrion_edge_step)
        nuclei = self._nuclear_edges(img, px, nuc_cand, ign, mito)
        if nuclei.any() and mito.any():  # dense chromatin taken for a mitochondrion stays nucleus
            mlab, nm = ndi.label(mito)
            inside = np.bincount(mlab.ravel(), weights=nuclei.ravel(), minlength=nm + 1) / np.maximum(np.bincount(mlab.ravel(), minlength=nm + 1), 1)
            inside[0] = 0
            mito &= ~(inside > 0.5)[mlab]
        cells |= dark_profiles | nuclei | stained  # textured chromatin, dark bodies narrower than it: stained material, never resin
        nuclei = _remove_small(nuclei & ~mito, self.nucleus_edge_min_area_um2 * 1e6 / px**2)  # no slivers between them
        cells &= ~ign
        # 4. membranes: the centre lines of dark ridges at the membrane's scale (Sato's tubeness),
        # at and next to the stained compartments
        response = self._membrane_response(img, px)
        lines = self._membrane_lines(img, px, cells, response=response)
        membranes = self._membrane_width(lines, response[0])  # the lines as wide as the section shows them
        if nuclei.any():  # inside a nucleus the only membranes are its envelope's (chromatin makes lines too)
            edge = _half_maximum_edge(img, nuclei, px, self.envelope_search_nm)
            lines &= ~edge
            membranes = (membranes & ~edge) | nuclear_envelope(img, edge, px, depths_nm=self.envelope_depths_nm,
                                                 edge_z=self.envelope_edge_z, spread_px=self.envelope_spread_px)

        labels = {
            "cells": self._instances(cells, lines, px),  # the envelope splits no cell
            "nuclei": ndi.label(nuclei)[0].astype(np.int32),
            "mitochondria": ndi.label(mito)[0].astype(np.int32),
            "membranes": ndi.label(membranes, structure=np.ones((3, 3)))[0].astype(np.int32),
        }
        info = {"levels": k_levels, "resin_levels": tuple(resin), "resin_rule": why, "coarse_factor": f,
                "noise_sigma": float(sig_c), "level_od": tuple(od)}
        return Segmentation(labels, px, info)

    def _instances(self, cells: np.ndarray, membranes: np.ndarray, px: float) -> np.ndarray:
        """Cell instances: the cell mask split along membranes running through it (watershed)."""
        from skimage.segmentation import watershed

        if not cells.any():
            return np.zeros(cells.shape, np.int32)
        inner = cells & ~ndi.binary_dilation(membranes)
        markers, n = ndi.label(_remove_small(inner, self.min_region_um2 * 1e6 / px**2))
        if n <= 1:
            return ndi.label(cells)[0].astype(np.int32)
        dist = ndi.distance_transform_edt(~membranes)
        return watershed(-dist, markers, mask=cells).astype(np.int32)


@dataclass(frozen=True)
class BeadSegmenter:
    """Fiducial beads on a film (pixel units): compact blobs darker than the film by
    ``z`` noise sigmas after smoothing at about a bead's radius.

    A field whose film shows no bead yields no object (nothing is forced out of the
    noise, unlike an Otsu threshold). ``min_area_px``/``max_area_px`` bound a bead's
    profile (a 200 nm bead at 10 nm pixels is about 300 px).
    """

    sigma_px: float = 2.0
    z: float = 5.0
    min_area_px: int = 12
    max_area_px: int = 5000

    def segment(self, image: np.ndarray) -> np.ndarray:
        img = check_image(image, name="em_image", min_size=8)
        sm = ndi.gaussian_filter(img, self.sigma_px)
        med = float(np.median(sm))
        # noise of the smoothed image: the raw pixel noise shrunk by the Gaussian's footprint
        # (from the unclipped pixels where an over-exposed film saturated the detector)
        sig = unclipped_noise_sigma(img) / (2.0 * math.sqrt(math.pi) * self.sigma_px)
        if not sig > 0:
            return np.zeros(img.shape, np.int32)
        seeds = sm < med - self.z * sig
        if not seeds.any():
            return np.zeros(img.shape, np.int32)
        # each detection grown to its half maximum on a lightly smoothed image: unbiased edges
        fine = ndi.gaussian_filter(img, 1.0)
        seed_lab, n_seed = ndi.label(seeds)
        depth = med - np.asarray(ndi.minimum(fine, seed_lab, np.arange(1, n_seed + 1)), float)
        half = np.concatenate([[-np.inf], med - 0.5 * depth])
        zone = ndi.grey_dilation(seed_lab, size=int(2 * math.ceil(3 * self.sigma_px) + 1))
        lab, n = ndi.label((fine < half[zone]) & (zone > 0))
        if n == 0:
            return lab.astype(np.int32)
        areas = np.bincount(lab.ravel())
        keep = (areas >= self.min_area_px) & (areas <= self.max_area_px)
        keep[0] = False
        relabel = np.zeros(areas.size, np.int32)
        relabel[keep] = np.arange(1, int(keep.sum()) + 1)
        return relabel[lab]
