"""Whole-section EM segmentation in physical units: known scenes, pixel-size invariance,
the neurite that used to be called a nucleus, and simulator sections of held-out specimens."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from cryoopt.exceptions import EvaluationError
from cryoopt.pipeline import parse_section
from cryoopt.pipeline.segmentation import HierarchicalSegmenter, Segmentation

SEG = HierarchicalSegmenter()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero(a & b) / max(1, np.count_nonzero(a | b)))


def _chromatin(nucleus: np.ndarray, depth_um: np.ndarray, pixel_nm: float, rng: np.random.Generator) -> np.ndarray:
    """Stain density a nucleus adds to cytoplasm, as thin-section EM shows it: granular
    euchromatin (white noise smoothed to ~40 nm, +-0.08) and a 150 nm band of dense
    heterochromatin under the envelope (Fawcett, The Cell, 1981)."""
    grain = ndi.gaussian_filter(rng.standard_normal(nucleus.shape), 40.0 / pixel_nm)
    grain *= 0.08 / max(grain.std(), 1e-12)
    return nucleus * (0.15 + grain + 0.3 * (depth_um < 0.15))


def _scene(pixel_nm: float, *, seed: int = 0, field_um: float = 8.0, dose: float = 300.0):
    """Beer-Lambert EM of a cell edge: resin | cytoplasm with a nucleus (3 um, chromatin as
    :func:`_chromatin`) and 6 mitochondria (0.4 x 1 um), plus the true masks; geometry in um,
    so any pixel size."""
    rng = np.random.default_rng(seed)
    n = int(round(field_um * 1000 / pixel_nm))
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) * pixel_nm / 1000.0  # um
    cell = xx > 1.5
    nucleus = (xx - 5.0) ** 2 + (yy - 5.5) ** 2 < 1.5**2
    mito = np.zeros((n, n), bool)
    for cx, cy, ang in ((2.5, 1.5, 0.3), (4.5, 1.2, 1.2), (6.8, 2.0, 2.0), (2.6, 4.5, 0.8), (3.0, 7.0, 2.6), (7.0, 7.2, 0.1)):
        u = (xx - cx) * np.cos(ang) + (yy - cy) * np.sin(ang)
        v = -(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang)
        mito |= (u / 0.5) ** 2 + (v / 0.2) ** 2 < 1.0
    mito &= cell & ~nucleus
    depth = 1.5 - np.hypot(xx - 5.0, yy - 5.5)
    density = 0.25 * cell + _chromatin(nucleus, depth, pixel_nm, rng) + 0.3 * mito
    image = rng.poisson(dose * np.exp(-1.2 * density)).astype(float)
    return image, {"cells": cell, "nuclei": nucleus, "mitochondria": mito}


@pytest.mark.parametrize("pixel_nm", [20.0, 40.0])
def test_known_scene_is_segmented_at_any_pixel_size(pixel_nm):
    image, truth = _scene(pixel_nm)
    seg = SEG.segment_section(image, pixel_size_nm=pixel_nm)
    assert isinstance(seg, Segmentation) and seg.pixel_size_nm == pixel_nm
    assert _iou(seg.mask("cells"), truth["cells"]) > 0.9
    assert _iou(seg.mask("nuclei"), truth["nuclei"]) > 0.8
    assert _iou(seg.mask("mitochondria"), truth["mitochondria"]) > 0.6
    assert seg.labels["mitochondria"].max() == ndi.label(truth["mitochondria"])[1]


def test_areas_are_physical_not_pixel_counts():
    """The same specimen at 20 and 40 nm pixels: the same um^2 per structure (+-10 %)."""
    a = SEG.segment_section(_scene(20.0)[0], pixel_size_nm=20.0)
    b = SEG.segment_section(_scene(40.0)[0], pixel_size_nm=40.0)
    for kind in ("cells", "nuclei", "mitochondria"):
        assert b.area_um2(kind) == pytest.approx(a.area_um2(kind), rel=0.1), kind


def test_a_neurite_in_resin_is_a_cell_not_a_nucleus():
    """A 1 um wide neurite with a mitochondrion, crossing bright resin (the case where an
    Otsu 'nucleus' swallowed the neurite and deleted its mitochondria)."""
    rng = np.random.default_rng(1)
    px = 25.0
    n = 256
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) * px / 1000.0
    neurite = np.abs(yy - 0.4 * xx - 1.5) < 0.55
    mito = ((xx - 3.2) / 0.6) ** 2 + ((yy - 0.4 * xx - 1.5) / 0.2) ** 2 < 1.0
    image = rng.poisson(200 * np.exp(-1.2 * (0.25 * neurite + 0.3 * mito))).astype(float)
    seg = SEG.segment_section(image, pixel_size_nm=px)
    assert _iou(seg.mask("cells"), neurite | mito) > 0.85
    assert not seg.mask("nuclei").any()
    assert _iou(seg.mask("mitochondria"), mito) > 0.5


def test_bare_resin_has_no_structures():
    image = np.random.default_rng(2).poisson(300, (200, 200)).astype(float)
    seg = SEG.segment_section(image, pixel_size_nm=30.0)
    assert not any(seg.mask(k).any() for k in ("cells", "nuclei", "mitochondria"))


def test_reference_intensity_tells_cytoplasm_from_resin():
    """A field inside one cell has a single stain level: only the transmitted fraction
    (the instrument's open-beam intensity) says it is cytoplasm, not resin."""
    rng = np.random.default_rng(3)
    image = rng.poisson(300 * np.exp(-1.2 * 0.25), (160, 160)).astype(float)
    seg = SEG.segment_section(image, pixel_size_nm=30.0, reference_intensity=300.0)
    assert seg.mask("cells").mean() > 0.95
    resin = rng.poisson(300, (160, 160)).astype(float)
    assert not SEG.segment_section(resin, pixel_size_nm=30.0, reference_intensity=300.0).mask("cells").any()


def test_artifacts_are_ignored():
    image, truth = _scene(40.0)
    ignore = np.zeros(image.shape, bool)
    ignore[:40, 100:] = True
    image[ignore] = image.max() * 3  # charging
    seg = SEG.segment_section(image, pixel_size_nm=40.0, ignore=ignore)
    assert not (seg.mask("cells") & ignore).any()
    assert _iou(seg.mask("nuclei"), truth["nuclei"]) > 0.8


def test_simulated_section_of_a_held_out_specimen():
    """A tissue-block section rendered by the simulator from a specimen seed no model saw."""
    from cryoopt.sim.datasets import em_section
    from cryoopt.sim.specimen import Specimen

    spec = Specimen.from_preset("tissue_block", seed=901)
    cx, cy, cz, a, *_ = spec.cells.ellipsoids[1]  # a field across the cell's nucleus, cytoplasm and edge
    sec = em_section(spec, centre_nm=(cx + 0.6 * a, cy, cz), size=128, pixel_size_nm=40.0, thickness_nm=100.0,
                     dose_e_per_px=300.0, rng=0)
    assert sec.masks["nuclei"].mean() > 0.2 and sec.masks["mitochondria"].any()
    seg = SEG.segment_section(sec.em, pixel_size_nm=40.0)
    assert _iou(seg.mask("cells"), sec.masks["cells"]) > 0.9
    assert _iou(seg.mask("nuclei"), sec.masks["nuclei"]) > 0.9
    assert _iou(seg.mask("mitochondria"), sec.masks["mitochondria"]) > 0.7


def test_bad_input_is_refused_by_name():
    image, _ = _scene(40.0)
    with pytest.raises(EvaluationError, match="pixel_size_nm"):
        SEG.segment_section(image, pixel_size_nm=0.0)
    with pytest.raises(EvaluationError, match="ignore has shape"):
        SEG.segment_section(image, pixel_size_nm=40.0, ignore=np.zeros((3, 3), bool))
    with pytest.raises(EvaluationError, match="reference_intensity"):
        SEG.segment_section(image, pixel_size_nm=40.0, reference_intensity=-1.0)
    with pytest.raises(EvaluationError, match="no structure 'golgi'"):
        SEG.segment_section(image, pixel_size_nm=40.0).mask("golgi")


def test_parse_section_uses_the_section_segmenter_with_a_pixel_size():
    image, truth = _scene(40.0)
    parsed = parse_section(image, structures=("cells", "nuclei", "mitochondria"), pixel_size_nm=40.0, with_graph=False)
    assert _iou(parsed.mask("nuclei"), truth["nuclei"]) > 0.8
    with pytest.raises(EvaluationError, match="no section segmenter"):
        parse_section(image, structures=("cells",), pixel_size_nm=40.0, segmenter=object())


def test_bead_segmenter_finds_beads_on_a_film_and_nothing_in_plain_noise() -> None:
    from cryoopt.pipeline.segmentation import BeadSegmenter

    rng = np.random.default_rng(3)
    n = 128
    yy, xx = np.mgrid[0:n, 0:n]
    centres = ((30, 30), (90, 40), (64, 100))
    beads = np.zeros((n, n), bool)
    for cy, cx in centres:  # 200 nm beads at 10 nm pixels: radius 10 px
        beads |= (yy - cy) ** 2 + (xx - cx) ** 2 < 10**2
    film = 300.0 * np.exp(-1.2 * beads)  # Beer-Lambert, bead density 1 at 100 nm
    img = rng.poisson(film).astype(float)
    lab = BeadSegmenter().segment(img)
    assert lab.max() == len(centres)
    assert _iou(lab > 0, beads) > 0.7
    noise = rng.poisson(np.full((n, n), 300.0)).astype(float)
    assert BeadSegmenter().segment(noise).max() == 0


def test_boundary_f_score_tolerates_offsets_within_the_tolerance_and_counts_what_is_missed() -> None:
    from cryoopt.pipeline.segmentation import boundary_f_score

    truth = np.zeros((40, 40), bool)
    truth[20, 5:35] = True  # a 30-px one-pixel line
    shifted = np.roll(truth, 1, axis=0)
    assert _iou(shifted, truth) == 0.0  # the pixel IoU of a one-pixel offset
    assert boundary_f_score(shifted, truth, tolerance_px=1.0) == (1.0, 1.0, 1.0)
    assert boundary_f_score(shifted, truth, tolerance_px=0.5)[2] == 0.0
    half = truth.copy()
    half[20, 20:35] = False  # half the line found, nothing wrong: P 1, R 1/2, F 2/3
    p, r, f = boundary_f_score(half, truth, tolerance_px=0.5)
    assert (p, r) == (1.0, 0.5) and f == pytest.approx(2.0 / 3.0)
    assert boundary_f_score(np.zeros_like(truth), truth, tolerance_px=2.0) == (1.0, 0.0, 0.0)
    with pytest.raises(EvaluationError, match="tolerance_px"):
        boundary_f_score(truth, truth, tolerance_px=-1.0)


def _edge_scene(*, gelatin: float, seed: int = 4):
    """A 3 um field at 20 nm: embedding (bare resin, or gelatin taking up ``gelatin`` of the
    stain), cytoplasm, and the edge of a nucleus whose part in the field (~1.3 um^2) is
    the size of a mitochondrion."""
    rng = np.random.default_rng(seed)
    px, n = 20.0, 150
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) * px / 1000.0
    cell = xx > 0.8
    nucleus = (xx - 4.2) ** 2 + (yy - 1.5) ** 2 < 2.0**2
    density = gelatin * ~cell + 0.25 * cell + _chromatin(nucleus, 2.0 - np.hypot(xx - 4.2, yy - 1.5), px, rng)
    dose = 400.0
    return rng.poisson(dose * np.exp(-1.2 * density)).astype(float), px, dose, nucleus


