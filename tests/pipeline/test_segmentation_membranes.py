"""Membranes of the classical segmenter against scenes with known geometry: a bilayer thinner
than the pixel is one line of one pixel on the bilayer, and the nuclear envelope's two bilayers
(37.5 nm apart, centre to centre) are two lines where the pixel resolves them and one where not."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from cryoopt.exceptions import EvaluationError
from cryoopt.pipeline.segmentation import HierarchicalSegmenter, _depth_bands

SEG = HierarchicalSegmenter()
#: Stain densities of cytoplasm and of a bilayer (the simulator's scale) and Beer-Lambert's 1.2.
CYTOPLASM, BILAYER = 0.25, 0.75


def _bilayers(pixel_nm: float, centres_nm: tuple[float, ...], *, bilayer_nm: float = 7.5, n: int = 96,
              dose: float = 2000.0, tilt: float = 0.05, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """EM of straight bilayers through cytoplasm, nearly vertical (``tilt`` nm across per nm down),
    each pixel the mean over its area (16x supersampled across), Poisson noise at ``dose``
    electrons per pixel; with each bilayer's centre column per row (pixel units)."""
    sub = 16
    x = (np.arange(n * sub) + 0.5) * pixel_nm / sub
    y = (np.arange(n) + 0.5) * pixel_nm
    across = x[None, :] - (0.5 * n * pixel_nm + tilt * y[:, None])
    bilayer = np.zeros(across.shape, bool)
    for c in centres_nm:
        bilayer |= np.abs(across - c) < 0.5 * bilayer_nm
    density = (CYTOPLASM + (BILAYER - CYTOPLASM) * bilayer).reshape(n, n, sub).mean(axis=2)
    image = np.random.default_rng(seed).poisson(dose * np.exp(-1.2 * density)).astype(float)
    cols = [(0.5 * n * pixel_nm + c + tilt * y) / pixel_nm - 0.5 for c in centres_nm]
    return image, cols


def _lines_per_row(mask: np.ndarray, margin: int = 8) -> np.ndarray:
    inner = mask[margin:-margin, margin:-margin]
    return np.array([ndi.label(row)[1] for row in inner])


@pytest.mark.parametrize("pixel_nm", [10.0, 20.0, 30.0])
def test_a_single_bilayer_is_one_line_of_its_width_on_it(pixel_nm):
    image, (col,) = _bilayers(pixel_nm, (0.0,), bilayer_nm=8.0)
    lines = SEG._membrane_lines(image, pixel_nm)
    m = 8
    inner = lines[m:-m, m:-m]
    width = inner.sum(axis=1)  # pixels per row across a nearly vertical line
    # the truth widens a bilayer thinner than the pixel to the pixel holding it: one pixel wide
    assert np.mean(width) == pytest.approx(1.0, abs=1.0)
    assert np.mean(width > 0) > 0.9  # found along the whole line
    rows, cols = np.nonzero(inner)
    on_it = np.abs(cols + m - np.round(col[rows + m])) <= 0
    assert on_it.mean() > 0.9  # and on the pixel that holds the bilayer's centre, not beside it
    assert not lines[:, : int(col.min()) - 4].any() and not lines[:, int(col.max()) + 5:].any()  # nothing else


@pytest.mark.parametrize(("pixel_nm", "lines_expected"), [(7.5, 2), (10.0, 2), (25.0, 1), (30.0, 1)])
def test_the_envelope_double_bilayer_is_two_lines_only_where_the_pixel_resolves_it(pixel_nm, lines_expected):
    # two 7.5 nm bilayers around a 30 nm perinuclear space: centres 37.5 nm apart, i.e.
    # 5 and 3.75 px at 7.5 and 10 nm pixels, 1.5 and 1.25 px at 25 and 30 nm
    image, cols = _bilayers(pixel_nm, (0.0, 37.5))
    per_row = _lines_per_row(SEG._membrane_lines(image, pixel_nm))
    if lines_expected == 2:
        assert np.mean(per_row == 2) > 0.9
    else:
        assert np.all(per_row <= 1)
        assert np.mean(per_row == 1) > 0.5


