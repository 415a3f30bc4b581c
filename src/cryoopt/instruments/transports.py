"""Transports: pymeasure adapters for pyserial URLs, VISA resources and in-process devices.

Three transports, found by name in :data:`transports`:

``"serial"``
    Any pyserial URL or port: ``/dev/ttyUSB0``, ``COM3``, ``socket://127.0.0.1:5025``,
    ``loop://``, ``rfc2217://host:port``, or a pseudo-terminal path. Built on
    :class:`pymeasure.adapters.SerialAdapter`, but the connection is opened with
    ``serial.serial_for_url`` (pymeasure's adapter only takes port names) and reads are
    strict: a reply that does not end in the read termination within the timeout is an
    :class:`~cryoopt.exceptions.InstrumentTimeoutError` (pymeasure returns the partial
    bytes silently), a closed socket is a :class:`DisconnectedError`.
``"visa"``
    Any pyvisa resource string (``ASRL1::INSTR``, ``TCPIP::host::5025::SOCKET``, and
    pyvisa-sim's ``...@sim`` definitions). Built on :class:`pymeasure.adapters.VISAAdapter`.
``"inprocess"``
    :class:`InProcessAdapter` hands each command line straight to a simulated device's
    ``exchange(bytes)`` method: the same bytes and the same driver code path as over a
    wire, with no socket and no thread. Faults still apply: a dropped reply or one later
    than the timeout raises at once (no waiting), so RL training runs at full speed; the
    late reply then arrives just before the reply to the next command, as it would on a
    wire, and the driver has to cope with it.

Every adapter has ``drain() -> bytes``: it returns (and discards) what arrived unasked,
without waiting; the drivers call it before each command.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Protocol

import serial
from pymeasure.adapters import Adapter, SerialAdapter, VISAAdapter

from cryoopt.exceptions import InstrumentTimeoutError
from cryoopt.instruments.errors import DisconnectedError
from cryoopt.instruments.profiles import TransportSettings
from cryoopt.registry import Registry

__all__ = [
    "DeviceReply",
    "InProcessAdapter",
    "SerialURLAdapter",
    "SimulatedEndpoint",
    "VisaResourceAdapter",
    "is_visa_resource",
    "make_adapter",
    "transports",
]

transports: Registry[Any] = Registry("instrument transport")


class DeviceReply(Protocol):
    """What a simulated device returns for one command line (see ``simulated.device.Reply``)."""

    data: bytes | None
    latency_s: float
    disconnect: bool


class SimulatedEndpoint(Protocol):
    """Anything with ``exchange(line) -> DeviceReply``; the simulated devices implement it."""

    def exchange(self, line: bytes) -> DeviceReply: ...


class SerialURLAdapter(SerialAdapter):
    """pymeasure ``SerialAdapter`` over ``serial.serial_for_url`` with strict, typed reads."""

    def __init__(self, url: str, settings: TransportSettings, **kwargs: Any) -> None:
        try:
            conn = serial.serial_for_url(url, baudrate=settings.baud_rate, timeout=settings.timeout_s,
                                         write_timeout=settings.timeout_s, **kwargs)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DisconnectedError(f"cannot open {url!r}: {exc}; check the address and that the device is on") from exc
        super().__init__(
            conn,
            write_termination=settings.write_termination,
            read_termination=settings.read_termination,
        )
        self.url = url
        self.timeout_s = settings.timeout_s
        self._no_delay()

    def _no_delay(self) -> None:
        """For ``socket://``: disable Nagle, or a setter followed by ``SYST:ERR?`` waits ~40 ms."""
        sock = getattr(self.connection, "_socket", None)
        if sock is not None:
            import socket

            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _read_bytes(self, count: int, break_on_termchar: bool, **kwargs: Any) -> bytes:
        try:
            data = super()._read_bytes(count, break_on_termchar, **kwargs)
        except serial.SerialException as exc:
            raise DisconnectedError(f"{self.url}: {exc}") from exc
        term = self.read_termination.encode()
        if break_on_termchar and term and not data.endswith(term):
            raise InstrumentTimeoutError(
                f"{self.url}: no complete reply within {self.timeout_s:g} s (got {data[:40]!r})"
            )
        if count > 0 and not break_on_termchar and len(data) < count:
            raise InstrumentTimeoutError(
                f"{self.url}: expected {count} bytes within {self.timeout_s:g} s, got {len(data)}"
            )
        return data

    def _read(self, **kwargs: Any) -> str:
        raw = self._read_bytes(-1, break_on_termchar=True, **kwargs)
        text = raw.decode("ascii")  # UnicodeDecodeError -> GarbledReplyError in the driver
        return text.removesuffix(self.read_termination) if self.read_termination else text

    def _write_bytes(self, content: bytes, **kwargs: Any) -> None:
        try:
            self.connection.write(content, **kwargs)
        except (serial.SerialException, OSError) as exc:
            raise DisconnectedError(f"{self.url}: {exc}") from exc

    def flush_read_buffer(self) -> None:
        try:
            self.connection.reset_input_buffer()
        except (serial.SerialException, OSError):
            pass

    def drain(self, limit: int = 65536) -> bytes:
        """Return the bytes already waiting (at most ``limit``), without blocking."""
        data = b""
        try:
            while len(data) < limit:
                n = self.connection.in_waiting
                if not n:
                    break
                data += self.connection.read(min(n, limit - len(data)))
        except (serial.SerialException, OSError) as exc:
            raise DisconnectedError(f"{self.url}: {exc}") from exc
        return data

    def reconnect(self) -> None:
        """Close and reopen the port (a new TCP connection for ``socket://``)."""
        try:
            self.connection.close()
            self.connection.open()
            self._no_delay()
        except (serial.SerialException, OSError) as exc:
            raise DisconnectedError(f"{self.url}: reconnect failed: {exc}") from exc

    def close(self) -> None:
        conn = getattr(self, "connection", None)
        if conn is not None and conn.is_open:
            conn.close()


