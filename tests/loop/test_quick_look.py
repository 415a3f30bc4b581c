"""The LM quick look: the first sections of a block, LM only, scored on what LM can see."""

from __future__ import annotations

import math

import pytest

from cryoopt.exceptions import ParameterError
from cryoopt.loop import BlockRunner
from cryoopt.loop.fidelity import LM_CNR_HALF, LM_TERMS, QuickLook

ENV = {"scenario": "neurons", "backend": "direct", "image_size": 64}


@pytest.fixture(scope="module")
def runner() -> BlockRunner:
    r = BlockRunner("fixed", env_kwargs=ENV, max_sections=8)
    yield r
    r.close()


def test_section_score_weights_lm_contrast_and_the_staining_terms(runner: BlockRunner) -> None:
    look = QuickLook(runner, sections=2, weights={"impact": 2.0, "d_repro": 1.0, "meta": 1.0})
    assert look.weights == {"impact": 0.5, "d_repro": 0.25, "meta": 0.25}
    scores = {"scores": {"lm_cnr": {"value": LM_CNR_HALF}, "d_repro": {"value": 0.8}, "meta": {"value": 0.4},
                         "em_cnr": {"value": 100.0}}}
    # half credit at CNR 3: 0.5 * 0.5 + 0.25 * 0.8 + 0.25 * 0.4; EM metrics play no part
    assert look.section_score({"scores": scores}) == pytest.approx(0.25 + 0.2 + 0.1)
    assert look.section_score({"section_failed": True, "scores": scores}) == 0.0
    assert look.section_score({"scores": {"scores": {"lm_cnr": {"value": math.nan}}}}) == 0.0


def test_default_weights_are_the_block_rewards_renormalized(runner: BlockRunner) -> None:
    from cryoopt.envs.clem import DEFAULT_WEIGHTS

    look = QuickLook(runner)
    total = sum(DEFAULT_WEIGHTS[k] for k in LM_TERMS)
    assert look.weights == pytest.approx({k: DEFAULT_WEIGHTS[k] / total for k in LM_TERMS})


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"sections": 0}, r"sections must be an int in \[1, 8\]"),
    ({"sections": 9}, r"sections must be an int in \[1, 8\]"),
    ({"weights": {"logic": 1.0}}, "weights must map terms of"),
    ({"weights": {"impact": -1.0}}, "weights must map terms of"),
])
def test_bad_settings_are_refused_with_the_allowed_range(runner: BlockRunner, kwargs: dict, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        QuickLook(runner, **kwargs)


def test_a_look_costs_its_sections_and_sees_the_first_sections_of_the_block(runner: BlockRunner) -> None:
    look = QuickLook(runner, sections=2)
    out = look.look({"section_thickness_nm": 80.0}, seed=11)
    assert out["fidelity"] == "lm_quick_look" and out["sections"] == 2.0
    assert 0.0 < out["quality"] <= 1.0 and out["lm_cnr"] > 0
    full = runner.measure({"section_thickness_nm": 80.0}, 11)
    # same block, same protocol: the look is its first 2 of 8 sections, less their EM exposures
    assert 0.15 * full["prep_time_h"] < out["prep_time_h"] < 0.5 * full["prep_time_h"]
    again = look.look({"section_thickness_nm": 80.0}, seed=11)
    assert again == out  # a block seed fixes specimen and noise