def test_the_edge_of_a_nucleus_is_a_nucleus_not_a_mitochondrion():
    image, px, _, nucleus = _edge_scene(gelatin=0.0)
    seg = SEG.segment_section(image, pixel_size_nm=px)
    assert _iou(seg.mask("nuclei"), nucleus) > 0.8
    assert not seg.mask("mitochondria").any()


def test_with_the_open_beam_intensity_a_stained_gelatin_matrix_is_embedding_not_cytoplasm():
    image, px, dose, nucleus = _edge_scene(gelatin=0.08)
    seg = SEG.segment_section(image, pixel_size_nm=px, reference_intensity=dose)
    assert seg.info["resin_rule"] == "optical density ratio"
    assert _iou(seg.mask("nuclei"), nucleus) > 0.8


def test_chromatin_texture_not_darkness_makes_a_nucleus():
    """Two discs equally darker than the cytoplasm round them: one with granular chromatin
    and a heterochromatin rim, one smooth. Only the first is a nucleus (a smooth dark
    region is a stain level, not chromatin)."""
    rng = np.random.default_rng(7)
    px, n = 30.0, 320
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) * px / 1000.0
    cell = xx > 1.0  # resin on the left
    r1 = np.hypot(xx - 3.2, yy - 4.8)
    r2 = np.hypot(xx - 7.6, yy - 4.8)
    textured, smooth = r1 < 1.4, r2 < 1.4
    chrom = _chromatin(textured, 1.4 - r1, px, rng)
    density = 0.25 * cell + chrom + smooth * float(chrom[textured].mean())
    image = rng.poisson(300 * np.exp(-1.2 * density)).astype(float)
    seg = SEG.segment_section(image, pixel_size_nm=px)
    assert _iou(seg.mask("nuclei"), textured) > 0.8
    assert np.count_nonzero(seg.mask("nuclei") & smooth) < 0.05 * np.count_nonzero(smooth)


