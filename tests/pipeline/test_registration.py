"""LM-EM registration under known random similarity/affine transforms, different contrast."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.transform import warp

from cryoopt.exceptions import EvaluationError, RegistrationError
from cryoopt.pipeline.registration import register_lm_em, target_registration_error

from ._synth import blob_scene

N = 384


def _pair(seed: int, *, affine: bool, lm_scale: float = 2.0):
    """EM scene, and an LM view of it under a known LM->EM transform M (coarser pixels,
    blur, inverted non-linear contrast, different noise)."""
    rng = np.random.default_rng(seed)
    scene, _ = blob_scene((N, N), 24, rng)
    rot = rng.uniform(-math.pi, math.pi)
    m = np.array([[math.cos(rot), -math.sin(rot), 0], [math.sin(rot), math.cos(rot), 0], [0, 0, 1.0]])
    m[:2, :2] *= lm_scale
    if affine:
        shear = np.eye(3)
        shear[0, 1] = rng.uniform(-0.05, 0.05)
        shear[1, 1] = rng.uniform(0.95, 1.05)
        m = m @ shear
    nl = int(N / lm_scale)
    c = np.full(2, (nl - 1) / 2)
    m[:2, 2] = np.full(2, (N - 1) / 2) + rng.uniform(-15, 15, 2) - m[:2, :2] @ c
    lm = ndi.gaussian_filter(warp(scene, m, output_shape=(nl, nl), order=1), 1.0)
    lm = 1000 * (1 - lm) ** 1.5 + rng.normal(0, 20, lm.shape)
    em = (200 * scene + 50 + rng.normal(0, 5, scene.shape)).clip(0, 255).astype(np.uint8)
    return lm, em, m, nl


def _rms_error(result, m, nl):
    gy, gx = np.mgrid[0:nl:8, 0:nl:8]
    p = np.column_stack([gx.ravel(), gy.ravel()]).astype(float)
    true = p @ m[:2, :2].T + m[:2, 2]
    inside = ((true >= 0) & (true < N)).all(axis=1)
    return float(np.sqrt(np.mean(np.sum((true - result.apply(p))[inside] ** 2, axis=1))))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("affine", [False, True])
def test_subpixel_registration_under_known_random_transform(seed, affine):
    lm, em, m, nl = _pair(seed, affine=affine)
    r = register_lm_em(lm, em, lm_pixel_size_nm=20.0, em_pixel_size_nm=10.0)
    err = _rms_error(r, m, nl)
    assert r.model == "affine" and r.n_matches >= 10
    assert err < 0.5  # sub-pixel (EM pixels) over the whole overlap
    # the reported TRE is an honest estimate of the true error (same order of magnitude)
    assert 0.2 * err < r.tre_px < 5 * err + 0.05


@pytest.mark.parametrize("seed", [0, 1])
def test_scale_is_estimated_when_pixel_sizes_are_unknown(seed):
    lm, em, m, nl = _pair(seed + 10, affine=False)
    r = register_lm_em(lm, em)
    assert _rms_error(r, m, nl) < 0.5
    coarse = register_lm_em(lm, em, lm_pixel_size_nm=20.0, em_pixel_size_nm=10.0, model="coarse")
    assert coarse.model == "coarse" and math.isnan(coarse.tre_px)
    assert _rms_error(coarse, m, nl) < 3.0  # phase correlation alone: within a few pixels
    assert abs((coarse.rotation_deg - math.degrees(math.atan2(m[1, 0], m[0, 0]))) % 360) < 2 or abs(
        (coarse.rotation_deg - math.degrees(math.atan2(m[1, 0], m[0, 0]))) % 360 - 360
    ) < 2


def test_warp_puts_lm_on_em_grid():
    lm, em, m, nl = _pair(0, affine=False)
    r = register_lm_em(lm, em, lm_pixel_size_nm=20.0, em_pixel_size_nm=10.0)
    warped = r.warp(lm, em.shape)
    valid = r.warp(np.ones(lm.shape, bool), em.shape)
    corr = np.corrcoef(warped[valid], em[valid].astype(float))[0, 1]
    assert corr < -0.8  # inverted contrast, same structures


def test_tre_formula_on_exact_points():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (20, 2))
    mat = np.array([[1.1, 0.1, 3], [-0.05, 0.9, -2], [0, 0, 1]])
    dst = src @ mat[:2, :2].T + mat[:2, 2]
    fre, tre = target_registration_error(src, dst, mat, (100, 100))
    assert fre == pytest.approx(0, abs=1e-12) and tre == pytest.approx(0, abs=1e-12)
    assert math.isnan(target_registration_error(src[:3], dst[:3], mat, (100, 100))[1])


def test_bad_inputs():
    lm, em, _, _ = _pair(0, affine=False)
    with pytest.raises(EvaluationError, match="constant"):
        register_lm_em(np.ones_like(lm), em)
    with pytest.raises(EvaluationError, match="NaN"):
        register_lm_em(np.full_like(lm, np.nan), em)
    with pytest.raises(EvaluationError, match="positive"):
        register_lm_em(lm, em, lm_pixel_size_nm=-1, em_pixel_size_nm=1)
    with pytest.raises(EvaluationError, match="model"):
        register_lm_em(lm, em, model="elastic")


# -- without pixel sizes: recover rotation and scale, or refuse ------------------------------
def _label_scene(seed: int, *, lm_scale: float, rot_deg: float, n: int = 512):
    """EM: cytoplasm with 3 nuclei and ~40 mitochondria; LM: label on the mitochondria only,
    under a known rotation and scale (the two show different structures: the 'x1.08, 7 deg'
    case that used to come back ~300 px off without an error)."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[:n, :n]
    dens = np.zeros((n, n))
    for _ in range(3):
        c = rng.uniform(0.2 * n, 0.8 * n, 2)
        dens[(rr - c[0]) ** 2 + (cc - c[1]) ** 2 <= (0.07 * n) ** 2] = 0.6
    mito = np.zeros((n, n), bool)
    while ndi.label(mito)[1] < 40:
        c = rng.uniform(20, n - 20, 2)
        disk = (rr - c[0]) ** 2 + (cc - c[1]) ** 2 <= rng.uniform(5, 8) ** 2
        if (dens[disk] > 0).any() or (ndi.binary_dilation(mito, iterations=6) & disk).any():
            continue
        mito |= disk
    dens[mito] = 0.5
    em = (30000 * (1 - ndi.gaussian_filter(dens, 1.0)) + rng.normal(0, 1200, (n, n))).clip(0, 65535).astype(np.uint16)
    rot = math.radians(rot_deg)
    m = np.array([[math.cos(rot), -math.sin(rot), 0], [math.sin(rot), math.cos(rot), 0], [0, 0, 1.0]])
    m[:2, :2] *= lm_scale
    nl = int(n / lm_scale) + 16
    m[:2, 2] = np.full(2, (n - 1) / 2) + rng.uniform(-10, 10, 2) - m[:2, :2] @ np.full(2, (nl - 1) / 2)
    lm = warp(ndi.gaussian_filter(mito.astype(float), 2.0), m, output_shape=(nl, nl), order=1)
    lm = 100 + 2000 * ndi.gaussian_filter(lm, 0.7) + rng.normal(0, 20, lm.shape)
    return lm, em, m, nl


