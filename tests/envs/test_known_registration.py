"""The known LM -> EM transform of a simulated bench is the simulator's own geometry: an LM pixel
maps to the EM pixel that images the same specimen point."""

from __future__ import annotations

import numpy as np

from cryoopt.envs.clem import CLEMProtocolEnv, centred_lm_to_em


def test_centred_fields_map_middle_to_middle_and_scale_by_the_pixel_ratio() -> None:
    m = centred_lm_to_em(64, 128, 100.0, 10.0)
    assert np.allclose(m @ [31.5, 31.5, 1.0], [63.5, 63.5, 1.0])  # field middles coincide
    assert np.allclose(m @ [32.5, 31.5, 1.0] - m @ [31.5, 31.5, 1.0], [10.0, 0.0, 0.0])  # one LM px = 10 EM px


def test_known_matrix_is_the_simulators_pixel_geometry() -> None:
    env = CLEMProtocolEnv(scenario="bead_calibration", structures="known", registration="known", image_size=64,
                          backend="direct")
    try:
        env.reset(seed=0, options={"specimen_seed": 7})
        scope, sample = env.chain.physics["microscope"], {"section_index": 3, "actual_thickness_nm": 90.0}
        lm_px, em_px = env.chain.pixel_size_nm("LM"), env.chain.pixel_size_nm("EM")
        lm = scope.truth(sample, size=64, pixel_size_nm=lm_px, organelles=False)
        em = scope.truth(sample, size=64, pixel_size_nm=em_px)
        # (x, y, 1) pixel -> specimen nm for each field; LM px -> EM px through the specimen
        through_specimen = np.linalg.inv(em.affine) @ lm.affine
        assert np.allclose(centred_lm_to_em(64, 64, lm_px, em_px), through_specimen, atol=1e-6)
    finally:
        env.close()
