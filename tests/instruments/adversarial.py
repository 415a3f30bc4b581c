"""An adversarial instrument: a simulated device that deviates from ``instruments/PROTOCOL.md``
the ways real devices do (test fixture of ``test_instruments_adversarial.py``).

:class:`AdversarialDevice` wraps one of cryoopt's simulated devices (which answer the
protocol byte for byte) and rewrites its replies, exchange by exchange, with *quirks*:

- ``replace``: the reply becomes ``text`` (junk, two values, ``nan``, an empty line, ...);
- ``extra``: one more line follows the reply (``text``; default: the reply again). On a
  setter, which has no reply in the protocol, the extra line is the whole answer (``OK``);
- ``echo``: the command comes back before its reply;
- ``unsolicited``: a line nobody asked for arrives before the reply (``ALARM``);
- ``late``: the reply is held back and arrives just before the reply to the next command
  (a device that answers after the driver has given up waiting);
- ``silent``: no reply at all (the device ran the command);
- ``lost``: the command never reaches the device (no reply; an ``*OPC?`` that never ends).

``idn=`` replaces the identification string (the wrong instrument on the port).

It only rewrites bytes and shares no code with the drivers' reply handling, so it checks
the drivers rather than agreeing with them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from cryoopt.instruments.simulated.device import Reply

__all__ = ["AdversarialDevice", "Quirk"]

QuirkKind = Literal["replace", "extra", "echo", "unsolicited", "late", "silent", "lost"]


@dataclass
class Quirk:
    """One deviation, applied to commands that fully match ``match`` (case-insensitive).

    ``skip`` matching commands pass untouched first; then the quirk fires ``count`` times
    (``None``: every time).
    """

    kind: QuirkKind
    match: str = ".*"
    text: str | None = None
    count: int | None = 1
    skip: int = 0
    seen: int = field(default=0, repr=False)
    fired: int = field(default=0, repr=False)

    def fires(self, command: str) -> bool:
        if not re.fullmatch(self.match, command, flags=re.IGNORECASE):
            return False
        self.seen += 1
        if self.seen <= self.skip or (self.count is not None and self.fired >= self.count):
            return False
        self.fired += 1
        return True


class AdversarialDevice:
    """A simulated device (``device``) whose replies are rewritten by ``quirks``.

    Has the interface the channels need (``exchange``, ``profile``), so it works with
    ``connect(..., simulated="inprocess" | "socket", device=AdversarialDevice(...))``.
    """

    def __init__(self, device: Any, *quirks: Quirk, idn: str | None = None) -> None:
        self.device = device
        self.quirks = list(quirks)
        self.idn = idn
        self.term = device.profile.transport.read_termination.encode()
        self._held = b""
        self.log: list[tuple[str, str]] = []  # (quirk kind, command) each time one fired

    # what the servers and the in-process adapter use
    @property
    def profile(self) -> Any:
        return self.device.profile

    @property
    def lock(self) -> Any:
        return self.device.lock

    @property
    def received(self) -> list[str]:
        return self.device.received

    def set_quirks(self, *quirks: Quirk) -> None:
        """Replace the quirks (none: the device behaves again)."""
        self.quirks = list(quirks)

    def exchange(self, line: bytes) -> Reply:
        command = line.decode("ascii", "replace").strip()
        if any(q.kind == "lost" and q.fires(command) for q in self.quirks):
            self.log.append(("lost", command))
            return Reply(None)
        reply = self.device.exchange(line)
        if reply.disconnect:
            return reply
        data = reply.data
        if self.idn is not None and command.upper() == "*IDN?":
            data = self.idn.encode("latin-1") + self.term
        held = b""
        for q in self.quirks:
            if q.kind == "lost" or not q.fires(command):
                continue
            self.log.append((q.kind, command))
            if q.kind == "replace":
                data = (q.text or "").encode("latin-1") + self.term
            elif q.kind == "extra":
                extra = q.text.encode("latin-1") + self.term if q.text is not None else (data or b"")
                data = (data or b"") + extra
            elif q.kind == "echo":
                data = line + self.term + (data or b"")
            elif q.kind == "unsolicited":
                data = (q.text or "ALARM").encode("latin-1") + self.term + (data or b"")
            elif q.kind == "late":
                held, data = data or b"", None
            elif q.kind == "silent":
                data = None
        out = self._held + (data or b"")
        self._held = held
        return Reply(out or None, latency_s=reply.latency_s)
