"""The ray executor's settings are checked with the config, before any cluster or bench is touched."""

from __future__ import annotations

import pytest
from campaign_helpers import make_config

from cryoopt.exceptions import ConfigError
from cryoopt.scale.options import RayExecutorOptions

BENCH = {"type": "function", "target": "campaign_helpers:quadratic"}


def ray(options: dict | None = None, **executor: object) -> dict:
    return {"type": "ray", "target": None, "bench": BENCH, "options": options or {}, **executor}


def test_a_ray_campaign_has_its_bench_executors_identity() -> None:
    local = make_config(executor=BENCH)
    on_ray = make_config(executor=ray({"benches": 4, "num_cpus": 0.5}, address="ray://head:10001"), max_in_flight=4)
    other_bench = make_config(executor=ray(bench={**BENCH, "target": "campaign_helpers:flaky"}))
    assert on_ray.config_hash() == local.config_hash()
    assert other_bench.config_hash() != local.config_hash()


@pytest.mark.parametrize(("executor", "message"), [
    (ray({"benchs": 2}), r"executor\.options\.benchs: unknown option \(the ray executor takes benches, num_cpus"),
    (ray({"benches": 0}), "benches must be at least 1, got 0"),
    (ray({"benches": [{"name": "a", "port": 3}]}), r"executor\.options\.benches\.0\.port: unknown option \(a bench entry"),
    (ray({"benches": [{"name": "a"}, {"name": "a"}]}), r"bench names must differ, got \['a', 'a'\]"),
    (ray({"num_cpus": -1}), r"executor\.options\.num_cpus: Input should be greater than or equal to 0"),
    (ray(bench=None), "a ray executor needs bench"),
    (ray(bench={"type": "ray"}), "a ray executor needs bench"),
    (ray(idempotent=False), "set target and idempotent on executor.bench"),
    ({**BENCH, "address": "auto"}, "bench and address belong to executor type ray, not 'function'"),
])
def test_bad_ray_settings_are_config_errors_naming_the_field(executor: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config(executor=executor)


def test_max_in_flight_must_match_the_benches_before_anything_starts() -> None:
    from cryoopt.campaign.ray_executor import RayExecutor

    cfg = make_config(executor=ray({"benches": 3}), max_in_flight=2)
    with pytest.raises(ConfigError, match="gives 3 bench.*max_in_flight is 2.*set max_in_flight: 3"):
        RayExecutor(cfg)


def test_validate_refuses_what_a_ray_run_would_refuse_without_starting_ray() -> None:
    """The bench count against max_in_flight, and each bench's merged options as its executor type
    checks them (an option a bench's executor does not take used to fail on the cluster, at run)."""
    from cryoopt.campaign.checks import check_config

    with pytest.raises(ConfigError, match=r"max_in_flight: executor\.options\.benches gives 3 bench.*set max_in_flight: 3"):
        check_config(make_config(executor=ray({"benches": 3}), max_in_flight=2))
    clem = {"type": "simulated_clem", "options": {"max_sections": 2}}
    benches = [{"options": {"port": "/dev/ttyUSB0"}}, {"options": {"max_sections": 0}}]
    with pytest.raises(ConfigError) as err:
        check_config(make_config(executor=ray({"benches": benches}, bench=clem), max_in_flight=2))
    text = str(err.value)
    assert "executor.options.benches.0.options.port: unknown option for BlockRunner" in text
    assert "executor.options.benches.1.options.max_sections: must be an integer >= 1" in text
    check_config(make_config(executor=ray({"benches": 2}, bench=clem), max_in_flight=2))  # sound: no error


def test_benches_resolve_to_names_options_and_resources() -> None:
    opts = RayExecutorOptions.model_validate(
        {"benches": [{"options": {"port": "/dev/ttyUSB0"}, "resources": {"microtome_a": 1}}, {"name": "north"}],
         "num_cpus": 0.5, "resources": {"bench": 1}})
    first, second = opts.resolve(max_in_flight=2)
    assert (first.name, first.options, first.resources, first.num_cpus) == ("bench-0", {"port": "/dev/ttyUSB0"},
                                                                            {"microtome_a": 1}, 0.5)
    assert (second.name, second.options, second.resources) == ("north", {}, {"bench": 1})
    assert [b.name for b in RayExecutorOptions().resolve(max_in_flight=3)] == ["bench-0", "bench-1", "bench-2"]