def _scene_error(result, m, nl, n=512):
    gy, gx = np.mgrid[0:nl:8, 0:nl:8]
    p = np.column_stack([gx.ravel(), gy.ravel()]).astype(float)
    true = p @ m[:2, :2].T + m[:2, 2]
    inside = ((true >= 0) & (true < n)).all(axis=1)
    return float(np.sqrt(np.mean(np.sum((true - result.apply(p))[inside] ** 2, axis=1))))


@pytest.mark.parametrize("scale, rot_deg, seed", [(1.08, 7.0, 0), (4.0, 7.0, 1), (2.0, 40.0, 2), (2.0, -120.0, 3)])
def test_rotation_scale_and_shift_from_images_alone(scale, rot_deg, seed):
    lm, em, m, nl = _label_scene(seed, lm_scale=scale, rot_deg=rot_deg)
    r = register_lm_em(lm, em)  # no pixel sizes
    assert _scene_error(r, m, nl) < 0.5
    assert r.scale == pytest.approx(scale, rel=0.01)
    # the estimate where the error was measured (the LM field's overlap, where the structures
    # are): sub-pixel; over the whole EM field it also counts corners far from any of them
    gy, gx = np.mgrid[0:nl:8, 0:nl:8]
    true = np.column_stack([gx.ravel(), gy.ravel()]).astype(float) @ m[:2, :2].T + m[:2, 2]
    true = true[((true >= 0) & (true < 512)).all(axis=1)]
    assert r.n_matches >= 20 and float(np.sqrt(np.mean(r.tre_at(true) ** 2))) < 0.5 and math.isfinite(r.tre_px)


def test_unrelated_images_are_refused_not_registered():
    rng = np.random.default_rng(7)
    lm, _, _, _ = _label_scene(4, lm_scale=2.0, rot_deg=10.0)
    other, _ = blob_scene((N, N), 24, rng)
    em = (200 * other + 50 + rng.normal(0, 5, other.shape)).clip(0, 255).astype(np.uint8)
    with pytest.raises(RegistrationError, match="could not register") as err:
        register_lm_em(lm, em)
    assert isinstance(err.value, EvaluationError)
    # too few structures to verify anything, at a known scale too
    sparse = np.zeros((128, 128))
    sparse[40:44, 40:44] = 1.0
    with pytest.raises(RegistrationError, match="too few structure points"):
        register_lm_em(sparse + rng.normal(0, 0.01, sparse.shape), em, lm_pixel_size_nm=20.0, em_pixel_size_nm=10.0)


def test_simulated_bead_section_registers_without_pixel_sizes():
    """Fiducial beads in LM and EM of a simulated section, unknown rotation and scale."""
    from cryoopt.sim.datasets import clem_pair
    from cryoopt.sim.specimen import Specimen

    spec = Specimen.from_preset("bead_calibration", seed=5)
    pair = clem_pair(spec, centre_nm=(20000.0, 20000.0, 1000.0), em_size=384, em_pixel_size_nm=50.0, lm_size=256,
                     lm_pixel_size_nm=110.0, rotation_deg=137.0, thickness_nm=400.0, dose_e_per_px=400.0, rng=0)
    r = register_lm_em(pair.lm, pair.em, lm_polarity="bright", em_polarity="dark")
    targets = pair.target_points_em()
    assert len(targets) >= 6
    lm_xy = np.linalg.solve(pair.lm_affine, np.column_stack([targets, np.ones(len(targets))]).T).T[:, :2]
    tre = np.sqrt(np.sum((r.apply(lm_xy) - targets) ** 2, axis=1))
    assert np.sqrt(np.mean(tre**2)) < 1.0  # EM pixels, at the beads
    assert r.scale == pytest.approx(110.0 / 50.0, rel=0.01)


