"""The nucleus as EM shows it: double envelope at the published spacing, pores at the set
density, chromatin, determinism, partial volume, and phantoms without nuclei unchanged."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from cryoopt.sim.nucleus import GEOMETRY, HETEROCHROMATIN_DENSITY, LUMEN_DENSITY, MEMBRANE_DENSITY
from cryoopt.sim.specimen import Specimen


@pytest.fixture(scope="module")
def neurons() -> Specimen:
    return Specimen.from_preset("neurons", seed=0)


def test_envelope_is_two_membranes_around_the_perinuclear_space(neurons: Specimen) -> None:
    """On a 1 nm grid across the edge at the equator, along the major axis (where the
    depth below the surface is exactly ``a - x``): two membrane-density plateaus of the
    membrane's width, their centres ``membrane + perinuclear`` apart (37.5 nm), the lumen
    at the cytoplasm's density between, then the denser heterochromatin band."""
    g = GEOMETRY
    for k, (cx, cy, cz, a, b, c, ang) in enumerate(neurons.nuclei.ellipsoids):
        for sign in (1.0, -1.0):  # an end of the major axis with no pore near
            edge = np.array([cx, cy]) + sign * a * np.array([math.cos(ang), math.sin(ang)])
            if np.min(np.linalg.norm(neurons.envelope.pores - np.array([*edge, cz]), axis=1)) > 150.0:
                break
        else:
            continue
        break
    else:
        raise AssertionError("a pore near every end of every major axis")
    n = 200  # columns run inward along the major axis from 50 nm outside the edge
    inward = -sign * np.array([math.cos(ang), math.sin(ang)])
    origin = edge - 50.0 * inward
    rot = math.degrees(math.atan2(inward[1], inward[0]))
    tr = neurons.section_at(cz - 5.0, thickness_nm=10.0, shape=(1, n), pixel_size_nm=1.0, origin_nm=tuple(origin),
                            rotation_deg=rot, n_planes=1)
    prof = tr.density[0]
    depth = np.arange(n) - 50.0  # nm below the surface at each pixel centre
    dense = np.isclose(prof, MEMBRANE_DENSITY, atol=1e-4)  # pixels wholly in a bilayer (1 nm pixels)
    runs = np.flatnonzero(np.diff(np.r_[0, dense[:100].astype(int), 0]))
    starts, ends = runs[::2], runs[1::2]
    assert len(starts) == 2, f"membrane runs at {starts}"
    centres = depth[(starts + ends - 1) // 2] + np.where((ends - starts) % 2 == 0, 0.5, 0.0)
    assert centres[1] - centres[0] == pytest.approx(g.membrane_nm + g.perinuclear_nm, abs=1.0)
    assert centres[0] == pytest.approx(0.5 * g.membrane_nm, abs=1.0)
    assert np.all(np.abs((ends - starts) - g.membrane_nm) <= 1.0)  # 7 whole pixels of a 7.5 nm bilayer
    lumen = prof[(depth > g.membrane_nm + 1) & (depth < g.membrane_nm + g.perinuclear_nm - 1)]
    assert np.allclose(lumen, LUMEN_DENSITY, atol=1e-6)
    E = 2 * g.membrane_nm + g.perinuclear_nm
    band = prof[(depth > E + 2) & (depth < E + g.heterochromatin_nm[0] - 2)]  # at least 50 nm of heterochromatin
    assert abs(band.mean() - HETEROCHROMATIN_DENSITY) < 0.05
    assert band.mean() > prof[depth < -2].mean() + 0.3  # far denser than the cytoplasm outside


def test_pores_break_the_envelope_at_the_set_density(neurons: Specimen) -> None:
    """The mid-plane envelope at the equator, 10 nm pixels: its membrane is broken where a
    pore's channel is cut. Expected breaks: pores per um^2 x perimeter x the height of the
    surface band whose pores cut the plane with a channel of >= 60 nm (chord of a
    ``pore/2 - membrane`` radius disc)."""
    g = GEOMETRY
    k = 0
    cx, cy, cz, a, b, c, ang = neurons.nuclei.ellipsoids[k]
    px, half = 10.0, max(a, b) + 300.0
    n = int(2 * half / px)
    tr = neurons.section_at(cz - 5.0, thickness_nm=10.0, shape=(n, n), pixel_size_nm=px, origin_nm=(cx - half, cy - half), n_planes=1)
    rows, cols = np.nonzero(tr.membranes)
    x, y = cx - half + cols * px - cx, cy - half + rows * px - cy
    u, v = math.cos(ang) * x + math.sin(ang) * y, -math.sin(ang) * x + math.cos(ang) * y
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    env = np.abs(r - 1.0) * min(a, b) < 80.0  # membrane pixels of this nucleus's envelope
    theta = np.arctan2(v[env] / b, u[env] / a)
    perimeter = math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))  # Ramanujan
    bins = int(perimeter / 20.0)
    covered = np.bincount(((theta + math.pi) / (2 * math.pi) * bins).astype(int) % bins, minlength=bins) > 0
    # gaps of >= 3 empty 20 nm bins (60 nm), around the closed ring
    ring = np.r_[covered, covered]
    edges = np.flatnonzero(np.diff(ring.astype(int)))
    gaps = [(e1 - e0) for e0, e1 in zip(edges[:-1], edges[1:]) if not ring[e0 + 1] and e0 < bins]
    n_gaps = sum(1 for L in gaps if L >= 3)
    R_ch = 0.5 * g.pore_diameter_nm - g.membrane_nm
    band_um = 2 * math.sqrt(R_ch**2 - 30.0**2) * 1e-3
    expected = g.pores_per_um2 * perimeter * 1e-3 * band_um
    assert 0.5 * expected - 2 <= n_gaps <= 1.6 * expected + 2, (n_gaps, expected)
    assert n_gaps >= 3  # pores are there at all


