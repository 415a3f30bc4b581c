"""Which dark profiles are mitochondria (:mod:`cryoopt.pipeline.segmentation_mitochondria`), on
scenes of known geometry: a mitochondrion 400 nm wide in cytoplasm, a membrane band thinner than
the 200 nm a mitochondrion is at least (Alberts et al., ch. 14), and a profile cut out of the
inside of a larger dark body."""

from __future__ import annotations

import numpy as np
import pytest

from cryoopt.exceptions import EvaluationError
from cryoopt.pipeline.segmentation_mitochondria import mitochondrial_profiles, profile_width_nm

CYTOPLASM, BODY, MITO = 1.0, 0.8, 0.5  # transmitted intensity of each level (dark = stained)


def _grid(pixel_nm: float, n: int = 128) -> tuple[np.ndarray, np.ndarray]:
    return tuple((np.mgrid[0:n, 0:n] + 0.5) * pixel_nm)  # nm, (row, col)


def _capsule(y: np.ndarray, x: np.ndarray, centre: tuple[float, float], length_nm: float, width_nm: float) -> np.ndarray:
    """A horizontal capsule (a mitochondrion's profile) of this length and width, nm."""
    dx = np.clip(np.abs(x - centre[1]) - 0.5 * (length_nm - width_nm), 0.0, None)
    return np.hypot(dx, y - centre[0]) <= 0.5 * width_nm


@pytest.mark.parametrize("pixel_nm", [15.0, 25.0, 40.0])
def test_width_of_a_band_is_its_width_in_nm(pixel_nm):
    y, x = _grid(pixel_nm)
    band = np.abs(y - 64 * pixel_nm) < 200.0  # 400 nm wide
    across = int(band[:, 0].sum())  # rasterised to whole pixels: within a pixel of 400 nm
    assert abs(across * pixel_nm - 400.0) <= pixel_nm
    # exact for an odd count of pixels across, a pixel short for an even one
    assert profile_width_nm(band, pixel_nm) == pytest.approx((across - (across % 2 == 0)) * pixel_nm)


@pytest.mark.parametrize("pixel_nm", [15.0, 25.0])
def test_a_mitochondrion_is_kept_a_membrane_band_and_a_cut_out_profile_are_not(pixel_nm):
    y, x = _grid(pixel_nm)
    f = 128 * pixel_nm
    mito = _capsule(y, x, (0.25 * f, 0.5 * f), 1200.0, 400.0)
    band = np.abs(y - 0.5 * f) < 50.0  # an inclined membrane: a dark band 100 nm wide
    body = np.abs(y - 0.8 * f) < 500.0  # a dark body 1 um wide (a neurite in a paler matrix)
    cut = body & _capsule(y, x, (0.8 * f, 0.5 * f), 800.0, 300.0)  # a profile cut from its inside
    image = np.where(mito, MITO, np.where(band, MITO, np.where(body, BODY, CYTOPLASM)))
    image = np.where(cut, BODY - 0.04, image)  # barely darker than the body round it
    level = np.full(image.shape, CYTOPLASM)  # the surroundings every profile was measured against
    kept = mitochondrial_profiles(mito | band | cut, image, level, pixel_nm)
    assert np.array_equal(kept, mito)


def test_a_mitochondrion_is_kept_whatever_the_contrast_and_a_cut_out_profile_never():
    pixel_nm = 25.0
    y, x = _grid(pixel_nm)
    f = 128 * pixel_nm
    mito = _capsule(y, x, (0.3 * f, 0.5 * f), 1000.0, 400.0)
    for depth in (0.05, 0.3, 0.6):  # weak to strong stain
        image = np.where(mito, CYTOPLASM - depth, CYTOPLASM)
        assert np.array_equal(mitochondrial_profiles(mito, image, np.full(image.shape, CYTOPLASM), pixel_nm), mito)
        # the same profile with the body's level round it carries a fifth of the step at its edge
        body = np.abs(y - 0.3 * f) < 600.0
        image2 = np.where(mito, CYTOPLASM - depth, np.where(body, CYTOPLASM - 0.8 * depth, CYTOPLASM))
        assert not mitochondrial_profiles(mito, image2, np.full(image.shape, CYTOPLASM), pixel_nm).any()


def test_bad_arguments_are_refused_by_name():
    m = np.zeros((16, 16), bool)
    with pytest.raises(EvaluationError, match="pixel_size_nm"):
        mitochondrial_profiles(m, m.astype(float), m.astype(float), 0.0)
    with pytest.raises(EvaluationError, match="edge_step"):
        mitochondrial_profiles(m, m.astype(float), m.astype(float), 20.0, edge_step=1.5)
    with pytest.raises(EvaluationError, match="one grid"):
        mitochondrial_profiles(m, np.zeros((8, 8)), m.astype(float), 20.0)
