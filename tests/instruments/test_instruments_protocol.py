"""Protocol tests: expected command/reply pairs for every property and action (no device).

Uses pymeasure's ``expected_protocol``: the driver must write exactly these bytes (without
terminations) and parse exactly these replies.
"""

from __future__ import annotations

import numpy as np
import pytest
from pymeasure.test import expected_protocol

from cryoopt.exceptions import DeviceError, ParameterError
from cryoopt.instruments import Microscope, Stainer, StainStep, Ultramicrotome
from cryoopt.instruments.errors import DoorOpenError, ReagentError, TemperatureInterlockError

OK = ("SYST:ERR?", '0,"No error"')

# (driver, property, set value, set bytes, get bytes, reply, parsed value)
SETPOINTS = [
    (Ultramicrotome, "section_thickness_nm", 80, "SECT:THIC 80", "SECT:THIC?", "80", 80.0),
    (Ultramicrotome, "cutting_speed_mm_s", 1.5, "SECT:SPEE 1.5", "SECT:SPEE?", "1.5", 1.5),
    (Ultramicrotome, "return_speed_mm_s", 20, "SECT:RET 20", "SECT:RET?", "20", 20.0),
    (Ultramicrotome, "cutting_window_start_um", 100, "SECT:WIND:STAR 100", "SECT:WIND:STAR?", "100", 100.0),
    (Ultramicrotome, "cutting_window_end_um", 900, "SECT:WIND:END 900", "SECT:WIND:END?", "900", 900.0),
    (Ultramicrotome, "mode", "trim", "SECT:MODE TRIM", "SECT:MODE?", "TRIM", "TRIM"),
    (Ultramicrotome, "knife_position_um", 500, "KNIF:POS 500", "KNIF:POS?", "500", 500.0),
    (Ultramicrotome, "specimen_temperature_c", -120, "TEMP:SPEC -120", "TEMP:SPEC?", "-120", -120.0),
    (Ultramicrotome, "knife_temperature_c", -110.5, "TEMP:KNIF -110.5", "TEMP:KNIF?", "-110.5", -110.5),
    (Ultramicrotome, "chamber_temperature_c", -150, "TEMP:CHAM -150", "TEMP:CHAM?", "-150", -150.0),
    (Stainer, "temperature_c", 37, "TEMP 37", "TEMP?", "37", 37.0),
    (Microscope, "modality", "EM", "MODE EM", "MODE?", "EM", "EM"),
    (Microscope, "channel", "gfp", "CHAN GFP", "CHAN?", "GFP", "GFP"),
    (Microscope, "exposure_ms", 50, "EXPO 50", "EXPO?", "50", 50.0),
    (Microscope, "gain", 2, "GAIN 2", "GAIN?", "2", 2.0),
    (Microscope, "focus_um", -1.25, "FOC -1.25", "FOC?", "-1.25", -1.25),
    (Microscope, "stage_x_um", 1000, "STAG:X 1000", "STAG:X?", "1000", 1000.0),
    (Microscope, "stage_y_um", -20, "STAG:Y -20", "STAG:Y?", "-20", -20.0),
    (Microscope, "image_size_px", 256, "IMAG:SIZE 256", "IMAG:SIZE?", "256", 256),
]

# (driver, property, set value outside the profile's limits)
OUT_OF_RANGE = [
    (Ultramicrotome, "section_thickness_nm", 5000),
    (Ultramicrotome, "section_thickness_nm", 1),
    (Ultramicrotome, "cutting_speed_mm_s", 0),
    (Ultramicrotome, "return_speed_mm_s", 1000),
    (Ultramicrotome, "cutting_window_end_um", -1),
    (Ultramicrotome, "mode", "SLICE"),
    (Ultramicrotome, "knife_position_um", 1e6),
    (Ultramicrotome, "specimen_temperature_c", -300),
    (Ultramicrotome, "knife_temperature_c", 100),
    (Ultramicrotome, "chamber_temperature_c", float("nan")),
    (Stainer, "temperature_c", 90),
    (Microscope, "modality", "XRAY"),
    (Microscope, "channel", "CY5"),
    (Microscope, "exposure_ms", -5),
    (Microscope, "gain", 0.5),
    (Microscope, "focus_um", 501),
    (Microscope, "stage_x_um", True),
    (Microscope, "image_size_px", 100.5),
]

