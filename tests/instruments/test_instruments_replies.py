"""Strict replies, replies kept in step, bounded waits, identity, exact numbers.

Each finding of the adversarial pass on the drivers has its regression here, as
command/reply pairs (pymeasure's ``expected_protocol``) and on simulated devices with
injected faults (``cryoopt.instruments.simulated.faults``).
"""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymeasure.test import expected_protocol

from cryoopt.exceptions import InstrumentTimeoutError
from cryoopt.instruments import Microscope, Stainer, StainStep, Ultramicrotome, connect, load_profile
from cryoopt.instruments.errors import GarbledReplyError, OperationTimeoutError, WrongInstrumentError
from cryoopt.instruments.replies import (
    format_command,
    format_number,
    parse_error_reply,
    parse_number,
    parse_whole,
    parse_word,
    precise_format,
)
from cryoopt.instruments.simulated import SimulatedUltramicrotome

OK = ("SYST:ERR?", '0,"No error"')
IDN = ("*IDN?", "CRYOOPT,REFCUT-1,SN1,0.1")
STAIN_IDN = ("*IDN?", "CRYOOPT,REFSTAIN-1,SN1,0.1")
SCOPE_IDN = ("*IDN?", "CRYOOPT,REFSCOPE-1,SN1,0.1")
FAST = 0.2


# -- the reply grammar --------------------------------------------------------------------------------
@pytest.mark.parametrize("text,value", [("80", 80.0), (" 80 ", 80.0), ("-120.5", -120.5), ("+8.0E+01", 80.0),
                                        (".5", 0.5), ("1e-7", 1e-7), ("0", 0.0)])
def test_parse_number_accepts_ieee488_numbers(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["80,80", "80 80", "nan", "NaN", "inf", "-inf", "1e999", "", "OK", "80nm",
                                  "0x10", "1_000", "--1", "80.0.1"])
def test_parse_number_refuses_anything_but_one_finite_number(text):
    with pytest.raises(ValueError):
        parse_number(text)


def test_parse_whole_and_word():
    assert parse_whole("3") == 3 and parse_whole("3.0") == 3
    with pytest.raises(ValueError, match="whole"):
        parse_whole("3.5")
    assert parse_word(" idle ", ("IDLE", "CUTTING")) == "IDLE"
    for junk in ("READY", "IDLE,CUTTING", "", "1"):
        with pytest.raises(ValueError):
            parse_word(junk, ("IDLE", "CUTTING"))


@pytest.mark.parametrize("text,parsed", [('0,"No error"', (0, "No error")), ('+0,"No error"', (0, "No error")),
                                         ("-222,Data out of range", (-222, "Data out of range")),
                                         ("301", (301, "")), (' -113 , "Undefined header" ', (-113, "Undefined header"))])
def test_parse_error_reply(text, parsed):
    assert parse_error_reply(text) == parsed


@pytest.mark.parametrize("text", ["OK", "", "No error", "1.5,x", "ERR -222"])
def test_parse_error_reply_refuses_junk(text):
    with pytest.raises(ValueError):
        parse_error_reply(text)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_format_number_round_trips_every_float(x):
    assert parse_number(format_number(x)) == x


def test_format_number_and_command():
    assert format_number(80.0) == "80" and format_number(-0.0) == "0" and format_number(2.5) == "2.5"
    assert format_number(80.1234567) == "80.1234567" and format_number(1e-7) == "1e-07"
    assert precise_format("SECT:THIC %g") == ("SECT:THIC %s", True)
    assert precise_format("SECT:THIC %.1f") == ("SECT:THIC %.1f", False)
    assert format_command("PROT:STEP %s,%g,%d", "PBS", 333.3333333, 2) == "PROT:STEP PBS,333.3333333,2"
    assert format_command("FOC %.2f%%", 1.234) == "FOC 1.23%"
    with pytest.raises(TypeError):
        format_command("A %g %g", 1.0)


# -- finding: a two-value reply returned a list ---------------------------------------------------------
def test_two_value_reply_is_refused_after_retries_and_device_made_safe():
    pairs = [("SECT:THIC?", "80,80"), IDN, ("SECT:THIC?", "80,80"), IDN, ("SECT:THIC?", "80,80"),
             IDN, ("STAT?", "IDLE"), ("SECT:STOP", None), ("STAT?", "IDLE")]
    with expected_protocol(Ultramicrotome, pairs) as um, pytest.raises(GarbledReplyError, match="one number") as exc:
        um.section_thickness_nm  # noqa: B018
    assert exc.value.safe_state.startswith("cutting stopped") and exc.value.device_state == "IDLE"


def test_two_value_reply_once_is_retried():
    with expected_protocol(Ultramicrotome, [("MEAS:TEMP:KNIF?", "-119.8,-120.1"), IDN,
                                            ("MEAS:TEMP:KNIF?", "-120.1")]) as um:
        assert um.measured_knife_temperature_c == -120.1


