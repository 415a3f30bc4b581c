"""The membrane truth against analytic geometry: a membrane crossing the section nearly
edge-on is a continuous line, one inclined through the slab by a few pixels is none."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from cryoopt.exceptions import ParameterError
from cryoopt.sim.datasets import edge_on_membranes, section_truth
from cryoopt.sim.specimen import Specimen, TissueProperties, _Shapes

N = 64
#: depths of the three planes section_truth samples, as fractions of the thickness
PLANES = (1 / 6, 1 / 2, 5 / 6)


def _flat_membrane(angle_deg: float, shift_px: float, offset_px: float) -> np.ndarray:
    """Membrane masks in the three planes of a flat membrane: the pixels whose centres lie
    within one pixel inside its boundary (as the specimen draws a membrane at pixels larger
    than the bilayer), the boundary moving by ``shift_px`` along its normal from the top of
    the section to the bottom."""
    rows, cols = np.mgrid[0:N, 0:N].astype(float)
    a = math.radians(angle_deg)
    depth = math.cos(a) * cols + math.sin(a) * rows
    c = 0.5 * N + offset_px
    return np.array([(0.0 <= c + shift_px * (f - 0.5) - depth) & (c + shift_px * (f - 0.5) - depth < 1.0) for f in PLANES])


CASES = [(angle, offset) for angle in (0.0, 7.0, 22.5, 45.0, 63.0, 90.0) for offset in (0.0, 0.3, 0.71)]


@pytest.mark.parametrize(("angle", "offset"), CASES)
def test_an_edge_on_membrane_is_exactly_its_line(angle, offset):
    planes = _flat_membrane(angle, 0.0, offset)
    np.testing.assert_array_equal(edge_on_membranes(planes), planes[1])


@pytest.mark.parametrize(("angle", "offset"), CASES)
def test_a_membrane_moving_half_a_pixel_through_the_section_is_a_continuous_line(angle, offset):
    planes = _flat_membrane(angle, 0.5, offset)
    truth = edge_on_membranes(planes)
    labels, n = ndimage.label(truth, np.ones((3, 3), bool))
    assert n == 1  # connected
    assert truth[planes[1]].all()  # the whole middle plane's line, no dots
    rows, cols = np.nonzero(truth)
    along = np.hypot(np.ptp(rows), np.ptp(cols))
    assert along >= N - 1  # across the field
    # one or two pixels wide: within the planes' lines, at most twice the pixels of one
    assert not (truth & ~planes.any(axis=0)).any()
    assert planes[1].sum() <= truth.sum() <= 2.05 * planes[1].sum()


@pytest.mark.parametrize(("angle", "offset"), CASES)
def test_a_membrane_moving_three_pixels_through_the_section_is_no_line(angle, offset):
    assert not edge_on_membranes(_flat_membrane(angle, 3.0, offset)).any()


def test_a_membrane_ending_within_the_slab_is_none_and_one_plane_is_its_own_truth():
    planes = _flat_membrane(30.0, 0.0, 0.0)
    planes[2] = False  # the surface is cut tangentially: not in the bottom plane
    assert not edge_on_membranes(planes).any()
    np.testing.assert_array_equal(edge_on_membranes(planes[:1]), planes[0])
    with pytest.raises(ParameterError, match="planes"):
        edge_on_membranes(np.zeros((N, N), bool))


# -- the same through the specimen: a cylindrical cell lying in the section plane ------------
R_NM, PX_NM, T_NM, INDEX = 3000.0, 20.0, 120.0, 20


def _wall_truth(shift_px: float):
    """section_truth of a field on the wall of a cylinder (axis along x, radius R) cut at the
    height where the wall moves laterally by ``shift_px`` through the section's thickness."""
    slope = shift_px * PX_NM / T_NM  # dy/dz of the wall
    h = R_NM * slope / math.hypot(1.0, slope)
    z_mid = (INDEX + 0.5) * T_NM
    spec = Specimen({"cells": 0}, tissue=TissueProperties.from_dict({}), seed=0)
    spec.cells = _Shapes(capsules=np.array([[-50_000.0, 0.0, z_mid - h, 50_000.0, 0.0, z_mid - h, R_NM]]), c_owner=np.array([1]))
    y_wall = math.sqrt(R_NM**2 - h**2)
    origin = (0.0, y_wall - 0.5 * N * PX_NM + 0.37 * PX_NM)
    truth = section_truth(spec, INDEX, thickness_nm=T_NM, shape=(N, N), pixel_size_nm=PX_NM, origin_nm=origin)
    mid = spec.section(int(round(z_mid / 10.0 - 0.5)), thickness_nm=10.0, shape=(N, N), pixel_size_nm=PX_NM, origin_nm=origin, n_planes=1)
    return truth.membranes, mid.membranes


def test_a_cell_wall_crossing_the_section_edge_on_is_the_plane_line():
    truth, mid = _wall_truth(0.0)
    assert mid.sum() == N  # one pixel per column along the wall
    np.testing.assert_array_equal(truth, mid)


def test_a_cell_wall_inclined_by_half_a_pixel_is_a_continuous_line_along_the_field():
    truth, _ = _wall_truth(0.5)
    per_column = truth.sum(axis=0)
    assert per_column.min() >= 1 and per_column.max() <= 2
    assert ndimage.label(truth, np.ones((3, 3), bool))[1] == 1


def test_a_cell_wall_inclined_by_three_pixels_is_no_membrane():
    truth, mid = _wall_truth(3.0)
    assert mid.sum() >= N  # each plane still draws the wall
    assert not truth.any()
