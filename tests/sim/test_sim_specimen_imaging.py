"""Specimen phantoms, LM/EM image formation, artifacts, ice fractal dimension."""

from __future__ import annotations

import numpy as np
import pytest

from cryoopt.exceptions import ParameterError
from cryoopt.sim.ice import box_counting_dimension, grow_crystal
from cryoopt.sim.imaging import IceContamination, image_em, image_lm, lm_resolution_nm
from cryoopt.sim.specimen import Specimen, lm_to_em_transform


@pytest.fixture(scope="module")
def neurons() -> Specimen:
    return Specimen.from_preset("neurons", seed=0)


@pytest.mark.parametrize("name", ["neurons", "tissue_block", "bead_calibration"])
def test_presets_build_and_render(name: str) -> None:
    spec = Specimen.from_preset(name, seed=1)
    tr = spec.section(5, thickness_nm=100, shape=(128, 128), pixel_size_nm=300)
    assert any(spec.section(k, thickness_nm=100, shape=(128, 128), pixel_size_nm=300).targets.any() for k in (5, 10, 15, 20))
    assert not (tr.nuclei & ~(tr.cells > 0)).any()  # nuclei lie inside cells


def test_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(ParameterError, match="neurons"):
        Specimen.from_preset("no_such_sample")


def test_same_seed_same_phantom_and_adjacent_sections_consistent(neurons: Specimen) -> None:
    other = Specimen.from_preset("neurons", seed=0)
    a = neurons.section(10, thickness_nm=100, shape=(128, 128), pixel_size_nm=400)
    b = other.section(10, thickness_nm=100, shape=(128, 128), pixel_size_nm=400)
    assert np.array_equal(a.cells, b.cells)
    c = neurons.section(11, thickness_nm=100, shape=(128, 128), pixel_size_nm=400)
    far = neurons.section(40, thickness_nm=100, shape=(128, 128), pixel_size_nm=400)
    iou = lambda x, y: (x & y).sum() / max((x | y).sum(), 1)  # noqa: E731
    assert iou(a.masks["cells"], c.masks["cells"]) > 0.8  # 100 nm apart: nearly the same
    assert iou(a.masks["cells"], c.masks["cells"]) > iou(a.masks["cells"], far.masks["cells"])
    assert not np.array_equal(Specimen.from_preset("neurons", seed=1).section(10, thickness_nm=100, shape=(128, 128), pixel_size_nm=400).cells, a.cells)


def test_lm_em_transform_maps_the_same_specimen_point(neurons: Specimen) -> None:
    lm = neurons.section(3, thickness_nm=100, shape=(64, 64), pixel_size_nm=500)
    em = neurons.section(3, thickness_nm=100, shape=(64, 64), pixel_size_nm=20, origin_nm=(5000, 7000), rotation_deg=30)
    T = lm_to_em_transform(lm, em)
    p_lm = np.array([20.0, 30.0, 1.0])
    assert np.allclose(em.affine @ (T @ p_lm), lm.affine @ p_lm)


def test_lm_confocal_is_sharper_and_noise_is_seeded(neurons: Specimen) -> None:
    tr = neurons.section(5, thickness_nm=100, shape=(128, 128), pixel_size_nm=400, n_planes=1)
    assert tr.targets.any()
    assert lm_resolution_nm("confocal") < lm_resolution_nm("widefield")  # 0.37 vs 0.51 lambda/NA (Pawley)
    wf = image_lm(tr, 1.5, microscope="widefield", rng=0)
    cf = image_lm(tr, 1.5, microscope="confocal", rng=0)
    assert cf.truth.clean.max() > wf.truth.clean.max()  # less blur, higher peaks
    assert np.array_equal(image_lm(tr, 1.5, rng=5).image, image_lm(tr, 1.5, rng=5).image)
    assert not np.array_equal(image_lm(tr, 1.5, rng=5).image, image_lm(tr, 1.5, rng=6).image)
    # more label, more signal on targets
    hi = image_lm(tr, 3.0, rng=0).truth.clean[tr.targets].mean()
    lo = image_lm(tr, 0.3, rng=0).truth.clean[tr.targets].mean()
    assert hi > lo


def test_em_artifacts_switch_on_and_off(neurons: Specimen) -> None:
    cx, cy = neurons.cells.ellipsoids[0][:2]
    tr = neurons.section(5, thickness_nm=100, shape=(128, 128), pixel_size_nm=100, origin_nm=(cx - 6400, cy - 6400))
    assert tr.membranes.any()
    off = image_em(tr, rng=0)
    assert off.truth.artifact_masks == {}
    on = image_em(tr, charging=2.0, ice=IceContamination(coverage=0.1, mean_radius_nm=300), drift_nm_per_line=2.0, scan_noise=0.5, rng=0)
    assert {"ice", "charging", "row_shift_px"} <= set(on.truth.artifact_masks)
    assert 0.05 < on.truth.artifact_masks["ice"].mean() < 0.4
    assert np.abs(on.image - off.image).mean() > 0.02
    # stained membranes are darker than cytoplasm in the clean image
    assert off.truth.clean[tr.membranes].mean() < off.truth.clean[(tr.cells > 0) & ~tr.membranes].mean()
    # thicker section, more contrast (Beer-Lambert)
    thick = neurons.section(5, thickness_nm=200, shape=(128, 128), pixel_size_nm=100, origin_nm=(cx - 6400, cy - 6400))
    assert image_em(thick, rng=0).truth.clean.std() > off.truth.clean.std()