# -- finding: junk replies to text properties were returned as values ---------------------------------
@pytest.mark.parametrize("cls,idn,prop,get,junk,good,value", [
    (Ultramicrotome, IDN, "state", "STAT?", "READY", "cutting", "CUTTING"),
    (Stainer, STAIN_IDN, "door", "DOOR?", "AJAR", "CLOSED", "CLOSED"),
    (Stainer, STAIN_IDN, "state", "STAT?", "IDLE,LOADED", "LOADED", "LOADED"),
    (Ultramicrotome, IDN, "mode", "SECT:MODE?", "SLICE", "TRIM", "TRIM"),
    (Microscope, SCOPE_IDN, "channel", "CHAN?", "", "BSE", "BSE"),
    (Ultramicrotome, IDN, "section_count", "SECT:COUN?", "3.5", "3", 3),
])
def test_junk_reply_is_refused_and_retried(cls, idn, prop, get, junk, good, value):
    with expected_protocol(cls, [(get, junk), idn, (get, good)]) as inst:
        assert getattr(inst, prop) == value
    events = [r.data.decode() for r in inst.exchange_log if r.direction == "event"]
    assert any("invalid reply" in e for e in events)


def test_state_words_come_from_the_profile_when_it_lists_them():
    prof = load_profile("ultramicrotome-ref").model_dump()
    prof["limits"]["state"] = {"choices": ["IDLE", "CUTTING", "READY"]}
    with expected_protocol(Ultramicrotome, [("STAT?", "READY")], profile=prof) as um:
        assert um.state == "READY"


# -- finding: one extra or late reply shifted every later reply (and the error reported stale state) --
def test_reply_to_a_setter_is_discarded_not_read_as_the_error_reply():
    pairs = [("SECT:THIC 80", None), ("SYST:ERR?", "OK"), (None, '0,"No error"'), ("SECT:SPEE?", "1")]
    with expected_protocol(Ultramicrotome, pairs) as um:
        um.section_thickness_nm = 80
        assert um.cutting_speed_mm_s == 1.0


def test_resynchronisation_discards_the_late_reply_before_the_identification():
    pairs = [("SECT:THIC?", "SECT:THIC?"), ("*IDN?", "80"), (None, IDN[1]), ("SECT:THIC?", "80"), ("SECT:SPEE?", "1")]
    with expected_protocol(Ultramicrotome, pairs) as um:
        assert um.section_thickness_nm == 80.0
        assert um.cutting_speed_mm_s == 1.0


def _um(faults=None, channel="inprocess", **kw):
    return connect("ultramicrotome-ref", simulated=channel, seed=0, faults=faults, timeout_s=FAST, **kw)


def _in_step(um):
    dev = um.simulated_device
    for _ in range(2):
        assert um.section_thickness_nm == dev.settings["section_thickness_nm"]
        assert um.cutting_speed_mm_s == dev.settings["cutting_speed_mm_s"]
        assert um.return_speed_mm_s == dev.settings["return_speed_mm_s"]
        assert um.state == dev.status


@pytest.mark.parametrize("channel", ["inprocess", "socket"])
def test_late_reply_does_not_shift_later_replies(channel):
    fault = {"kind": "latency", "seconds": 0.3, "match": r"SECT:THIC\?", "count": 1}  # > the 0.2 s timeout
    with _um([fault], channel) as um:
        t0 = time.monotonic()
        assert um.section_thickness_nm == 100.0
        assert time.monotonic() - t0 < 2.0
        _in_step(um)


@pytest.mark.parametrize("channel", ["inprocess", "socket"])
def test_late_setpoint_confirmation_reports_the_fresh_state(channel):
    fault = {"kind": "latency", "seconds": 0.3, "match": r"SYST:ERR\?", "count": 1}
    with _um([fault], channel) as um:
        with pytest.raises(InstrumentTimeoutError) as exc:
            um.section_thickness_nm = 80  # SYST:ERR? pops an error: never asked twice
        assert exc.value.device_state == "IDLE"  # not the late '0,"No error"'
        assert um.simulated_device.received.count("SECT:THIC 80") == 1
        _in_step(um)


# -- finding: *OPC? was retried 3x (up to 1.5 h with the shipped timeout) --------------------------------
def test_opc_is_asked_once_and_the_device_made_safe():
    with _um([{"kind": "drop", "match": r"\*OPC\?", "count": None, "execute": False}]) as um:  # never answered
        um.cutting_window_end_um = 15000  # 16.5 s strokes: the device is still cutting when the driver gives up
        with pytest.raises(OperationTimeoutError, match="operation_timeout_s") as exc:
            um.cut(3)
        dev = um.simulated_device
        assert dev.received.count("*OPC?") == 1
        assert exc.value.device_state == "CUTTING" and dev.status == "IDLE"
        assert exc.value.safe_state.startswith("cutting stopped")
        _in_step(um)


