"""Input checks shared by every pipeline stage.

Every public function of :mod:`cryoopt.pipeline` passes its images through
:func:`check_image` first, so bad input fails loudly and identically everywhere:
wrong dtype, NaN/inf pixels, empty or non-2-D arrays raise
:class:`~cryoopt.exceptions.EvaluationError` with a message saying what to do.
"""

from __future__ import annotations

import numpy as np

from cryoopt.exceptions import EvaluationError

__all__ = ["check_image", "check_mask", "check_same_shape", "dtype_range", "resolve_data_range"]


def check_image(image: object, *, name: str = "image", min_size: int = 2) -> np.ndarray:
    """Return ``image`` as a finite 2-D ``float64`` array, or raise.

    Accepted dtypes: unsigned/signed integers, ``float16/32/64`` and ``bool``.
    Complex, object and string arrays are refused.

    Raises:
        EvaluationError: not a 2-D numeric array, smaller than ``min_size`` along an
            axis, or containing NaN/inf pixels.
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
    if arr.dtype.kind == "f" and not np.all(np.isfinite(out)):
        n_bad = int(np.count_nonzero(~np.isfinite(out)))
        raise EvaluationError(
            f"{name} has {n_bad} NaN/inf pixel(s); mask or inpaint them before evaluation"
        )
    return out


def check_mask(mask: object, shape: tuple[int, ...], *, name: str = "mask", min_pixels: int = 1) -> np.ndarray:
    """Return ``mask`` as a boolean array of ``shape`` with at least ``min_pixels`` set."""
    arr = np.asarray(mask)
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