def test_envelope_is_deterministic_per_seed_and_ignores_global_state() -> None:
    np.random.seed(1)
    a = Specimen.from_preset("neurons", seed=4)
    np.random.seed(2)
    b = Specimen.from_preset("neurons", seed=4)
    other = Specimen.from_preset("neurons", seed=5)
    assert np.array_equal(a.envelope.pores, b.envelope.pores)
    assert not np.array_equal(a.envelope.pores[:10], other.envelope.pores[:10])
    cx, cy, cz = a.nuclei.ellipsoids[0, :3]
    kw = dict(thickness_nm=80.0, shape=(48, 48), pixel_size_nm=15.0, origin_nm=(cx - 3000.0, cy))
    assert np.array_equal(a.section_at(cz, **kw).density, b.section_at(cz, **kw).density)


def test_adjacent_sections_and_grids_agree_partial_volume(neurons: Specimen) -> None:
    """A coarse pixel holds the mean of the fine pixels it covers: the 30 nm perinuclear
    space becomes a grey level at 40 nm pixels, not a line that comes and goes."""
    cx, cy, cz, a, b, c, ang = neurons.nuclei.ellipsoids[1]
    origin = (cx + a * math.cos(ang) - 640.0, cy + a * math.sin(ang) - 640.0)  # 1.28 um about an edge point
    fine = neurons.section_at(cz - 40.0, thickness_nm=80.0, shape=(320, 320), pixel_size_nm=4.0, origin_nm=origin, n_planes=1)
    coarse = neurons.section_at(cz - 40.0, thickness_nm=80.0, shape=(32, 32), pixel_size_nm=40.0,
                                origin_nm=(origin[0] + 18.0, origin[1] + 18.0), n_planes=1)
    binned = fine.density.reshape(32, 10, 32, 10).mean(axis=(1, 3))
    near = coarse.nuclei | np.roll(coarse.nuclei, 1, 0) | np.roll(coarse.nuclei, -1, 1)
    plasma = coarse.membranes & ~coarse.nuclei  # other membranes keep their one-pixel rendering
    sel = near & ~plasma
    assert sel.sum() > 100
    assert np.mean(np.abs(binned[sel] - coarse.density[sel])) < 0.03
    nxt = neurons.section_at(cz + 40.0, thickness_nm=80.0, shape=(32, 32), pixel_size_nm=40.0,
                             origin_nm=(origin[0] + 18.0, origin[1] + 18.0), n_planes=1)
    inside = coarse.nuclei & nxt.nuclei
    assert np.corrcoef(coarse.density[inside], nxt.density[inside])[0, 1] > 0.3  # the chromatin continues