# (driver, property, get bytes, reply, parsed value)
READINGS = [
    (Ultramicrotome, "measured_specimen_temperature_c", "MEAS:TEMP:SPEC?", "-119.8", -119.8),
    (Ultramicrotome, "measured_knife_temperature_c", "MEAS:TEMP:KNIF?", "-120.1", -120.1),
    (Ultramicrotome, "measured_chamber_temperature_c", "MEAS:TEMP:CHAM?", "-150", -150.0),
    (Ultramicrotome, "section_count", "SECT:COUN?", "42", 42),
    (Ultramicrotome, "knife_wear", "KNIF:WEAR?", "7", 7),
    (Ultramicrotome, "state", "STAT?", "CUTTING", "CUTTING"),
    (Ultramicrotome, "idn", "*IDN?", "CRYOOPT,REFCUT-1,SN1,0.1", "CRYOOPT,REFCUT-1,SN1,0.1"),
    (Stainer, "measured_temperature_c", "MEAS:TEMP?", "36.9", 36.9),
    (Stainer, "door", "DOOR?", "CLOSED", "CLOSED"),
    (Stainer, "step_count", "PROT:COUN?", "3", 3),
    (Stainer, "current_step", "STAIN:STEP?", "2", 2),
    (Stainer, "progress", "STAIN:PROG?", "0.5", 0.5),
    (Stainer, "state", "STAT?", "PAUSED", "PAUSED"),
    (Microscope, "state", "STAT?", "IDLE", "IDLE"),
]


@pytest.mark.parametrize("cls,prop,value,set_cmd,get_cmd,reply,parsed", SETPOINTS,
                         ids=[f"{c.__name__}.{p}" for c, p, *_ in SETPOINTS])
def test_setpoint_set_and_get(cls, prop, value, set_cmd, get_cmd, reply, parsed):
    with expected_protocol(cls, [(set_cmd, None), OK, (get_cmd, reply)]) as inst:
        setattr(inst, prop, value)
        assert getattr(inst, prop) == parsed


@pytest.mark.parametrize("cls,prop,value", OUT_OF_RANGE, ids=[f"{c.__name__}.{p}={v}" for c, p, v in OUT_OF_RANGE])
def test_setpoint_out_of_range_sends_nothing(cls, prop, value):
    with expected_protocol(cls, []) as inst:  # any byte written would fail here
        with pytest.raises(ParameterError) as exc:
            setattr(inst, prop, value)
    assert prop in str(exc.value)
    assert not inst.exchange_log.writes()


def test_out_of_range_message_names_parameter_value_and_range():
    with expected_protocol(Ultramicrotome, []) as um, pytest.raises(ParameterError) as exc:
        um.section_thickness_nm = 5000
    assert "section_thickness_nm = 5000 nm" in str(exc.value)
    assert "[15, 1000] nm" in str(exc.value)


@pytest.mark.parametrize("cls,prop,get_cmd,reply,parsed", READINGS, ids=[f"{c.__name__}.{p}" for c, p, *_ in READINGS])
def test_readings(cls, prop, get_cmd, reply, parsed):
    with expected_protocol(cls, [(get_cmd, reply)]) as inst:
        assert getattr(inst, prop) == parsed


def test_device_refuses_setpoint_raises_device_error():
    pairs = [("SECT:THIC 80", None), ("SYST:ERR?", '-221,"Settings conflict; cutting"'), OK]
    with expected_protocol(Ultramicrotome, pairs) as um, pytest.raises(DeviceError, match="-221"):
        um.section_thickness_nm = 80


