"""Simulated instruments: same bytes as the real devices, physics from pluggable backends."""
from __future__ import annotations

from cryoopt.instruments.simulated.device import Reply, SampleTray, SimulatedDevice
from cryoopt.instruments.simulated.faults import FaultConfig, FaultInjector
from cryoopt.instruments.simulated.microscope import SimulatedMicroscope
from cryoopt.instruments.simulated.physics import (
    ImagingPhysics,
    SectioningPhysics,
    StainingPhysics,
    imaging_backends,
    sectioning_backends,
    staining_backends,
)
from cryoopt.instruments.simulated.servers import PtyServer, SocketServer
from cryoopt.instruments.simulated.stainer import SimulatedStainer
from cryoopt.instruments.simulated.ultramicrotome import SimulatedUltramicrotome

__all__ = [
    "FaultConfig",
    "FaultInjector",
    "ImagingPhysics",
    "PtyServer",
    "Reply",
    "SampleTray",
    "SectioningPhysics",
    "SimulatedDevice",
    "SimulatedMicroscope",
    "SimulatedStainer",
    "SimulatedUltramicrotome",
    "SocketServer",
    "StainingPhysics",
    "imaging_backends",
    "sectioning_backends",
    "staining_backends",
]
