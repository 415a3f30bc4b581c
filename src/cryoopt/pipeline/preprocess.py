"""Stage 1, preprocessing: intensity normalisation, flat-field/background correction,
charging and ice masks, and the restoration hook.

The restoration hook is a :class:`Restorer` (one method, ``restore(image) -> image``)
found by name in :data:`restorers`; the restoration issue registers its U-Net there.

Example:
    >>> img = np.random.default_rng(0).integers(0, 4096, (64, 64), dtype=np.uint16)
    >>> out = normalize_intensity(img, method="range")
    >>> float(out.min()) >= 0 and float(out.max()) <= 1
    True
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from scipy import ndimage as ndi

from cryoopt.exceptions import EvaluationError
from cryoopt.pipeline._robust import location_scale
from cryoopt.pipeline._validate import check_image, check_same_shape, dtype_range, resolve_data_range
from cryoopt.registry import Registry

__all__ = [
    "IdentityRestorer",
    "Restorer",
    "block_mean",
    "correct_background",
    "detect_charging",
    "detect_ice",
    "normalize_intensity",
    "restorers",
    "robust_z",
]


@runtime_checkable
class Restorer(Protocol):
    """An image restoration model: denoising, artifact correction, super-resolution.

    ``restore`` takes and returns a 2-D float image; it may change the pixel grid
    only if the caller knows (the pipeline requires the shape to be kept).
    """

    def restore(self, image: np.ndarray) -> np.ndarray: ...


#: Restoration models by name; each entry is a zero-argument factory returning a Restorer.
restorers: Registry = Registry("restoration model")


@restorers.register("identity")
class IdentityRestorer:
    """Returns the image unchanged (the default)."""

    def restore(self, image: np.ndarray) -> np.ndarray:
        return image


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Downsample by averaging ``factor x factor`` blocks (edge rows/cols dropped)."""
    if factor <= 1:
        return image
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    return image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def robust_z(image: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(image - median) / (1.4826 * MAD)``, with the median and robust sigma.

    The median and MAD come from a regular subsample of at most 16384 pixels
    (:mod:`cryoopt.pipeline._robust`)."""
    med, sigma = location_scale(image)
    return (image - med) / sigma, med, sigma


def normalize_intensity(
    image: np.ndarray,
    *,
    method: str = "percentile",
    percentiles: tuple[float, float] = (0.5, 99.5),
    data_range: float | None = None,
    clip: bool = True,
) -> np.ndarray:
    """Map intensities to about [0, 1].

    * ``method="percentile"``: the ``percentiles`` of the image map to 0 and 1
      (data-driven; needs no range).
    * ``method="range"``: divide by the dtype's range (integers) or ``data_range``
      (floats, required: a float image's range is unknown).

    Raises:
        EvaluationError: bad image, a float image without ``data_range`` for
            ``"range"``, or an image with no contrast between the percentiles.
    """
    img = check_image(image)
    if method == "percentile":
        lo, hi = np.percentile(img, percentiles)
        if hi <= lo:
            raise EvaluationError(
                f"image has no contrast between percentiles {percentiles} (constant image?); nothing to normalise"
            )
    elif method == "range":
        span = resolve_data_range(image, data_range)
        rng = dtype_range(np.asarray(image).dtype)
        lo = rng[0] if rng is not None and data_range is None else 0.0
        hi = lo + span
    else:
        raise EvaluationError(f"method must be 'percentile' or 'range', got {method!r}")
    out = (img - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0) if clip else out


def correct_background(
    image: np.ndarray,
    *,
    flat_field: np.ndarray | None = None,
    dark_field: np.ndarray | None = None,
    sigma_px: float | None = None,
    mode: str = "divide",
) -> np.ndarray:
    """Flat-field correction, or background removal when no flat field is given.

    With ``flat_field``: ``(I - D) / (F - D) * mean(F - D)`` (``D`` = ``dark_field``
    or 0), the standard flat-field correction. Without it, the background is
    estimated as a Gaussian low-pass of width ``sigma_px`` (default: 1/8 of the
    smaller side, computed on a 4x-reduced grid for speed) and divided out
    (``mode="divide"``, multiplicative shading, result keeps the mean) or
    subtracted (``mode="subtract"``, additive background, result has zero
    background).
    """
    img = check_image(image)
    if flat_field is not None:
        flat = check_image(flat_field, name="flat_field")
        check_same_shape(img, flat, names=("image", "flat_field"))
        dark = np.zeros_like(img) if dark_field is None else check_image(dark_field, name="dark_field")
        check_same_shape(img, dark, names=("image", "dark_field"))
        gain = flat - dark
        if np.any(gain <= 0):
            raise EvaluationError("flat_field must be brighter than dark_field everywhere")
        return (img - dark) / gain * float(gain.mean())
    if mode not in ("divide", "subtract"):
        raise EvaluationError(f"mode must be 'divide' or 'subtract', got {mode!r}")
    sigma = min(img.shape) / 8 if sigma_px is None else float(sigma_px)
    factor = max(1, int(min(4, sigma // 4)))
    small = block_mean(img, factor)
    bg_small = ndi.gaussian_filter(small, sigma / factor, mode="reflect")
    zoom = (img.shape[0] / bg_small.shape[0], img.shape[1] / bg_small.shape[1])
    bg = ndi.zoom(bg_small, zoom, order=1, mode="nearest", grid_mode=True)[: img.shape[0], : img.shape[1]]
    if mode == "subtract":
        return img - bg
    if np.any(bg <= 0):
        raise EvaluationError("background estimate is not positive; use mode='subtract' for signed images")
    return img / bg * float(bg.mean())


def _blobs(z: np.ndarray, z_raw: np.ndarray, threshold: float, min_area_px: int, max_elongation: float | None) -> np.ndarray:
    from skimage.measure import label, regionprops

    # the local mean finds the regions, the raw pixels keep their edges tight
    mask = (z > threshold) & (z_raw > 0.5 * threshold)
    lab = label(mask)
    out = np.zeros(mask.shape, bool)
    for rp in regionprops(lab):
        if rp.area < min_area_px:
            continue
        if max_elongation is not None and rp.axis_minor_length > 0 and rp.axis_major_length / rp.axis_minor_length > max_elongation:
            continue
        sl = rp.slice
        out[sl] |= rp.image
    return out


def detect_charging(
    em_image: np.ndarray, *, z_threshold: float = 5.0, min_area_px: int = 50, max_elongation: float = 4.0, smooth_px: int = 5
) -> np.ndarray:
    """Mask of charging: compact regions far brighter than the section.

    Charging saturates or brightens patches of a TEM/SEM image. Pixels whose local
    mean (``smooth_px`` box) lies ``z_threshold`` robust sigmas above the median,
    in regions of at least ``min_area_px`` pixels and at most ``max_elongation``
    major/minor axis ratio (more elongated bright regions are cracks, see
    :func:`~cryoopt.pipeline.metrics.section_defects`). A heuristic: pass the
    simulator's or an operator's mask when one exists.
    """
    img = check_image(em_image, name="em_image")
    med, sigma = location_scale(img)
    z = (ndi.uniform_filter(img, smooth_px) - med) / sigma
    return _blobs(z, (img - med) / sigma, z_threshold, min_area_px, max_elongation)


def detect_ice(
    em_image: np.ndarray, *, z_threshold: float = 5.0, max_relative_intensity: float = 0.25, min_area_px: int = 50, smooth_px: int = 5
) -> np.ndarray:
    """Mask of ice contamination: compact regions far darker than any stained material.

    Ice crystals on a cryo-section are thick and scatter strongly, so they appear
    as near-opaque dark blobs: regions whose local mean lies ``z_threshold`` robust
    sigmas below the median *and* whose mean is below ``max_relative_intensity``
    times the median intensity.
    The intensity test needs a physical zero: pass the raw (dark-subtracted) image,
    not a percentile-normalised one. A heuristic, like :func:`detect_charging`.
    """
    img = check_image(em_image, name="em_image")
    med, sigma = location_scale(img)
    z = (ndi.uniform_filter(img, smooth_px) - med) / sigma
    cand = _blobs(-z, (med - img) / sigma, z_threshold, min_area_px, None)
    if not cand.any():
        return cand
    lab, n = ndi.label(cand)
    means = np.asarray(ndi.mean(img, lab, range(1, n + 1)))
    keep = np.concatenate([[False], means < max_relative_intensity * med])
    return keep[lab]
