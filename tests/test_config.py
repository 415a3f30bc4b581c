"""Campaign config: validation with file:line messages, identity hash, shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cryoopt.config import CampaignConfig, load_config, parse_duration_s
from cryoopt.exceptions import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

GOOD = """\
name: demo
space:
  parameters:
    x: {type: float, low: 0, high: 1}
    buffer: {type: categorical, choices: [PBS, TBS]}
objectives: {objective: maximize}
budget: {experiments: 5}
executor: {type: function, target: cryoopt.campaign.demo:zero_cost}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert cfg.search_space().dim >= 1
    assert cfg.budget.experiments > 0


def test_good_config_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.name == "demo" and cfg.batch_size == 1 and cfg.max_in_flight == 1
    assert cfg.tracking.enabled and cfg.feedback.mode == "record"
    assert cfg.objective_names == ["objective"]


def test_unknown_field_names_line(tmp_path: Path) -> None:
    text = GOOD.replace("budget: {experiments: 5}", "budget: {experiments: 5, walltime: 3}")
    with pytest.raises(ConfigError, match=r"c\.yaml:7: budget\.walltime: unknown field"):
        load_config(write(tmp_path, text))


def test_bad_value_names_line_and_field(tmp_path: Path) -> None:
    text = GOOD.replace("budget: {experiments: 5}", "budget:\n  experiments: -2")
    with pytest.raises(ConfigError, match=r"c\.yaml:8: budget\.experiments: .*greater than 0"):
        load_config(write(tmp_path, text))


def test_bad_parameter_names_its_line(tmp_path: Path) -> None:
    text = GOOD.replace("x: {type: float, low: 0, high: 1}", "x: {type: float, low: 2, high: 1}")
    with pytest.raises(ConfigError, match=r"c\.yaml:4: space\.parameters\.x: .*low < high"):
        load_config(write(tmp_path, text))


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"c\.yaml:\d+: not valid YAML"):
        load_config(write(tmp_path, "name: x\nspace:\n  - [unclosed\n"))


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("target: cryoopt.campaign.demo:zero_cost", "target: not-a-target", "module:callable"),
        ("objectives: {objective: maximize}", "objectives: {objective: up}", "maximize"),
        ("objectives: {objective: maximize}", 'outcome_constraints: ["t < 3"]', "metric <= number"),
        ("name: demo", "name: 'bad name/'", "name"),
    ],
)
def test_invalid_fields(tmp_path: Path, old: str, new: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, GOOD.replace(old, new)))


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_identity_hash_ignores_run_settings(tmp_path: Path) -> None:
    a = load_config(write(tmp_path, GOOD))
    data = a.model_dump(mode="json")
    b = CampaignConfig.from_dict({**data, "budget": {"experiments": 50}, "max_in_flight": 3})
    c = CampaignConfig.from_dict({**data, "seed": 7})
    assert a.config_hash() == b.config_hash()
    assert a.config_hash() != c.config_hash()
    assert c.incompatibilities(a) == ["seed"]


@pytest.mark.parametrize(("text", "seconds"), [("90min", 5400.0), ("2h", 7200.0), ("45s", 45.0), (30, 30.0), (None, None)])
def test_durations(text: object, seconds: float | None) -> None:
    assert parse_duration_s(text) == seconds


def test_objectives_shorthands() -> None:
    base = CampaignConfig.from_dict(load_config(CONFIGS / "sim_quick.yaml").model_dump(mode="json"))
    data = base.model_dump(mode="json")
    assert CampaignConfig.from_dict({**data, "objectives": "quality"}).objectives == {"quality": "maximize"}
    lst = [{"name": "quality"}, {"name": "prep_time_h", "direction": "minimize"}]
    assert CampaignConfig.from_dict({**data, "objectives": lst}).objectives == {"quality": "maximize", "prep_time_h": "minimize"}


@pytest.mark.parametrize(("text", "match"), [
    ("", "the config is empty"), ("# only a comment\n", "the config is empty"),
    ("- name: x\n- budget: 3\n", "must be a mapping of fields"), ("just text\n", "must be a mapping of fields"),
])
def test_whole_file_mistakes(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text))


def test_every_problem_is_reported_at_once_with_its_line(tmp_path: Path) -> None:
    text = GOOD.replace("x: {type: float, low: 0, high: 1}", "x: {type: float, low: 0, high: 1, log: 'no'}")
    text = text.replace("budget: {experiments: 5}", "budget: {experiments: true}")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert "c.yaml:4: space.parameters.x:" in str(err.value) and "c.yaml:7: budget.experiments:" in str(err.value)


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_pass_the_run_checks(name: str) -> None:
    from cryoopt.campaign.checks import check_config

    check_config(load_config(CONFIGS / name))  # strategy, options, executor, target, result keys


def test_problems_found_by_the_run_checks_cite_file_and_line(tmp_path: Path) -> None:
    from cryoopt.campaign.checks import check_config

    cfg = load_config(write(tmp_path, GOOD.replace("budget: {experiments: 5}",
                                                    "budget: {experiments: 5}\noptimizer:\n  strategy: bo\n"
                                                    "  options: {raw_samples: 0}")))
    with pytest.raises(ConfigError, match=r"c\.yaml:10: optimizer\.options\.raw_samples: must be >= 1"):
        check_config(cfg)


def test_run_settings_do_not_change_the_identity(tmp_path: Path) -> None:
    a = load_config(write(tmp_path, GOOD))
    b = CampaignConfig.from_dict({**a.model_dump(mode="json"),
                                  "executor": {**a.model_dump(mode="json")["executor"], "timeout_s": "2h",
                                               "suspend_poll_s": 30}})
    assert b.executor.timeout_s == 7200 and a.config_hash() == b.config_hash()
