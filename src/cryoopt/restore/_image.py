"""Input checks and intensity normalisation shared by the restoration models.

Every public entry point passes images through :func:`as_image`, so non-image input
(strings, objects, complex numbers, NaN pixels, wrong number of axes, empty arrays)
fails identically everywhere with an :class:`~cryoopt.exceptions.EvaluationError`
that says what to pass instead.
"""

from __future__ import annotations

import numpy as np

from cryoopt.exceptions import EvaluationError

__all__ = ["Normalization", "as_image"]


def as_image(image: object, *, ndim: int | tuple[int, ...] = 2, name: str = "image", min_size: int = 4) -> np.ndarray:
    """Return ``image`` as a finite ``float32`` array with ``ndim`` axes, or raise.

    Accepted dtypes: integers, floats and bool. ``ndim`` is 2 (image), 3 (stack
    `D x H x W`) or a tuple of allowed values.

    Raises:
        EvaluationError: not a real numeric array, wrong number of axes, an axis
            shorter than ``min_size``, or NaN/inf pixels.
    """
    if isinstance(image, (str, bytes)) or image is None:
        raise EvaluationError(f"{name} must be a numeric array (numpy image), got {type(image).__name__}")
    try:
        arr = np.asarray(image)
    except Exception as exc:  # ragged lists and the like
        raise EvaluationError(f"{name} cannot be read as an array ({exc}); pass a numpy image") from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise EvaluationError(f"{name} has dtype {arr.dtype}; pass a real-valued numeric image (uint8/uint16/int/float/bool)")
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if arr.ndim not in allowed:
        what = " or ".join({2: "2-D image (H x W)", 3: "3-D stack (D x H x W)"}.get(n, f"{n}-D") for n in allowed)
        raise EvaluationError(f"{name} must be a {what}, got shape {arr.shape}; select one channel (image[..., 0]) first")
    if arr.ndim == 2 and min(arr.shape) < min_size or arr.ndim == 3 and min(arr.shape[1:]) < min_size or arr.size == 0:
        raise EvaluationError(f"{name} is empty or too small ({arr.shape}); need at least {min_size} px per image axis")
    out = arr.astype(np.float32)
    if not np.all(np.isfinite(out)):
        n_bad = int(np.count_nonzero(~np.isfinite(out)))
        raise EvaluationError(f"{name} has {n_bad} NaN/inf pixel(s) (or values beyond float32); inpaint or clip them first")
    return out


class Normalization:
    """Affine intensity map fixed from one image's percentiles: ``(x - lo) / (hi - lo)``.

    The input image fixes ``lo``/``hi``; the same map applies to its target in
    training and is inverted on the network's output at inference, so restored
    images come back in the caller's units.
    """

    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = float(lo), float(hi)
        if not self.hi > self.lo:
            self.hi = self.lo + 1.0

    @classmethod
    def from_image(cls, image: np.ndarray, *, percentiles: tuple[float, float] = (1.0, 99.0)) -> Normalization:
        sample = image if image.size <= 1 << 20 else image.reshape(-1)[:: image.size // (1 << 20) + 1]
        lo, hi = np.percentile(sample, percentiles)
        if hi <= lo:  # constant image or a mostly-flat one
            lo, hi = float(sample.min()), float(sample.max())
        return cls(lo, hi)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.lo) / (self.hi - self.lo)).astype(np.float32)

    def inverse(self, x: np.ndarray) -> np.ndarray:
        return (x * (self.hi - self.lo) + self.lo).astype(np.float32)
