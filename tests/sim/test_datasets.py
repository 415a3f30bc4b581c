"""Labelled sections for segmenters and registration: consistent truth, physical units,
exact LM -> EM mapping, compression."""

from __future__ import annotations

import numpy as np
import pytest

from cryoopt.sim.datasets import Deformation, clem_pair, em_section, random_em_sections
from cryoopt.sim.specimen import Specimen


@pytest.fixture(scope="module")
def tissue():
    return Specimen.from_preset("tissue_block", seed=3)


def test_masks_nest_and_match_the_image(tissue):
    cx, cy, cz, a, *_ = tissue.cells.ellipsoids[0]
    s = em_section(tissue, centre_nm=(cx + 0.6 * a, cy, cz), size=96, pixel_size_nm=40.0, rng=0)
    m = s.masks
    assert not (m["nuclei"] & ~m["cells"]).any() and not (m["mitochondria"] & (m["nuclei"] | ~m["cells"])).any()
    # dark = stained: cells darker than resin, nuclei darker than cytoplasm
    cyto = m["cells"] & ~m["nuclei"] & ~m["mitochondria"] & ~m["membranes"]
    if (~m["cells"]).any():
        assert s.em[cyto].mean() < s.em[~m["cells"]].mean()
    assert s.em[m["nuclei"] & ~m["membranes"]].mean() < s.em[cyto].mean()


def test_the_same_field_at_two_pixel_sizes_has_the_same_physical_areas(tissue):
    cx, cy, cz, a, *_ = tissue.cells.ellipsoids[1]
    areas = []
    for px, n in ((20.0, 200), (40.0, 100)):
        s = em_section(tissue, centre_nm=(cx + 0.5 * a, cy, cz), size=n, pixel_size_nm=px, rng=0)
        areas.append({k: v.sum() * px * px / 1e6 for k, v in s.masks.items()})
    for k in ("cells", "nuclei"):
        assert areas[1][k] == pytest.approx(areas[0][k], rel=0.05, abs=0.05)


def test_clem_pair_maps_lm_targets_onto_em_targets():
    spec = Specimen.from_preset("bead_calibration", seed=1)
    p = clem_pair(spec, centre_nm=(20000.0, 20000.0, 1000.0), em_size=256, em_pixel_size_nm=50.0, lm_size=200,
                  lm_pixel_size_nm=100.0, rotation_deg=33.0, lm_offset_nm=(800.0, -500.0), thickness_nm=400.0, rng=0)
    em_pts = p.target_points_em()
    assert len(em_pts) >= 3
    # each bead's LM intensity peak maps to within an EM pixel of its EM centroid
    inv = np.linalg.inv(p.lm_affine)
    lm_pts = em_pts @ inv[:2, :2].T + inv[:2, 2]
    back = p.lm_to_em(lm_pts)
    np.testing.assert_allclose(back, em_pts, atol=1e-9)
    for x, y in lm_pts:
        r, c = int(round(y)), int(round(x))
        if 3 <= r < p.lm.shape[0] - 3 and 3 <= c < p.lm.shape[1] - 3:
            win = p.lm[r - 3 : r + 4, c - 3 : c + 4]
            peak = np.unravel_index(np.argmax(win), win.shape)
            assert abs(peak[0] - 3) <= 1 and abs(peak[1] - 3) <= 1
    assert np.hypot(p.lm_affine[0, 0], p.lm_affine[1, 0]) == pytest.approx(2.0)


def test_deformation_round_trip_and_compressed_masks(tissue):
    d = Deformation(compression=0.3, gradient=0.05, ripple=0.02, period_px=120, centre=(64, 64), width_px=128)
    xy = np.random.default_rng(0).uniform(0, 128, (50, 2))
    np.testing.assert_allclose(d.inverse(d.forward(xy)), xy, atol=1e-9)
    cx, cy, cz, a, *_ = tissue.cells.ellipsoids[0]
    flat = em_section(tissue, centre_nm=(cx, cy, cz), size=128, pixel_size_nm=40.0, rng=0)
    comp = em_section(tissue, centre_nm=(cx, cy, cz), size=128, pixel_size_nm=40.0, deformation=d, rng=0)
    # the nucleus profile shrinks by about the compression along the rows
    rows = lambda m: np.flatnonzero(m.any(axis=1)).size  # noqa: E731
    assert rows(comp.masks["nuclei"]) < 0.85 * rows(flat.masks["nuclei"])


def test_random_sections_cover_the_presets_and_ranges():
    secs = list(random_em_sections(("neurons", "bead_calibration"), seeds=(7,), per_specimen=2, size=32, rng=0))
    assert [s.params["specimen"] for s in secs] == ["neurons"] * 2 + ["bead_calibration"] * 2
    assert all(15.0 <= s.pixel_size_nm <= 40.0 and 50.0 <= s.params["thickness_nm"] <= 250.0 for s in secs)
