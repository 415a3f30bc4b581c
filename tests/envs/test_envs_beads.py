"""Known-mode block quality on the bead-calibration phantom: the fiducial beads are the
target structures there (no cells), so EM contrast is measured on them against the film."""

from __future__ import annotations

import math

import numpy as np

from cryoopt.agents import EXPERT_PROTOCOL
from cryoopt.loop.blocks import BlockRunner


def test_a_bead_block_has_a_defined_positive_known_quality() -> None:
    runner = BlockRunner("bo_only", env_kwargs={"scenario": "bead_calibration", "structures": "known",
                                                "registration": "known", "image_size": 64}, max_sections=3)
    try:
        env = runner.env.unwrapped
        res = runner.measure(dict(EXPERT_PROTOCOL), seed=5000)
        assert env._target_structures() == ("beads",)
        # the beads were measured (not "no measurement" for want of cells) and scored
        assert res["no_measurement_sections"] == 0
        assert math.isfinite(res["quality"]) and res["quality"] > 0.0
        assert math.isfinite(res["cnr"])
        truth = env.chain.physics["microscope"].last_truth
        assert not truth.cells.any() and truth.targets.any()  # a bead field: no cells, the bead in it
    finally:
        runner.close()


def test_cell_phantoms_keep_their_target_structures() -> None:
    for scenario, kinds in (("neurons", ("cells",)), ("tissue_block", ("mitochondria",))):
        runner = BlockRunner("bo_only", env_kwargs={"scenario": scenario, "structures": "known", "registration": "known",
                                                    "image_size": 64}, max_sections=1)
        try:
            runner.env.reset(seed=0)
            assert runner.env.unwrapped._target_structures() == kinds
        finally:
            runner.close()
