"""Which dark profiles of a thresholded EM section are mitochondria: shape and edge tests in nm.

:class:`~cryoopt.pipeline.segmentation.HierarchicalSegmenter` finds mitochondria as dark
compact objects on a coarse grid and places their edges at full resolution by the half
maximum between the object and its surroundings. That threshold also cuts profiles out of
dark regions that hold no mitochondrion: the grain of shot noise in a neurite's cytoplasm
when the neurite itself was taken for an organelle, a plasma membrane running obliquely
through the slab (a dark band 50-150 nm wide), the rim of a nucleus. The tests here keep a
profile only where it has a mitochondrion's cross-section and its edge is a mitochondrion's:

* **width**: at least ``min_width_nm`` across (twice the largest inscribed radius); a
  mitochondrion is 0.2-1 um wide (Alberts et al., *Molecular Biology of the Cell*, 6th ed.,
  ch. 14; a section through its flank shows a somewhat narrower chord, hence 170 nm by
  default), a membrane 5-10 nm (ch. 10), inclined through the slab a band of 50-150 nm;
* **edge step**: the profile's edge carries most of the step from the level it was cut
  from down to the profile (a mitochondrion's matrix is darker than the cytoplasm right
  round it, its whole outline at once); a profile cut from inside a larger dark body
  (noise, partial volume) has nearly that body's level right round it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from cryoopt.exceptions import EvaluationError

__all__ = ["mitochondrial_profiles", "profile_width_nm"]


def profile_width_nm(profile: np.ndarray, pixel_size_nm: float) -> float:
    """Width of one connected profile, nm: twice its largest inscribed radius (a pixel's centre
    to the nearest pixel outside, less the half pixel on each side the distance overcounts);
    exact for an odd number of pixels across, a pixel short for an even one."""
    p = np.pad(np.asarray(profile, bool), 1)
    if not p.any():
        return 0.0
    return (2.0 * float(ndi.distance_transform_edt(p).max()) - 1.0) * pixel_size_nm


def mitochondrial_profiles(mask: np.ndarray, image: np.ndarray, level: np.ndarray, pixel_size_nm: float, *,
                           min_width_nm: float = 170.0, edge_step: float = 0.6, ring_nm: float = 100.0) -> np.ndarray:
    """The connected profiles of ``mask`` that are mitochondria by width and edge step.

    Args:
        mask: candidate profiles (boolean), e.g. a half-maximum threshold.
        image: the (lightly smoothed) EM image the profiles were cut from, dark = stained.
        level: per pixel, the intensity of the surroundings the profile was measured
            against (the background the half maximum was taken from).
        pixel_size_nm: the grid's pixel size.
        min_width_nm: least width of a mitochondrial profile (module docstring).
        edge_step: least fraction of the step ``level - profile`` that lies across the
            profile's edge: ``(ring - profile) / (level - profile)``, medians, with the ring
            ``ring_nm`` wide just outside the profile (other profiles excluded).
        ring_nm: width of that ring.

    Returns:
        The kept profiles (boolean, on ``mask``'s grid).
    """
    m = np.asarray(mask, bool)
    img, lev = np.asarray(image, float), np.asarray(level, float)
    if img.shape != m.shape or lev.shape != m.shape:
        raise EvaluationError(f"mask {m.shape}, image {img.shape} and level {lev.shape} must be on one grid")
    if not (math.isfinite(pixel_size_nm) and pixel_size_nm > 0):
        raise EvaluationError(f"pixel_size_nm must be a positive size in nm, got {pixel_size_nm!r}")
    if not (math.isfinite(min_width_nm) and min_width_nm >= 0):
        raise EvaluationError(f"min_width_nm must be a width >= 0 nm, got {min_width_nm!r}")
    if not (math.isfinite(edge_step) and 0.0 <= edge_step <= 1.0):
        raise EvaluationError(f"edge_step must be a fraction in [0, 1], got {edge_step!r}")
    if not (math.isfinite(ring_nm) and ring_nm > 0):
        raise EvaluationError(f"ring_nm must be a positive width in nm, got {ring_nm!r}")
    lab, n = ndi.label(m)
    if n == 0:
        return m
    r = max(1, int(round(ring_nm / pixel_size_nm)))
    keep = np.zeros(n + 1, bool)
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        box = tuple(slice(max(0, s.start - r - 1), s.stop + r + 1) for s in sl)
        prof = lab[box] == i
        if profile_width_nm(prof, pixel_size_nm) < min_width_nm:
            continue
        ring = (ndi.distance_transform_edt(~prof) <= r) & ~m[box]
        if not ring.any():
            keep[i] = True  # nothing round it to compare (the field is the profile)
            continue
        inside = float(np.median(img[box][prof]))
        step = float(np.median(lev[box][prof])) - inside
        keep[i] = step > 0 and (float(np.median(img[box][ring])) - inside) >= edge_step * step
    return keep[lab]
