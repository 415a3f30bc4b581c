"""Scores: documented units, immutability, JSON round trip with NaN."""

from __future__ import annotations

import json
import math

import pytest

from cryoopt.exceptions import EvaluationError
from cryoopt.pipeline.scores import METRICS, PIPELINE_VERSION, Score, Scores, score


def test_every_documented_metric_has_unit_and_description():
    for name, (unit, desc) in METRICS.items():
        assert unit and desc, name


def test_round_trip_through_json_keeps_nan_and_version():
    s = Scores({"em_cnr": score("em_cnr", 3.0, uncertainty=0.2), "logic": score("logic", math.nan)})
    back = Scores.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s
    assert back.pipeline_version == PIPELINE_VERSION
    assert back.failed == ["logic"]
    assert back["em_cnr"].unit == "1" and back["em_cnr"].uncertainty == 0.2


def test_scores_are_immutable_and_refuse_unknown_names():
    s = Scores({"em_cnr": score("em_cnr", 3.0)})
    with pytest.raises(TypeError):
        s._scores["x"] = Score(1, "1")  # type: ignore[index]
    with pytest.raises(EvaluationError, match="not documented"):
        score("no_such_metric", 1.0)
    with pytest.raises(KeyError, match="available"):
        s["nope"]
    with pytest.raises(EvaluationError, match="overwritten"):
        s.merge({"em_cnr": score("em_cnr", 1.0)})
    with pytest.raises(EvaluationError, match="uncertainty"):
        Score(1.0, "1", -1.0)
    with pytest.raises(EvaluationError, match="serialised"):
        Scores.from_dict({"scores": {}})
    assert s.merge({"logic": score("logic", 0.5)}).floats() == {"em_cnr": 3.0, "logic": 0.5}
