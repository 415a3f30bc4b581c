"""The envs' ``"sim"`` imaging physics forms its images with ``cryoopt.sim.imaging``, so a good
protocol images measurably better than a bad one.

Good and bad setpoints are chosen from the physics, not from the images:

- staining: 1:100 antibody for 60 min with 3 washes labels most sites and clears the
  free antibody; 1:2000 for 3 min without washes binds few sites and leaves the bath's
  free antibody in the cells (unspecific background) (:func:`cryoopt.sim.fast.fast_staining`);
- sectioning: 90 nm at 1 mm/s and -150 degC is inside the CEMOVIS window; 200 nm at
  1.6 mm/s and -158 degC cracks (crevasses grow with thickness and cold, Al-Amoudi et
  al. 2005), which :class:`SimImaging` images as rows without material.

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
from cryoopt.pipeline.metrics import contrast_to_noise_ratio
from cryoopt.pipeline.parser import ThresholdSegmenter
from cryoopt.sim.diffusion import TissueProperties

GOOD_CUT = {"section_thickness_nm": 90.0, "cutting_speed_mm_s": 1.0, "specimen_temperature_c": -150.0,
            "knife_temperature_c": -150.0, "chamber_temperature_c": -150.0}
BAD_CUT = dict(GOOD_CUT, section_thickness_nm=200.0, cutting_speed_mm_s=1.6, specimen_temperature_c=-158.0)
GOOD_STAIN = {"dilution": 100.0, "time_min": 60.0, "temperature_c": 25.0, "wash_cycles": 3}
BAD_STAIN = {"dilution": 2000.0, "time_min": 3.0, "temperature_c": 15.0, "wash_cycles": 0}
SEEDS = (0, 1, 2)
N = 192


def _section(cut: dict, stain: dict, seed: int, preset: str = "tissue_block") -> dict:
    rng = np.random.default_rng(seed)
    sec = SimSectioning().cut(dict(cut, knife_wear=1), rng)
    sec["section_index"] = 0
    step = {"reagent": "PRIMARY", **stain}
    sec.update(SimStaining(tissue=TissueProperties.from_preset(preset)).run([step], rng, section=sec))
    return sec


def _lm(sample: dict, seed: int) -> tuple[float, float]:
    phys = SimImaging(preset="tissue_block", specimen_seed=seed)
    img = phys.acquire({"modality": "LM", "image_size_px": N}, np.random.default_rng(seed), sample=sample).astype(float)
    truth = phys.last_truth
    tgt = truth.target_density > 0
    cnr = contrast_to_noise_ratio(img, tgt, ~tgt)
    label = ThresholdSegmenter("bright", sigma_px=1.0, min_area_px=4).segment(img) > 0
    logic = LogicConsistencyEvaluator().evaluate(Evidence(label_masks=[label], target_masks=[tgt]))["logic"].value
    return cnr, logic


def _em(sample: dict, seed: int) -> float:
    phys = SimImaging(preset="tissue_block", specimen_seed=seed)
    img = phys.acquire({"modality": "EM", "image_size_px": N}, np.random.default_rng(seed), sample=sample).astype(float)
    t = phys.last_truth
    structures = t.mitochondria | t.membranes
    return contrast_to_noise_ratio(img, structures, (t.cells > 0) & ~structures & ~t.nuclei)


def test_good_staining_gives_higher_lm_cnr_and_logic_than_bad_on_every_seed():
    for seed in SEEDS:
        good, bad = _section(GOOD_CUT, GOOD_STAIN, seed), _section(GOOD_CUT, BAD_STAIN, seed)
        assert good["ribbon_ok"] and bad["ribbon_ok"]
        assert good["label_intensity"] > 3 * bad["label_intensity"] and bad["background"] > good["background"]
        (cnr_g, logic_g), (cnr_b, logic_b) = _lm(good, seed), _lm(bad, seed)
        assert cnr_g > 2 * cnr_b, (seed, cnr_g, cnr_b)
        assert logic_g > logic_b + 0.2, (seed, logic_g, logic_b)
        assert logic_g > 0.5


def test_good_sectioning_gives_higher_em_cnr_than_bad_on_every_seed():
    for seed in SEEDS:
        good, bad = _section(GOOD_CUT, GOOD_STAIN, seed), _section(BAD_CUT, GOOD_STAIN, seed)
        assert bad["crack_density_per_um"] > 5 * good["crack_density_per_um"]
        cnr_g, cnr_b = _em(good, seed), _em(bad, seed)
        assert cnr_g > 1.2 * cnr_b, (seed, cnr_g, cnr_b)


def test_label_follows_the_staining_result_on_the_targets():
    sample = _section(GOOD_CUT, GOOD_STAIN, 0)
    phys = SimImaging(preset="tissue_block", specimen_seed=0)
    rng = np.random.default_rng(0)
    lo = phys.acquire({"modality": "LM", "image_size_px": N}, rng, sample=dict(sample, label_intensity=0.2, background=0.0))
    hi = phys.acquire({"modality": "LM", "image_size_px": N}, rng, sample=dict(sample, label_intensity=0.8, background=0.0))
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
