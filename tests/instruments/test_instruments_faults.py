"""Fault injection: for each fault, the typed error, the safe state, and no unvalidated command sent.

Most run in-process (no waiting: a late or dropped reply raises at once); latency,
disconnect and garbling also run over the TCP socket with a 0.2 s timeout.
"""

from __future__ import annotations

import re

import pytest

from cryoopt.exceptions import CommunicationError, DeviceError, InstrumentTimeoutError, ParameterError
from cryoopt.instruments import StainStep, connect
from cryoopt.instruments.errors import (
    DisconnectedError,
    DoorOpenError,
    GarbledReplyError,
    ReagentError,
    TemperatureInterlockError,
)
from cryoopt.instruments.simulated import FaultConfig

FAST = 0.2  # seconds: per-exchange timeout in socket fault tests
STEPS = [StainStep("PRIMARY", dilution=200, volume_ul=100, time_min=30, wash_cycles=1),
         StainStep("SECONDARY", dilution=500, volume_ul=100, time_min=20, wash_cycles=1)]


def _um(faults, channel="inprocess", **kw):
    return connect("ultramicrotome-ref", simulated=channel, seed=0, faults=faults, timeout_s=FAST, **kw)


def _assert_validated(driver):
    """Every setpoint the device received is inside the profile's limits; no action sent twice in a row."""
    prof = driver.profile
    sent = driver.simulated_device.received
    for cmd in sent:
        for name, spec in prof.commands.items():
            if spec.set and " " in cmd and cmd.split(" ")[0] == spec.set.split(" ")[0] and name in prof.limits:
                lim = prof.limit(name)
                arg = cmd.split(" ", 1)[1]
                if hasattr(lim, "low"):
                    assert lim.low <= float(arg) <= lim.high, cmd
                else:
                    assert arg in lim.choices, cmd
    actions = [c for c in sent if re.match(r"(SECT:CUT|SECT:STAR|STAIN:RUN|ACQ:STAR)", c)]
    assert len(actions) == len(set(actions)) or all(a != b for a, b in zip(actions, actions[1:]))


# -- link faults on queries: retried ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["drop", "garble", "latency"])
@pytest.mark.parametrize("channel", ["inprocess", "socket"])
def test_transient_query_fault_is_retried(kind, channel):
    fault = {"kind": kind, "match": r"SECT:THIC\?", "count": 1}
    if kind == "latency":
        fault["seconds"] = 0.3  # later than the 0.2 s timeout
    with _um([fault], channel) as um:
        assert um.section_thickness_nm == 100
        dev = um.simulated_device
        assert dev.received.count("SECT:THIC?") == 2
        assert dev.faults.log == [(kind, "SECT:THIC?")]
        assert um.section_thickness_nm == 100  # the link is in step again afterwards
        _assert_validated(um)


@pytest.mark.parametrize("kind,error", [("drop", InstrumentTimeoutError), ("garble", GarbledReplyError),
                                        ("latency", InstrumentTimeoutError)])
def test_persistent_query_fault_raises_typed_error_after_retries(kind, error):
    fault = {"kind": kind, "match": r"SECT:THIC\?", "count": None, "seconds": 1.0} if kind == "latency" else \
        {"kind": kind, "match": r"SECT:THIC\?", "count": None}
    with _um([fault]) as um:
        with pytest.raises(error) as exc:
            um.section_thickness_nm  # noqa: B018
        assert "gave up after 3 attempts" in str(exc.value)
        assert um.simulated_device.received.count("SECT:THIC?") == 3
        # unrecoverable: the device was put in its safe state and the error says so
        assert exc.value.safe_state.startswith("cutting stopped")
        assert um.simulated_device.received[-2:] == ["SECT:STOP", "STAT?"]


# -- faults around actions: never repeated, device state asked, safe state --------------------------
@pytest.mark.parametrize("channel", ["inprocess", "socket"])
def test_disconnect_mid_cut_is_not_repeated_and_device_is_stopped(channel):
    faults = [{"kind": "disconnect", "match": r"SECT:CUT \d+", "when": "after"}]
    with _um(faults, channel) as um:
        um.cutting_window_end_um = 15000  # long strokes: still cutting when we reconnect
        with pytest.raises(DisconnectedError) as exc:
            um.cut(5)
        err = exc.value
        assert isinstance(err, CommunicationError) and isinstance(err, ConnectionError)
        assert err.device_state == "CUTTING" and "not repeated" in str(err)
        assert err.safe_state.startswith("cutting stopped") and "IDLE" in err.safe_state
        dev = um.simulated_device
        assert dev.status == "IDLE"
        assert sum(c.startswith("SECT:CUT") for c in dev.received) == 1
        _assert_validated(um)


def test_disconnect_before_action_reports_idle_and_does_not_retry():
    with _um([{"kind": "disconnect", "match": "SECT:STAR", "when": "before"}]) as um:
        with pytest.raises(DisconnectedError) as exc:
            um.start()
        assert exc.value.device_state == "IDLE"
        assert um.simulated_device.received.count("SECT:STAR") == 1


def test_latency_on_action_check_is_not_blindly_repeated():
    faults = [{"kind": "latency", "seconds": 0.5, "match": r"SYST:ERR\?", "skip": 0, "count": 1}]
    with _um(faults) as um:
        with pytest.raises(InstrumentTimeoutError) as exc:
            um.reset_counter()
        assert um.simulated_device.received.count("SECT:COUN:RES") == 1
        assert exc.value.safe_state is not None


