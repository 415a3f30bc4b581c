"""Input checks shared by every pipeline stage.

Every public function of :mod:`cryoopt.pipeline` passes its images through
:func:`check_image` first, so bad input fails loudly and identically everywhere:
wrong dtype, NaN/inf pixels, empty or non-2-D arrays, and intensities so large or
so small that their squares overflow or underflow float64 raise
:class:`~cryoopt.exceptions.EvaluationError` with a message saying what to do.
Masks (:func:`check_mask`, :func:`check_field_mask`) and pixel sizes
(:func:`check_pixel_size`) get the same treatment.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from cryoopt.exceptions import EvaluationError

__all__ = [
    "MAX_ABS_INTENSITY",
    "MIN_ABS_INTENSITY",
    "check_field_mask",
    "check_image",
    "check_mask",
    "check_pixel_size",
    "check_same_shape",
    "dtype_range",
    "power_of_two_exponent",
    "resolve_data_range",
]

#: Largest pixel magnitude accepted: sums of squares of up to 2^40 such values stay finite.
MAX_ABS_INTENSITY = 1e140
#: Smallest non-zero peak magnitude accepted: squares of smaller values underflow to 0.
MIN_ABS_INTENSITY = 1e-140


def check_image(image: object, *, name: str = "image", min_size: int = 2) -> np.ndarray:
    """Return ``image`` as a finite 2-D ``float64`` array, or raise.

    Accepted dtypes: unsigned/signed integers, ``float16/32/64`` and ``bool``.
    Complex, object and string arrays are refused.

    Raises:
        EvaluationError: not a 2-D numeric array, smaller than ``min_size`` along an
            axis, containing NaN/inf pixels, or with intensities outside
            ``[MIN_ABS_INTENSITY, MAX_ABS_INTENSITY]`` in magnitude (variances would
            overflow to inf or underflow to 0; :func:`power_of_two_scale` gives an
            exact rescaling).
    """
    arr = np.asarray(image)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise EvaluationError(
            f"{name} has dtype {arr.dtype}; pass a real-valued numeric array "
            "(uint8/uint16/int/float/bool)"
        )
    if arr.ndim != 2:
        raise EvaluationError(
            f"{name} must be a 2-D single-channel image, got shape {arr.shape}; "
            "select one channel (e.g. image[..., 0]) or one section first"
        )
    if arr.shape[0] < min_size or arr.shape[1] < min_size:
        raise EvaluationError(f"{name} is empty or too small ({arr.shape}); need at least {min_size}x{min_size} pixels")
    out = arr.astype(np.float64, copy=False)
    if arr.dtype.kind == "f":
        peak = max(float(out.max()), -float(out.min()))  # NaN and inf propagate
        if not math.isfinite(peak):
            n_bad = int(np.count_nonzero(~np.isfinite(out)))
            raise EvaluationError(
                f"{name} has {n_bad} NaN/inf pixel(s); mask or inpaint them before evaluation"
            )
        if peak > MAX_ABS_INTENSITY or 0.0 < peak < MIN_ABS_INTENSITY:
            raise EvaluationError(
                f"{name} has intensities up to {peak:.3g} in magnitude; statistics of values outside "
                f"[{MIN_ABS_INTENSITY:g}, {MAX_ABS_INTENSITY:g}] overflow or underflow float64. Rescale the "
                f"image first (e.g. numpy.ldexp(image, {power_of_two_exponent(peak)}), an exact power of two)"
            )
    return out


def power_of_two_exponent(peak: float) -> int:
    """``k`` such that ``numpy.ldexp(image, k)`` brings a peak magnitude ``peak`` into [0.5, 1)
    (exact in floating point; ``k`` may exceed the range of a float power of two)."""
    if not (math.isfinite(peak) and peak > 0):
        return 0
    return -math.frexp(peak)[1]


def check_pixel_size(value: object, *, name: str = "pixel_size_nm") -> float:
    """Return a pixel size as a positive finite ``float`` (Python or numpy number), or raise.

    ``bool`` is refused (``True`` is not a pixel size), as are strings, NaN, inf and values <= 0.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise EvaluationError(f"{name} must be a positive number of nanometres, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise EvaluationError(f"{name} must be a positive finite number of nanometres, got {value!r}")
    return v


def check_field_mask(mask: object, shape: tuple[int, ...], *, name: str = "mask") -> np.ndarray:
    """Return a per-pixel mask given by a caller (ground truth, an annotation) as ``float64`` in [0, 1].

    Accepts booleans and numbers in [0, 1] (a fraction per pixel; block averages > 0.5
    count as in). Refuses empty, wrongly shaped, NaN-holding and out-of-range masks with a
    message naming ``name``.
    """
    arr = np.asarray(mask)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise EvaluationError(f"{name} has dtype {arr.dtype}; pass a boolean mask (True = in)")
    if arr.size == 0:
        raise EvaluationError(f"{name} is empty (shape {arr.shape}); pass a boolean mask of the image's shape {tuple(shape)}")
    if arr.shape != tuple(shape):
        raise EvaluationError(f"{name} has shape {arr.shape}; it must be on the image's grid {tuple(shape)}")
    out = arr.astype(np.float64)
    n_nan = int(np.count_nonzero(np.isnan(out)))
    if n_nan:
        raise EvaluationError(
            f"{name} has {n_nan} NaN value(s){' (all of it)' if n_nan == out.size else ''}; "
            "pass a boolean mask (True = in), with no missing values"
        )
    if out.min() < 0 or out.max() > 1:
        raise EvaluationError(f"{name} has values in [{out.min():g}, {out.max():g}]; a mask must be boolean or in [0, 1]")
    return out


def check_mask(mask: object, shape: tuple[int, ...], *, name: str = "mask", min_pixels: int = 1) -> np.ndarray:
    """Return ``mask`` as a boolean array of ``shape`` with at least ``min_pixels`` set.

    An empty (zero-size) mask is refused whatever ``min_pixels`` is: fractions over it
    are undefined."""
    arr = np.asarray(mask)
    if arr.size == 0:
        raise EvaluationError(f"{name} is empty (shape {arr.shape}); pass a non-empty boolean mask on the image's grid")
    if arr.dtype != bool:
        if arr.dtype.kind in "iu" and arr.size and set(np.unique(arr).tolist()) <= {0, 1}:
            arr = arr.astype(bool)
        else:
            raise EvaluationError(f"{name} must be a boolean mask, got dtype {arr.dtype}")
    if arr.shape != tuple(shape):
        raise EvaluationError(f"{name} has shape {arr.shape} but the image has shape {tuple(shape)}")
    n = int(arr.sum())
    if n < min_pixels:
        raise EvaluationError(f"{name} selects {n} pixel(s); need at least {min_pixels}")
    return arr


def check_same_shape(a: np.ndarray, b: np.ndarray, *, names: tuple[str, str] = ("image1", "image2")) -> None:
    """Raise if two arrays differ in shape."""
    if a.shape != b.shape:
        raise EvaluationError(
            f"{names[0]} {a.shape} and {names[1]} {b.shape} differ in shape; crop or resample them to a common grid"
        )


def dtype_range(dtype: np.dtype) -> tuple[float, float] | None:
    """(min, max) representable by an integer/bool dtype, None for floats."""
    dtype = np.dtype(dtype)
    if dtype == bool:
        return (0.0, 1.0)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return (float(info.min), float(info.max))
    return None


def resolve_data_range(image: object, data_range: float | None, *, name: str = "image") -> float:
    """The intensity span of ``image``'s dtype, or ``data_range`` for floats.

    Mirrors :func:`skimage.metrics.structural_similarity`: a float image has no
    known range, so the caller must say it instead of the library guessing.
    """
    if data_range is not None:
        if not np.isfinite(data_range) or data_range <= 0:
            raise EvaluationError(f"data_range must be a positive finite number, got {data_range!r}")
        return float(data_range)
    rng = dtype_range(np.asarray(image).dtype)
    if rng is None:
        raise EvaluationError(
            f"{name} is floating point, so its intensity range is unknown; pass data_range= "
            "(e.g. data_range=1.0 for images in [0, 1], or image.max() - image.min())"
        )
    return rng[1] - rng[0]
