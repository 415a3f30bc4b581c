"""Points to match: structure centroids, compact objects, and fiducial beads among them (objects
alike in contrast and area, re-detected at their size).

Part of :mod:`cryoopt.pipeline.registration`, whose docstring describes the method step by step.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from cryoopt.exceptions import EvaluationError
from cryoopt.pipeline._validate import check_image


#: objects alike (:func:`_alike_objects`) are within these factors of the group's typical object
#: in contrast and in area: identical beads vary by shot noise, partial pixels and the blur of a
#: neighbour (on simulated sections with 0.1 um TetraSpeck-like beads: within 2x in contrast and
#: 1.5x in area); structures vary by far more. A choice, not a published figure
ALIKE_FACTOR = (2.0, 1.5)
#: fewest objects alike that are searched as a group of their own: a similarity verified on
#: fewer would rest on a handful of points
MIN_ALIKE_OBJECTS = 8
#: width of the top-hat that finds beads, in bead diameters: wider than a bead and its blur,
#: narrower than the structures around it
BEAD_TOPHAT_DIAMETERS = 2.5
#: lines closed over before the beads' top-hat: none. The structures' closing of dark lines (a
#: disc of radius 2 px, 5 px across: EM membranes) also closes over a bead 3-5 px across (0.2 um
#: beads at 40-60 nm per pixel) and erased a fifth of them (development seeds 400, compressed with
#: beads: 993 of 1236 found with it, 1115 without, as many non-beads in the group); the narrow
#: top-hat, the elongation limit and the group alike in contrast and area keep membranes out
BEAD_LINE_WIDTH_PX = 0.0
#: detection threshold of beads (robust sigmas of the top-hat), twice the structures' (5): beads
#: are the densest stain and the brightest point sources, and noise specks at the structures'
#: threshold would join their group. 12, not 10, once the closing no longer hides the membranes'
#: fragments from the narrow top-hat: at 10 a group of them outnumbered the beads on one section
#: (development seeds 400-402 with beads, EM beads within 2 px in the group / others in it:
#: closing and 10 sigmas 4721 / 961, none and 10 on seed 400 alone as many others, none and 12
#: 5305 / 677 of 6160 beads); a choice on those seeds, not a published figure
BEAD_Z = 12.0


def detect_structure_points(image: np.ndarray, *, sigma_px: float = 1.5, min_area_px: int = 9) -> np.ndarray:
    """Centroids (x, y) of compact structures: the minority Otsu phase of the smoothed image.

    The minority phase is used so the same structures are found whether they are
    bright (fluorescence) or dark (stained EM).
    """
    from skimage.filters import threshold_otsu
    from skimage.measure import label, regionprops

    img = check_image(image)
    sm = ndi.gaussian_filter(img, sigma_px)
    if np.ptp(sm) == 0:
        return np.zeros((0, 2))
    t = threshold_otsu(sm)
    fg = sm > t
    if fg.mean() > 0.5:
        fg = ~fg
    lab = label(fg)
    pts = [rp.centroid[::-1] for rp in regionprops(lab) if rp.area >= min_area_px]
    return np.array(pts, float).reshape(-1, 2)


def detect_compact_objects(
    image: np.ndarray,
    *,
    polarity: str,
    max_diameter_px: float | None = None,
    line_width_px: float | None = None,
    z: float = 5.0,
    min_area_px: int = 4,
    max_elongation: float = 8.0,
) -> np.ndarray:
    """Centroids (x, y) of compact objects brighter (``"bright"``) or darker (``"dark"``) than
    their surroundings: a white or black top-hat with a disc of ``max_diameter_px``
    (default: a sixteenth of the shorter side), above ``z`` robust sigmas of the top-hat,
    at least ``min_area_px`` and at most ``max_elongation`` long for its width (a neurite
    or a knife mark is no point feature). Lines up to ``line_width_px`` wide are closed
    over first (default 2 px for dark objects: EM membranes; 0 for bright ones).
    Fluorescent label is bright in LM, stained organelles and particles are dark in EM."""
    return _compact_objects(image, polarity=polarity, max_diameter_px=max_diameter_px, line_width_px=line_width_px,
                            z=z, min_area_px=min_area_px, max_elongation=max_elongation)[0]


def _compact_objects(
    image: np.ndarray,
    *,
    polarity: str,
    max_diameter_px: float | None = None,
    line_width_px: float | None = None,
    z: float = 5.0,
    min_area_px: int = 4,
    max_elongation: float = 8.0,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`detect_compact_objects` with each object's features (`N x 2`): the log of its
    contrast (the peak of its top-hat above the top-hat's median, in robust sigmas) and of its
    area (px), what tells identical objects (fiducial beads) from the structures
    (:func:`_alike_objects`)."""
    from skimage.measure import label, regionprops
    from skimage.morphology import black_tophat, disk, white_tophat

    from cryoopt.pipeline._robust import median_sigma

    img = check_image(image)
    if polarity not in ("bright", "dark"):
        raise EvaluationError(f"polarity must be 'bright' or 'dark', got {polarity!r}")
    d = max_diameter_px if max_diameter_px is not None else min(img.shape) / 16.0
    r = max(1, int(round(d / 2.0)))
    fp = disk(r, decomposition="crosses") if r > 3 else disk(r)
    sm = ndi.gaussian_filter(img, 1.0)
    lw = (2.0 if polarity == "dark" else 0.0) if line_width_px is None else float(line_width_px)
    if lw >= 1:
        line = disk(max(1, int(round(lw))))
        sm = ndi.grey_closing(sm, footprint=line) if polarity == "dark" else ndi.grey_opening(sm, footprint=line)
    th = white_tophat(sm, fp) if polarity == "bright" else black_tophat(sm, fp)
    med, sig = median_sigma(th)
    fg = th > med + z * max(sig, 1e-12)
    pts, contrast, area = [], [], []
    for rp in regionprops(label(fg), intensity_image=th):
        if rp.area < min_area_px:
            continue
        if rp.axis_minor_length > 0 and rp.axis_major_length / rp.axis_minor_length > max_elongation:
            continue
        pts.append(rp.centroid_weighted[::-1])
        contrast.append((float(rp.intensity_max) - med) / max(sig, 1e-12))
        area.append(float(rp.area))
    features = np.column_stack([np.log(np.maximum(contrast, 1e-12)), np.log(area)]) if pts else np.zeros((0, 2))
    return np.array(pts, float).reshape(-1, 2), features


