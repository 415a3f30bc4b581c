"""With estimated structures, "no measurement" means what it means with known ones: no target
structure in the EM field, or one filling it. A target that is there but whose contrast is
undefined (its surroundings clipped flat) is a failed evaluation."""

from __future__ import annotations

import math

import pytest

from cryoopt.envs.clem import CLEMProtocolEnv
from cryoopt.pipeline.scores import Scores, score


@pytest.mark.parametrize(("cnr", "fraction", "unmeasurable"), [
    (math.nan, 0.0, True),     # no target segmented
    (math.nan, 1.0, True),     # the target fills the field: no surroundings
    (math.nan, 0.02, False),   # a bead in the field, its contrast undefined: failed
    (12.0, 0.02, False),       # measured
])
def test_estimate_mode_reads_no_measurement_from_the_segmented_targets(cnr, fraction, unmeasurable) -> None:
    env = CLEMProtocolEnv(scenario="bead_calibration", structures="estimate", registration="estimate",
                          image_size=64, backend="direct")
    try:
        scores = Scores({"em_cnr": score("em_cnr", cnr), "em_target_fraction": score("em_target_fraction", fraction)})
        assert env._unmeasurable(scores) is unmeasurable
        # without the target's area (another pipeline) an undefined contrast stays "no measurement"
        assert env._unmeasurable(Scores({"em_cnr": score("em_cnr", cnr)})) is (not math.isfinite(cnr))
    finally:
        env.close()