def _digest(tr) -> str:
    h = hashlib.sha256()
    for arr in (tr.density, tr.target_density, tr.cells, tr.nuclei, tr.mitochondria, tr.membranes, tr.targets):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def test_fields_without_nuclei_are_unchanged() -> None:
    """Pinned against the renderer before the envelope existed: the bead phantom and a
    nucleus-free LM field of the neurons are bit-identical."""
    beads = Specimen.from_preset("bead_calibration", seed=3)
    em = beads.section_at(200.0, thickness_nm=100, shape=(64, 64), pixel_size_nm=20.0, origin_nm=(5000.0, 5000.0))
    lm = beads.section(2, thickness_nm=100, shape=(64, 64), pixel_size_nm=200.0)
    assert lm.target_density.any()
    assert _digest(em) == "de2f256064a0af79"
    assert _digest(lm) == "91fa51cde9dc5adb"
    field = Specimen.from_preset("neurons", seed=1).section(20, thickness_nm=100, shape=(64, 64), pixel_size_nm=200.0,
                                                            origin_nm=(0.0, 12800.0))
    assert not field.nuclei.any() and (field.cells > 0).any() and field.mitochondria.any()
    assert _digest(field) == "deb96c7078d2d44b"


def test_chromatin_lattice_kept_on_disk_renders_the_same_bits(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lattice read back from the cache is the one built from the seed: a nucleus field
    rendered from the file is bit-identical to one rendered from a fresh build (pinned against
    the renderer before the lattice was cached), and a damaged file is rebuilt, not read."""
    from cryoopt.sim import nucleus

    monkeypatch.setenv("CRYOOPT_CACHE_DIR", str(tmp_path))
    spec = Specimen.from_preset("neurons", seed=4)
    cx, cy, cz = spec.nuclei.ellipsoids[0, :3]
    kw = dict(thickness_nm=80.0, shape=(48, 48), pixel_size_nm=15.0, origin_nm=(cx - 360.0, cy - 360.0))
    try:
        nucleus._texture_cumsum.cache_clear()
        built = spec.section_at(cz, **kw)  # no file yet: built from the seed, then written
        files = list((tmp_path / "chromatin").iterdir())
        assert len(files) == 1 and files[0].suffix == ".npy"  # no temporary file left
        nucleus._texture_cumsum.cache_clear()
        loaded = spec.section_at(cz, **kw)  # read back
        assert built.nuclei.all() and _digest(loaded) == _digest(built) == PINNED_NUCLEUS_FIELD
        g = GEOMETRY
        args = (g.texture_cells, g.texture_grain_nm / g.texture_cell_nm, g.texture_domain_nm / g.texture_cell_nm)
        assert np.array_equal(np.load(files[0]), nucleus._build_texture_cumsum(*args))
        files[0].write_bytes(b"not an array")
        nucleus._texture_cumsum.cache_clear()
        assert _digest(spec.section_at(cz, **kw)) == PINNED_NUCLEUS_FIELD
    finally:
        nucleus._texture_cumsum.cache_clear()  # later tests read the lattice of their own cache


#: ``_digest`` of the nucleus field above, rendered by the code before the lattice was cached
PINNED_NUCLEUS_FIELD = "5c08698d7e7964f5"
