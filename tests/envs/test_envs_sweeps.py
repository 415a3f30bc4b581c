"""Sweeps from the expert protocol, one parameter at a time: each goes in the physical direction.

Every parameter of the outer loop's block space (and wash cycles and the knife temperature)
is swept through the bench's physics (:mod:`cryoopt.instruments.simulated.sim_physics`) and
the quantity physics says it moves is checked for the direction (sources in
:mod:`cryoopt.sim.sectioning`, :mod:`cryoopt.sim.labelling`, :mod:`cryoopt.sim.imaging`). The
last test runs the whole env: no parameter leaves block quality flat over its range.
"""

from __future__ import annotations

import numpy as np
import pytest

from cryoopt.agents import EXPERT_PROTOCOL
from cryoopt.instruments.simulated.sim_physics import SimImaging, SimSectioning, SimStaining
from cryoopt.loop import DEFAULT_BLOCK_SPACE
from cryoopt.pipeline.metrics import frc_resolution, local_contrast_to_noise_ratio
from cryoopt.sim.diffusion import TissueProperties

EXPERT = dict(EXPERT_PROTOCOL)
TISSUE = TissueProperties.from_preset("neurons")


def _cuts(n: int = 200, **change: float) -> list[dict]:
    sp = {k: EXPERT[k] for k in ("section_thickness_nm", "cutting_speed_mm_s", "specimen_temperature_c", "knife_temperature_c",
                                 "chamber_temperature_c")}
    sp.update(change)
    out = []
    for i in range(n):  # a fresh edge and block per cut: the setpoints' own effect
        out.append(SimSectioning().cut(dict(sp, knife_wear=1), np.random.default_rng(i)))
    return out


def _mean(cuts: list[dict], key: str) -> float:
    return float(np.mean([float(c.get(key, 0.0)) for c in cuts]))


def _fail(cuts: list[dict]) -> float:
    return float(np.mean([not c["ribbon_ok"] for c in cuts]))


def _stain(**change: float) -> dict:
    step = {"reagent": "PRIMARY", "dilution": EXPERT["dilution"], "time_min": EXPERT["time_min"],
            "temperature_c": EXPERT["temperature_c"], "wash_cycles": int(EXPERT["wash_cycles"])}
    step.update(change)
    return SimStaining(tissue=TISSUE).run([step], None, section={"actual_thickness_nm": EXPERT["section_thickness_nm"]})


_PHYS: dict[int, SimImaging] = {}


def _image(modality: str, seed: int = 0, thickness: float = 70.0, **settings: float) -> tuple[np.ndarray, SimImaging]:
    sample = {"section_index": 0, "actual_thickness_nm": thickness, "depth_nm": 0.0, "label_intensity": 0.8,
              "background_um": 0.2}
    phys = SimImaging(preset="neurons", specimen_seed=seed)
    full = {"modality": modality, "image_size_px": 96, "exposure_ms": EXPERT["exposure_ms"], "gain": EXPERT["gain"],
            "focus_um": EXPERT["focus_um"], **settings}
    return phys.acquire(full, np.random.default_rng(seed), sample=sample).astype(float), phys


def test_every_block_space_parameter_has_a_sweep_here() -> None:
    swept = {"section_thickness_nm", "cutting_speed_mm_s", "specimen_temperature_c", "dilution", "time_min", "temperature_c",
             "exposure_ms", "gain", "focus_um"}
    assert set(DEFAULT_BLOCK_SPACE) == swept


def test_thickness_thicker_sections_give_more_em_contrast_coarser_resolution_and_more_lm_signal() -> None:
    contrast, res, lm = [], [], []
    for t in (50.0, 85.0, 120.0):
        em, phys = _image("EM", thickness=t, gain=8.0)
        cells = phys.last_truth.cells > 0
        contrast.append(local_contrast_to_noise_ratio(em, cells, gap_px=5, width_px=25))
        res.append(frc_resolution(em, pixel_size_nm=10.0))
        lm.append(_image("LM", thickness=t)[0].mean())
    assert contrast == sorted(contrast) and res[-1] > res[0] and lm == sorted(lm)


