"""The envs' ``"sim"`` physics forms its images with ``cryoopt.sim``, so protocols image as physics says.

Good and bad setpoints are chosen from the physics, not from the images:

- staining: 1:100 primary for 30 min with 3 washes labels most sites and washes most of the
  non-specific background off; 1:1000 for 5 min binds few sites
  (:func:`cryoopt.sim.fast.fast_staining`, :func:`cryoopt.sim.labelling.nonspecific_label_um`);
- sectioning: 70 nm at 0.8 mm/s at the best Tokuyasu temperature for 70 nm (-117 C) against
  the same feed 10 C too cold, where crevasses open (:mod:`cryoopt.sim.sectioning`), which
  :class:`SimImaging` images as gaps without material.

CNR is ``|mu_target - mu_bg| / sigma_bg`` on the ground-truth masks
(:func:`cryoopt.pipeline.metrics.contrast_to_noise_ratio`); logic is the F1 of the
segmented label (Otsu, :class:`~cryoopt.pipeline.parser.ThresholdSegmenter`) against the
labelled targets (:class:`~cryoopt.pipeline.evaluators.LogicConsistencyEvaluator`).
"""

from __future__ import annotations

import numpy as np
import pytest

from cryoopt.instruments.simulated.sim_physics import SimImaging, SimSectioning, SimStaining
from cryoopt.pipeline.evaluators import Evidence, LogicConsistencyEvaluator
from cryoopt.pipeline.metrics import contrast_to_noise_ratio, frc_resolution, local_contrast_to_noise_ratio, section_defects
from cryoopt.pipeline.parser import ThresholdSegmenter
from cryoopt.sim.diffusion import TissueProperties
from cryoopt.sim.sectioning import optimal_cutting_temperature_c

BEST = optimal_cutting_temperature_c(70.0)
GOOD_CUT = {"section_thickness_nm": 70.0, "cutting_speed_mm_s": 0.8, "specimen_temperature_c": BEST,
            "knife_temperature_c": BEST, "chamber_temperature_c": BEST}
COLD_CUT = dict(GOOD_CUT, specimen_temperature_c=BEST - 10.0, knife_temperature_c=BEST - 10.0)
GOOD_STAIN = {"dilution": 100.0, "time_min": 30.0, "temperature_c": 22.0, "wash_cycles": 3}
BAD_STAIN = {"dilution": 1000.0, "time_min": 5.0, "temperature_c": 15.0, "wash_cycles": 0}
SEEDS = (0, 1, 2)
N = 128
LM = {"modality": "LM", "image_size_px": N, "exposure_ms": 100.0, "gain": 8.0}
EM = {"modality": "EM", "image_size_px": N, "exposure_ms": 100.0, "gain": 8.0}


def _section(cut: dict, stain: dict, seed: int, preset: str = "neurons", **sample: float) -> dict:
    rng = np.random.default_rng(seed)
    sec = SimSectioning().cut(dict(cut, knife_wear=1), rng)
    sec["section_index"] = 0
    step = {"reagent": "PRIMARY", **stain}
    sec.update(SimStaining(tissue=TissueProperties.from_preset(preset)).run([step], rng, section=sec))
    sec.update(sample)
    return sec


def _lm(sample: dict, seed: int) -> tuple[float, float]:
    phys = SimImaging(preset="neurons", specimen_seed=seed)
    img = phys.acquire(LM, np.random.default_rng(seed), sample=sample).astype(float)
    tgt = phys.last_truth.target_density > 0
    cnr = contrast_to_noise_ratio(img, tgt, ~tgt)
    label = ThresholdSegmenter("bright", sigma_px=1.0, min_area_px=4).segment(img) > 0
    logic = LogicConsistencyEvaluator().evaluate(Evidence(label_masks=[label], target_masks=[tgt]))["logic"].value
    return cnr, logic


def _em(sample: dict, seed: int, **settings: float) -> tuple[float, float, float]:
    """(local EM CNR of the cells, FRC resolution nm, detected crack fraction) of one EM image."""
    phys = SimImaging(preset="neurons", specimen_seed=seed)
    img = phys.acquire(dict(EM, **settings), np.random.default_rng(seed), sample=sample).astype(float)
    t = phys.last_truth
    cnr = local_contrast_to_noise_ratio(img, t.cells > 0, gap_px=5, width_px=25)  # the pipeline's 50-300 nm band
    return cnr, frc_resolution(img, pixel_size_nm=10.0), section_defects(img).crack_fraction


def test_good_staining_gives_higher_lm_cnr_and_logic_than_bad_on_every_seed():
    for seed in SEEDS:
        good, bad = _section(GOOD_CUT, GOOD_STAIN, seed), _section(GOOD_CUT, BAD_STAIN, seed)
        assert good["ribbon_ok"] and bad["ribbon_ok"]
        assert good["label_intensity"] > 3 * bad["label_intensity"]
        (cnr_g, logic_g), (cnr_b, logic_b) = _lm(good, seed), _lm(bad, seed)
        assert cnr_g > 2 * cnr_b, (seed, cnr_g, cnr_b)
        assert logic_g > logic_b, (seed, logic_g, logic_b)


def test_background_from_a_concentrated_primary_lowers_lm_cnr():
    for seed in SEEDS:
        usual = _section(GOOD_CUT, GOOD_STAIN, seed)
        strong = _section(GOOD_CUT, dict(GOOD_STAIN, dilution=20.0, wash_cycles=0), seed)
        assert strong["background_um"] > 4 * usual["background_um"]
        assert _lm(strong, seed)[0] < _lm(usual, seed)[0]


