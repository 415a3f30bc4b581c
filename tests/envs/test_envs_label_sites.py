"""The ``logic`` term means the same with known and with estimated structures: the estimate path
finds the labelled sites in the geometry of the simulator's known sites (grown by one LM pixel)."""

from __future__ import annotations

import numpy as np
import pytest

from cryoopt.agents import EXPERT_PROTOCOL
from cryoopt.envs.clem import CLEMProtocolEnv


def _env(scenario: str) -> CLEMProtocolEnv:
    return CLEMProtocolEnv(scenario=scenario, structures="known", registration="known", image_size=64, backend="direct")


@pytest.mark.parametrize(("scenario", "options"), [
    ("neurons", {"label_sites": "spots", "label_site_radius_nm": 150.0}),  # puncta of target_radius_um 0.15
    ("tissue_block", {"label_sites": "structures"}),  # every mitochondrion carries the marker
    ("bead_calibration", {"label_sites": "structures"}),  # every bead is fluorescent
])
def test_each_phantom_says_how_its_labelled_sites_are_estimated(scenario: str, options: dict) -> None:
    env = _env(scenario)
    try:
        env.reset(seed=0)
        assert env._label_site_options() == options
    finally:
        env.close()


def _logic(scenario: str, *, estimate_sites: bool) -> list[tuple[float | None, ...]]:
    """Per-section ``logic``, precision and recall of 3 sections on one specimen, known structures and registration; with
    ``estimate_sites`` the pipeline is not told the known sites and estimates them from the (known)
    target structures, as it does from segmented ones on a real bench."""
    env = _env(scenario)
    if estimate_sites:
        known = env._known_structures
        env._known_structures = lambda *a: {k: v for k, v in known(*a).items() if k != "label_target_mask"}
    try:
        env.reset(seed=0, options={"specimen_seed": 7, "noise_seed": 1, "image_seed": 2, "setpoints": EXPERT_PROTOCOL})
        out = []
        for _ in range(3):
            *_, info = env.step(np.zeros(13, np.float32))
            scores = (info.get("scores") or {}).get("scores", {})
            out.append(tuple(scores.get(k, {}).get("value") for k in ("logic", "logic_precision", "logic_recall")))
        return out
    finally:
        env.close()


def test_with_perfect_structures_the_estimated_sites_give_the_known_logic() -> None:
    # a marker of whole structures: the estimated sites are the known ones, bit for bit
    known, estimated = _logic("tissue_block", estimate_sites=False), _logic("tissue_block", estimate_sites=True)
    assert all(None not in v for v in known) and known == estimated
    # punctate sites the EM does not show: a site-sized disc at each label spot on the cells
    known, estimated = _logic("neurons", estimate_sites=False), _logic("neurons", estimate_sites=True)
    assert all(None not in v for v in known + estimated)
    logic_k, logic_e = float(np.mean([v[0] for v in known])), float(np.mean([v[0] for v in estimated]))
    assert abs(logic_e - logic_k) < 0.1, (known, estimated)
