"""Drivers over pyvisa with the pyvisa-sim backend (instruments/pyvisa_sim/cryoopt-devices.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pyvisa_sim")

from cryoopt.exceptions import DeviceError, InstrumentTimeoutError, ParameterError  # noqa: E402
from cryoopt.instruments import VisaResourceAdapter, connect, load_profile  # noqa: E402

DEFS = Path(__file__).resolve().parents[2] / "instruments" / "pyvisa_sim" / "cryoopt-devices.yaml"


def _visa(profile, resource):
    p = load_profile(profile).with_overrides(
        transport={"kind": "visa", "visa_library": f"{DEFS}@sim", "timeout_s": 0.2, "query_retries": 0})
    return connect(p, resource)


def test_ultramicrotome_over_pyvisa_sim():
    with _visa("ultramicrotome-ref", "ASRL1::INSTR") as um:
        assert isinstance(um.adapter, VisaResourceAdapter)
        assert "REFCUT-1" in um.idn and um.state == "IDLE"
        um.section_thickness_nm = 80
        um.cutting_speed_mm_s = 2.5
        um.mode = "TRIM"
        assert (um.section_thickness_nm, um.cutting_speed_mm_s, um.mode) == (80.0, 2.5, "TRIM")
        um.set_temperatures(specimen_c=-120, knife_c=-120, chamber_c=-150)
        assert um.temperatures_stable()
        assert um.cut(3) == 3
        with pytest.raises(ParameterError):
            um.section_thickness_nm = 5000


def test_stainer_over_pyvisa_sim():
    with _visa("stainer-ref", "ASRL2::INSTR") as st:
        st.temperature_c = 37
        assert st.temperature_c == 37.0
        assert not st.door_open
        assert st.reagent_levels() == {"PBS": 50000.0, "PRIMARY": 2000.0}
        st.pause()


def test_microscope_over_pyvisa_sim():
    with _visa("microscope-ref", "ASRL3::INSTR") as mic:
        mic.exposure_ms = 20
        mic.gain = 4.5  # note: stringparser's {:g} in pyvisa-sim rejects single-digit numbers
        mic.channel = "DAPI"
        assert (mic.exposure_ms, mic.gain, mic.channel) == (20.0, 4.5, "DAPI")


def test_unknown_command_surfaces_as_device_error_or_timeout():
    with _visa("microscope-ref", "ASRL3::INSTR") as mic:
        # IMAG:SIZE is not in the static pyvisa-sim definition: the set is refused via SYST:ERR?
        with pytest.raises(DeviceError, match="-100"):
            mic.image_size_px = 64
        with pytest.raises(InstrumentTimeoutError):
            mic.focus_um  # noqa: B018  (unknown query: pyvisa-sim answers nothing useful)


def test_setpoints_travel_in_full_precision_over_visa():
    with _visa("ultramicrotome-ref", "ASRL1::INSTR") as um:
        um.section_thickness_nm = 80.1234567
        assert um.section_thickness_nm == 80.1234567


def test_bench_over_pyvisa_sim_is_ready():
    from cryoopt.instruments import Bench

    bench = Bench(ultramicrotome=_visa("ultramicrotome-ref", "ASRL1::INSTR"),
                  stainer=_visa("stainer-ref", "ASRL2::INSTR"), microscope=_visa("microscope-ref", "ASRL3::INSTR"))
    with bench:
        bench.stainer.temperature_c = 22  # the static definition measures 22 degC
        assert bench.conditions() == []
        assert bench.suspend_reason() is None
