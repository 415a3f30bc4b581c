"""The drivers against a device that deviates from PROTOCOL.md (``adversarial.AdversarialDevice``).

One parametrized check per deviation. Each check demands one of two outcomes, never a
silent wrong value:

- the driver gets the right answer anyway (a reply it can recognise as out of place is
  discarded), or
- it raises a typed :class:`~cryoopt.exceptions.InstrumentError` within a bounded time,
  with ``safe_state`` saying what the hardware was left in and ``device_state`` being a
  real state word of the device (not a stale reply),

and, either way, the link is *in step* afterwards: with the quirks switched off, every
reply is the answer to its own query. Most checks run in-process (late replies arrive
just before the next reply, no waiting); a few run over TCP with a 0.2 s timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from adversarial import AdversarialDevice, Quirk

from cryoopt.exceptions import CryoOptError, DeviceError, InstrumentError, InstrumentTimeoutError
from cryoopt.instruments import StainStep, connect
from cryoopt.instruments.simulated import SimulatedMicroscope, SimulatedStainer, SimulatedUltramicrotome

FAST = 0.2  # s: per-exchange timeout
PROFILE = {"ultramicrotome": "ultramicrotome-ref", "stainer": "stainer-ref", "microscope": "microscope-ref"}
SIM = {"ultramicrotome": SimulatedUltramicrotome, "stainer": SimulatedStainer, "microscope": SimulatedMicroscope}
STATES = {"ultramicrotome": {"IDLE", "CUTTING"}, "microscope": {"IDLE", "ACQUIRING"},
          "stainer": {"IDLE", "LOADED", "RUNNING", "PAUSED", "DONE", "ABORTED"}}
#: what the simulated device holds, per property the in-step check reads back
TRUTH: dict[str, dict[str, Callable[[Any], Any]]] = {
    "ultramicrotome": {
        "section_thickness_nm": lambda d: d.settings["section_thickness_nm"],
        "cutting_speed_mm_s": lambda d: d.settings["cutting_speed_mm_s"],
        "return_speed_mm_s": lambda d: d.settings["return_speed_mm_s"],
        "section_count": lambda d: d.count,
        "state": lambda d: d.status,
    },
    "stainer": {
        "temperature_c": lambda d: d.settings["temperature_c"],
        "step_count": lambda d: len(d.steps),
        "door": lambda d: d.door,
        "state": lambda d: d.status,
    },
    "microscope": {
        "exposure_ms": lambda d: d.settings["exposure_ms"],
        "gain": lambda d: d.settings["gain"],
        "image_size_px": lambda d: d.settings["image_size_px"],
        "state": lambda d: d.status,
    },
}
TIME_BOUND_S = 5.0  # in-process: nothing should wait; generous for a loaded CI machine

CHECKS: dict[str, Callable[[], None]] = {}


def check(fn: Callable[[], None]) -> Callable[[], None]:
    CHECKS[fn.__name__.removeprefix("check_")] = fn
    return fn


def rig(kind: str = "ultramicrotome", *quirks: Quirk, idn: str | None = None,
        channel: str = "inprocess") -> tuple[Any, AdversarialDevice]:
    """A driver connected to an adversarial device; the quirks start after connecting."""
    adv = AdversarialDevice(SIM[kind](seed=0), idn=idn)
    drv = connect(PROFILE[kind], simulated=channel, device=adv, timeout_s=FAST)
    adv.set_quirks(*quirks)
    return drv, adv


def kind_of(drv: Any) -> str:
    return drv.profile.device_class


def in_step(drv: Any, adv: AdversarialDevice) -> None:
    """Quirks off: every property reads back what the device holds, twice over."""
    adv.set_quirks()
    for _ in range(2):
        for prop, truth in TRUTH[kind_of(drv)].items():
            assert getattr(drv, prop) == truth(adv.device), f"{prop} out of step"


def typed_fault(err: BaseException, drv: Any, adv: AdversarialDevice, *, state_readable: bool = True) -> None:
    """A typed instrument error that says where it left the hardware, with a fresh state.

    ``state_readable=False``: the quirk breaks ``STAT?`` itself, so "unknown" is the honest
    state; a stale reply never is.
    """
    assert isinstance(err, InstrumentError), f"untyped {type(err).__name__}: {err}"
    assert getattr(err, "safe_state", None) is not None, "no safe_state on the error"
    state = getattr(err, "device_state", None)
    if state is not None:
        allowed = STATES[kind_of(drv)] | (set() if state_readable else {"unknown"})
        assert state in allowed, f"stale device_state {state!r}"


def fails_typed(fn: Callable[[], Any], drv: Any, adv: AdversarialDevice, *,
                state_readable: bool = True) -> BaseException:
    t0 = time.monotonic()
    with pytest.raises(Exception) as exc:
        fn()
    assert time.monotonic() - t0 < TIME_BOUND_S
    typed_fault(exc.value, drv, adv, state_readable=state_readable)
    return exc.value


def reads(drv: Any, prop: str, expected: Any) -> None:
    t0 = time.monotonic()
    assert getattr(drv, prop) == expected
    assert time.monotonic() - t0 < TIME_BOUND_S


def _read(drv: Any, prop: str) -> Callable[[], Any]:
    return lambda: getattr(drv, prop)


# -- identity --------------------------------------------------------------------------------------
def _refused(idn: str | None, *quirks: Quirk) -> None:
    adv = AdversarialDevice(SimulatedUltramicrotome(seed=0), *quirks, idn=idn)
    t0 = time.monotonic()
    with pytest.raises(CryoOptError) as exc:
        connect("ultramicrotome-ref", simulated="inprocess", device=adv, timeout_s=FAST)
    assert time.monotonic() - t0 < TIME_BOUND_S
    assert "REFCUT-1" in str(exc.value), "the error should name the identification it expected"
    assert adv.received == ["*IDN?"] * len(adv.received), "nothing but *IDN? may reach a wrong instrument"


@check
def check_idn_correct_is_accepted() -> None:
    drv, adv = rig()
    assert "REFCUT-1" in drv.idn
    in_step(drv, adv)


@check
def check_idn_other_model_is_refused() -> None:
    _refused("CRYOOPT,REFSTAIN-1,SIM0001,0.1")


@check
def check_idn_other_vendor_is_refused() -> None:
    _refused("ACME,SPECTROMETER-9,42,1.0")


@check
def check_idn_empty_is_refused() -> None:
    _refused("")


@check
def check_idn_silent_is_refused() -> None:
    _refused(None, Quirk("silent", r"\*IDN\?", count=None))


@check
def check_idn_lower_case_is_accepted() -> None:
    adv = AdversarialDevice(SimulatedUltramicrotome(seed=0), idn="cryoopt,refcut-1,sn7,0.1")
    drv = connect("ultramicrotome-ref", simulated="inprocess", device=adv, timeout_s=FAST)
    in_step(drv, adv)


@check
def check_idn_late_at_connect() -> None:
    adv = AdversarialDevice(SimulatedUltramicrotome(seed=0), Quirk("late", r"\*IDN\?"))
    drv = connect("ultramicrotome-ref", simulated="inprocess", device=adv, timeout_s=FAST)
    in_step(drv, adv)


# -- one value expected: wrong shapes --------------------------------------------------------------
def _junk_number(reply: str, prop: str = "section_thickness_nm", get: str = r"SECT:THIC\?") -> None:
    drv, adv = rig("ultramicrotome", Quirk("replace", get, text=reply, count=None))
    fails_typed(_read(drv, prop), drv, adv)
    in_step(drv, adv)


def _junk_once(reply: str, expected: Any, prop: str = "section_thickness_nm", get: str = r"SECT:THIC\?") -> None:
    drv, adv = rig("ultramicrotome", Quirk("replace", get, text=reply))
    reads(drv, prop, expected)
    in_step(drv, adv)


@check
def check_two_values_persistent() -> None:
    _junk_number("100,100")


@check
def check_two_values_once_is_retried() -> None:
    _junk_once("100,100", 100.0)


@check
def check_space_separated_values() -> None:
    _junk_number("100 100")


@check
def check_nan_reply() -> None:
    _junk_number("nan")


@check
def check_inf_reply() -> None:
    _junk_number("inf")


@check
def check_overflowing_reply() -> None:
    _junk_number("1e999")


@check
def check_empty_reply() -> None:
    _junk_number("")


@check
def check_ok_reply_to_query() -> None:
    _junk_number("OK")


@check
def check_unit_suffix_reply() -> None:
    _junk_number("100nm")


@check
def check_padded_number_is_accepted() -> None:
    _junk_once("  100 ", 100.0)


@check
def check_nr3_number_is_accepted() -> None:
    _junk_once("+1.00000E+02", 100.0)


@check
def check_fractional_count() -> None:
    _junk_number("3.5", "section_count", r"SECT:COUN\?")


@check
def check_integral_float_count_is_accepted() -> None:
    _junk_once("0.0", 0, "section_count", r"SECT:COUN\?")


@check
def check_two_measured_temperatures() -> None:
    _junk_number("-119.8,-120.1", "measured_knife_temperature_c", r"MEAS:TEMP:KNIF\?")


@check
def check_empty_knife_wear() -> None:
    _junk_number("", "knife_wear", r"KNIF:WEAR\?")


@check
def check_reagent_level_junk() -> None:
    drv, adv = rig("stainer", Quirk("replace", r"REAG:LEV\? .*", text="lots", count=None))
    fails_typed(lambda: drv.reagent_level_ul("PBS"), drv, adv)
    in_step(drv, adv)


# -- text replies -----------------------------------------------------------------------------------
def _junk_text(kind: str, get: str, prop: str, reply: str) -> None:
    drv, adv = rig(kind, Quirk("replace", get, text=reply, count=None))
    fails_typed(_read(drv, prop), drv, adv, state_readable=get != r"STAT\?")
    in_step(drv, adv)


@check
def check_state_unknown_word() -> None:
    _junk_text("ultramicrotome", r"STAT\?", "state", "READY")


@check
def check_state_number() -> None:
    _junk_text("ultramicrotome", r"STAT\?", "state", "100")


@check
def check_state_two_words() -> None:
    _junk_text("stainer", r"STAT\?", "state", "IDLE,LOADED")


@check
def check_state_lower_case_is_accepted() -> None:
    drv, adv = rig("ultramicrotome", Quirk("replace", r"STAT\?", text="idle"))
    reads(drv, "state", "IDLE")
    in_step(drv, adv)


@check
def check_door_unknown_word() -> None:
    _junk_text("stainer", r"DOOR\?", "door", "AJAR")


@check
def check_door_two_words() -> None:
    _junk_text("stainer", r"DOOR\?", "door", "OPEN,CLOSED")


@check
def check_mode_unknown_choice() -> None:
    _junk_text("ultramicrotome", r"SECT:MODE\?", "mode", "SLICE")


@check
def check_mode_lower_case_is_accepted() -> None:
    drv, adv = rig("ultramicrotome", Quirk("replace", r"SECT:MODE\?", text="sect"))
    reads(drv, "mode", "SECT")
    in_step(drv, adv)


@check
def check_channel_empty() -> None:
    _junk_text("microscope", r"CHAN\?", "channel", "")


@check
def check_modality_two_values() -> None:
    _junk_text("microscope", r"MODE\?", "modality", "LM,EM")


@check
def check_error_queue_junk_after_setpoint() -> None:
    drv, adv = rig("ultramicrotome", Quirk("replace", r"SYST:ERR\?", text="WHAT", count=None))

    def set_it() -> None:
        drv.section_thickness_nm = 80

    fails_typed(set_it, drv, adv)
    in_step(drv, adv)


@check
def check_error_reply_without_quotes() -> None:
    drv, adv = rig("ultramicrotome", Quirk("replace", r"SYST:ERR\?", text="-222,Data out of range"))
    with pytest.raises(DeviceError, match="-222"):
        drv.section_thickness_nm = 80
    in_step(drv, adv)


@check
def check_error_reply_with_plus_sign() -> None:
    drv, adv = rig("ultramicrotome", Quirk("replace", r"SYST:ERR\?", text='+0,"No error"'))
    drv.section_thickness_nm = 80
    in_step(drv, adv)


@check
def check_error_queue_never_empties() -> None:
    drv, adv = rig("ultramicrotome", Quirk("replace", r"SYST:ERR\?", text='-300,"Stuck"', count=None))

    def set_it() -> None:
        drv.section_thickness_nm = 80

    err = fails_typed(set_it, drv, adv)
    assert isinstance(err, DeviceError)
    assert adv.received.count("SYST:ERR?") <= 25
    in_step(drv, adv)


@check
def check_image_metadata_junk() -> None:
    drv, adv = rig("microscope", Quirk("replace", r"IMAG:META\?", text="no image", count=None))
    fails_typed(drv.acquire, drv, adv)
    in_step(drv, adv)


# -- extra replies ----------------------------------------------------------------------------------
@check
def check_setter_answered_ok() -> None:
    drv, adv = rig("ultramicrotome", Quirk("extra", r"SECT:(THIC|SPEE) [^?]*", text="OK", count=None))
    drv.section_thickness_nm = 80
    drv.cutting_speed_mm_s = 2.5
    assert (adv.device.settings["section_thickness_nm"], adv.device.settings["cutting_speed_mm_s"]) == (80, 2.5)
    in_step(drv, adv)


@check
def check_setter_answered_ok_over_socket() -> None:
    drv, adv = rig("ultramicrotome", Quirk("extra", r"SECT:THIC [^?]*", text="OK", count=None), channel="socket")
    try:
        drv.section_thickness_nm = 80
        drv.section_thickness_nm = 90
        assert adv.device.settings["section_thickness_nm"] == 90
        in_step(drv, adv)
    finally:
        drv.close()


@check
def check_query_answered_twice() -> None:
    drv, adv = rig("ultramicrotome", Quirk("extra", r"SECT:THIC\?"))
    reads(drv, "section_thickness_nm", 100.0)
    reads(drv, "cutting_speed_mm_s", 1.0)
    in_step(drv, adv)


@check
def check_query_answered_twice_over_socket() -> None:
    drv, adv = rig("ultramicrotome", Quirk("extra", r"SECT:THIC\?"), channel="socket")
    try:
        reads(drv, "section_thickness_nm", 100.0)
        in_step(drv, adv)
    finally:
        drv.close()


@check
def check_state_answered_twice() -> None:
    drv, adv = rig("ultramicrotome", Quirk("extra", r"STAT\?"))
    reads(drv, "state", "IDLE")
    in_step(drv, adv)


@check
def check_command_echoed() -> None:
    drv, adv = rig("ultramicrotome", Quirk("echo", r"SECT:THIC\?"))
    reads(drv, "section_thickness_nm", 100.0)
    in_step(drv, adv)


@check
def check_unsolicited_line() -> None:
    drv, adv = rig("ultramicrotome", Quirk("unsolicited", r"SECT:SPEE\?", text="ALARM"))
    reads(drv, "cutting_speed_mm_s", 1.0)
    in_step(drv, adv)


@check
def check_unsolicited_line_before_error_reply() -> None:
    drv, adv = rig("ultramicrotome", Quirk("unsolicited", r"SYST:ERR\?", text="ALARM"))
    drv.section_thickness_nm = 80
    assert adv.device.settings["section_thickness_nm"] == 80
    in_step(drv, adv)


@check
def check_action_answered_ok() -> None:
    drv, adv = rig("ultramicrotome", Quirk("extra", r"SECT:CUT \d+", text="OK"))
    assert drv.cut(2) == 2
    in_step(drv, adv)


@check
def check_opc_answered_twice() -> None:
    drv, adv = rig("ultramicrotome", Quirk("extra", r"\*OPC\?"))
    assert drv.cut(2) == 2
    in_step(drv, adv)


@check
def check_stainer_run_answered_ok() -> None:
    drv, adv = rig("stainer", Quirk("extra", r"STAIN:RUN", text="OK"))
    drv.load_protocol([StainStep("PRIMARY", dilution=200, volume_ul=100, time_min=10)])
    drv.run()
    assert adv.device.state == "DONE"
    in_step(drv, adv)


# -- late replies -----------------------------------------------------------------------------------
@check
def check_late_query_reply() -> None:
    drv, adv = rig("ultramicrotome", Quirk("late", r"SECT:THIC\?"))
    reads(drv, "section_thickness_nm", 100.0)
    reads(drv, "cutting_speed_mm_s", 1.0)
    in_step(drv, adv)


@check
def check_two_late_replies_in_a_row() -> None:
    drv, adv = rig("ultramicrotome", Quirk("late", r"SECT:THIC\?", count=2))
    reads(drv, "section_thickness_nm", 100.0)
    in_step(drv, adv)


@check
def check_late_state_reply() -> None:
    drv, adv = rig("ultramicrotome", Quirk("late", r"STAT\?"))
    reads(drv, "state", "IDLE")
    in_step(drv, adv)


@check
def check_late_error_reply_after_setpoint() -> None:
    drv, adv = rig("ultramicrotome", Quirk("late", r"SYST:ERR\?"))

    def set_it() -> None:
        drv.section_thickness_nm = 80

    try:  # either outcome is fine: confirmed, or a typed fault that reports a fresh state
        set_it()
    except Exception as exc:  # noqa: BLE001
        typed_fault(exc, drv, adv)
    in_step(drv, adv)


@check
def check_late_reply_during_fault_guard() -> None:
    drv, adv = rig("ultramicrotome", Quirk("replace", r"SECT:THIC\?", text="junk", count=None),
                   Quirk("late", r"STAT\?"))
    fails_typed(_read(drv, "section_thickness_nm"), drv, adv)
    in_step(drv, adv)


@check
def check_late_opc_reply() -> None:
    drv, adv = rig("ultramicrotome", Quirk("late", r"\*OPC\?"))
    err = fails_typed(lambda: drv.cut(2), drv, adv)
    assert isinstance(err, InstrumentTimeoutError)
    assert adv.device.status == "IDLE"
    in_step(drv, adv)


@check
def check_late_query_reply_over_socket() -> None:
    # the device's thread is busy for 0.3 s, longer than the driver's 0.2 s timeout
    fault = {"kind": "latency", "seconds": 0.3, "match": r"SECT:THIC\?", "count": 1}
    adv = AdversarialDevice(SimulatedUltramicrotome(seed=0, faults=[fault]))
    with connect("ultramicrotome-ref", simulated="socket", device=adv, timeout_s=FAST) as drv:
        reads(drv, "section_thickness_nm", 100.0)
        reads(drv, "cutting_speed_mm_s", 1.0)
        in_step(drv, adv)


@check
def check_late_setpoint_confirmation_over_socket() -> None:
    fault = {"kind": "latency", "seconds": 0.3, "match": r"SYST:ERR\?", "count": 1}
    adv = AdversarialDevice(SimulatedUltramicrotome(seed=0, faults=[fault]))
    with connect("ultramicrotome-ref", simulated="socket", device=adv, timeout_s=FAST) as drv:
        try:
            drv.section_thickness_nm = 80
        except Exception as exc:  # noqa: BLE001
            typed_fault(exc, drv, adv)
        in_step(drv, adv)


# -- *OPC? --------------------------------------------------------------------------------------------
@check
def check_opc_never_answers() -> None:
    drv, adv = rig("ultramicrotome", Quirk("lost", r"\*OPC\?", count=None))  # never answered
    drv.cutting_window_end_um = 15000  # 16.5 s strokes: still cutting when the driver gives up
    err = fails_typed(lambda: drv.cut(3), drv, adv)
    assert isinstance(err, InstrumentTimeoutError) and getattr(err, "device_state", None) == "CUTTING"
    assert drv.exchange_log.writes().count("*OPC?") == 1, "*OPC? waits up to operation_timeout_s: never repeat it"
    assert adv.device.status == "IDLE" and "SECT:STOP" in adv.received
    in_step(drv, adv)


@check
def check_opc_wrong_answer() -> None:
    drv, adv = rig("ultramicrotome", Quirk("replace", r"\*OPC\?", text="0", count=None))
    fails_typed(lambda: drv.cut(1), drv, adv)
    assert drv.exchange_log.writes().count("*OPC?") == 1
    in_step(drv, adv)


@check
def check_stainer_opc_never_answers() -> None:
    drv, adv = rig("stainer", Quirk("lost", r"\*OPC\?", count=None))
    drv.load_protocol([StainStep("PRIMARY", dilution=200, volume_ul=100, time_min=10)])
    err = fails_typed(drv.run, drv, adv)
    assert isinstance(err, InstrumentTimeoutError)
    assert drv.exchange_log.writes().count("*OPC?") == 1 and "STAIN:PAUS" in adv.received
    in_step(drv, adv)


@check
def check_microscope_opc_never_answers() -> None:
    drv, adv = rig("microscope", Quirk("lost", r"\*OPC\?", count=None))
    err = fails_typed(drv.acquire, drv, adv)
    assert drv.exchange_log.writes().count("*OPC?") == 1 and "ACQ:ABOR" in adv.received
    assert isinstance(err, InstrumentTimeoutError)
    in_step(drv, adv)


# -- numbers sent exactly -----------------------------------------------------------------------------
def _exact(kind: str, prop: str, value: float, header: str) -> None:
    drv, adv = rig(kind)
    setattr(drv, prop, value)
    sent = [c for c in adv.received if c.startswith(header + " ")][-1]
    assert float(sent.split(" ", 1)[1]) == value, f"sent {sent!r} for {value!r}"
    assert getattr(drv, prop) == value
    in_step(drv, adv)


@check
def check_setpoint_sent_with_full_precision() -> None:
    _exact("ultramicrotome", "section_thickness_nm", 80.1234567, "SECT:THIC")


@check
def check_small_setpoint_sent_exactly() -> None:
    _exact("microscope", "exposure_ms", 0.0123456789, "EXPO")


@check
def check_large_setpoint_sent_exactly() -> None:
    _exact("microscope", "stage_x_um", 24999.999999, "STAG:X")


@check
def check_tiny_step_is_not_lost() -> None:
    _exact("ultramicrotome", "cutting_speed_mm_s", 1.0000001, "SECT:SPEE")


@check
def check_whole_number_sent_without_decimals() -> None:
    drv, adv = rig()
    drv.section_thickness_nm = 80.0
    assert "SECT:THIC 80" in adv.received


@check
def check_protocol_step_sent_exactly() -> None:
    drv, adv = rig("stainer")
    drv.load_protocol([StainStep("PRIMARY", dilution=333.3333333, volume_ul=12.345678, time_min=7.0000001)])
    assert adv.device.steps[0]["dilution"] == 333.3333333
    assert adv.device.steps[0]["volume_ul"] == 12.345678
    assert adv.device.steps[0]["time_min"] == 7.0000001


# -- silence ------------------------------------------------------------------------------------------
@check
def check_device_goes_silent() -> None:
    drv, adv = rig("ultramicrotome", Quirk("silent", count=None))
    t0 = time.monotonic()
    with pytest.raises(InstrumentError) as exc:
        drv.section_thickness_nm  # noqa: B018
    assert time.monotonic() - t0 < TIME_BOUND_S
    assert isinstance(exc.value, InstrumentTimeoutError)
    assert exc.value.safe_state is not None
    in_step(drv, adv)


@pytest.mark.parametrize("name", list(CHECKS))
def test_adversarial_device(name: str) -> None:
    CHECKS[name]()


def test_check_list_is_complete() -> None:
    assert len(CHECKS) >= 57
