"""Instrument drivers, transports and simulated devices (see ``instruments/PROTOCOL.md``)."""
from __future__ import annotations

from cryoopt.instruments.conditions import Condition
from cryoopt.instruments.log import Exchange, ExchangeLog
from cryoopt.instruments.microscope import Image, Microscope
from cryoopt.instruments.profiles import Profile, list_profiles, load_profile
from cryoopt.instruments.stainer import Stainer, StainStep
from cryoopt.instruments.ultramicrotome import Ultramicrotome
from cryoopt.instruments.errors import (
    DisconnectedError,
    DoorOpenError,
    GarbledReplyError,
    OperationTimeoutError,
    ReagentError,
    TemperatureInterlockError,
    WrongInstrumentError,
)
from cryoopt.instruments.factory import Bench, connect, device_models, open_bench, simulated_models
from cryoopt.instruments.transports import InProcessAdapter, SerialURLAdapter, VisaResourceAdapter, transports

__all__ = [
    "Bench",
    "Condition",
    "DisconnectedError",
    "DoorOpenError",
    "Exchange",
    "ExchangeLog",
    "GarbledReplyError",
    "Image",
    "InProcessAdapter",
    "Microscope",
    "OperationTimeoutError",
    "Profile",
    "ReagentError",
    "SerialURLAdapter",
    "StainStep",
    "Stainer",
    "TemperatureInterlockError",
    "Ultramicrotome",
    "VisaResourceAdapter",
    "WrongInstrumentError",
    "connect",
    "device_models",
    "list_profiles",
    "load_profile",
    "open_bench",
    "simulated_models",
    "transports",
]