class VisaResourceAdapter(VISAAdapter):
    """pymeasure ``VISAAdapter`` configured from a profile's transport settings."""

    def __init__(self, resource: str, settings: TransportSettings, **kwargs: Any) -> None:
        import pyvisa

        try:
            super().__init__(
                resource,
                visa_library=settings.visa_library,
                timeout=int(settings.timeout_s * 1000),
                read_termination=settings.read_termination,
                write_termination=settings.write_termination,
                **kwargs,
            )
        except (pyvisa.errors.Error, serial.SerialException, OSError) as exc:
            # pyvisa-py lets the port's own error through (a missing ASRL port raises SerialException):
            # the same error, and the same advice, as a serial URL that cannot be opened
            raise DisconnectedError(f"cannot open {resource!r}: {exc}; check the address and that the device is on") \
                from exc
        self.read_termination = settings.read_termination
        self.timeout_s = settings.timeout_s
        self._open_kwargs = dict(
            timeout=int(settings.timeout_s * 1000),
            read_termination=settings.read_termination,
            write_termination=settings.write_termination,
            **kwargs,
        )

    def reconnect(self) -> None:
        self.connection.close()
        self.connection = self.manager.open_resource(self.resource_name, **self._open_kwargs)

    def drain(self) -> bytes:
        """Discard what VISA has buffered (VISA cannot say how much without reading it)."""
        with contextlib.suppress(Exception):
            self.flush_read_buffer()
        return b""