def test_a_field_inside_one_nucleus_and_one_inside_cytoplasm():
    """Simulator fields (held-out specimen) with no edge to compare across: all nucleus, then
    all cytoplasm: the chromatin texture alone decides."""
    from cryoopt.sim.datasets import em_section
    from cryoopt.sim.specimen import Specimen

    spec = Specimen.from_preset("tissue_block", seed=902)
    cx, cy, cz, a, b, *_ = spec.nuclei.ellipsoids[0]
    inside = em_section(spec, centre_nm=(cx, cy, cz), size=96, pixel_size_nm=25.0, thickness_nm=100.0, dose_e_per_px=200.0, rng=1)
    assert inside.masks["nuclei"].all()
    assert SEG.segment_section(inside.em, pixel_size_nm=25.0).mask("nuclei").mean() > 0.9
    k = 0
    cx, cy, cz, a, *_ = spec.cells.ellipsoids[k]
    nx, ny, _, na, nb, *_ = spec.nuclei.ellipsoids[k]
    # between the nucleus and the cell's membrane, on the nucleus's far side from the membrane
    for t in np.linspace(0, 2 * np.pi, 24, endpoint=False):
        centre = (nx + (max(na, nb) + 700.0) * np.cos(t), ny + (max(na, nb) + 700.0) * np.sin(t), cz)
        cyto = em_section(spec, centre_nm=centre, size=40, pixel_size_nm=25.0, thickness_nm=100.0, dose_e_per_px=200.0, rng=2)
        if cyto.masks["cells"].all() and not cyto.masks["nuclei"].any() and not cyto.masks["mitochondria"].any():
            break
    else:
        pytest.skip("no organelle-free cytoplasm field round this nucleus")
    assert not SEG.segment_section(cyto.em, pixel_size_nm=25.0).mask("nuclei").any()