def _points_and_features(image: np.ndarray, given: np.ndarray | None, polarity: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The structure points of :func:`_points` and, for detected compact objects, the log of
    each one's contrast and area (`N x 2`; None for points given or found otherwise)."""
    if given is not None or polarity == "auto":
        return _points(image, given, polarity), None
    return _compact_objects(image, polarity=polarity)


def _alike_objects(features: np.ndarray | None) -> np.ndarray | None:
    """Indices of the largest group of objects alike in contrast and area (each within the factors
    :data:`ALIKE_FACTOR` of the group's most typical object), or None when there is no such
    group of :data:`MIN_ALIKE_OBJECTS`. Fiducial beads are identical objects (one size, one
    material) among structures of every size and contrast: in LM they are the diffraction-limited
    spots of one brightness, in EM the discs of one size and the stain's highest density. The
    group is chosen from each image alone, so a transform matching it by chance is as unlikely
    as it is for any other subset of the points (the chance test's null holds)."""
    if features is None or len(features) < MIN_ALIKE_OBJECTS:
        return None
    f = np.asarray(features, float) / np.log(ALIKE_FACTOR)
    tree = cKDTree(f)
    counts = np.array([len(c) for c in tree.query_ball_point(f, r=1.0, p=np.inf)])
    members = np.array(sorted(tree.query_ball_point(f[int(np.argmax(counts))], r=1.0, p=np.inf)), int)
    return members if len(members) >= MIN_ALIKE_OBJECTS else None


def _bead_points(image: np.ndarray, polarity: str, features: np.ndarray | None) -> np.ndarray | None:
    """Centroids of the fiducial beads an image may show, or None: the group of compact objects
    alike in contrast and area (:func:`_alike_objects`), then the image searched again for objects
    at their size, a top-hat :data:`BEAD_TOPHAT_DIAMETERS` of their diameters wide (a bead by a
    large dark structure stands out of its own surroundings there, not of the structure's) and
    at :data:`BEAD_Z` (beads are the densest stain and the brightest point sources) without the
    closing over dark lines (:data:`BEAD_LINE_WIDTH_PX`: it erases beads a few pixels across), and the
    group alike among those. Chosen from the image alone: the chance test's null holds."""
    group = _alike_objects(features)
    if group is None or features is None:
        return None
    diameter = 2.0 * math.sqrt(float(np.median(np.exp(features[group, 1]))) / math.pi)
    pts, found = _compact_objects(image, polarity=polarity, max_diameter_px=BEAD_TOPHAT_DIAMETERS * diameter,
                                  line_width_px=BEAD_LINE_WIDTH_PX, z=BEAD_Z)
    again = _alike_objects(found)
    return None if again is None else pts[again]


def _points(image: np.ndarray, given: np.ndarray | None, polarity: str) -> np.ndarray:
    if given is not None:
        return np.asarray(given, float).reshape(-1, 2)
    if polarity == "auto":
        return detect_structure_points(image)
    return detect_compact_objects(image, polarity=polarity)