def test_opc_wait_is_bounded_by_the_operation_timeout_in_real_time():
    prof = load_profile("ultramicrotome-ref").with_overrides(transport={"operation_timeout_s": 0.5})
    with connect(prof, simulated="socket", seed=0, timeout_s=FAST,
                 faults=[{"kind": "drop", "match": r"\*OPC\?", "count": None}]) as um:
        t0 = time.monotonic()
        with pytest.raises(OperationTimeoutError):
            um.cut(1)
        elapsed = time.monotonic() - t0
        assert 0.5 <= elapsed < 0.5 + 10 * FAST  # the wait, then resync + state + safe state
        assert um.simulated_device.received.count("*OPC?") == 1


# -- finding: the profile's idn_contains was never checked ------------------------------------------------
def test_identify_refuses_another_instrument():
    with expected_protocol(Ultramicrotome, [("*IDN?", "ACME,SPECTROMETER-9,42,1.0")]) as um:
        with pytest.raises(WrongInstrumentError, match="REFCUT-1") as exc:
            um.identify()
    assert exc.value.safe_state == "unchanged (only *IDN? was sent)"
    with expected_protocol(Ultramicrotome, [("*IDN?", "cryoopt,refcut-1,sn7,0.1")]) as um:
        assert um.identify() == "cryoopt,refcut-1,sn7,0.1" and um.identification


@pytest.mark.parametrize("channel", ["inprocess", "socket"])
def test_connect_refuses_the_wrong_instrument_and_closes_the_link(channel):
    dev = SimulatedUltramicrotome(seed=0)
    dev.idn = "CRYOOPT,REFSTAIN-1,SIM0001,0.1"  # a stainer on the ultramicrotome's port
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(WrongInstrumentError, match="REFSTAIN-1"):
        _um(channel=channel, device=dev)
    assert dev.received == ["*IDN?"]
    time.sleep(0.1)
    assert {t.ident for t in threading.enumerate() if t.is_alive()} <= before  # the server was stopped


def test_connect_can_skip_the_identity_check():
    dev = SimulatedUltramicrotome(seed=0)
    dev.idn = "ACME,OTHER,1,1"
    with _um(device=dev, check_identity=False) as um:
        assert dev.received == [] and um.identification is None


# -- finding: %g rounded setpoints to 6 digits --------------------------------------------------------
def test_setpoints_are_written_in_full():
    pairs = [("SECT:THIC 80.1234567", None), OK, ("SECT:SPEE 1.0000001", None), OK, ("SECT:THIC 80", None), OK]
    with expected_protocol(Ultramicrotome, pairs) as um:
        um.section_thickness_nm = 80.1234567
        um.cutting_speed_mm_s = 1.0000001
        um.section_thickness_nm = 80.0


def test_protocol_steps_are_written_in_full():
    step = StainStep("PRIMARY", dilution=333.3333333, volume_ul=12.345678, time_min=7.0000001, temperature_c=37,
                     agitation_rpm=100, wash_cycles=2)
    pairs = [("PROT:CLE", None), OK, ("PROT:STEP PRIMARY,333.3333333,12.345678,7.0000001,37,100,2", None), OK]
    with expected_protocol(Stainer, pairs) as st_:
        st_.load_protocol([step])


def test_a_profile_with_an_explicit_precision_keeps_it():
    prof = load_profile("ultramicrotome-ref").model_dump()
    prof["commands"]["section_thickness_nm"] = {"get": "SECT:THIC?", "set": "SECT:THIC %.1f"}
    with expected_protocol(Ultramicrotome, [("SECT:THIC 80.1", None), OK], profile=prof) as um:
        um.section_thickness_nm = 80.1234567


def test_full_precision_round_trip_through_the_simulated_device():
    with _um() as um:
        um.section_thickness_nm = 80.1234567
        assert um.simulated_device.settings["section_thickness_nm"] == 80.1234567
        assert um.section_thickness_nm == 80.1234567


@pytest.mark.slow  # waits ~5 s of timeouts (no CPU)
def test_a_silent_device_costs_at_most_the_documented_bound():
    """Worst case of one property read on a device that never answers (PROTOCOL.md):
    query Q = (1 + 3r) t + r d (attempts, then resync before each retry), fault guard
    2t + 2Q (resync, STAT? before and after the safe state): (5 + 9r) t + 3 r d in all."""
    prof = load_profile("ultramicrotome-ref")
    t, r, d = FAST, prof.transport.query_retries, prof.transport.retry_delay_s
    bound = (5 + 9 * r) * t + 3 * r * d
    with _um([{"kind": "drop", "count": None, "skip": 1}], "socket") as um:  # silent after *IDN?
        t0 = time.monotonic()
        with pytest.raises(InstrumentTimeoutError) as exc:
            um.section_thickness_nm  # noqa: B018
        elapsed = time.monotonic() - t0
    assert elapsed <= bound + 1.0, f"{elapsed:.2f} s > bound {bound:.2f} s"
    assert exc.value.device_state == "unknown" and "SECT:STOP" in um.simulated_device.received