@pytest.mark.parametrize("channel", ["inprocess", "socket"])
def test_device_error_code_on_cut(channel):
    faults = [{"kind": "error_code", "match": r"SECT:CUT \d+", "code": -300, "message": "Feed motor stalled"}]
    with _um(faults, channel) as um:
        with pytest.raises(DeviceError, match="Feed motor stalled") as exc:
            um.cut(2)
        assert exc.value.error_codes == [-300]
        assert exc.value.safe_state.startswith("cutting stopped")
        assert um.simulated_device.count == 0
        _assert_validated(um)


def test_device_error_code_on_setpoint_keeps_previous_value():
    with _um([{"kind": "error_code", "match": "SECT:THIC .*", "code": -222, "message": "Data out of range"}]) as um:
        with pytest.raises(DeviceError, match="previous value"):
            um.section_thickness_nm = 80
        assert um.section_thickness_nm == 100


# -- device faults ------------------------------------------------------------------------------------
def test_temperature_drift_blocks_cutting_before_any_cut_command():
    faults = [{"kind": "temperature_drift", "sensor": "chamber", "rate_c_per_s": 0.5, "start_s": 0}]
    with _um(faults) as um:
        um.simulated_device.advance(10)
        with pytest.raises(TemperatureInterlockError, match="chamber off by") as exc:
            um.cut(1)
        assert exc.value.safe_state == "unchanged (nothing sent)"
        assert not any(c.startswith("SECT:CUT") for c in um.simulated_device.received)


def test_temperature_drift_mid_run_stops_cutting():
    faults = [{"kind": "temperature_drift", "sensor": "knife", "rate_c_per_s": 0.4, "start_s": 20}]
    with _um(faults) as um:
        um.cutting_window_end_um = 5000  # 5.5 s strokes
        with pytest.raises(TemperatureInterlockError, match="303") as exc:
            um.cut(20)
        dev = um.simulated_device
        assert 0 < dev.count < 20 and dev.status == "IDLE"
        assert exc.value.safe_state.startswith("cutting stopped")


def test_temperatures_settle_and_wait_succeeds():
    with _um(None) as um:
        um.specimen_temperature_c = -110
        um.require_stable_temperatures(wait_s=5.0, poll_s=0.0)  # each poll advances sim time
        assert um.temperatures_stable()


def _st(faults, channel="inprocess"):
    return connect("stainer-ref", simulated=channel, seed=0, faults=faults, timeout_s=FAST)


@pytest.mark.parametrize("channel", ["inprocess", "socket"])
def test_door_opened_mid_run_pauses_and_raises(channel):
    with _st([{"kind": "door_open", "at_step": 2}], channel) as st:
        st.load_protocol(STEPS)
        with pytest.raises(DoorOpenError, match="301") as exc:
            st.run()
        dev = st.simulated_device
        assert dev.state == "PAUSED" and dev.step == 2
        assert exc.value.safe_state.startswith("staining paused")
        assert st.simulated_device.received.count("STAIN:RUN") == 1
        with pytest.raises(DoorOpenError):  # resume is refused while the door is open
            st.resume()
        assert "STAIN:RES" not in dev.received


def test_reagent_running_out_mid_run():
    with _st([{"kind": "reagent_out", "reagent": "SECONDARY", "at_step": 2}]) as st:
        st.load_protocol(STEPS)
        with pytest.raises(ReagentError, match="302.*SECONDARY") as exc:
            st.run()
        assert st.simulated_device.state == "PAUSED"
        assert "paused" in exc.value.safe_state


def test_reagent_too_low_refuses_run_before_sending():
    with _st(None) as st:
        st.simulated_device.reagents["PRIMARY"] = 50.0
        st.load_protocol(STEPS)
        with pytest.raises(ReagentError, match="PRIMARY holds 50 ul"):
            st.run()
        assert "STAIN:RUN" not in st.simulated_device.received


def test_door_open_refuses_run_before_sending():
    with _st(None) as st:
        st.simulated_device.door = "OPEN"
        st.load_protocol(STEPS)
        with pytest.raises(DoorOpenError):
            st.run()
        assert "STAIN:RUN" not in st.simulated_device.received


def test_microscope_garbled_image_block_is_refetched():
    faults = [{"kind": "garble", "match": r"IMAG:DATA\?", "count": 1}]
    with connect("microscope-ref", simulated="socket", seed=0, faults=faults, timeout_s=FAST) as mic:
        mic.image_size_px = 32
        img = mic.acquire()
        assert img.array.shape == (32, 32)
        assert mic.simulated_device.received.count("IMAG:DATA?") == 2


def test_invalid_setpoint_never_reaches_the_device_under_faults():
    with _um([{"kind": "drop", "count": None, "probability": 0.3}]) as um:
        for bad in (-5, 2000, float("inf")):
            with pytest.raises(ParameterError):
                um.section_thickness_nm = bad
        assert set(um.simulated_device.received) <= {"*IDN?"}  # identification at connect, nothing else


def test_fault_config_validation():
    from cryoopt.exceptions import ConfigError

    assert FaultConfig.coerce(None).faults == []
    with pytest.raises(ConfigError):
        FaultConfig.coerce([{"kind": "meteor"}])
    with pytest.raises(ConfigError):
        FaultConfig.coerce([{"kind": "latency", "seconds": -1}])


# -- an instrument that is not there: one error type, naming the address and what to check --------
@pytest.mark.parametrize("address", ["/dev/ttyCRYOOPT_ABSENT", "ASRL/dev/ttyCRYOOPT_ABSENT::INSTR"])
def test_missing_instrument_is_a_disconnected_error_naming_the_address(address):
    with pytest.raises(DisconnectedError, match=rf"cannot open '{re.escape(address)}'.*check the address and that the "
                                                r"device is on"):
        connect("ultramicrotome-ref", address)