def test_em_field_stays_on_a_labelled_structure_with_surroundings_through_the_series():
    for seed in SEEDS:
        phys = SimImaging(preset="neurons", specimen_seed=seed)
        depth = 0.0
        for k, t in enumerate((70.0, 70.0, 100.0, 50.0, 90.0, 70.0, 120.0, 70.0)):
            sample = {"section_index": k, "actual_thickness_nm": t, "depth_nm": depth}
            truth = phys.truth(sample, size=N, pixel_size_nm=10.0)
            depth += t
            cells = float((truth.cells > 0).mean())
            assert 0.05 < cells < 0.95, (seed, k, cells)  # a cell edge in every field: EM contrast is measurable
            lm = phys.truth(sample, size=N, pixel_size_nm=100.0)
            assert lm.targets.any()  # the labelled structure is in the section


def test_a_cold_block_gives_cracked_sections_the_metrics_see():
    good_cracks, cold_cracks = [], []
    for seed in SEEDS:
        good, cold = _section(GOOD_CUT, GOOD_STAIN, seed), _section(COLD_CUT, GOOD_STAIN, seed)
        assert cold["crack_density_per_um"] > 5 * good["crack_density_per_um"]
        good_cracks.append(_em(good, seed)[2])
        cold_cracks.append(_em(cold, seed)[2])
    assert np.mean(cold_cracks) > 0.01 > np.mean(good_cracks)  # gaps without material, bright in the EM image


def test_thicker_sections_give_more_em_contrast_and_coarser_resolution():
    cnr, res = {}, {}
    for t in (50.0, 120.0):
        values = [_em(_section(dict(GOOD_CUT, section_thickness_nm=t, specimen_temperature_c=optimal_cutting_temperature_c(t),
                                    knife_temperature_c=optimal_cutting_temperature_c(t)), GOOD_STAIN, s, chatter=0.0,
                              knife_marks=0, crack_density_per_um=0.0), s) for s in SEEDS]
        cnr[t], res[t] = np.mean([v[0] for v in values]), np.mean([v[1] for v in values])
    assert cnr[120.0] > 1.3 * cnr[50.0]  # Beer-Lambert: more material, more contrast
    assert res[120.0] > 1.2 * res[50.0]  # overlap through the section: coarser FRC resolution


def test_em_gain_trades_converter_noise_against_saturation():
    sample = _section(GOOD_CUT, GOOD_STAIN, 0, chatter=0.0, knife_marks=0, crack_density_per_um=0.0)
    cnr = {g: _em(sample, 0, gain=g)[0] for g in (1.0, 4.0, 8.0)}
    assert cnr[4.0] > 1.2 * cnr[1.0]  # low gain: converter noise
    phys = SimImaging(preset="neurons", specimen_seed=0)
    phys.acquire(dict(EM, gain=64.0), np.random.default_rng(0), sample=sample)
    assert phys.last_acquisition["saturated_fraction"] > 0.9  # high gain: the image saturates, its contrast is lost


def test_charging_accumulates_with_dose_over_the_block_and_bleaching_with_lm_light():
    phys = SimImaging(preset="neurons", specimen_seed=0)
    rng = np.random.default_rng(0)
    charge, effective = [], []
    for k in range(5):
        sample = _section(GOOD_CUT, GOOD_STAIN, k, section_index=k, depth_nm=70.0 * k)
        phys.acquire(dict(EM, exposure_ms=200.0), rng, sample=sample)
        charge.append(phys.last_acquisition["charge_e_per_px"])
        phys.acquire(dict(LM, exposure_ms=200.0), rng, sample=sample)
        effective.append(phys.last_acquisition["effective_exposure_ms"])
    assert np.all(np.diff(charge) > 0) and charge[-1] > 2 * charge[0]
    assert phys.last_acquisition["modality"] == 0.0 and np.all(np.diff(effective) < 0)
    # a preview (rendering) leaves nothing behind
    before = phys.charge_e(9, 0.0)
    phys.acquire(dict(EM, exposure_ms=200.0, preview=True), rng, sample=dict(sample, section_index=9))
    assert phys.charge_e(9, 0.0) == before


def test_label_follows_the_staining_result_on_the_targets():
    sample = _section(GOOD_CUT, GOOD_STAIN, 0)
    phys = SimImaging(preset="neurons", specimen_seed=0, lm_autofluorescence_per_ms=0.0)  # label and stray light only
    rng = np.random.default_rng(0)
    lo = phys.acquire(LM, rng, sample=dict(sample, label_intensity=0.2, background_um=0.0, section_index=0))
    hi = phys.acquire(LM, rng, sample=dict(sample, label_intensity=0.8, background_um=0.0, section_index=0))
    tgt = phys.last_truth.target_density > 0.5
    offset = np.median(lo[~tgt].astype(float))
    ratio = (hi[tgt].mean() - offset) / (lo[tgt].mean() - offset)
    assert ratio == pytest.approx(4.0, rel=0.15)  # photons are linear in the bound label density


def test_em_stain_contrast_comes_from_ua_and_lead_steps():
    st = SimStaining()
    sec = {"actual_thickness_nm": 90.0}
    assert "em_stain_contrast" not in st.run([{"reagent": "PRIMARY", "dilution": 100, "time_min": 30}], None, section=sec)
    std = st.run([{"reagent": "UA", "time_min": 10}, {"reagent": "LEAD", "time_min": 5}], None, section=sec)
    assert std["em_stain_contrast"] == pytest.approx(1.0)
    short = st.run([{"reagent": "UA", "time_min": 1}], None, section=sec)
    assert short["em_stain_contrast"] < 0.2