def _temps(stable=True):
    meas = "-120" if stable else "-110"
    return [("TEMP:SPEC?", "-120"), ("MEAS:TEMP:SPEC?", meas), ("TEMP:KNIF?", "-120"), ("MEAS:TEMP:KNIF?", "-120"),
            ("TEMP:CHAM?", "-150"), ("MEAS:TEMP:CHAM?", "-150")]


def test_ultramicrotome_cut():
    pairs = [*_temps(), ("SECT:COUN?", "0"), ("SECT:CUT 3", None), OK, ("*OPC?", "1"), OK, ("SECT:COUN?", "3")]
    with expected_protocol(Ultramicrotome, pairs) as um:
        assert um.cut(3) == 3


def test_ultramicrotome_cut_refused_when_temperatures_unstable():
    with expected_protocol(Ultramicrotome, _temps(stable=False)) as um:
        with pytest.raises(TemperatureInterlockError, match="specimen off by"):
            um.cut(1)
    assert not any(w.startswith("SECT:CUT") for w in um.exchange_log.writes())


def test_ultramicrotome_cut_count_validated_first():
    with expected_protocol(Ultramicrotome, []) as um, pytest.raises(ParameterError, match="sections_per_run"):
        um.cut(10_000)


@pytest.mark.parametrize("action,cmd", [("stop", "SECT:STOP"), ("reset_counter", "SECT:COUN:RES"),
                                        ("reset", "*RST")])
def test_ultramicrotome_simple_actions(action, cmd):
    with expected_protocol(Ultramicrotome, [(cmd, None), OK]) as um:
        getattr(um, action)()


def test_ultramicrotome_start_checks_temperatures():
    with expected_protocol(Ultramicrotome, [*_temps(), ("SECT:STAR", None), OK]) as um:
        um.start()


def test_ultramicrotome_clear_and_window():
    pairs = [("*CLS", None), ("SECT:WIND:STAR 10", None), OK, ("SECT:WIND:END 20", None), OK]
    with expected_protocol(Ultramicrotome, pairs) as um:
        um.clear()
        um.set_cutting_window(10, 20)
    with expected_protocol(Ultramicrotome, []) as um, pytest.raises(ParameterError, match="below its end"):
        um.set_cutting_window(20, 10)


def test_ultramicrotome_set_temperatures_validates_all_first():
    with expected_protocol(Ultramicrotome, []) as um, pytest.raises(ParameterError, match="knife_temperature_c"):
        um.set_temperatures(specimen_c=-120, knife_c=500)
    pairs = [("TEMP:SPEC -120", None), OK, ("TEMP:CHAM -140", None), OK]
    with expected_protocol(Ultramicrotome, pairs) as um:
        um.set_temperatures(specimen_c=-120, chamber_c=-140)


def test_ultramicrotome_action_error_goes_to_safe_state():
    pairs = [("SECT:STOP", None), ("SYST:ERR?", '-300,"Device-specific error"'), OK,
             ("STAT?", "IDLE"), ("SECT:STOP", None), ("STAT?", "IDLE")]
    with expected_protocol(Ultramicrotome, pairs) as um, pytest.raises(DeviceError) as exc:
        um.stop()
    assert exc.value.safe_state.startswith("cutting stopped")


STEP = StainStep("PRIMARY", dilution=200, volume_ul=100, time_min=30, temperature_c=37, agitation_rpm=100, wash_cycles=2)


def test_stainer_load_protocol():
    pairs = [("PROT:CLE", None), OK, ("PROT:STEP PRIMARY,200,100,30,37,100,2", None), OK]
    with expected_protocol(Stainer, pairs) as st:
        assert st.load_protocol([STEP]) == [STEP]
        assert st.required_volumes([STEP]) == {"PRIMARY": 100.0, "PBS": 200.0}


@pytest.mark.parametrize("field,value", [("reagent", "GOLD"), ("dilution", 0.5), ("volume_ul", 5000),
                                         ("time_min", 0), ("temperature_c", 80), ("agitation_rpm", -1),
                                         ("wash_cycles", 11)])
