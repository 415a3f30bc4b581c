"""The screened overview of a block's trimmed ribbon as the outer loop's per-block context."""

from __future__ import annotations

import gymnasium as gym
import pytest

from cryoopt.loop import OuterLoop
from cryoopt.loop.screening import ScreeningContext

BO = {"n_initial": 3, "num_restarts": 1, "raw_samples": 16, "mc_samples": 16}


class Blocks:
    """Stands in for a BlockRunner (the block itself is not what is tested here)."""

    agent = None

    def run(self, params, seed):
        return {"quality": 0.5 - abs(params["section_thickness_nm"] - 90.0) / 200.0, "prep_time_h": params["time_min"] / 60.0}


@pytest.fixture(scope="module")
def screen():
    s = ScreeningContext({"scenario": "neurons"}, features=("compression", "missing_fraction"),
                         ranges={"compression": (0.0, 0.3), "missing_fraction": (0.0, 0.5)})
    yield s
    s.close()


def test_screening_overview_context_flows_into_the_optimizers_trials(screen):
    from cryoopt.agents import EXPERT_PROTOCOL

    loop = OuterLoop(runner=Blocks(), seed=3, optimizer_kwargs=BO, context=screen, contexts=screen.ranges,
                     start_protocols=[EXPERT_PROTOCOL])
    loop.run(3)
    trials = {t.id: t for t in loop.optimizer.trials}
    contexts = []
    for r in loop.history:
        expected = screen(loop.block_seed(r["block"]))
        assert r["context"] == expected == trials[r["trial"]].context  # the optimizer holds each block's own
        for name, (lo, hi) in screen.ranges.items():
            assert lo <= expected[name] <= hi
        contexts.append(tuple(expected.values()))
    assert len(set(contexts)) > 1  # specimens differ, and the overview sees it


def test_the_trim_ribbon_is_cut_from_the_blocks_own_specimen(screen):
    env = gym.make("cryoopt/CLEMProtocol-v0", scenario="neurons", backend="direct", image_size=32).unwrapped
    env.reset(seed=12345)
    assert screen.specimen_seed(12345) == env.specimen_seed
    env.close()
    ribbon = screen.trim_ribbon(12345)
    assert len(ribbon) == 8 and all(s["nominal_thickness_nm"] == pytest.approx(70.0) for s in ribbon)  # expert setpoints
    # the block's conditions: its temperature drift warms the specimen cut by cut
    temps = [s["specimen_temp_c"] for s in ribbon]
    assert temps[-1] > temps[0]
    assert screen.screen(12345) == screen.screen(12345)  # a function of the block seed alone


def test_bad_features_and_ranges_are_refused():
    with pytest.raises(ValueError, match="features"):
        ScreeningContext(features=("sharpness",))
    with pytest.raises(ValueError, match="ranges"):
        ScreeningContext(features=("compression",), ranges={"compression": (0.3, 0.1)})
    with pytest.raises(ValueError, match="trim_sections"):
        ScreeningContext(trim_sections=2)
