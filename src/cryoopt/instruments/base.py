"""Driver base: a pymeasure ``Instrument`` configured from a device profile.

Why pymeasure, and where this deviates (see also ``instruments/PROTOCOL.md``):

- Properties are pymeasure ``Instrument.control``/``measurement`` declarations with
  ``dynamic=True``. The class holds the reference command set; at construction the
  profile's ``commands`` override ``<prop>_get_command``/``<prop>_set_command`` and its
  ``limits`` become ``<prop>_values`` (a :class:`~cryoopt.instruments.validators.Limits`),
  so the validators run with the profile's ranges *before* any byte is formatted.
- Tests use ``pymeasure.test.expected_protocol`` unchanged.
- Added on top (pymeasure has no equivalent): typed errors instead of bare
  ``ValueError``/``VisaIOError``/``SerialException``; retries for queries only (reads of
  properties), never for setpoints or actions; an exchange log; a *fault guard*: when
  an exchange fails for good, the driver asks the device its state, puts it into the
  profile's safe state and raises an error saying what state the hardware was left in.
- Setpoints are followed by ``SYST:ERR?`` (pymeasure's ``check_set_errors``), so a
  refused value is an error at the line that set it.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

from pymeasure.adapters import Adapter
from pymeasure.instruments import Instrument

from cryoopt.exceptions import (
    CommunicationError,
    ConfigError,
    DeviceError,
    InstrumentError,
    InstrumentTimeoutError,
)
from cryoopt.instruments.errors import (
    DisconnectedError,
    DoorOpenError,
    GarbledReplyError,
    ReagentError,
    TemperatureInterlockError,
    with_context,
)
from cryoopt.instruments.log import ExchangeLog
from cryoopt.instruments.profiles import Profile, load_profile
from cryoopt.instruments.validators import Choices, Limits, in_range, in_set, integer_in_range

__all__ = ["CryoInstrument", "ERROR_CODES", "reading", "setpoint"]

T = TypeVar("T")

#: Device error codes of the reference protocol -> error class the driver raises.
ERROR_CODES: dict[int, type[InstrumentError]] = {
    301: DoorOpenError,
    302: ReagentError,
    303: TemperatureInterlockError,
}

_PRINTABLE = re.compile(r"^[\x20-\x7e\t]*$")


class _Guarded:
    """Wraps a pymeasure (dynamic) property: reads may retry; failures go through the fault guard."""

    def __init__(self, prop: Any, *, settable: bool) -> None:
        self.prop = prop
        self.settable = settable
        self.__doc__ = prop.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.prop.__set_name__(owner, name)

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self.prop  # pymeasure scans the class for DynamicProperty members
        with obj._guarded(f"read {self.name}"):
            return self.prop.__get__(obj, objtype)

    def __set__(self, obj: Any, value: Any) -> None:
        with obj._guarded(f"set {self.name}", retry=False):
            self.prop.__set__(obj, value)


def setpoint(get_command: str, set_command: str, docs: str, *, kind: str = "float") -> _Guarded:
    """A property validated against the profile's limit of the same name, confirmed by ``SYST:ERR?``.

    ``kind``: ``"float"`` (range), ``"int"`` (whole numbers in a range) or ``"choice"``.
    """
    validator: Callable[[Any, Any], Any] = {"float": in_range, "int": integer_in_range, "choice": in_set}[kind]
    cast: Callable[[str], Any] = {"float": float, "int": lambda s: int(float(s)), "choice": str}[kind]
    prop = Instrument.control(
        get_command,
        set_command,
        docs,
        validator=validator,
        values=None,
        cast=cast,
        check_set_errors=True,
        dynamic=True,
    )
    prop._cryo_kind = kind
    return _Guarded(prop, settable=True)


def reading(get_command: str, docs: str, *, cast: Callable[[str], Any] = float) -> _Guarded:
    """A read-only property (a query, retried on timeout or garbled reply)."""
    sep = "\x00" if cast is str else ","  # text replies are one value, commas and all
    return _Guarded(Instrument.measurement(get_command, docs, cast=cast, separator=sep, dynamic=True), settable=False)


class CryoInstrument(Instrument):
    """Base of the three drivers. Subclasses declare properties with :func:`setpoint`/:func:`reading`.

    Args:
        adapter: a pymeasure adapter (``SerialURLAdapter``, ``VisaResourceAdapter``,
            ``InProcessAdapter``, or pymeasure's ``ProtocolAdapter`` in tests).
        profile: profile name, path, dict or :class:`Profile`; defaults to the reference
            profile of the class.
        exchange_log: where to record every write/read; a fresh one by default.
    """

    device_class: ClassVar[str] = ""
    default_profile: ClassVar[str] = ""
    #: action name -> reference command (printf format); the profile may override.
    actions: ClassVar[dict[str, str]] = {
        "reset": "*RST",
        "clear": "*CLS",
        "error": "SYST:ERR?",
        "state": "STAT?",
        "opc": "*OPC?",
    }

    idn = reading("*IDN?", "Identification string of the device.", cast=str)
    state = reading("STAT?", "Device state word (see PROTOCOL.md), e.g. ``IDLE``.", cast=str)

    def __init__(
        self,
        adapter: Adapter,
        profile: str | Profile | dict[str, Any] | None = None,
        *,
        name: str | None = None,
        exchange_log: ExchangeLog | None = None,
        **kwargs: Any,
    ) -> None:
        self.profile = load_profile(profile or self.default_profile)
        if self.device_class and self.profile.device_class != self.device_class:
            raise ConfigError(
                f"profile {self.profile.name!r} is for a {self.profile.device_class}, "
                f"not a {self.device_class}; pick a {self.device_class} profile"
            )
        super().__init__(adapter, name or self.profile.model or self.profile.name, includeSCPI=False)
        self.exchange_log = exchange_log or ExchangeLog(self.profile.name)
        self._depth = 0
        self._retry_ok = True
        self._apply_profile()

    # -- profile -> dynamic properties ---------------------------------------------
    def _apply_profile(self) -> None:
        cls = type(self)
        for attr in dir(cls):
            prop = getattr(cls, attr, None)
            if not hasattr(prop, "fget_params_list"):
                continue
            spec = self.profile.commands.get(attr)
            if spec is not None and spec.get:
                setattr(self, f"{attr}_get_command", spec.get)
            if spec is not None and spec.set:
                setattr(self, f"{attr}_set_command", spec.set)
            kind = getattr(prop, "_cryo_kind", None)
            if kind is not None:
                limit = self.profile.limit(attr)
                expected = Choices if kind == "choice" else Limits
                if not isinstance(limit, expected):
                    raise ConfigError(f"profile {self.profile.name!r}: limit {attr!r} must be a {expected.__name__}")
                setattr(self, f"{attr}_values", limit)

    def command(self, action: str, *args: Any) -> str:
        """The bytes (as text) for ``action`` from the profile, else the reference command set."""
        spec = self.profile.commands.get(action)
        fmt = spec.write if spec is not None and spec.write else None
        if fmt is None:
            for klass in type(self).__mro__:
                fmt = getattr(klass, "actions", {}).get(action)
                if fmt:
                    break
        if fmt is None:
            raise ConfigError(f"profile {self.profile.name!r} defines no command for action {action!r}")
        return fmt % args if args else fmt

    def limit(self, name: str) -> Limits | Choices:
        return self.profile.limit(name)

    # -- low-level I/O: logging, typed errors, retries --------------------------------
    def _translate(self, exc: BaseException, what: str) -> BaseException:
        if isinstance(exc, InstrumentError):
            return exc
        if isinstance(exc, UnicodeDecodeError):
            return GarbledReplyError(f"{self.profile.name}: undecodable reply to {what!r}: {exc}")
        try:  # pyvisa is optional at runtime for serial-only users
            import pyvisa

            if isinstance(exc, pyvisa.errors.VisaIOError):
                if exc.error_code == pyvisa.constants.StatusCode.error_timeout:
                    return InstrumentTimeoutError(f"{self.profile.name}: no reply to {what!r} within the timeout")
                return CommunicationError(f"{self.profile.name}: VISA error on {what!r}: {exc}")
        except ImportError:  # pragma: no cover
            pass
        if isinstance(exc, (OSError, EOFError)) or type(exc).__name__ == "SerialException":
            return DisconnectedError(f"{self.profile.name}: link failed on {what!r}: {exc}")
        return exc

    def write(self, command: str, **kwargs: Any) -> None:
        self.exchange_log.record("write", command)
        self._last_command = command
        if not command.rstrip().endswith("?"):
            self._last_set = command
        try:
            self.adapter.write(command, **kwargs)
        except Exception as exc:
            raise self._translate(exc, command) from exc

    def read(self, **kwargs: Any) -> str:
        what = getattr(self, "_last_command", "read")
        try:
            text = self.adapter.read(**kwargs)
        except Exception as exc:
            raise self._translate(exc, what) from exc
        self.exchange_log.record("read", text)
        if not _PRINTABLE.match(text.strip()):
            raise GarbledReplyError(f"{self.profile.name}: garbled reply to {what!r}: {text[:40]!r}")
        return text

    def read_bytes(self, count: int, **kwargs: Any) -> bytes:
        what = getattr(self, "_last_command", "read")
        try:
            data = self.adapter.read_bytes(count, **kwargs)
        except Exception as exc:
            raise self._translate(exc, what) from exc
        self.exchange_log.record("read", data, binary=True)
        return data

    def wait_for(self, query_delay: float | None = None) -> None:
        if query_delay:
            time.sleep(query_delay)

    def _retry(self, fn: Callable[[], T], what: str) -> T:
        attempts = 1 + (self.profile.transport.query_retries if self._retry_ok else 0)
        last: InstrumentError | None = None
        for i in range(attempts):
            try:
                return fn()
            except (InstrumentTimeoutError, GarbledReplyError, DisconnectedError) as exc:
                last = exc
                self.exchange_log.record("event", f"attempt {i + 1}/{attempts} of {what!r} failed: {exc}")
                if i + 1 == attempts:
                    break
                if isinstance(exc, DisconnectedError):
                    self.reconnect()
                delay = self.profile.transport.retry_delay_s
                if isinstance(exc, InstrumentTimeoutError):
                    # a late reply to the timed-out query may still arrive: let it land, then
                    # discard it, or the retry would read the stale answer (and every later
                    # query would be one reply behind)
                    delay += self.profile.transport.timeout_s
                time.sleep(delay)
                with contextlib.suppress(Exception):
                    self.adapter.flush_read_buffer()
        assert last is not None
        if attempts > 1:
            raise type(last)(f"{last} (gave up after {attempts} attempts)") from last
        raise last

    def values(self, command: str, separator: str = ",", cast: Callable[[str], Any] = float,
               preprocess_reply: Callable[[str], str] | None = None, maxsplit: int = -1, **kwargs: Any) -> list[Any]:
        def once() -> list[Any]:
            vals = super(CryoInstrument, self).values(
                command, separator=separator, cast=cast, preprocess_reply=preprocess_reply, maxsplit=maxsplit, **kwargs
            )
            if cast is not str and any(isinstance(v, str) for v in vals):
                raise GarbledReplyError(f"{self.profile.name}: unparsable reply to {command!r}: {vals!r}")
            return vals

        return self._retry(once, command)

    def query(self, command: str, cast: Callable[[str], T] = str) -> T:  # type: ignore[assignment]
        """Ask ``command`` and return its single value cast with ``cast`` (retried)."""
        vals = self.values(command, cast=cast, separator="\x00")
        return vals[0]

    def reconnect(self) -> None:
        """Reopen the link (socket, serial port, VISA session); the device's state is kept."""
        fn = getattr(self.adapter, "reconnect", None)
        if fn is None:
            raise DisconnectedError(f"{self.profile.name}: this transport cannot reconnect")
        self.exchange_log.record("event", "reconnect")
        fn()

    @contextlib.contextmanager
    def _timeout(self, seconds: float) -> Iterator[None]:
        conn = getattr(self.adapter, "connection", None)
        old = getattr(conn, "timeout", None)
        if conn is None or not isinstance(old, (int, float)) or isinstance(old, bool):
            yield
            return
        is_visa = type(self.adapter).__name__.startswith("Visa")
        conn.timeout = int(seconds * 1000) if is_visa else seconds
        try:
            yield
        finally:
            conn.timeout = old

    # -- errors and the fault guard -----------------------------------------------------
    def check_errors(self) -> list[tuple[int, str]]:
        """Read ``SYST:ERR?`` until ``0``; return the (code, message) pairs (at most 20)."""
        errors: list[tuple[int, str]] = []
        for _ in range(20):
            reply = self.query(self.command("error"))
            code_s, _, msg = reply.partition(",")
            try:
                code = int(code_s)
            except ValueError:
                raise GarbledReplyError(f"{self.profile.name}: unparsable SYST:ERR? reply {reply!r}") from None
            if code == 0:
                break
            errors.append((code, msg.strip().strip('"')))
        return errors

    def check_set_errors(self) -> list[str]:
        sent = getattr(self, "_last_set", None)
        errors = self.check_errors()
        if errors:
            code, msg = errors[0]
            err = ERROR_CODES.get(code, DeviceError)(
                f"{self.profile.name}: device refused {sent!r}: "
                f"{code} {msg}; the setpoint was not applied and the device keeps its previous value"
            )
            raise with_context(err, device=self.profile.name, command=sent)
        return []

    @contextlib.contextmanager
    def _guarded(self, what: str, *, retry: bool = True) -> Iterator[None]:
        self._depth += 1
        outer_retry = self._retry_ok
        self._retry_ok = self._retry_ok and retry
        try:
            yield
        except (CommunicationError, InstrumentTimeoutError) as exc:
            if self._depth > 1 or getattr(exc, "safe_state", None) is not None:
                raise
            raise self._fail(exc, getattr(self, "_last_command", what)) from exc
        finally:
            self._depth -= 1
            self._retry_ok = outer_retry

    def enter_safe_state(self) -> str:
        """Send the profile's safe-state commands; return the device's state afterwards."""
        for cmd in self.profile.safe_state.commands:
            self.write(cmd)
        self._retry_ok = True
        return str(self.query(self.command("state")))

    def _fail(self, exc: InstrumentError, command: str) -> InstrumentError:
        """Ask the device its state, put it in the safe state, return a typed error saying so."""
        self._depth += 1
        before = "unknown"
        try:
            if isinstance(exc, DisconnectedError):
                with contextlib.suppress(InstrumentError):
                    self.reconnect()
            with contextlib.suppress(Exception):
                self.adapter.flush_read_buffer()
            with contextlib.suppress(InstrumentError):
                self._retry_ok = True
                before = str(self.query(self.command("state")))
            try:
                after = self.enter_safe_state()
                safe = f"{self.profile.safe_state.description} (device reports {after})"
                left = f"sent {', '.join(self.profile.safe_state.commands)}; hardware left in: {safe}"
            except InstrumentError as exc2:
                safe = "unknown"
                left = (
                    f"could not reach the safe state ({exc2}); hardware state unknown - "
                    "check the instrument before continuing"
                )
        finally:
            self._depth -= 1
        msg = f"{exc} [during {command!r}; device state was {before}; not repeated; {left}]"
        err = type(exc)(msg)
        err.device_state = before  # type: ignore[attr-defined]
        return with_context(err, device=self.profile.name, command=command, safe_state=safe)  # type: ignore[return-value]

    def _device_fault(self, errors: list[tuple[int, str]], command: str) -> InstrumentError:
        """The device reported error codes after an action: go safe, return the typed error."""
        code, msg = errors[0]
        cls = ERROR_CODES.get(code, DeviceError)
        rest = "; ".join(f"{c} {m}" for c, m in errors[1:])
        base = cls(f"{self.profile.name}: device reported {code} {msg!r} after {command!r}" + (f" (also: {rest})" if rest else ""))
        err = self._fail(base, command)
        err.error_codes = [c for c, _ in errors]  # type: ignore[attr-defined]
        return err

    def _action(self, action: str, *args: Any) -> str:
        """Send an action once, then ``SYST:ERR?``; any failure goes through the fault guard.

        Actions are never repeated: if the exchange fails, the driver asks the device's
        state, puts it in the safe state and raises.
        """
        cmd = self.command(action, *args)
        with self._guarded(cmd, retry=False):
            self.write(cmd)
            errors = self.check_errors()
        if errors:
            raise self._device_fault(errors, cmd)
        return cmd

    def wait_complete(self, timeout_s: float | None = None) -> None:
        """Block on ``*OPC?`` until the running operation finishes (or ``timeout_s``)."""
        t = timeout_s if timeout_s is not None else self.profile.transport.operation_timeout_s
        with self._guarded("*OPC?"), self._timeout(t):
            self.query(self.command("opc"))

    def _interlock(self, cls: type[InstrumentError], message: str) -> InstrumentError:
        err = cls(f"{self.profile.name}: {message}; no command was sent, hardware state unchanged")
        return with_context(err, device=self.profile.name, command=None, safe_state="unchanged (nothing sent)")  # type: ignore[return-value]

    # -- binary blocks ----------------------------------------------------------------
    def read_block(self, command: str) -> bytes:
        """Query ``command`` and read an IEEE 488.2 definite-length block ``#<n><len><bytes>``."""

        def once() -> bytes:
            self.write(command)
            head = self.read_bytes(2)
            if head[:1] != b"#" or not head[1:2].isdigit() or head[1:2] == b"0":
                raise GarbledReplyError(f"{self.profile.name}: bad block header {head!r} for {command!r}")
            ndig = int(head[1:2])
            length_s = self.read_bytes(ndig)
            if not length_s.isdigit():
                raise GarbledReplyError(f"{self.profile.name}: bad block length {length_s!r} for {command!r}")
            data = self.read_bytes(int(length_s))
            term = getattr(self.adapter, "read_termination", "")
            if term:
                self.read_bytes(len(term))
            return data

        with self._guarded(command):
            return self._retry(once, command)

    # -- lifecycle ----------------------------------------------------------------------
    def reset(self) -> None:
        """``*RST``: back to power-on setpoints (does not clear the error queue)."""
        self._action("reset")

    def clear(self) -> None:
        """``*CLS``: clear the error queue."""
        with self._guarded("*CLS", retry=False):
            self.write(self.command("clear"))

    def close(self) -> None:
        """Close the link and stop any simulator server this driver owns."""
        with contextlib.suppress(Exception):
            self.adapter.close()
        for res in getattr(self, "_owned", []):
            with contextlib.suppress(Exception):
                res.close()

    def shutdown(self) -> None:
        self.close()
        super().shutdown()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.profile.name!r} via {type(self.adapter).__name__}>"