def test_stainer_bad_step_sends_nothing(field, value):
    steps = [STEP, {**STEP.__dict__, field: value}]
    with expected_protocol(Stainer, []) as st, pytest.raises(ParameterError, match=r"step 2"):
        st.load_protocol(steps)


def _interlock_pairs(door="CLOSED", primary="1000", pbs="5000"):
    return [("DOOR?", door), ("REAG:LEV? PRIMARY", primary), ("REAG:LEV? PBS", pbs)]


def _loaded(pairs):
    return [("PROT:CLE", None), OK, ("PROT:STEP PRIMARY,200,100,30,37,100,2", None), OK, *pairs]


def test_stainer_run():
    pairs = _loaded([*_interlock_pairs(), ("STAIN:RUN", None), OK, ("*OPC?", "1"), OK])
    with expected_protocol(Stainer, pairs) as st:
        st.load_protocol([STEP])
        st.run()


def test_stainer_run_refused_door_open():
    with expected_protocol(Stainer, _loaded([("DOOR?", "OPEN")])) as st:
        st.load_protocol([STEP])
        with pytest.raises(DoorOpenError, match="door is open"):
            st.run()
    assert "STAIN:RUN" not in st.exchange_log.writes()


def test_stainer_run_refused_reagent_low():
    with expected_protocol(Stainer, _loaded(_interlock_pairs(primary="50")[:2])) as st:
        st.load_protocol([STEP])
        with pytest.raises(ReagentError, match="PRIMARY holds 50 ul but the protocol needs 100 ul"):
            st.run()


@pytest.mark.parametrize("action,cmd", [("pause", "STAIN:PAUS"), ("abort", "STAIN:ABOR")])
def test_stainer_simple_actions(action, cmd):
    with expected_protocol(Stainer, [(cmd, None), OK]) as st:
        getattr(st, action)()


def test_stainer_resume_checks_interlocks():
    with expected_protocol(Stainer, [("DOOR?", "CLOSED"), ("STAIN:RES", None), OK]) as st:
        st.resume()  # no protocol loaded through this driver: only the door is checked


def test_stainer_reagents():
    pairs = [("REAG:LIST?", "PBS,PRIMARY"), ("REAG:LEV? PBS", "5000.0"), ("REAG:LEV? PRIMARY", "12.5")]
    with expected_protocol(Stainer, pairs) as st:
        assert st.reagent_levels() == {"PBS": 5000.0, "PRIMARY": 12.5}


def test_microscope_acquire_block_and_metadata():
    img = np.arange(12, dtype="<u2").reshape(3, 4)
    payload = img.tobytes()
    blk = b"#2" + str(len(payload)).encode() + payload
    pairs = [("ACQ:STAR", None), OK, ("*OPC?", "1"), OK, ("IMAG:META?", "3,4,<u2,65,LM,GFP"), ("IMAG:DATA?", blk),
             ("EXPO?", "50"), ("GAIN?", "1"), ("FOC?", "0"), ("STAG:X?", "0"), ("STAG:Y?", "0")]
    with expected_protocol(Microscope, pairs) as mic:
        arr, meta = mic.acquire()
    np.testing.assert_array_equal(arr, img)
    assert meta["shape"] == (3, 4) and meta["pixel_size_nm"] == 65.0 and meta["channel"] == "GFP"


def test_microscope_abort_and_stage():
    pairs = [("ACQ:ABOR", None), OK, ("STAG:X 1", None), OK, ("STAG:Y 2", None), OK]
    with expected_protocol(Microscope, pairs) as mic:
        mic.abort()
        mic.move_stage(1, 2)


def test_exchange_log_records_every_write_and_read():
    seen = []
    with expected_protocol(Ultramicrotome, [("SECT:THIC?", "80")]) as um:
        um.exchange_log.subscribe(seen.append)
        um.section_thickness_nm  # noqa: B018
    assert [(r.direction, r.data) for r in um.exchange_log] == [("write", b"SECT:THIC?"), ("read", b"80")]
    assert len(seen) == 2 and seen[0].timestamp <= seen[1].timestamp
