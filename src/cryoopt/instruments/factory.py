"""Build connected drivers from a profile: real hardware or a simulated device on any channel.

Example:
    >>> from cryoopt.instruments import connect, open_bench
    >>> with connect("stainer-ref", simulated="inprocess", seed=1) as st:
    ...     st.door
    'CLOSED'
    >>> with open_bench(seed=0) as bench:          # three in-process devices, one tray
    ...     bench.ultramicrotome.cut(1)
    1
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from cryoopt.exceptions import ConfigError
from cryoopt.instruments.base import CryoInstrument
from cryoopt.instruments.conditions import Condition
from cryoopt.instruments.log import ExchangeLog
from cryoopt.instruments.microscope import Microscope
from cryoopt.instruments.profiles import Profile, load_profile
from cryoopt.instruments.simulated.device import SampleTray, SimulatedDevice
from cryoopt.instruments.simulated.microscope import SimulatedMicroscope
from cryoopt.instruments.simulated.physics import imaging_backends, sectioning_backends, staining_backends
from cryoopt.instruments.simulated.servers import PtyServer, SocketServer
from cryoopt.instruments.simulated.stainer import SimulatedStainer
from cryoopt.instruments.simulated.ultramicrotome import SimulatedUltramicrotome
from cryoopt.instruments.stainer import Stainer
from cryoopt.instruments.transports import InProcessAdapter, make_adapter
from cryoopt.instruments.ultramicrotome import Ultramicrotome
from cryoopt.registry import Registry

__all__ = ["Bench", "connect", "device_models", "open_bench", "simulated_models"]

Simulated = Literal[False, "inprocess", "socket", "pty"]

#: device class -> driver class
device_models: Registry[type[CryoInstrument]] = Registry("instrument driver")
device_models.register("ultramicrotome", Ultramicrotome)
device_models.register("stainer", Stainer)
device_models.register("microscope", Microscope)

#: device class -> simulated device class
simulated_models: Registry[type[SimulatedDevice]] = Registry("simulated instrument")
simulated_models.register("ultramicrotome", SimulatedUltramicrotome)
simulated_models.register("stainer", SimulatedStainer)
simulated_models.register("microscope", SimulatedMicroscope)

_PHYSICS = {"ultramicrotome": sectioning_backends, "stainer": staining_backends, "microscope": imaging_backends}


def _physics(device_class: str, physics: Any) -> Any:
    if physics is None or not isinstance(physics, str):
        return physics
    return _PHYSICS[device_class].get(physics)()


def connect(
    profile: str | Profile | dict[str, Any],
    address: str | None = None,
    *,
    simulated: Simulated | bool = False,
    seed: int = 0,
    faults: Any = None,
    physics: Any = None,
    device: SimulatedDevice | None = None,
    tray: SampleTray | None = None,
    timeout_s: float | None = None,
    exchange_log: ExchangeLog | None = None,
    realtime: bool = False,
    check_identity: bool = True,
) -> CryoInstrument:
    """Return a connected driver for ``profile``; close it (or use ``with``) when done.

    Args:
        profile: profile name, path, dict or :class:`Profile`.
        address: pyserial URL / port or VISA resource; default: the profile's address.
            Ignored when ``simulated`` is set.
        simulated: ``False`` (hardware), ``"inprocess"`` (no channel), ``"socket"`` (TCP
            on 127.0.0.1) or ``"pty"`` (pseudo-terminal). ``True`` means ``"inprocess"``.
        seed: seed of the simulated device (physics noise and fault draws).
        faults: fault config for the simulated device (see ``simulated.faults``).
        physics: backend object or registered name for the simulated device's physics.
        device: an existing simulated device to talk to (e.g. one sharing a tray).
        tray: the sample tray a new simulated device shares.
        timeout_s: override the profile's per-exchange timeout.
        exchange_log: where to log every exchange (a fresh log by default).
        realtime: in-process only: really sleep for injected latencies.
        check_identity: ask ``*IDN?`` first and refuse a device whose answer lacks the
            profile's ``idn_contains`` (:class:`~cryoopt.instruments.errors.WrongInstrumentError`;
            nothing else is sent and the link is closed again).

    The driver owns the simulator server it started; ``driver.close()`` stops it.
    ``driver.simulated_device`` is the simulated device (``None`` on hardware).
    """
    prof = load_profile(profile)
    if timeout_s is not None:
        prof = prof.with_overrides(transport={"timeout_s": float(timeout_s)})
    driver_cls = device_models.get(prof.device_class)
    mode = "inprocess" if simulated is True else simulated
    owned: list[Any] = []
    sim_dev: SimulatedDevice | None = None
    if mode:
        sim_dev = device or simulated_models.get(prof.device_class)(
            prof, seed=seed, faults=faults, physics=_physics(prof.device_class, physics), tray=tray
        )
        if mode == "inprocess":
            adapter: Any = InProcessAdapter(sim_dev, prof.transport, realtime=realtime)
        elif mode in ("socket", "pty"):
            server = SocketServer(sim_dev) if mode == "socket" else PtyServer(sim_dev)
            owned.append(server)
            try:
                adapter = make_adapter(server.address, prof.transport)
            except Exception:
                server.close()
                raise
        else:
            raise ConfigError(f"simulated must be False, 'inprocess', 'socket' or 'pty', got {simulated!r}")
    else:
        addr = address or prof.transport.address
        if not addr:
            raise ConfigError(
                f"no address for {prof.name!r}: pass address= or set transport.address in the profile "
                "(or use simulated='inprocess'|'socket'|'pty')"
            )
        adapter = make_adapter(addr, prof.transport)
    driver = driver_cls(adapter, prof, exchange_log=exchange_log)
    driver._owned = owned  # type: ignore[attr-defined]
    driver.simulated_device = sim_dev  # type: ignore[attr-defined]
    if check_identity:
        try:
            driver.identify()
        except BaseException:
            driver.close()
            raise
    return driver


@dataclass
class Bench:
    """An ultramicrotome, a stainer and a microscope, simulated on one shared :class:`SampleTray`."""

    ultramicrotome: Ultramicrotome
    stainer: Stainer
    microscope: Microscope
    tray: SampleTray = field(default_factory=SampleTray)

    @property
    def drivers(self) -> tuple[CryoInstrument, ...]:
        return (self.ultramicrotome, self.stainer, self.microscope)

    def conditions(self) -> list[Condition]:
        """Every instrument's conditions that should hold a campaign (see :meth:`suspend_reason`)."""
        found: list[Condition] = []
        for driver in self.drivers:
            found.extend(driver.conditions())
        return found

    def suspend_reason(self) -> str | None:
        """Why trials should wait now, in words, or ``None`` when the bench is ready.

        Asks each instrument its readbacks (door, reagent levels, measured vs set
        temperatures; thresholds from the profiles' ``interlocks``). A campaign polls this
        before each trial, waits while it returns a reason and resumes when it returns
        ``None``. Example: ``"stainer-ref: door open; close it to continue"``.

        Bounded in time: a dozen queries, each within its profile's ``timeout_s`` and
        ``query_retries``. Raises the typed :class:`~cryoopt.exceptions.InstrumentError`
        of a readback that fails for good (that instrument is then in its safe state).
        """
        found = self.conditions()
        return "; ".join(str(c) for c in found) if found else None

    def close(self) -> None:
        for d in self.drivers:
            with contextlib.suppress(Exception):
                d.close()

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_bench(
    simulated: Simulated = "inprocess",
    *,
    seed: int = 0,
    faults: dict[str, Any] | None = None,
    physics: dict[str, Any] | None = None,
    profiles: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Bench:
    """Three simulated devices sharing one tray, each behind its driver.

    ``faults``/``physics``/``profiles`` are keyed by device class (``"ultramicrotome"``,
    ``"stainer"``, ``"microscope"``); seeds per device are spawned from ``seed``.
    """
    if not simulated:
        raise ConfigError("open_bench builds simulated benches; use connect() per device for hardware")
    faults, physics, profiles = faults or {}, physics or {}, profiles or {}
    tray = SampleTray()
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(3)]
    drivers = {}
    for cls_name, s in zip(("ultramicrotome", "stainer", "microscope"), seeds):
        drivers[cls_name] = connect(
            profiles.get(cls_name, f"{cls_name}-ref"), simulated=simulated, seed=s, faults=faults.get(cls_name),
            physics=physics.get(cls_name), tray=tray, **kwargs,
        )
    return Bench(tray=tray, **drivers)  # type: ignore[arg-type]
