"""Conditions that hold a campaign (door open, temperature drifting, reagent out) and clear again.

The drivers' readbacks as command/reply pairs, the simulated devices' clearing faults, and
``Bench.suspend_reason`` / ``SimulatedCLEMExecutor.suspended`` end to end.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from pymeasure.test import expected_protocol

from cryoopt.exceptions import ConfigError, InstrumentError
from cryoopt.instruments import Stainer, StainStep, Ultramicrotome, load_profile, open_bench
from cryoopt.instruments.conditions import Condition
from cryoopt.instruments.errors import DoorOpenError
from cryoopt.instruments.simulated import FaultConfig


def _temps(specimen="-120", knife="-120", chamber="-150"):
    return [("TEMP:SPEC?", "-120"), ("MEAS:TEMP:SPEC?", specimen), ("TEMP:KNIF?", "-120"), ("MEAS:TEMP:KNIF?", knife),
            ("TEMP:CHAM?", "-150"), ("MEAS:TEMP:CHAM?", chamber)]


# -- the readbacks, as command/reply pairs ----------------------------------------------------------
def test_ultramicrotome_conditions_read_the_temperatures():
    with expected_protocol(Ultramicrotome, _temps()) as um:
        assert um.conditions() == []
    with expected_protocol(Ultramicrotome, _temps(knife="-116.5")) as um:
        (cond,) = um.conditions()
    assert cond.kind == "temperature" and cond.device == "ultramicrotome-ref"
    assert "knife temperature -116.50 degC, setpoint -120 degC (off by +3.50, tolerance 1)" in str(cond)


def _stainer_ready(door="CLOSED", levels=None, state="IDLE", measured="22.0"):
    levels = levels or {"PBS": "5000", "PRIMARY": "500"}
    return [("DOOR?", door), ("REAG:LIST?", ",".join(levels)),
            *[(f"REAG:LEV? {r}", v) for r, v in levels.items()],
            ("STAT?", state), ("TEMP?", "22"), ("MEAS:TEMP?", measured)]


def test_stainer_conditions_ready():
    with expected_protocol(Stainer, _stainer_ready()) as st:
        assert st.conditions() == []


def test_stainer_conditions_door_reagent_and_stage_temperature():
    pairs = _stainer_ready(door="OPEN", levels={"PBS": "50", "PRIMARY": "500"}, measured="25.5")
    with expected_protocol(Stainer, pairs) as st:
        found = st.conditions()
    assert [c.kind for c in found] == ["door_open", "reagent_low", "temperature"]
    assert str(found[1]) == "stainer-ref: reagent PBS holds 50 ul, needs 100 ul; refill it"
    assert "stage temperature 25.50 degC, setpoint 22 degC (off by +3.50, tolerance 2)" in str(found[2])


def test_stainer_stage_temperature_is_not_a_condition_during_a_run():
    with expected_protocol(Stainer, _stainer_ready(state="RUNNING")[:-2]) as st:
        assert st.conditions() == []


def test_stainer_watches_the_reagents_of_the_loaded_protocol():
    step = StainStep("PRIMARY", dilution=200, volume_ul=30, time_min=10, wash_cycles=1)
    pairs = [("PROT:CLE", None), ("SYST:ERR?", '0,"No error"'), ("PROT:STEP PRIMARY,200,30,10,22,0,1", None),
             ("SYST:ERR?", '0,"No error"'), ("DOOR?", "CLOSED"),
             ("REAG:LEV? PRIMARY", "25"), ("REAG:LEV? PBS", "5000"),  # LEAD is not asked: not used
             ("STAT?", "LOADED"), ("TEMP?", "22"), ("MEAS:TEMP?", "22")]
    with expected_protocol(Stainer, pairs) as st:
        st.load_protocol([step])
        (cond,) = st.conditions()
    # the low mark of PRIMARY is 20 ul, but the loaded protocol needs 30 ul
    assert str(cond) == "stainer-ref: reagent PRIMARY holds 25 ul, needs 30 ul; refill it"


@pytest.mark.parametrize("marks,expected", [(50, 50.0), ({"default": 7}, 7.0), ({"PBS": 3}, 3.0), ({}, 0.0)])
def test_reagent_low_marks_from_the_profile(marks, expected):
    prof = load_profile("stainer-ref").model_dump()
    prof["interlocks"]["reagent_low_ul"] = marks
    with expected_protocol(Stainer, [], profile=prof) as st:
        assert st.reagent_low_mark_ul("PBS") == expected


def test_bad_reagent_low_marks_name_the_field():
    prof = load_profile("stainer-ref").model_dump()
    prof["interlocks"]["reagent_low_ul"] = "plenty"
    with expected_protocol(Stainer, [], profile=prof) as st, pytest.raises(ConfigError, match="reagent_low_ul"):
        st.reagent_low_mark_ul("PBS")


# -- the simulated devices: faults that clear by themselves ----------------------------------------------
def _poll(bench, until, *, max_polls=40):
    """Poll like a campaign: each poll lets simulated time pass (every query is a tick)."""
    reasons = []
    for _ in range(max_polls):
        reasons.append(bench.suspend_reason())
        if until(reasons[-1]):
            return reasons
    raise AssertionError(f"condition never reached; last reasons {reasons[-3:]}")


def test_a_ready_bench_has_no_reason():
    with open_bench(seed=0) as bench:
        assert bench.suspend_reason() is None and bench.conditions() == []


def test_door_opens_and_closes_again():
    faults = {"stainer": [{"kind": "door_open", "start_s": 0, "duration_s": 60}]}
    with open_bench(seed=0, faults=faults) as bench:
        reason = bench.suspend_reason()
        assert reason == "stainer-ref: door open; close it to continue"
        reasons = _poll(bench, lambda r: r is None)
        assert reasons[:-1] and all(r == reason for r in reasons[:-1])
        assert bench.stainer.simulated_device.now >= 60
        assert bench.stainer.door == "CLOSED" and bench.suspend_reason() is None


def test_reagent_drained_then_refilled_to_its_level():
    faults = {"stainer": [{"kind": "reagent_out", "reagent": "PRIMARY", "start_s": 0, "duration_s": 100}]}
    with open_bench(seed=0, faults=faults) as bench:
        assert "reagent PRIMARY holds 0 ul, needs 20 ul" in bench.suspend_reason()
        _poll(bench, lambda r: r is None)
        assert bench.stainer.simulated_device.reagents["PRIMARY"] == 2000.0


def test_temperature_drift_then_back_under_control():
    fault = {"kind": "temperature_drift", "sensor": "knife", "rate_c_per_s": 0.5, "start_s": 0, "duration_s": 20}
    with open_bench(seed=0, faults={"ultramicrotome": [fault]}) as bench:
        reasons = _poll(bench, lambda r: r is not None and "knife temperature" in r)
        assert reasons[-1].startswith("ultramicrotome-ref: knife temperature")
        _poll(bench, lambda r: r is None)
        assert bench.ultramicrotome.temperatures_stable()


def test_stage_temperature_drift_on_the_stainer():
    fault = {"kind": "temperature_drift", "sensor": "stage", "rate_c_per_s": 0.2, "start_s": 0, "duration_s": 40}
    with open_bench(seed=0, faults={"stainer": [fault]}) as bench:
        reasons = _poll(bench, lambda r: r is not None and "stage temperature" in r)
        assert "tolerance 2" in reasons[-1]
        _poll(bench, lambda r: r is None)


def test_injected_faults_hold_until_cleared_by_hand():
    with open_bench(seed=0) as bench:
        um, st = bench.ultramicrotome.simulated_device, bench.stainer.simulated_device
        st.inject({"kind": "door_open", "start_s": 0})
        um.inject({"kind": "temperature_drift", "sensor": "chamber", "rate_c_per_s": 1.0, "start_s": um.now})
        for _ in range(5):
            reason = bench.suspend_reason()
            assert "door open" in reason and "chamber temperature" in reason
        st.clear_faults("door_open")
        um.clear_faults()
        assert "door open" not in (bench.suspend_reason() or "")
        _poll(bench, lambda r: r is None)


def test_door_opened_mid_run_pauses_it_and_the_run_resumes_once_closed():
    steps = [StainStep("PRIMARY", dilution=200, volume_ul=100, time_min=30)]
    with open_bench(seed=0) as bench:
        st = bench.stainer
        st.load_protocol(steps)
        dev = st.simulated_device
        dev.inject({"kind": "door_open", "start_s": dev.now + 600, "duration_s": 60})
        with pytest.raises(DoorOpenError, match="301"):
            st.run()
        assert dev.state == "PAUSED" and bench.suspend_reason() == "stainer-ref: door open; close it to continue"
        _poll(bench, lambda r: r is None)
        st.resume()
        st.wait_complete()
        assert dev.state == "DONE"


def test_device_faults_validate_their_fields():
    assert FaultConfig.coerce([{"kind": "door_open"}]).faults[0].at_step == 1  # default trigger: step 1
    with pytest.raises(ConfigError):
        FaultConfig.coerce([{"kind": "door_open", "duration_s": 0}])
    with pytest.raises(ConfigError):
        FaultConfig.coerce([{"kind": "reagent_out", "reagent": "PBS", "start_s": -1}])
    with open_bench(seed=0) as bench, pytest.raises(ConfigError):
        bench.stainer.simulated_device.inject({"kind": "meteor"})


# -- bounded, typed ---------------------------------------------------------------------------------------
def test_suspend_reason_raises_a_typed_error_when_a_readback_fails_for_good():
    faults = {"stainer": [{"kind": "drop", "match": r"DOOR\?", "count": None}]}
    with open_bench(seed=0, faults=faults, timeout_s=0.2) as bench:
        t0 = time.monotonic()
        with pytest.raises(InstrumentError) as exc:
            bench.suspend_reason()
        assert time.monotonic() - t0 < 5.0
        assert exc.value.device == "stainer-ref" and exc.value.safe_state.startswith("staining paused")


def test_suspend_reason_is_bounded_over_tcp():
    with open_bench("socket", seed=0, timeout_s=0.5) as bench:
        t0 = time.monotonic()
        assert bench.suspend_reason() is None
        assert time.monotonic() - t0 < 5.0


def test_condition_reads_as_a_sentence():
    assert str(Condition("stainer-ref", "door_open", "door open")) == "stainer-ref: door open"


# -- the campaign executor's hook ---------------------------------------------------------------------------
def _executor(backend):
    from cryoopt.loop.executor import SimulatedCLEMExecutor

    opts = {"agent": "random", "env_kwargs": {"backend": backend, "image_size": 32}, "max_sections": 1}
    return SimulatedCLEMExecutor(SimpleNamespace(seed=0, executor=SimpleNamespace(options=opts, idempotent=None)))


def test_executor_suspended_asks_the_env_bench():
    ex = _executor("instruments")
    try:
        assert ex.suspended() is None  # no bench before the first block
        ex.runner.env.reset(seed=0)
        assert ex.suspended() is None
        bench = ex.runner.env.unwrapped.chain.bench
        bench.stainer.simulated_device.inject({"kind": "door_open", "start_s": 0})
        assert ex.suspended() == "stainer-ref: door open; close it to continue"
        bench.stainer.simulated_device.clear_faults()
        assert ex.suspended() is None
    finally:
        ex.close()


def test_executor_suspended_is_none_on_the_direct_backend():
    ex = _executor("direct")
    try:
        ex.runner.env.reset(seed=0)
        assert ex.suspended() is None
    finally:
        ex.close()