def test_compressed_section_is_registered_with_the_compression_search_and_elastic_step():
    """EM of a section compressed 30 % along its rows (plus a 3 % ripple) against an
    uncompressed LM: a similarity cannot fit it; the compression search and the elastic
    step bring the error down."""
    from skimage.transform import warp as skwarp

    rng = np.random.default_rng(11)
    scene, _ = blob_scene((N, N), 60, rng, radius=(3, 5))
    yc = (N - 1) / 2

    def compress(rows, cols):  # undeformed row -> imaged row
        c = 0.3 + 0.03 * np.sin(2 * np.pi * cols / 300.0)
        return yc + (rows - yc) * (1 - c)

    rows, cols = np.mgrid[0:N, 0:N].astype(float)
    c = 0.3 + 0.03 * np.sin(2 * np.pi * cols / 300.0)
    und_rows = yc + (rows - yc) / (1 - c)
    em = skwarp(scene, np.stack([und_rows, cols]), order=1)
    em = (200 * em + 50 + rng.normal(0, 5, em.shape)).clip(0, 255).astype(np.uint8)
    lm = ndi.gaussian_filter(scene[::2, ::2], 1.0) * 1000 + rng.normal(0, 10, (N // 2, N // 2))
    gy, gx = np.mgrid[8 : N // 2 - 8 : 6, 8 : N // 2 - 8 : 6]
    lm_xy = np.column_stack([gx.ravel(), gy.ravel()]).astype(float)
    und = lm_xy * 2 + 0.5
    true = np.column_stack([und[:, 0], compress(und[:, 1], und[:, 0])])
    inside = (true[:, 1] > 10) & (true[:, 1] < N - 10)

    def err(r):
        return float(np.sqrt(np.mean(np.sum((r.apply(lm_xy) - true)[inside] ** 2, axis=1))))

    affine = register_lm_em(lm, em, max_compression=0.4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        elastic = register_lm_em(lm, em, max_compression=0.4, elastic=True)
    assert elastic.model.startswith("affine+") and elastic.displacement is not None
    assert err(affine) < 4.0
    assert err(elastic) < 0.8 * err(affine)


def _compressed_along_rows(scale: float, rot: float, shift: tuple[float, float], yc: float, compression):
    """A similarity ``m`` (LM -> EM) and the EM images of LM points on a section then compressed
    along its rows towards ``y = yc`` by ``compression(x)``, a function of the EM column: the
    analytic truth of the cut's model (Al-Amoudi et al. 2005: compression varies across a section)."""
    m = np.array([[scale * math.cos(rot), -scale * math.sin(rot), shift[0]], [scale * math.sin(rot), scale * math.cos(rot), shift[1]]])

    def truth(lm_xy):
        q = lm_xy @ m[:, :2].T + m[:, 2]
        c = compression(q[:, 0])
        return np.column_stack([q[:, 0], yc + (q[:, 1] - yc) * (1 - c)])

    return m, truth


def test_compression_model_is_exact_for_a_compression_varying_linearly_across_the_cut():
    """A section compressed along its rows by ``c(x) = 0.3 + 0.06 (x - xc) / W`` (Al-Amoudi
    et al. 2005: compression varies across a section): no affine maps it, but the cut's
    model (shift along the cut proportional to the distance along it, degree 1 in ``x``)
    reproduces it to a hundredth of a pixel (the affine it starts from is a least-squares
    fit that absorbed part of the bilinear term, so not to rounding), also beyond the
    matched points along the cut."""
    from cryoopt.pipeline.registration.cut_model import _CompressionFit
    from cryoopt.pipeline.registration.hypotheses import _fit

    rng = np.random.default_rng(3)
    w, yc, xc = 400.0, 200.0, 200.0
    m, truth = _compressed_along_rows(2.2, 0.7, (180.0, 210.0), yc, lambda x: 0.3 + 0.06 * (x - xc) / w)

    lm = rng.uniform(-75, 75, (30, 2))
    em = truth(lm)
    affine = _fit(lm, em, [(i, i) for i in range(len(lm))], "affine")
    cf = _CompressionFit.fit(lm, em, affine, 1)
    assert cf is not None and cf.loo_rms < 0.01
    # the affine alone misses by pixels; the model is exact, along the cut beyond the points too
    # points beyond the matched ones along the cut, near the ends of the cut's width
    q_far = np.array([[xc - 100.0, yc + 210.0], [xc + 130.0, yc - 200.0], [xc + 120.0, yc + 200.0]])
    lm_far = np.linalg.solve(m[:, :2], (q_far - m[:, 2]).T).T
    affine_err = np.linalg.norm(lm_far @ affine[:2, :2].T + affine[:2, 2] - truth(lm_far), axis=1)
    assert affine_err.max() > 1.0
    np.testing.assert_allclose(cf(lm_far), truth(lm_far), atol=0.05)
    # and its displacement field inverts it: EM pixel p shows LM point affine^-1 (p + d(p))
    em_far = cf(lm_far)
    back = np.linalg.solve(affine[:2, :2], (em_far + cf.displacement(em_far) - affine[:2, 2]).T).T
    np.testing.assert_allclose(back, lm_far, atol=1e-6)


def test_fiducials_register_a_section_whose_label_the_em_does_not_show():
    """Neuron puncta are invisible in EM, so without common structure registration is
    refused; beads on the section (Kukulski et al. 2011) make it registrable to < 1 px."""
    from cryoopt.sim.datasets import Fiducials, random_clem_pairs

    kw = dict(seeds=(300,), per_specimen=1, rng=7)
    plain = next(random_clem_pairs(("neurons",), **kw))
    beads = next(random_clem_pairs(("neurons",), fiducials=Fiducials(), **kw))
    with pytest.raises(RegistrationError):
        register_lm_em(plain.lm, plain.em, lm_polarity="bright", em_polarity="dark")
    r = register_lm_em(beads.lm, beads.em, lm_polarity="bright", em_polarity="dark")
    assert r.n_matches >= 10
    gy, gx = np.mgrid[20:236:24, 20:236:24]
    lm_xy = np.column_stack([gx.ravel(), gy.ravel()]).astype(float)
    true = beads.lm_to_em(lm_xy)
    inside = ((true >= 0) & (true < beads.em.shape[0])).all(axis=1)
    err = np.linalg.norm(r.apply(lm_xy) - true, axis=1)[inside]
    assert inside.sum() >= 20 and np.sqrt(np.mean(err**2)) < 1.0


def _rippled_section(n_points: int, rng: np.random.Generator, period_frac: float = 0.55):
    """LM points and their EM images on a section compressed along its rows by
    ``c(x) = 0.3 + 0.02 sin(2 pi x / period)`` (a ripple across the cut, two periods over the
    field) under a rotation and scale: the analytic truth of the cut's model."""
    w, yc = 384.0, 191.5
    _, truth = _compressed_along_rows(2.2, 0.9, (192.0, 192.0), yc, lambda x: 0.3 + 0.02 * np.sin(2 * np.pi * x / (period_frac * w)))

    lm = rng.uniform(-80, 80, (n_points, 2))
    return lm, truth(lm), truth


def test_cut_model_follows_a_ripple_across_the_section():
    """Two ripple periods across the field: the affine misses by pixels; the cut's model
    (penalised B-splines across the cut, pieces and roughness chosen by leave-one-out)
    follows it to a third of a pixel between the matched points, noise-free."""
    from cryoopt.pipeline.registration.cut_model import _best_compression_fit
    from cryoopt.pipeline.registration.hypotheses import _fit

    lm, em, truth = _rippled_section(60, np.random.default_rng(5))
    cf = _best_compression_fit(lm, em)
    assert cf is not None
    probe = np.random.default_rng(6).uniform(-60, 60, (200, 2))
    affine = _fit(lm, em, [(i, i) for i in range(len(lm))], "affine")
    affine_err = np.linalg.norm(probe @ affine[:2, :2].T + affine[:2, 2] - truth(probe), axis=1)
    model_err = np.linalg.norm(cf(probe) - truth(probe), axis=1)
    assert np.sqrt(np.mean(affine_err**2)) > 1.0
    assert np.sqrt(np.mean(model_err**2)) < 0.3


def test_matches_a_few_pixels_off_are_dropped_before_the_non_rigid_fit():
    """Two of 40 matches 4 px off (a bead matched to its neighbour's merged spot) among
    matches with 0.2 px localisation noise: exactly those two are dropped."""
    from cryoopt.pipeline.registration.cut_model import _drop_outlier_matches

    rng = np.random.default_rng(8)
    lm, em, _ = _rippled_section(40, rng, period_frac=1.2)
    em = em + rng.normal(0, 0.2, em.shape)
    em[[3, 17]] += np.array([[4.0, 0.0], [0.0, -4.0]])
    kept_lm, _, dropped = _drop_outlier_matches(lm, em)
    assert dropped == 2
    assert not any(np.any(np.all(kept_lm == lm[i], axis=1)) for i in (3, 17))
    # clean matches lose nothing
    _, _, none = _drop_outlier_matches(lm[[i for i in range(40) if i not in (3, 17)]],
                                       np.delete(em, [3, 17], axis=0))
    assert none == 0


@pytest.mark.parametrize("offset_px, accepted", [(0.3, True), (4.0, False)])
def test_matches_outside_localisation_precision_are_refused(offset_px, accepted):
    """Given structure points that a similarity maps onto each other only to ``offset_px``
    (each EM point that far off in a random direction): at 0.3 px the registration is
    accepted, at 4 px (within the match radius, so the chance test alone passes) it is
    refused with an error that says so, not returned pixels wrong."""
    rng = np.random.default_rng(21)
    lm_pts = rng.uniform(10, 118, (14, 2))
    rot, scale = 0.6, 2.5
    m = np.array([[scale * math.cos(rot), -scale * math.sin(rot), 150.0], [scale * math.sin(rot), scale * math.cos(rot), 60.0]])
    ang = rng.uniform(0, 2 * np.pi, len(lm_pts))
    em_pts = lm_pts @ m[:, :2].T + m[:, 2] + offset_px * np.column_stack([np.cos(ang), np.sin(ang)])
    em_pts = np.concatenate([em_pts, rng.uniform(0, 384, (6, 2))])
    lm_img, em_img = rng.normal(size=(128, 128)), rng.normal(size=(384, 384))
    kw = dict(lm_points=lm_pts, em_points=em_pts, match_radius_px=8.0)
    if accepted:
        r = register_lm_em(lm_img, em_img, **kw)
        assert r.scale == pytest.approx(scale, rel=0.01)
    else:
        with pytest.raises(RegistrationError, match="localisation precision"):
            register_lm_em(lm_img, em_img, **kw)


def test_chance_of_matches_counts_the_local_crowd_of_em_points():
    """Six LM points landing within 2.5 px of EM points is strong evidence among EM points
    spread evenly over the field (chance of each ~0.5 %), none where they land inside a
    crowd of 60 points in a 25 px disc (a nucleus's chromatin clumps): there chance matches
    most of them. The test uses each point's local density, not the field's mean."""
    from cryoopt.pipeline.registration.hypotheses import _chance_p_value

    rng = np.random.default_rng(4)
    shape = (384, 384)
    lm = rng.uniform(-10, 10, (8, 2))  # mapped by the identity plus a shift into the crowd
    m = np.array([[1.0, 0, 200.0], [0, 1.0, 200.0], [0, 0, 1.0]])
    spread = rng.uniform(0, 384, (80, 2))
    r = 25 * np.sqrt(rng.uniform(0, 1, 60))
    a = rng.uniform(0, 2 * np.pi, 60)
    crowd = np.concatenate([rng.uniform(0, 384, (20, 2)), np.column_stack([200 + r * np.cos(a), 200 + r * np.sin(a)])])
    assert _chance_p_value(lm, spread, m, shape, 2.5, 6, 100) < 1e-3
    assert _chance_p_value(lm, crowd, m, shape, 2.5, 6, 100) > 1e-2


def _similar_points(n_matched: int, seed: int = 5):
    """``n_matched`` LM points a known similarity maps onto EM points to 0.2 px, among 8 EM
    points that match nothing, and the blank images they stand for."""
    rng = np.random.default_rng(seed)
    lm_pts = rng.uniform(10, 118, (n_matched, 2))
    rot, scale = 1.1, 2.4
    m = np.array([[scale * math.cos(rot), -scale * math.sin(rot), 190.0], [scale * math.sin(rot), scale * math.cos(rot), 40.0]])
    em_pts = lm_pts @ m[:, :2].T + m[:, 2] + rng.normal(0, 0.2, (n_matched, 2))
    em_pts = np.concatenate([em_pts, rng.uniform(0, 384, (8, 2))])
    return rng.normal(size=(128, 128)), rng.normal(size=(384, 384)), lm_pts, em_pts, scale


@pytest.mark.parametrize("n_matched, accepted", [(4, False), (9, False), (16, True)])
def test_section_that_may_have_compressed_needs_matches_to_tell_an_uneven_compression(n_matched, accepted):
    """An affine is pinned down by 3 matches; 4 (one to spare) verify nothing and are refused.
    On a section that may have compressed (``max_compression > 0``) an affine through 9
    matches fits them to their noise yet says nothing of a compression varying across the cut
    away from them: refused, with an error that says so, while 16 are accepted. The same 9
    matches on a section that did not deform are accepted: the refusal is the compression's."""
    lm_img, em_img, lm_pts, em_pts, scale = _similar_points(n_matched)
    kw = dict(lm_points=lm_pts, em_points=em_pts, match_radius_px=8.0, max_compression=0.1)
    if accepted:
        r = register_lm_em(lm_img, em_img, **kw)
        assert r.scale == pytest.approx(scale, rel=0.01) and r.n_matches >= 12
    else:
        with pytest.raises(RegistrationError, match="may have compressed" if n_matched == 9 else "could not register"):
            register_lm_em(lm_img, em_img, **kw)
    if n_matched == 9:
        r = register_lm_em(lm_img, em_img, **{**kw, "max_compression": 0.0})
        assert r.scale == pytest.approx(scale, rel=0.01)


def test_cut_model_recovers_matches_of_an_uneven_compression_and_predicts_held_out_points():
    """A section compressed along its rows by ``c(x) = 0.3 + 0.3 (x - xc) / W`` plus a 3 %
    ripple across the cut: an affine through the matches leaves most of them more than the
    2.5 px localisation precision off (the bilinear term, up to ~17 px at the corners), so
    counted under the affine a right transform matches few there. Grown under the cut's model
    from the matches at the wide radius, the matches at localisation precision are nearly all
    there are, and the model fitted to them predicts structures it never saw: their error is
    the model's prediction error at localisation noise sigma = 0.2 px per axis, about
    ``sigma sqrt(2 (1 + h))`` ~ 0.3 px RMS for leverages h < 0.2 inside the matched points;
    1 px is three times that."""
    from scipy.spatial import cKDTree

    from cryoopt.pipeline.registration.cut_model import CUT_MAX_PIECES, _best_compression_fit, _cut_model_matches
    from cryoopt.pipeline.registration.hypotheses import _fit, _match

    rng = np.random.default_rng(11)
    w, yc, xc = 384.0, 192.0, 192.0
    _, truth = _compressed_along_rows(2.0, 0.9, (180.0, 200.0), yc,
                                      lambda x: 0.3 + 0.3 * (x - xc) / w + 0.03 * np.sin(2 * np.pi * x / 300.0))

    lm_all = rng.uniform(-100, 100, (70, 2))
    em_all = truth(lm_all)
    inside = ((em_all >= 5) & (em_all < w - 5)).all(axis=1)
    lm_all, em_all = lm_all[inside], em_all[inside]
    held = np.arange(len(lm_all)) % 5 == 0  # a fifth never shown to the registration
    n = int((~held).sum())
    lm_pts, em_pts = lm_all[~held], em_all[~held] + rng.normal(0, 0.2, (n, 2))
    affine = _fit(lm_pts, em_pts, [(i, i) for i in range(n)], "affine")
    off = np.linalg.norm(lm_pts @ affine[:2, :2].T + affine[:2, 2] - em_pts, axis=1)
    assert np.mean(off < 2.5) < 0.5  # the affine alone is pixels off at most matches
    em_pts = np.concatenate([em_pts, rng.uniform(0, w, (10, 2))])  # EM structures the LM does not show
    tree = cKDTree(em_pts)
    wide = _match(lm_pts, em_pts, affine, tree, 8.0)
    pairs, n_par = _cut_model_matches(lm_pts, em_pts, wide, tree, (8.0, 8.0, 2.5, 2.5))
    assert len(pairs) >= 0.9 * n and all(i == j for i, j in pairs)  # nearly all, and only the right ones
    assert 6 < n_par <= 6 + 2 * 2 * (CUT_MAX_PIECES + 3)
    cf = _best_compression_fit(lm_pts[[i for i, _ in pairs]], em_pts[[j for _, j in pairs]])
    err = np.linalg.norm(cf(lm_all[held]) - em_all[held], axis=1)
    assert float(np.sqrt(np.mean(err**2))) < 1.0


def test_blocks_verify_and_refine_where_the_lm_shows_a_labelled_subset_of_the_em():
    """An LM that shows 30 of the EM's 60 rods (a labelled subset, blurred): block matching
    brings a hypothesis 4 px off to within a pixel and verifies it against chance; a wrong
    hypothesis (rotated a quarter turn) is not verified."""
    from skimage.draw import ellipse
    from skimage.transform import AffineTransform

    from cryoopt.pipeline.registration_blocks import verify_by_blocks

    rng = np.random.default_rng(3)
    truth = np.array([[2.0 * math.cos(0.5), -2.0 * math.sin(0.5), 60.0], [2.0 * math.sin(0.5), 2.0 * math.cos(0.5), -30.0],
                      [0, 0, 1.0]])  # LM -> EM
    em_s, labelled = np.zeros((256, 256)), np.zeros((256, 256))
    for k in range(60):
        c, theta = rng.uniform(20, 236, 2), rng.uniform(0, math.pi)
        rr, cc = ellipse(c[1], c[0], 3.0, 12.0, shape=em_s.shape, rotation=theta)
        em_s[rr, cc] = 1.0
        if k % 2 == 0:  # labelled: seen in the LM too
            labelled[rr, cc] = 1.0
    lm_s = warp(ndi.gaussian_filter(labelled, 2.0), AffineTransform(matrix=truth), output_shape=(128, 128), order=1)
    em_s = em_s + 0.05 * rng.standard_normal(em_s.shape)
    lm_s = lm_s + 0.02 * rng.standard_normal(lm_s.shape)
    off = truth.copy()
    off[:2, 2] += (3.0, -2.5)
    match, why = verify_by_blocks(lm_s, em_s, [off], n_tried=100, radius=2.5, max_p_value=1e-3, affine=False)
    assert match is not None, why
    grid = np.stack(np.meshgrid(np.arange(0, 128, 16.0), np.arange(0, 128, 16.0)), -1).reshape(-1, 2)
    err = grid @ match.matrix[:2, :2].T + match.matrix[:2, 2] - (grid @ truth[:2, :2].T + truth[:2, 2])
    assert float(np.sqrt(np.mean(np.sum(err**2, axis=1)))) < 1.0
    assert match.p_value < 1e-3
    wrong = truth @ np.array([[0, -1, 128.0], [1, 0, 0], [0, 0, 1]])
    assert verify_by_blocks(lm_s, em_s, [wrong], n_tried=100, radius=2.5, max_p_value=1e-3, affine=False)[0] is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tre_estimate_grows_away_from_the_matches_and_covers_an_unmodelled_curvature(seed):
    """Matches in a 120 px square at one side of a 400 px field, the true map the identity
    plus ``k (x - 80)^2`` along x (a curvature an affine cannot follow), noise 0.15 px per
    axis. The least-squares affine's error at a point is known exactly: ``true(p) - A(p)``.
    240 px beyond the matches it is ~17 px, which the affine's own variance (< 1 px) does not
    see; the estimate, from the error of held-out matches against their distance outside the
    rest, must cover it there and 160 px out. At the matches' centre, where the affine is
    right to its noise, the estimate stays near the least-squares value (below 0.3 px), and
    it grows with the distance from the matches."""
    from cryoopt.pipeline.registration import RegistrationResult
    from cryoopt.pipeline.registration.tre import _linear_refit, _TREEstimate

    rng = np.random.default_rng(seed)
    k = 2e-4

    def true(p):
        return p + np.column_stack([k * (p[:, 0] - 80.0) ** 2, np.zeros(len(p))])

    lm = np.column_stack([rng.uniform(20, 140, 30), rng.uniform(140, 260, 30)])
    em = true(lm) + rng.normal(0, 0.15, lm.shape)
    affine = _linear_refit(lm, em, "affine")
    estimate = _TREEstimate.build("affine", lm, em, affine)
    r = RegistrationResult(affine, 0.0, 1.0, len(lm), 0.0, 0.0, "affine", "points", None, estimate)
    probe = np.array([[80.0, 200.0], [140.0, 200.0], [200.0, 200.0], [300.0, 200.0], [380.0, 200.0]])
    actual = np.linalg.norm(true(probe) - r.apply(probe), axis=1)  # the fit is the identity's neighbour: EM ~ LM here
    est = r.tre_at(true(probe))
    assert actual[-1] > 15.0 and np.all(est[-2:] >= actual[-2:])
    least_squares = np.sqrt(estimate.sigma2 * estimate.leverage(true(probe[:1])))[0]
    assert least_squares <= est[0] < 0.3
    assert np.all(np.diff(est) > 0)
    assert np.isnan(RegistrationResult(affine, 0.0, 1.0, 0, math.nan, math.nan, "coarse").tre_at(probe)).all()


def test_a_spline_through_every_match_still_gets_a_tre_estimate():
    """A thin-plate spline with no smoothing passes through its matches and leaves no residual
    to measure noise by; its estimate takes the noise from the affine's residuals on the same
    matches (an upper bound) instead of giving none. The setting of the test above: beyond the
    matches the spline is 13-17 px off, and the estimate must no longer claim a pixel there,
    growing away from the matches (how far it covers the error varies: a quarter to 1.7 times
    over these seeds)."""
    from cryoopt.pipeline.registration.cut_model import _SplineFit
    from cryoopt.pipeline.registration.tre import _linear_refit, _TREEstimate

    k = 2e-4

    def true(p):
        return p + np.column_stack([k * (p[:, 0] - 80.0) ** 2, np.zeros(len(p))])

    probe = np.array([[80.0, 200.0], [200.0, 200.0], [300.0, 200.0], [380.0, 200.0]])
    for seed in range(6):
        rng = np.random.default_rng(seed)
        lm = np.column_stack([rng.uniform(20, 140, 30), rng.uniform(140, 260, 30)])
        em = true(lm) + rng.normal(0, 0.15, lm.shape)
        spline = _SplineFit.fit(lm, em, 0.0)
        estimate = _TREEstimate.build("spline", lm, em, _linear_refit(lm, em, "affine"), spline)
        assert estimate is not None and estimate.sigma2 >= 0.15**2
        est = estimate(true(probe))
        assert np.linalg.norm(true(probe[-1:]) - spline(probe[-1:])) > 10.0
        assert est[-1] > 3.0 and np.all(np.diff(est) > 0)


def test_a_registration_regridded_to_full_resolution_estimates_its_tre_there():
    """A registration made on 4 x 4 block means, taken to the full grids (scale 4, offset 1.5),
    must give at each full-resolution point the TRE an estimate made on the full grid from the
    same matches gives: the estimate is in pixels, so it scales with the grid, and the point is
    looked up where it lies on the working grid."""
    from cryoopt.pipeline.registration import RegistrationResult
    from cryoopt.pipeline.registration.tre import _linear_refit, _TREEstimate

    rng = np.random.default_rng(0)
    f = 4
    grid = np.array([[f, 0, (f - 1) / 2.0], [0, f, (f - 1) / 2.0], [0, 0, 1.0]])
    lm_full = np.column_stack([rng.uniform(80, 560, 30), rng.uniform(560, 1040, 30)])
    em_full = lm_full + np.column_stack([8e-5 * (lm_full[:, 0] - 320.0) ** 2, np.zeros(30)]) + rng.normal(0, 0.6, lm_full.shape)

    def working(p):
        return (p - (f - 1) / 2.0) / f

    aff_w = _linear_refit(working(lm_full), working(em_full), "affine")
    est_w = _TREEstimate.build("affine", working(lm_full), working(em_full), aff_w)
    reg_w = RegistrationResult(aff_w, 0.0, 1.0, 30, 0.1, 0.2, "affine", "points", None, est_w)
    full = reg_w.regridded(grid, grid)
    direct = _TREEstimate.build("affine", lm_full, em_full, _linear_refit(lm_full, em_full, "affine"))
    probe = np.array([[320.0, 800.0], [700.0, 800.0], [1500.0, 800.0]])
    np.testing.assert_allclose(full.tre_at(probe), direct(probe), rtol=1e-6)
    assert full.tre_at(probe)[-1] > 3 * full.tre_at(probe)[0]
    np.testing.assert_allclose(full.apply(lm_full[:3]), reg_w.apply(working(lm_full[:3])) * f + (f - 1) / 2.0, atol=1e-9)
    assert full.tre_px == pytest.approx(0.2 * f) and full.fre_px == pytest.approx(0.1 * f)


def test_alike_objects_are_the_identical_beads_among_structures_of_every_size_and_contrast():
    """30 identical objects (contrast and area within 20 % and 15 %: noise on one bead) among 40
    structures spread log-uniformly over contrast 5-300 and area 5-3000 px: the group is the
    beads, few structures join it; with fewer objects than a group needs there is none."""
    from cryoopt.pipeline.registration.points import MIN_ALIKE_OBJECTS, _alike_objects

    rng = np.random.default_rng(3)
    beads = np.column_stack([np.log(20.0) + rng.uniform(-0.2, 0.2, 30), np.log(30.0) + rng.uniform(-0.15, 0.15, 30)])
    other = np.column_stack([rng.uniform(np.log(5.0), np.log(300.0), 40), rng.uniform(np.log(5.0), np.log(3000.0), 40)])
    group = _alike_objects(np.concatenate([beads, other]))
    assert group is not None
    assert np.sum(group < 30) == 30 and np.sum(group >= 30) <= 4
    assert _alike_objects(other[: MIN_ALIKE_OBJECTS - 1]) is None


def _bead_sections():
    """Two simulated neuron sections with fiducial beads (specimen seeds 400 and 401): in the
    first, beads lie among the EM's crowded structures and the LM's brighter label puncta."""
    from cryoopt.sim.datasets import Fiducials, random_clem_pairs

    *_, crowded = random_clem_pairs(("neurons",), seeds=(400,), per_specimen=2, fiducials=Fiducials(), rng=7)
    other = next(random_clem_pairs(("neurons",), seeds=(401,), per_specimen=1, fiducials=Fiducials(), rng=7))
    return crowded, other


def test_beads_among_crowded_structures_register_and_unrelated_bead_fields_are_refused():
    """The structures' search on this section matched 13 points, no better than chance among
    the crowd (refused, p = 1, before the beads were searched on their own); its beads register
    it below a pixel at the labelled targets. An LM of one section against the EM of another,
    both with beads, must still be refused: the beads' search counts every transform it tries."""
    crowded, other = _bead_sections()
    r = register_lm_em(crowded.lm, crowded.em, lm_polarity="bright", em_polarity="dark")
    assert r.method == "beads" and r.n_matches >= 15
    t = crowded.target_points_em()
    lm_xy = np.linalg.solve(crowded.lm_affine, np.column_stack([t, np.ones(len(t))]).T).T[:, :2]
    assert len(t) >= 5 and np.sqrt(np.mean(np.sum((r.apply(lm_xy) - t) ** 2, axis=1))) < 1.0
    with pytest.raises(RegistrationError, match="could not register"):
        register_lm_em(crowded.lm, other.em, lm_polarity="bright", em_polarity="dark")


def _beads_by_membranes(seed: int = 0, n: int = 256, radius_px: float = 1.7) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic EM: 64 dark beads 3.4 px across (0.2 um at 60 nm per pixel) on a grid, among
    14 dark membranes 3 px wide, Gaussian blur and noise."""
    from skimage.draw import line

    from cryoopt.sim.datasets import _paint_discs

    rng = np.random.default_rng(seed)
    membranes = np.zeros((n, n), bool)
    for r0, c0, r1, c1 in rng.integers(0, n, (14, 4)):
        membranes[line(r0, c0, r1, c1)] = True
    img = 1.0 - 0.35 * ndi.binary_dilation(membranes)
    g = np.arange(24, n - 24, 26.0)
    beads = np.array([(x, y) for x in g for y in g]) + rng.uniform(-4, 4, (len(g) ** 2, 2))
    img = img - 0.6 * _paint_discs((n, n), beads, radius_px)
    return ndi.gaussian_filter(img, 0.7) + rng.normal(0, 0.04, (n, n)), beads


def test_small_dark_beads_by_membranes_are_found_without_the_membranes_closing():
    """Beads a few pixels across: the membranes' closing (a disc 5 px across) erases them, so at
    the beads' size the old re-detection found under half of them and a group half membrane
    fragments; without it the beads' group is beads only and holds most of them."""
    from scipy.spatial import cKDTree

    from cryoopt.pipeline.registration.points import BEAD_TOPHAT_DIAMETERS, BEAD_Z, _alike_objects, _bead_points, \
        _compact_objects, _points_and_features

    img, beads = _beads_by_membranes()
    _, feat = _points_and_features(img, None, "dark")

    def hits_and_others(found: np.ndarray) -> tuple[int, int]:
        return int(np.sum(cKDTree(found).query(beads)[0] <= 2.0)), int(np.sum(cKDTree(beads).query(found)[0] > 2.0))

    found = _bead_points(img, "dark", feat)
    assert found is not None
    hits, others = hits_and_others(found)
    assert hits >= 0.6 * len(beads) and others <= 2
    # the same re-detection with the membranes' closing (the code before): fewer beads, more others
    group = _alike_objects(feat)
    d = 2.0 * math.sqrt(float(np.median(np.exp(feat[group, 1]))) / math.pi)
    p, f = _compact_objects(img, polarity="dark", max_diameter_px=BEAD_TOPHAT_DIAMETERS * d, z=BEAD_Z, line_width_px=2.0)
    old_hits, old_others = hits_and_others(p[_alike_objects(f)])
    assert old_hits < 0.5 * len(beads) and old_others > 10