@pytest.mark.parametrize(("pixel_nm", "rings_expected"), [(8.0, 2), (10.0, 2), (25.0, 1), (40.0, 1)])
def test_envelope_rings_below_a_nuclear_edge_are_two_only_where_the_pixel_resolves_them(pixel_nm, rings_expected):
    n = 128
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    radius_nm = 0.35 * n * pixel_nm
    nucleus = np.hypot(yy - n / 2, xx - n / 2) * pixel_nm < radius_nm
    env = _depth_bands(nucleus, pixel_nm, (3.75, 41.25))
    assert env.any() and not (env & ~nucleus).any()
    # count the runs along a ray from the centre to the edge
    ray = env[n // 2, n // 2:]
    assert ndi.label(ray)[1] == rings_expected
    # each ring pixel's centre lies within half a pixel of a bilayer's centre below the edge
    k = ray.nonzero()[0]
    depths_nm = radius_nm - np.hypot(0.5, k + 0.5) * pixel_nm
    assert np.all(np.minimum(np.abs(depths_nm - 3.75), np.abs(depths_nm - 41.25)) < 0.5 * pixel_nm)


def test_a_step_between_two_stain_levels_is_no_membrane():
    # the edge of a region stained more (a neurite's part through more of the slab, chromatin):
    # darker on one side only, so not a membrane, which is darker than both its flanks; a line of
    # that contrast is found in every row, the step in few (noise makes a flank look brighter)
    n, pixel_nm = 96, 25.0
    density = np.where(np.arange(n)[None, :] + 0.05 * np.arange(n)[:, None] < n / 2, CYTOPLASM, 2 * CYTOPLASM)
    density = np.broadcast_to(density, (n, n))
    image = np.random.default_rng(1).poisson(2000.0 * np.exp(-1.2 * density)).astype(float)
    assert SEG._membrane_lines(image, pixel_nm).sum() < 0.3 * n


def test_a_membrane_through_a_third_of_the_slab_is_not_one_through_all_of_it():
    # a membrane inclined through the section fills its pixel for part of the thickness: a line a
    # third as dark as one filling it (the truth keeps what a pixel holds through most of the slab)
    n, pixel_nm = 96, 25.0
    cols = np.arange(n)[None, :] - 0.05 * np.arange(n)[:, None]
    density = np.full((n, n), CYTOPLASM)
    full, third = (np.abs(cols - 30) < 0.5), (np.abs(cols - 64) < 0.5)
    density = density + (BILAYER - CYTOPLASM) * (full + third / 3.0)
    image = np.random.default_rng(2).poisson(2000.0 * np.exp(-1.2 * density)).astype(float)
    lines = SEG._membrane_lines(image, pixel_nm)
    assert np.mean(lines[full]) > 0.9
    assert np.mean(lines[ndi.binary_dilation(third)]) < 0.05


def test_the_envelope_is_found_along_a_nucleus_edge_and_no_line_inside_it():
    # a nucleus of granular chromatin with a dense band under its edge (the scene of the
    # segmentation tests); at 40 nm the envelope's bilayers are the first pixel of the nucleus
    from tests.pipeline.test_segmentation import _scene

    pixel_nm = 40.0
    image, truth = _scene(pixel_nm)
    membranes = SEG.segment_section(image, pixel_size_nm=pixel_nm).mask("membranes")
    nucleus = truth["nuclei"]
    edge = nucleus & ~ndi.binary_erosion(nucleus)
    near = ndi.binary_dilation(membranes, iterations=1)
    assert np.mean(near[edge]) > 0.7  # found along most of the edge
    deep = ndi.binary_erosion(nucleus, iterations=4)
    assert np.count_nonzero(membranes & deep) < 0.02 * np.count_nonzero(edge)  # chromatin makes no membranes


def test_the_envelope_is_placed_only_where_the_image_shows_the_nuclear_edge():
    from cryoopt.exceptions import EvaluationError
    from cryoopt.pipeline.segmentation import nuclear_envelope

    n, pixel_nm = 96, 25.0
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    nucleus = np.hypot(yy - n / 2, xx - n / 2) < 30
    rng = np.random.default_rng(3)
    shown = rng.poisson(500.0 * np.exp(-1.2 * np.where(nucleus, 0.6, 0.25))).astype(float)
    flat = rng.poisson(500.0 * np.exp(-1.2 * 0.25), (n, n)).astype(float)  # a nucleus the image does not show
    env = nuclear_envelope(shown, nucleus, pixel_nm)
    assert np.mean(env[_depth_bands(nucleus, pixel_nm, (3.75, 41.25))]) > 0.9
    assert np.count_nonzero(nuclear_envelope(flat, nucleus, pixel_nm)) < 0.05 * np.count_nonzero(env)
    with pytest.raises(EvaluationError, match="nuclei has shape"):
        nuclear_envelope(shown, nucleus[:-1], pixel_nm)


def _moving_bilayer(pixel_nm: float, shift_px: float, *, n: int = 96, seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """EM of a bilayer that moves laterally by ``shift_px`` through the section's thickness (the
    image is the mean of the three planes the simulator samples, at 1/6, 1/2 and 5/6 of it), and
    the truth of it (:func:`cryoopt.sim.datasets.edge_on_membranes` of the planes' lines)."""
    from cryoopt.sim.datasets import edge_on_membranes

    sub = 16
    x = (np.arange(n * sub) + 0.5) / sub  # pixel units
    y = np.arange(n) + 0.5
    density, planes = np.zeros((n, n)), []
    for f in (1 / 6, 1 / 2, 5 / 6):
        centre = 0.5 * n + 0.05 * y[:, None] + shift_px * (f - 0.5)
        bilayer = np.abs(x[None, :] - centre) < 0.5 * 7.5 / pixel_nm
        density += (CYTOPLASM + (BILAYER - CYTOPLASM) * bilayer).reshape(n, n, sub).mean(axis=2) / 3.0
        planes.append(np.floor(centre[:, 0]).astype(int)[:, None] == np.arange(n)[None, :])  # the pixel holding it
    image = np.random.default_rng(seed).poisson(2000.0 * np.exp(-1.2 * density)).astype(float)
    return image, edge_on_membranes(planes)


@pytest.mark.parametrize("pixel_nm", [15.0, 25.0])
def test_a_membrane_moving_a_pixel_through_the_slab_is_shown_as_wide_as_the_truth_says(pixel_nm):
    image, truth = _moving_bilayer(pixel_nm, 1.0)
    m = slice(8, -8)
    assert truth[m, m].sum(axis=1).mean() > 1.3  # the truth: the planes' lines together, wider than one
    response = SEG._membrane_response(image, pixel_nm)
    lines = SEG._membrane_lines(image, pixel_nm, response=response)
    shown = SEG._membrane_width(lines, response[0])

    def iou(a):
        return np.count_nonzero(a[m, m] & truth[m, m]) / np.count_nonzero(a[m, m] | truth[m, m])

    assert iou(shown) > iou(lines) + 0.1
    assert np.mean(truth[shown]) > 0.9  # the width it adds is the truth's


def test_a_membrane_crossing_the_slab_edge_on_stays_one_pixel_wide():
    image, truth = _moving_bilayer(25.0, 0.0)
    response = SEG._membrane_response(image, 25.0)
    shown = SEG._membrane_width(SEG._membrane_lines(image, 25.0, response=response), response[0])
    m = slice(8, -8)
    assert truth[m, m].sum(axis=1).mean() == pytest.approx(1.0)
    assert shown[m, m].sum(axis=1).mean() < 1.25
    assert np.mean(truth[shown]) > 0.8


@pytest.mark.parametrize("pixel_nm", [25.0, 40.0])
@pytest.mark.parametrize("offset_px", [-1, 1])
def test_the_envelope_spread_covers_a_nuclear_edge_placed_a_pixel_inside(pixel_nm, offset_px):
    # a segmented nucleus whose edge lies a pixel inside (-1; on the development sections the
    # segmented edge lies inside the true surface more often than outside) or outside (+1) it:
    # the bands below an edge a pixel inside miss most of the true ones, grown by a pixel across
    # the edge they hold them; never fewer than without; no further than a pixel outside and two inside
    from cryoopt.pipeline.segmentation import nuclear_envelope

    n = 96
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    r = np.hypot(yy - n / 2, xx - n / 2)
    true_nucleus, segmented = r < 30, r < 30 + offset_px
    image = np.random.default_rng(5).poisson(500.0 * np.exp(-1.2 * np.where(true_nucleus, 0.6, 0.25))).astype(float)
    true_env = _depth_bands(true_nucleus, pixel_nm, (3.75, 41.25))
    plain = nuclear_envelope(image, segmented, pixel_nm)
    spread = nuclear_envelope(image, segmented, pixel_nm, spread_px=1)
    assert np.all(spread >= plain)
    if offset_px < 0:
        assert np.mean(plain[true_env]) < 0.6
        assert np.mean(spread[true_env]) > 0.9
    assert not (spread & ~ndi.binary_dilation(segmented)).any()
    assert not (spread & ndi.binary_erosion(segmented, iterations=3)).any()
    with pytest.raises(EvaluationError, match="spread_px"):
        nuclear_envelope(image, segmented, pixel_nm, spread_px=-1)