@pytest.mark.parametrize("dimension", [1.45, 1.6])
def test_ice_fractal_dimension_measured_by_box_counting(dimension: float) -> None:
    # box counting (Mandelbrot 1982) on fresh seeds; tolerance 0.1 (per-crystal scatter ~0.05)
    measured = [box_counting_dimension(grow_crystal(600, fractal_dimension=dimension, rng=1000 + s)) for s in range(3)]
    assert abs(np.mean(measured) - dimension) < 0.1, measured


def test_box_counting_on_known_shapes() -> None:
    square = np.ones((256, 256), bool)
    line = np.zeros((256, 256), bool)
    line[128, :] = True
    assert box_counting_dimension(square) == pytest.approx(2.0, abs=0.01)
    assert box_counting_dimension(line) == pytest.approx(1.0, abs=0.01)


def test_section_at_the_running_depth_matches_the_constant_series(neurons: Specimen) -> None:
    a = neurons.section(7, thickness_nm=100, shape=(64, 64), pixel_size_nm=400)
    b = neurons.section_at(700.0, thickness_nm=100, shape=(64, 64), pixel_size_nm=400, index=7)
    assert np.array_equal(a.cells, b.cells) and a.z_nm == b.z_nm == 750.0
    # a series whose thickness changes keeps going down: no slab is cut twice
    c = neurons.section_at(700.0 + 100.0, thickness_nm=60, shape=(64, 64), pixel_size_nm=400)
    assert c.z_nm == pytest.approx(830.0)


def test_compression_stretches_the_specimen_along_the_cut(neurons: Specimen) -> None:
    cx, cy = neurons.cells.ellipsoids[0][:2]
    origin = (cx - 3200, cy - 3200)
    flat = neurons.section_at(500.0, thickness_nm=100, shape=(64, 64), pixel_size_nm=100, origin_nm=origin)
    squeezed = neurons.section_at(500.0, thickness_nm=100, shape=(64, 64), pixel_size_nm=100, origin_nm=origin, stretch=1.5)
    rows = lambda t: np.flatnonzero(t.cells.any(axis=1) & (t.cells > 0).sum(axis=1).astype(bool))  # noqa: E731
    # the middle row images the same specimen line; other rows reach 1.5x farther along the cut
    assert np.array_equal(flat.cells[32], squeezed.cells[32]) or abs(int((flat.cells[32] > 0).sum()) - int((squeezed.cells[32] > 0).sum())) <= 1
    assert squeezed.affine[1, 1] == pytest.approx(1.5 * flat.affine[1, 1])
    assert len(rows(squeezed)) >= 1


def test_inside_cells_knows_somata_and_neurites(neurons: Specimen) -> None:
    cx, cy, cz = neurons.cells.ellipsoids[0][:3]
    x0, y0, z0, x1, y1, z1, r = neurons.cells.capsules[1]
    far = np.array([[-1e6, -1e6, 0.0]])
    pts = np.array([[cx, cy, cz], [(x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2]])
    assert neurons.inside_cells(pts).all() and not neurons.inside_cells(far).any()
    assert neurons.inside_soma(pts[:1]).all()


def test_detector_gain_trades_converter_noise_against_saturation() -> None:
    from cryoopt.sim.imaging import detector_readout

    rng = np.random.default_rng(0)
    dim = rng.poisson(50.0, size=(64, 64)).astype(np.float32)  # 50 e: shot noise sd ~7 e
    noise = [np.std(detector_readout(dim, gain=g, rng=rng, adc_noise_adu=40.0) / g) for g in (1.0, 4.0, 16.0)]
    assert noise[0] > 3 * noise[2] and noise[2] == pytest.approx(np.sqrt(50.0), rel=0.15)  # input-referred noise falls with gain
    bright = np.full((8, 8), 3000.0, np.float32)
    assert (detector_readout(bright, gain=32.0, rng=rng) >= 65535).all()  # 96 000 ADU: clipped, the signal is lost
    assert (detector_readout(bright, gain=8.0, rng=rng) < 65535).all()


def test_photobleaching_saturates_the_collected_photons_and_prior_light_bleaches() -> None:
    from cryoopt.sim.imaging import bleached_exposure_ms

    assert bleached_exposure_ms(10.0, bleach_ms=500.0) == pytest.approx(10.0, rel=0.02)  # short: linear
    assert bleached_exposure_ms(5000.0, bleach_ms=500.0) == pytest.approx(500.0, rel=1e-3)  # the dye's photon budget
    assert bleached_exposure_ms(100.0, bleach_ms=500.0, prior_ms=500.0) == pytest.approx(
        bleached_exposure_ms(100.0, bleach_ms=500.0) * np.exp(-1.0))


def test_em_overlap_blur_coarsens_resolution_and_thickness_adds_contrast(neurons: Specimen) -> None:
    from cryoopt.pipeline.metrics import frc_resolution

    cx, cy = neurons.cells.ellipsoids[0][:2]
    res, contrast = [], []
    for t in (50, 150):
        tr = neurons.section_at(1000.0, thickness_nm=t, shape=(128, 128), pixel_size_nm=10, origin_nm=(cx - 640, cy + 4000))
        img = image_em(tr, overlap_blur_nm=0.25 * t, dose_e_per_px=20000, rng=1)
        res.append(frc_resolution(img.image, pixel_size_nm=10))
        contrast.append(float(img.truth.clean.std()))
    assert res[1] > res[0] and contrast[1] > contrast[0]
