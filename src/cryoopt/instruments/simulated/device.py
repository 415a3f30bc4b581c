"""Base of the simulated devices: a SCPI byte handler with a virtual clock and an error queue.

``SimulatedDevice.exchange(line) -> Reply`` is the whole interface a channel needs: the
TCP and pty servers call it for each received line and send ``Reply.data``; the
in-process adapter calls it directly. Time is simulated: each received command advances
the clock by ``sim.tick_s`` of the profile, and ``*OPC?`` advances it until the running
operation ends (or a fault stops it), so runs are fast and deterministic.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from cryoopt.instruments.profiles import Profile, load_profile
from cryoopt.instruments.replies import format_number
from cryoopt.instruments.simulated.faults import FaultInjector
from cryoopt.instruments.validators import Choices, Limits

__all__ = ["Reply", "SampleTray", "SettingsConflict", "SimulatedDevice"]


class SettingsConflict(Exception):
    """Raised by a handler when a command is not allowed in the current state (-221)."""


@dataclass
class Reply:
    """What goes back on the wire for one command (``data`` includes the termination)."""

    data: bytes | None
    latency_s: float = 0.0
    disconnect: bool = False


@dataclass
class SampleTray:
    """Ground truth shared by the simulated devices of one bench: the sections cut so far.

    Each section is a dict of features: the sectioning backend's output, updated by the
    staining backend's output when stained. Not reachable through the drivers (a real
    bench has no such query); environments read it for ground truth and rewards.
    """

    sections: list[dict[str, Any]] = field(default_factory=list)

    def latest(self) -> dict[str, Any]:
        return self.sections[-1] if self.sections else {}


class SimulatedDevice:
    """Common SCPI machinery. Subclasses fill ``self.commands`` and implement ``_evolve``."""

    default_profile: ClassVar[str] = ""
    idn: ClassVar[str] = "CRYOOPT,SIM,0,0.1"
    settings_map: ClassVar[dict[str, str]] = {}  # SCPI header -> setting name

    def __init__(self, profile: str | Profile | None = None, *, seed: int = 0, faults: Any = None,
                 physics: Any = None, tray: SampleTray | None = None) -> None:
        self.profile = load_profile(profile or self.default_profile)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.faults = faults if isinstance(faults, FaultInjector) else FaultInjector(faults)
        self.tray = tray if tray is not None else SampleTray()
        self.sim = dict(self.profile.sim)
        self.tick_s = float(self.sim.get("tick_s", 1.0))
        self.term = self.profile.transport.read_termination.encode()
        self.lock = threading.RLock()
        self.received: list[str] = []
        self.now = 0.0
        self.errors: deque[tuple[int, str]] = deque(maxlen=32)
        self.commands: dict[str, Callable[[str], str | bytes | None]] = {
            "*IDN?": lambda a: self.idn,
            "*RST": lambda a: self.reset(),
            "*CLS": lambda a: self.errors.clear(),
            "*OPC?": lambda a: self._opc(),
            "SYST:ERR?": lambda a: self._pop_error(),
            "STAT?": lambda a: self.status,
        }
        for header, name in self.settings_map.items():
            self.commands[header] = self._setter(name)
            self.commands[header + "?"] = self._getter(name)
        self.physics = physics
        self.reset()

    # -- state ----------------------------------------------------------------------------
    status = "IDLE"

    def reset(self) -> None:
        self.settings: dict[str, Any] = dict(self.sim.get("initial", {}))

    def push_error(self, code: int, message: str) -> None:
        self.errors.append((code, message))

    def _pop_error(self) -> str:
        if not self.errors:
            return '0,"No error"'
        code, msg = self.errors.popleft()
        return f'{code},"{msg}"'

    def busy(self) -> bool:
        return False

    def advance(self, dt: float) -> None:
        """Let ``dt`` simulated seconds pass."""
        if dt > 0:
            self._evolve(dt)
            self.now += dt
            self._update_faults()

    def _evolve(self, dt: float) -> None:  # pragma: no cover - overridden
        pass

    # -- device faults while running ----------------------------------------------------------
    def inject(self, fault: Any) -> Any:
        """Add a fault now (a door opened, a reagent drained, a temperature drifting): a fault
        model or a dict as in :mod:`~cryoopt.instruments.simulated.faults`; returns it."""
        with self.lock:
            f = self.faults.add(fault)
            self._update_faults()
            return f

    def clear_faults(self, kind: str | None = None) -> None:
        """Clear injected faults of ``kind`` (all: ``None``): the door closes, the reagent is
        refilled, the temperature comes back under control."""
        with self.lock:
            self.faults.clear(kind)
            self._update_faults()

    def _update_faults(self) -> None:
        """Start and end time-triggered device faults (devices that have some override this)."""

    def _opc(self) -> str:
        for _ in range(100_000):
            if not self.busy():
                break
            self.advance(self._next_event_dt())
        return "1"

    def _next_event_dt(self) -> float:
        return 1.0

    # -- generic settings ---------------------------------------------------------------------
    def _limit(self, name: str) -> Limits | Choices | None:
        return self.profile.limit(name) if name in self.profile.limits else None

    def _setter(self, name: str) -> Callable[[str], None]:
        def handler(arg: str) -> None:
            lim = self._limit(name)
            if isinstance(lim, Choices):
                match = [c for c in lim.choices if c.upper() == arg.strip().upper()]
                if not match:
                    raise ValueError(arg)
                value: Any = match[0]
            else:
                value = float(arg)
                if lim is not None and not lim.low <= value <= lim.high:
                    raise ValueError(arg)
            self.apply_setting(name, value)

        return handler

    def _getter(self, name: str) -> Callable[[str], str]:
        def handler(arg: str) -> str:
            v = self.settings.get(name)
            return format_number(v) if isinstance(v, (int, float)) else str(v)

        return handler

    def apply_setting(self, name: str, value: Any) -> None:
        self.settings[name] = value

    # -- the byte handler -----------------------------------------------------------------------
    def handle(self, text: str) -> str | bytes | None:
        """Execute one command line; return the reply (without termination) or ``None``."""
        header, _, arg = text.strip().partition(" ")
        header = header.upper()
        fn = self.commands.get(header)
        if fn is None:
            self.push_error(-113, f"Undefined header; {header}")
            return None
        try:
            out = fn(arg.strip())
        except SettingsConflict as exc:
            self.push_error(-221, f"Settings conflict; {exc}")
            return None
        except (ValueError, TypeError, KeyError, IndexError):
            self.push_error(-222, f"Data out of range; {text.strip()}")
            return None
        return out if header.endswith("?") else None

    def exchange(self, line: bytes) -> Reply:
        """One command line in (termination stripped), the reply out, with faults applied."""
        with self.lock:
            try:
                text = line.decode("ascii").strip()
            except UnicodeDecodeError:
                self.push_error(-100, "Command error; undecodable bytes")
                return Reply(None)
            if not text:
                return Reply(None)
            self.received.append(text)
            fired = self.faults.link_faults(text)
            kinds = {f.kind: f for f in fired}
            d = kinds.get("disconnect")
            if d is not None and d.when == "before":
                return Reply(None, disconnect=True)
            self.advance(self.tick_s)
            if "drop" in kinds and not kinds["drop"].execute:
                return Reply(None)
            e = kinds.get("error_code")
            if e is not None:
                self.push_error(e.code, e.message)
                out = None
            else:
                out = self.handle(text)
            if d is not None:
                return Reply(None, disconnect=True)
            if out is None or "drop" in kinds:
                return Reply(None)
            data = (out.encode("ascii") if isinstance(out, str) else out) + self.term
            if "garble" in kinds:
                noise = self.faults.rng.integers(0x80, 0x100, size=min(4, len(data) - len(self.term))).astype("u1").tobytes()
                data = noise + data[len(noise):]
            latency = sum(f.seconds for f in fired if f.kind == "latency")
            return Reply(data, latency_s=latency)


def block(payload: bytes) -> bytes:
    """IEEE 488.2 definite-length block: ``#<n><len><payload>``."""
    n = str(len(payload))
    return b"#" + str(len(n)).encode() + n.encode() + payload