def test_granular_film_filling_most_of_a_small_field_is_not_a_nucleus():
    """Grainy film round a dark bead over most of a field too small to leave a ring round
    the textured region, a smooth stretch of the same film beside it: that stretch is the
    reference, and a region no darker than it is no nucleus (it was taken for one)."""
    rng = np.random.default_rng(11)
    px, n = 10.0, 128
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) * px
    grain = ndi.gaussian_filter(rng.standard_normal((n, n)), 25.0 / px)
    grain *= (xx < 800.0) / grain.std()
    bead = np.hypot(xx - 400.0, yy - 640.0) < 100.0
    density = 0.05 + 0.05 * grain + 1.5 * bead
    image = rng.poisson(300 * np.exp(-1.2 * np.clip(density, 0.0, None))).astype(float)
    seg = SEG.segment_section(image, pixel_size_nm=px)
    assert seg.mask("nuclei").mean() < 0.05


def test_a_group_of_mitochondria_beside_a_nucleus_is_neither_a_nucleus_nor_part_of_one():
    """Six mitochondria (0.9 x 0.4 um ellipses, every orientation, some touching) running out of
    the field beside a 2.4 um nucleus: their outlines make a texture as chromatin does, but their
    dark pixels hold no disc wider than an organelle, so they are no nucleus (they were taken
    for one). Each ellipse is 18 x 8 px in semi-axes at 25 nm: an edge a pixel off all round
    scores (17 * 7) / (19 * 9) = 0.70."""
    rng = np.random.default_rng(1)
    px, n = 25.0, 200
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) * px / 1000.0
    cell = xx > 0.6  # resin on the left
    r = np.hypot(xx - 2.6, yy - 5.6)
    nucleus = r < 2.4
    mito = np.zeros((n, n), bool)
    for cx, cy, ang in ((4.0, 0.5, 0.2), (4.6, 1.0, 1.3), (3.9, 1.4, 2.4), (4.7, 2.0, 0.5), (3.8, 2.3, 1.8), (4.6, 2.8, 2.9)):
        u = (xx - cx) * np.cos(ang) + (yy - cy) * np.sin(ang)
        v = -(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang)
        mito |= (u / 0.45) ** 2 + (v / 0.2) ** 2 < 1.0
    density = 0.25 * cell + _chromatin(nucleus, 2.4 - r, px, rng) + 0.3 * mito
    image = rng.poisson(300 * np.exp(-1.2 * density)).astype(float)
    seg = SEG.segment_section(image, pixel_size_nm=px)
    assert np.count_nonzero(seg.mask("nuclei") & mito) < 0.05 * np.count_nonzero(mito)
    assert _iou(seg.mask("mitochondria"), mito) > 0.7
    assert seg.labels["mitochondria"].max() == ndi.label(mito)[1]
    assert _iou(seg.mask("nuclei"), nucleus) > 0.8
