"""Tests against real instruments. Skipped unless an address is given, e.g.

    CRYOOPT_ULTRAMICROTOME_ADDRESS=/dev/ttyUSB0 pytest tests/instruments/hardware
    CRYOOPT_STAINER_ADDRESS=ASRL3::INSTR CRYOOPT_STAINER_PROFILE=my-stainer.yaml pytest ...

Only read-only queries and harmless setpoint round trips (restored afterwards); nothing cuts,
stains or acquires.
"""

from __future__ import annotations

import os

import pytest

from cryoopt.instruments import connect

pytestmark = pytest.mark.hardware


def _driver(device_class):
    address = os.environ.get(f"CRYOOPT_{device_class.upper()}_ADDRESS")
    if not address:
        pytest.skip(f"set CRYOOPT_{device_class.upper()}_ADDRESS to run against a real {device_class}")
    profile = os.environ.get(f"CRYOOPT_{device_class.upper()}_PROFILE", f"{device_class}-ref")
    return connect(profile, address)


@pytest.mark.parametrize("device_class", ["ultramicrotome", "stainer", "microscope"])
def test_identify_and_error_queue(device_class):
    with _driver(device_class) as drv:
        assert drv.profile.idn_contains in drv.idn
        drv.check_errors()
        assert drv.state


def test_ultramicrotome_setpoint_round_trip():
    with _driver("ultramicrotome") as um:
        old = um.section_thickness_nm
        try:
            um.section_thickness_nm = old
            assert um.section_thickness_nm == pytest.approx(old)
        finally:
            um.section_thickness_nm = old
        um.temperatures()