def test_cutting_speed_faster_cuts_chatter_more_and_too_slow_ones_stick() -> None:
    chatter = [_mean(_cuts(cutting_speed_mm_s=v), "chatter") for v in (0.5, 1.0, 2.0)]
    assert chatter == sorted(chatter) and chatter[-1] > 2 * chatter[0]
    assert _fail(_cuts(cutting_speed_mm_s=0.15)) > 2 * _fail(_cuts(cutting_speed_mm_s=0.6))


def test_specimen_temperature_colder_cracks_warmer_compresses_smears_and_fails() -> None:
    cold, best, warm = (_cuts(specimen_temperature_c=t, knife_temperature_c=t) for t in (-127.0, -117.0, -108.0))
    assert _mean(cold, "crack_density_per_um") > 3 * _mean(best, "crack_density_per_um")
    assert _mean(warm, "compression") > _mean(best, "compression") and _mean(warm, "smear_nm") > 5 * max(_mean(best, "smear_nm"), 1.0)
    assert _fail(warm) > 3 * _fail(best)


def test_knife_temperature_far_from_the_block_makes_sections_stick() -> None:
    assert _fail(_cuts(knife_temperature_c=-95.0)) > 3 * _fail(_cuts())


def test_dilution_more_dilute_less_label_and_less_background() -> None:
    runs = [_stain(dilution=d) for d in (20.0, 100.0, 1000.0)]
    assert [r["label_intensity"] for r in runs] == sorted((r["label_intensity"] for r in runs), reverse=True)
    assert [r["background_um"] for r in runs] == sorted((r["background_um"] for r in runs), reverse=True)


def test_time_longer_incubation_more_label_and_more_background() -> None:
    runs = [_stain(time_min=t) for t in (5.0, 30.0, 120.0)]
    assert [r["label_intensity"] for r in runs] == sorted(r["label_intensity"] for r in runs)
    assert [r["background_um"] for r in runs] == sorted(r["background_um"] for r in runs)


def test_temperature_warmer_incubation_binds_faster() -> None:
    runs = [_stain(temperature_c=t, time_min=10.0) for t in (15.0, 22.0, 37.0)]
    assert [r["label_intensity"] for r in runs] == sorted(r["label_intensity"] for r in runs)


def test_wash_cycles_more_washes_less_background_same_label() -> None:
    runs = [_stain(wash_cycles=n) for n in (0, 3, 6)]
    assert [r["background_um"] for r in runs] == sorted((r["background_um"] for r in runs), reverse=True)
    assert runs[-1]["label_intensity"] == pytest.approx(runs[0]["label_intensity"], rel=0.01)  # specific label stays


def test_exposure_longer_more_dose_more_charge_and_bleaching() -> None:
    dose, charge, effective = [], [], []
    for e in (25.0, 100.0, 200.0):
        _, phys = _image("EM", exposure_ms=e)
        dose.append(phys.last_acquisition["dose_e_per_px"])
        charge.append(phys.last_acquisition["charge_e_per_px"])
        _, phys = _image("LM", exposure_ms=e)
        effective.append(phys.last_acquisition["effective_exposure_ms"] / e)
    assert dose == sorted(dose) and charge == sorted(charge)
    assert effective == sorted(effective, reverse=True)  # photons per ms fall as the dye bleaches


def test_gain_low_gain_noisy_high_gain_saturated() -> None:
    sat = []
    for g in (1.0, 8.0, 64.0):
        _, phys = _image("LM", gain=g, exposure_ms=200.0)
        sat.append(phys.last_acquisition["saturated_fraction"])
    assert sat[0] == 0.0 and sat[-1] > sat[1]
    lo, _ = _image("LM", gain=1.0)
    hi, _ = _image("LM", gain=8.0)
    # input-referred noise of the background (the converter's 40 ADU) shrinks with gain
    assert np.std(lo[:16, :16]) / 1.0 > np.std(hi[:16, :16]) / 8.0


