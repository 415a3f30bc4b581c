from __future__ import annotations

import numpy as np
import pytest

from cryoopt.exceptions import EvaluationError, StateError
from cryoopt.restore.pairs import PairStore, read_ome_tiff, write_ome_tiff


def _lm_pair(shift_nm=(300.0, -200.0)):
    from cryoopt.sim.imaging import image_lm
    from cryoopt.sim.specimen import Specimen

    spec = Specimen.from_preset("tissue_block", seed=0)
    a = spec.section(20, thickness_nm=200, shape=(128, 128), pixel_size_nm=100, origin_nm=(15000, 15000))
    b = spec.section(20, thickness_nm=200, shape=(128, 128), pixel_size_nm=100,
                     origin_nm=(15000 + shift_nm[0], 15000 + shift_nm[1]))
    return image_lm(a, 5.0, microscope="widefield", rng=0).image, image_lm(b, 5.0, microscope="confocal", rng=1).image


def test_ome_tiff_round_trip_keeps_pixel_sizes(tmp_path):
    stack = np.arange(3 * 16 * 20, dtype=np.uint16).reshape(3, 16, 20)
    write_ome_tiff(tmp_path / "s.ome.tif", stack, pixel_size_nm=65.0, z_step_nm=200.0)
    arr, info = read_ome_tiff(tmp_path / "s.ome.tif")
    np.testing.assert_array_equal(arr, stack)
    assert info == {"pixel_size_nm": pytest.approx(65.0), "z_step_nm": pytest.approx(200.0)}


def test_store_registers_known_shift_and_indexes(tmp_path):
    wf, cf = _lm_pair()
    store = PairStore(tmp_path)
    pid = store.add(wf, cf, modality_moving="widefield", modality_reference="confocal",
                    pixel_size_moving_nm=100, pixel_size_reference_nm=100, field="f1")
    rec = store.records(modality_moving="widefield")[0]
    # the confocal grid starts 300 nm right / 200 nm up of the widefield grid: x' = x - 3, y' = y + 2
    assert rec["shift_x_px"] == pytest.approx(-3.0, abs=0.3) and rec["shift_y_px"] == pytest.approx(2.0, abs=0.3)
    pair = PairStore(tmp_path).get(pid)  # reopened from disk
    assert pair.moving_registered.shape == cf.shape
    c_before = np.corrcoef(wf.ravel(), cf.ravel())[0, 1]
    c_after = np.corrcoef(pair.moving_registered[8:-8, 8:-8].ravel(), cf[8:-8, 8:-8].ravel())[0, 1]
    assert c_after > c_before + 0.3
    assert len(store.training_pairs()) == 1


def test_stack_axial_offset(tmp_path):
    rng = np.random.default_rng(0)
    from scipy import ndimage as ndi

    vol = ndi.gaussian_filter(rng.random((8, 48, 48)), (0, 2, 2)).astype(np.float32)
    ref, mov = vol[2:6], vol[1:7]  # mov plane z+1 is ref plane z
    store = PairStore(tmp_path)
    pid = store.add(mov, ref, modality_moving="wf", modality_reference="cf", pixel_size_moving_nm=100,
                    pixel_size_reference_nm=100, z_step_nm=250.0)
    rec = store.records()[0]
    assert rec["axial_offset_planes"] == 1 and rec["axial_offset_nm"] == pytest.approx(250.0)
    got = store.get(pid).moving_registered[:, 10:-10, 10:-10]
    assert np.corrcoef(got.ravel(), ref[:, 10:-10, 10:-10].ravel())[0, 1] > 0.9


def test_import_folder_pairs_by_name(tmp_path):
    wf, cf = _lm_pair((0.0, 0.0))
    src = tmp_path / "src"
    src.mkdir()
    write_ome_tiff(src / "cellA_widefield.ome.tif", wf, pixel_size_nm=100)
    write_ome_tiff(src / "cellA_confocal.ome.tif", cf, pixel_size_nm=100)
    write_ome_tiff(src / "cellB_widefield.tif", wf)  # no partner: skipped
    store = PairStore(tmp_path / "db")
    ids = store.import_folder(src)
    assert len(ids) == 1 and store.records()[0]["field"] == "cellA"
    assert store.records()[0]["pixel_size_moving_nm"] == pytest.approx(100.0)


def test_store_errors(tmp_path):
    store = PairStore(tmp_path)
    with pytest.raises(StateError):
        store.get(42)
    with pytest.raises(EvaluationError):
        store.add(np.zeros((32, 32)), np.zeros((4, 32, 32)), modality_moving="a", modality_reference="b", register=False)
    with pytest.raises(EvaluationError):
        store.add("a.tif", np.zeros((32, 32)), modality_moving="a", modality_reference="b")
    with pytest.raises(EvaluationError):
        store.records(**{"id; DROP TABLE pairs": 1})
