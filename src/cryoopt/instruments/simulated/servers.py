"""Serve a simulated device over a TCP socket (127.0.0.1) or a pseudo-terminal.

The driver then connects with a pyserial URL (``socket://127.0.0.1:PORT``) or the pty
path (``/dev/pts/N``), exactly as it would to hardware. Each server runs one daemon
thread that stops on :meth:`close`, or by itself after ``idle_timeout_s`` without traffic.

A ``disconnect`` fault closes the TCP connection (the driver may reconnect; the device
keeps its state). A pty cannot be unplugged, so there it drops the reply instead.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from typing import Any

from cryoopt.instruments.simulated.device import SimulatedDevice

__all__ = ["PtyServer", "SocketServer"]


class _Server:
    def __init__(self, device: SimulatedDevice, *, idle_timeout_s: float = 600.0) -> None:
        self.device = device
        self.idle_timeout_s = idle_timeout_s
        self._stop = threading.Event()
        self._last = time.monotonic()
        self.term = device.profile.transport.write_termination.encode() or b"\n"
        self._thread = threading.Thread(target=self._serve, name=type(self).__name__, daemon=True)

    def _idle(self) -> bool:
        return time.monotonic() - self._last > self.idle_timeout_s

    def _lines(self, buf: bytes) -> tuple[list[bytes], bytes]:
        lines = []
        while self.term in buf:
            line, buf = buf.split(self.term, 1)
            lines.append(line)
        return lines, buf

    def _serve(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SocketServer(_Server):
    """TCP server on 127.0.0.1, OS-chosen port; ``address`` is the pyserial URL."""

    def __init__(self, device: SimulatedDevice, *, port: int = 0, idle_timeout_s: float = 600.0) -> None:
        super().__init__(device, idle_timeout_s=idle_timeout_s)
        self._sock = socket.create_server(("127.0.0.1", port))
        self._sock.settimeout(0.05)
        self.port = self._sock.getsockname()[1]
        self.address = f"socket://127.0.0.1:{self.port}"
        self.connections = 0
        self._thread.start()

    def _serve(self) -> None:
        try:
            while not self._stop.is_set() and not self._idle():
                try:
                    conn, _ = self._sock.accept()
                except (socket.timeout, OSError):
                    continue
                self.connections += 1
                self._last = time.monotonic()
                with contextlib.closing(conn):
                    self._talk(conn)
        finally:
            self._sock.close()

    def _talk(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        while not self._stop.is_set() and not self._idle():
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            self._last = time.monotonic()
            lines, buf = self._lines(buf + chunk)
            for line in lines:
                reply = self.device.exchange(line)
                if reply.disconnect:
                    return
                if reply.data is None:
                    continue
                if reply.latency_s > 0 and self._stop.wait(reply.latency_s):
                    return
                try:
                    conn.sendall(reply.data)
                except OSError:
                    return


class PtyServer(_Server):
    """Pseudo-terminal pair; the driver opens ``address`` (the slave path) as a serial port."""

    def __init__(self, device: SimulatedDevice, *, idle_timeout_s: float = 600.0) -> None:
        import tty

        super().__init__(device, idle_timeout_s=idle_timeout_s)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.address = os.ttyname(self._slave)
        os.set_blocking(self._master, False)
        self._thread.start()

    def _serve(self) -> None:
        buf = b""
        try:
            while not self._stop.is_set() and not self._idle():
                ready, _, _ = select.select([self._master], [], [], 0.05)
                if not ready:
                    continue
                try:
                    chunk = os.read(self._master, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    time.sleep(0.01)
                    continue
                self._last = time.monotonic()
                lines, buf = self._lines(buf + chunk)
                for line in lines:
                    reply = self.device.exchange(line)
                    if reply.data is None or reply.disconnect:
                        continue
                    if reply.latency_s > 0 and self._stop.wait(reply.latency_s):
                        return
                    self._send(memoryview(reply.data))
        finally:
            for fd in (self._master, self._slave):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _send(self, view: memoryview) -> None:
        while view and not self._stop.is_set() and not self._idle():
            _, ready, _ = select.select([], [self._master], [], 0.05)
            if not ready:
                continue
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                continue
            view = view[n:]
            self._last = time.monotonic()
