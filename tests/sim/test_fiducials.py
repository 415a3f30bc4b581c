"""Opt-in fiducial beads on simulated CLEM pairs; the default output must not change."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from cryoopt.exceptions import CryoOptError
from cryoopt.sim.datasets import Fiducials, random_clem_pairs

#: sha256 of the default pairs below without fiducials: cached benchmark inputs depend on
#: the default output staying bit-identical (re-pinned when nuclei gained their envelope,
#: pores and chromatin in the EM density; the fiducials still change nothing by default)
DEFAULT_PAIRS_SHA256 = "91e39133516831785e5611882ac20d00ba4c35666399b7a44a6d204b20fc6316"


def _digest(fiducials=None) -> str:
    h = hashlib.sha256()
    kw = {} if fiducials is None else {"fiducials": fiducials}
    for p in random_clem_pairs(("neurons", "tissue_block"), seeds=(5,), per_specimen=1, em_size=96, lm_size=64, rng=3, **kw):
        for a in (p.em, p.lm, p.lm_affine):
            h.update(np.ascontiguousarray(a).tobytes())
    for p in random_clem_pairs(("tissue_block",), seeds=(5,), per_specimen=1, em_size=96, lm_size=64, compression=(0.2, 0.4),
                               rng=4, **kw):
        for a in (p.em, p.lm, p.lm_affine):
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def test_default_pairs_are_bit_identical_to_before_fiducials():
    assert _digest() == DEFAULT_PAIRS_SHA256
    assert _digest(Fiducials()) != DEFAULT_PAIRS_SHA256


def test_beads_pair_up_with_the_pairs_without_them_and_show_in_both_images():
    kw = dict(seeds=(5,), per_specimen=3, em_size=128, lm_size=96, rng=11)
    plain = list(random_clem_pairs(("neurons",), **kw))
    beads = list(random_clem_pairs(("neurons",), fiducials=Fiducials(density_per_um2=0.2), **kw))
    for a, b in zip(plain, beads):
        np.testing.assert_array_equal(a.lm_affine, b.lm_affine)  # the same field and pose
        assert len(a.fiducials_lm) == 0 and len(b.fiducials_lm) > 0
        # at the beads: brighter in LM (fluorescent), darker in EM (electron dense)
        lm_px = np.round(b.fiducials_lm).astype(int)
        ok = ((lm_px >= 2) & (lm_px < b.lm.shape[0] - 2)).all(axis=1)
        lm_px = lm_px[ok]
        assert np.mean(b.lm[lm_px[:, 1], lm_px[:, 0]] - a.lm[lm_px[:, 1], lm_px[:, 0]]) > 100.0
        em_px = np.round(b.lm_to_em(b.fiducials_lm)).astype(int)
        ok = ((em_px >= 0) & (em_px < b.em.shape[0])).all(axis=1)
        em_px = em_px[ok]
        assert len(em_px) >= 3
        assert np.mean(b.em[em_px[:, 1], em_px[:, 0]]) < 0.8 * np.mean(a.em[em_px[:, 1], em_px[:, 0]])


def test_bead_density_follows_the_setting():
    """Poisson count over the area the beads are scattered on."""
    fid = Fiducials(density_per_um2=0.5)
    xy = fid.scatter((0.0, 0.0), 10_000.0, np.random.default_rng(0))  # 20 x 20 um
    assert abs(len(xy) - 200) < 4 * np.sqrt(200)
    assert np.all(np.abs(xy) <= 10_000.0)


def test_bad_fiducial_settings_are_refused_with_the_parameter_named():
    with pytest.raises(CryoOptError, match="density_per_um2"):
        Fiducials(density_per_um2=-1.0)
    with pytest.raises(CryoOptError, match="diameter_nm"):
        Fiducials(diameter_nm=0.0)