class InProcessAdapter(Adapter):
    """Adapter whose 'wire' is a direct call to ``device.exchange(line)``.

    Args:
        device: a simulated device (anything with ``exchange(bytes) -> reply``).
        settings: the profile's transport settings (terminations, timeout).
        realtime: sleep for injected latencies shorter than the timeout (default: don't,
            so simulated time is free).
    """

    def __init__(self, device: SimulatedEndpoint, settings: TransportSettings, *, realtime: bool = False) -> None:
        super().__init__()
        self.device = device
        self.write_termination = settings.write_termination
        self.read_termination = settings.read_termination
        self.timeout_s = settings.timeout_s
        self.realtime = realtime
        self.connection = None
        self._in = b""
        self._out = bytearray()
        self._late: list[bytes] = []
        self._disconnected = False

    def _check(self) -> None:
        if self._disconnected:
            raise DisconnectedError("in-process link to the simulated device was dropped (fault injected)")

    def _write(self, command: str, **kwargs: Any) -> None:
        self._write_bytes((command + self.write_termination).encode("ascii"))

    def _write_bytes(self, content: bytes, **kwargs: Any) -> None:
        self._check()
        self._in += content
        term = self.write_termination.encode() or b"\n"
        while term in self._in:
            line, self._in = self._in.split(term, 1)
            for late in self._late:  # replies that came after the driver gave up: now on the line
                self._out += late
            self._late.clear()
            reply = self.device.exchange(line)
            if reply.disconnect:
                self._disconnected = True
                self._out.clear()
                return
            if reply.data is None:
                continue
            if reply.latency_s >= self.timeout_s:
                self._late.append(reply.data)  # arrives after the driver gave up, before the next reply
                continue
            if self.realtime and reply.latency_s > 0:
                time.sleep(reply.latency_s)
            self._out += reply.data

    def _read_bytes(self, count: int, break_on_termchar: bool = False, **kwargs: Any) -> bytes:
        self._check()
        term = self.read_termination.encode()
        if break_on_termchar or count < 0:
            if term and term in self._out:
                idx = self._out.index(term) + len(term)
            elif not term and self._out:
                idx = len(self._out)
            else:
                self._out.clear()
                raise InstrumentTimeoutError(f"no reply from the simulated device within {self.timeout_s:g} s")
        else:
            if len(self._out) < count:
                self._out.clear()
                raise InstrumentTimeoutError(
                    f"expected {count} bytes from the simulated device within {self.timeout_s:g} s"
                )
            idx = count
        data = bytes(self._out[:idx])
        del self._out[:idx]
        return data

    def _read(self, **kwargs: Any) -> str:
        raw = self._read_bytes(-1, break_on_termchar=True)
        text = raw.decode("ascii")
        return text.removesuffix(self.read_termination) if self.read_termination else text

    def flush_read_buffer(self) -> None:
        self._out.clear()

    def drain(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def reconnect(self) -> None:
        self._disconnected = False
        self._in = b""
        self._out.clear()
        self._late.clear()

    def close(self) -> None:
        self._disconnected = True


def is_visa_resource(address: str) -> bool:
    """True for VISA resource strings (``ASRL1::INSTR``, ``TCPIP::h::p::SOCKET``, ``GPIB::8``)."""
    return "::" in address or address.upper().startswith(("GPIB", "USB", "TCPIP", "VXI", "PXI"))


@transports.register("serial")
def _serial(address: str, settings: TransportSettings, **kwargs: Any) -> Adapter:
    return SerialURLAdapter(address, settings, **kwargs)


@transports.register("visa")
def _visa(address: str, settings: TransportSettings, **kwargs: Any) -> Adapter:
    return VisaResourceAdapter(address, settings, **kwargs)


@transports.register("inprocess")
def _inprocess(device: SimulatedEndpoint, settings: TransportSettings, **kwargs: Any) -> Adapter:
    return InProcessAdapter(device, settings, **kwargs)


def make_adapter(address: str, settings: TransportSettings, **kwargs: Any) -> Adapter:
    """Pick the transport for ``address`` (VISA resource or pyserial URL) and open it."""
    kind = "visa" if is_visa_resource(address) else "serial"
    return transports.get(kind)(address, settings, **kwargs)