def test_focus_defocus_widens_the_lm_psf() -> None:
    peak = []
    for dz in (0.0, 1.0, 2.0):
        img, phys = _image("LM", focus_um=dz, gain=8.0)
        tgt = phys.last_truth.target_density > 0.5
        peak.append(float(img[tgt].mean() - np.median(img[~tgt])))
    assert peak == sorted(peak, reverse=True) and peak[-1] < 0.7 * peak[0]


def test_warm_and_long_incubations_extract_more_of_the_thawed_section() -> None:
    # 1 - exp(-t / 600 min) at 20 C (5 % in 30 min), Arrhenius with 50 kJ/mol (Liou, Geuze & Slot 1996: thawed
    # sections lose material while they are labelled; the time constant is the model's)
    at20 = _stain(temperature_c=20.0, time_min=27.0)["extraction"]  # 27 min + 3 washes of 1 min = 30 min thawed
    assert at20 == pytest.approx(-np.expm1(-30.0 / 600.0), rel=1e-6)
    at37 = _stain(temperature_c=37.0, time_min=27.0)["extraction"]
    rate = np.exp(50e3 / 8.314462618 * (1.0 / 293.15 - 1.0 / 310.15))
    assert at37 == pytest.approx(-np.expm1(-30.0 / 600.0 * rate), rel=1e-3)
    assert _stain(time_min=120.0)["extraction"] > _stain(time_min=30.0)["extraction"]


@pytest.fixture(scope="module")
def clem_env():
    import gymnasium as gym

    import cryoopt.envs  # noqa: F401

    env = gym.make("cryoopt/CLEMProtocol-v0", image_size=64)
    yield env
    env.close()


@pytest.fixture(scope="module")
def expert_quality(clem_env) -> float:
    """The expert protocol's block quality: the middle point of every sweep below, scored once. Each
    block is seeded (specimen and noise), so it scores the same whatever ran on the env before."""
    return _block_quality(clem_env, EXPERT)


def _block_quality(env, protocol: dict) -> float:
    """Mean over two specimens of a 4-section block's quality held at ``protocol`` (as the outer loop scores it)."""
    from cryoopt.agents import start_setpoints

    hold = np.zeros(13, np.float32)
    hold[12] = -1.0
    vals = []
    for spec in (5, 6):
        env.reset(seed=spec, options={"setpoints": start_setpoints(protocol), "specimen_seed": spec, "noise_seed": spec})
        fused, good = [], 0
        for _ in range(4):
            _, r, te, _, info = env.step(hold)
            if not (info["section_failed"] or info["evaluation_failed"]):
                good += 1
                if not info["no_measurement"]:
                    fused.append(r)
            if te:
                break
        vals.append((np.mean(fused) if fused else 0.0) * good / 4)
    return float(np.mean(vals))


#: Staining temperature misses the "no flat parameter" target: at the expert's 30 min the primary is near
#: its plateau, so 15-37 C moves the label little, and only the extraction of a warm incubation shows
#: (benchmarks/identifiability.py measures a range of about 0.01 in block quality).
_FLAT = {"temperature_c": "staining temperature is nearly flat at a 30 min incubation near saturation (known miss)"}


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(reason=_FLAT[n], strict=True)) if n in _FLAT else n
                                  for n in DEFAULT_BLOCK_SPACE])
def test_no_parameter_leaves_block_quality_flat(clem_env, expert_quality: float, name: str) -> None:
    par = DEFAULT_BLOCK_SPACE[name]
    low, high = (_block_quality(clem_env, {**EXPERT, name: v}) for v in (par["low"], par["high"]))
    qs = [low, expert_quality, high]
    assert max(qs) - min(qs) > 0.02, (name, qs)
