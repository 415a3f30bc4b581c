"""Driver base: a pymeasure ``Instrument`` configured from a device profile.

Why pymeasure, and where this deviates (see also ``instruments/PROTOCOL.md``):

- Properties are pymeasure ``Instrument.control``/``measurement`` declarations with
  ``dynamic=True``. The class holds the reference command set; at construction the
  profile's ``commands`` override ``<prop>_get_command``/``<prop>_set_command`` and its
  ``limits`` become ``<prop>_values`` (a :class:`~cryoopt.instruments.validators.Limits`),
  so the validators run with the profile's ranges *before* any byte is formatted.
- Tests use ``pymeasure.test.expected_protocol`` unchanged.
- Added on top (pymeasure has no equivalent): typed errors instead of bare
  ``ValueError``/``VisaIOError``/``SerialException``; strict replies (one finite number
  where one is asked, a known word where a word is asked; see
  :mod:`cryoopt.instruments.replies`); numbers written in full, not ``%g``; retries for
  queries only (reads of properties), never for setpoints, actions, ``SYST:ERR?`` or
  ``*OPC?``; an exchange log; and a *fault guard*: when an exchange fails for good, the
  driver asks the device its state, puts it into the profile's safe state and raises an
  error saying what state the hardware was left in.
- Keeping replies in step: a device that sends a line nobody asked for (``OK`` after a
  setter, a reply twice) or answers after the timeout would otherwise shift every later
  reply by one. Bytes waiting before a command is written are discarded (and logged);
  after a timeout or an invalid reply the driver *resynchronises*: it asks ``*IDN?`` and
  discards every line before the identification, since a device answers in order.
- Setpoints are followed by ``SYST:ERR?`` (pymeasure's ``check_set_errors``), so a
  refused value is an error at the line that set it.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
from cryoopt.instruments.conditions import Condition
from cryoopt.instruments.errors import (
    DisconnectedError,
    DoorOpenError,
    GarbledReplyError,
    OperationTimeoutError,
    ReagentError,
    TemperatureInterlockError,
    WrongInstrumentError,
    with_context,
)
from cryoopt.instruments.log import ExchangeLog
from cryoopt.instruments.profiles import Profile, load_profile
from cryoopt.instruments.replies import (
    format_command,
    format_number,
    parse_error_reply,
    parse_number,
    parse_text,
    parse_whole,
    parse_word,
    precise_format,
)
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
_MAX_ERRORS = 20  # SYST:ERR? pops per check: a queue that never empties is a device fault
_MAX_STALE_LINES = 64  # lines a resynchronisation may discard before giving up


def _identity(value: Any) -> Any:
    return value


@dataclass
class _Reply:
    """What a property's query must answer: ``kind`` is float, int, choice, word or text."""

    kind: str
    name: str = ""


class _Guarded:
    """Wraps a pymeasure (dynamic) property: reads may retry; failures go through the fault guard."""

    def __init__(self, prop: Any, reply: _Reply, *, settable: bool) -> None:
        self.prop = prop
        self.reply = reply
        self.settable = settable
        self.__doc__ = prop.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.reply.name = name
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
    The read-back must be one value of that kind (a choice: one of the profile's choices).
    """
    validator: Callable[[Any, Any], Any] = {"float": in_range, "int": integer_in_range, "choice": in_set}[kind]
    fmt, precise = precise_format(set_command)
    reply = _Reply(kind)
    prop = Instrument.control(
        get_command,
        fmt,
        docs,
        validator=validator,
        values=None,
        set_process=format_number if precise else _identity,
        check_set_errors=True,
        dynamic=True,
        values_kwargs={"reply": reply},
    )
    prop._cryo_kind = kind
    prop._cryo_set_command = set_command
    return _Guarded(prop, reply, settable=True)


def reading(get_command: str, docs: str, *, kind: str = "float") -> _Guarded:
    """A read-only property (a query, retried on timeout or an invalid reply).

    ``kind``: ``"float"``, ``"int"``, ``"word"`` (one of the driver's ``reply_words[name]``,
    or the profile's ``limits.<name>.choices``) or ``"text"`` (any non-empty line).
    """
    reply = _Reply(kind)
    prop = Instrument.measurement(get_command, docs, dynamic=True, values_kwargs={"reply": reply})
    return _Guarded(prop, reply, settable=False)


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
        "identify": "*IDN?",
    }
    #: reading name -> the words its reply may be (a profile's ``limits.<name>.choices`` wins)
    reply_words: ClassVar[dict[str, tuple[str, ...]]] = {}

    idn = reading("*IDN?", "Identification string of the device.", kind="text")
    state = reading("STAT?", "Device state word (see PROTOCOL.md), e.g. ``IDLE``.", kind="word")

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
        self.identification: str | None = None
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
            kind = getattr(prop, "_cryo_kind", None)
            if kind is None:
                continue
            fmt, precise = precise_format(spec.set if spec is not None and spec.set else prop._cryo_set_command)
            setattr(self, f"{attr}_set_command", fmt)
            setattr(self, f"{attr}_set_process", format_number if precise else _identity)
            limit = self.profile.limit(attr)
            expected = Choices if kind == "choice" else Limits
            if not isinstance(limit, expected):
                raise ConfigError(f"profile {self.profile.name!r}: limit {attr!r} must be a {expected.__name__}")
            setattr(self, f"{attr}_values", limit)

    def command(self, action: str, *args: Any) -> str:
        """The bytes (as text) for ``action`` from the profile, else the reference command set.

        Bare ``%g`` conversions are written in full (:func:`~cryoopt.instruments.replies.format_number`).
        """
        spec = self.profile.commands.get(action)
        fmt = spec.write if spec is not None and spec.write else None
        if fmt is None:
            for klass in type(self).__mro__:
                fmt = getattr(klass, "actions", {}).get(action)
                if fmt:
                    break
        if fmt is None:
            raise ConfigError(f"profile {self.profile.name!r} defines no command for action {action!r}")
        return format_command(fmt, *args)

    def limit(self, name: str) -> Limits | Choices:
        return self.profile.limit(name)

    def words(self, name: str) -> tuple[str, ...]:
        """The words the reading ``name`` may answer: the profile's choices, else the driver's."""
        spec = self.profile.limits.get(name)
        if spec is not None and spec.choices is not None:
            return tuple(spec.choices)
        for klass in type(self).__mro__:
            found = getattr(klass, "reply_words", {}).get(name)
            if found:
                return found
        raise ConfigError(
            f"profile {self.profile.name!r}: no words known for {name!r}; add limits.{name}.choices to the profile"
        )

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

    def _drain(self) -> None:
        """Discard (and log) bytes that arrived unasked: they would be read as the next reply."""
        drain = getattr(self.adapter, "drain", None)
        if drain is None:
            with contextlib.suppress(Exception):
                self.adapter.flush_read_buffer()
            return
        try:
            junk = drain()
        except Exception as exc:
            raise self._translate(exc, "drain") from exc
        if junk:
            self.exchange_log.record("event", f"discarded {len(junk)} unsolicited bytes: {bytes(junk[:40])!r}")

    def write(self, command: str, **kwargs: Any) -> None:
        self._drain()
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

    # -- replies ------------------------------------------------------------------------
    def _parse(self, reply: _Reply, text: str) -> Any:
        """``text`` as the value ``reply`` asks for; ``ValueError`` if it is not one."""
        if reply.kind == "float":
            return parse_number(text)
        if reply.kind == "int":
            return parse_whole(text)
        if reply.kind == "choice":
            return parse_word(text, self.limit(reply.name).choices)  # type: ignore[union-attr]
        if reply.kind == "word":
            return parse_word(text, self.words(reply.name))
        return parse_text(text)

    def _ask(self, command: str, parse: Callable[[str], T]) -> T:
        """Write ``command``, read one line and parse it (no retry); invalid -> ``GarbledReplyError``."""
        self.write(command)
        text = self.read()
        try:
            return parse(text)
        except ValueError as exc:
            raise GarbledReplyError(f"{self.profile.name}: invalid reply to {command!r}: {exc}") from None

    def _read_until(self, accept: Callable[[str], T | None], *, what: str, timeout_s: float,
                    max_lines: int = _MAX_STALE_LINES) -> T:
        """Read lines until ``accept(line)`` is not ``None``, discarding (and logging) the others.

        For replies no stale line can be mistaken for (``SYST:ERR?``, ``*OPC?``, ``*IDN?``).
        Bounded by ``timeout_s`` in all and ``max_lines``.
        """
        deadline = time.monotonic() + timeout_s
        skipped: list[str] = []
        try:
            for _ in range(max_lines):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    with self._timeout(remaining):
                        line = self.read()
                except GarbledReplyError:
                    skipped.append("<undecodable>")
                    continue
                except InstrumentTimeoutError:
                    break
                value = accept(line)
                if value is not None:
                    return value
                skipped.append(line)
        finally:
            if skipped:
                self.exchange_log.record("event", f"discarded unexpected replies to {what!r}: {skipped[:5]!r}")
        if skipped:
            raise GarbledReplyError(
                f"{self.profile.name}: no valid reply to {what!r} within {timeout_s:g} s, only unexpected "
                f"ones {skipped[:3]!r}; the device does not answer as the profile says"
            )
        raise InstrumentTimeoutError(f"{self.profile.name}: no reply to {what!r} within {timeout_s:g} s")

    def _is_identification(self, line: str) -> bool:
        s = line.strip().upper()
        if self.identification:
            return s == self.identification.upper()
        if self.profile.idn_contains:
            return self.profile.idn_contains.upper() in s
        return s.count(",") >= 3  # IEEE 488.2: maker,model,serial,firmware

    def resynchronize(self) -> None:
        """Bring replies back in step: ask ``*IDN?`` and discard every line before its answer.

        A device answers in order, so any late or extra reply still on its way arrives
        before the identification. Bounded by twice the exchange timeout.

        Raises:
            InstrumentTimeoutError: the device did not answer at all.
            GarbledReplyError: only lines that are not its identification arrived.
        """
        cmd = self.command("identify")
        self.exchange_log.record("event", f"resynchronising replies with {cmd}")
        self.write(cmd)
        self._read_until(lambda s: s if self._is_identification(s) else None, what=cmd,
                         timeout_s=2 * self.profile.transport.timeout_s)

    def _recover(self, exc: BaseException) -> None:
        """Between attempts of a query: reconnect after a disconnect, wait, resynchronise."""
        if isinstance(exc, DisconnectedError):
            self.reconnect()
        time.sleep(self.profile.transport.retry_delay_s)
        self.resynchronize()

    def _retry(self, fn: Callable[[], T], what: str) -> T:
        attempts = 1 + (self.profile.transport.query_retries if self._retry_ok else 0)
        last: InstrumentError | None = None
        for i in range(attempts):
            try:
                if last is not None:
                    self._recover(last)
                return fn()
            except (InstrumentTimeoutError, GarbledReplyError, DisconnectedError) as exc:
                last = exc
                self.exchange_log.record("event", f"attempt {i + 1}/{attempts} of {what!r} failed: {exc}")
        if last is None:  # pragma: no cover - attempts >= 1
            raise RuntimeError("no attempt made")
        if attempts > 1:
            raise type(last)(f"{last} (gave up after {attempts} attempts)") from last
        raise last

    def values(self, command: str, separator: str = ",", cast: Callable[[str], Any] = float,
               preprocess_reply: Callable[[str], str] | None = None, maxsplit: int = -1, *,
               reply: _Reply | None = None, **kwargs: Any) -> list[Any]:
        """pymeasure's ``values``, retried; with ``reply`` (the drivers' properties) exactly one
        value of that kind, anything else is a ``GarbledReplyError``."""
        if reply is not None:
            return self._retry(lambda: [self._ask(command, lambda t: self._parse(reply, t))], command)

        def once() -> list[Any]:
            vals = super(CryoInstrument, self).values(
                command, separator=separator, cast=cast, preprocess_reply=preprocess_reply, maxsplit=maxsplit, **kwargs
            )
            if cast is not str and any(isinstance(v, str) for v in vals):
                raise GarbledReplyError(f"{self.profile.name}: unparsable reply to {command!r}: {vals!r}")
            return vals

        return self._retry(once, command)

    def query(self, command: str, cast: Callable[[str], Any] = str) -> Any:
        """Ask ``command`` and return its one value (retried): ``cast`` ``float`` or ``int``
        parse strictly (one finite number), anything else gets the stripped line."""
        parse: Callable[[str], Any] = {float: parse_number, int: parse_whole}.get(cast, lambda t: cast(t.strip()))
        return self._retry(lambda: self._ask(command, parse), command)

    def identify(self) -> str:
        """Ask ``*IDN?`` and check it contains the profile's ``idn_contains``; returns the reply.

        Only ``*IDN?`` is sent (no fault guard: a device that is not the expected one gets
        nothing else). Raises :class:`WrongInstrumentError` on a mismatch, or the typed link
        error when no valid identification arrives.
        """
        cmd = self.command("identify")
        want = self.profile.idn_contains
        expect = f"one containing {want!r}" if want else "any identification"
        try:
            idn = self._retry(lambda: self._ask(cmd, parse_text), cmd)
        except InstrumentError as exc:
            err = type(exc)(f"{exc}; expected {cmd} to answer {expect} (profile {self.profile.name!r})")
            raise with_context(err, device=self.profile.name, command=cmd, safe_state="unchanged (only *IDN? was sent)") from exc
        if want and want.upper() not in idn.upper():
            err = WrongInstrumentError(
                f"{self.profile.name}: the device answers {cmd} with {idn!r}, which does not contain {want!r}: "
                f"this is not a {self.profile.model or self.profile.name}. Check the address, or use a profile "
                "for this instrument (idn_contains: '' accepts any)"
            )
            raise with_context(err, device=self.profile.name, command=cmd, safe_state="unchanged (only *IDN? was sent)")
        self.identification = idn
        return idn

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
        conn.timeout = max(int(seconds * 1000), 1) if is_visa else seconds
        try:
            yield
        finally:
            conn.timeout = old

    # -- errors and the fault guard -----------------------------------------------------
    def _error_reply(self, line: str) -> tuple[int, str] | None:
        try:
            return parse_error_reply(line)
        except ValueError:
            return None

    def check_errors(self) -> list[tuple[int, str]]:
        """Read ``SYST:ERR?`` until ``0``; return the (code, message) pairs (at most 20).

        Never repeated (each ask pops an error: a repeat could hide one); lines that are
        not an error reply (``OK`` after a setter, a late reply) are discarded.
        """
        cmd = self.command("error")
        errors: list[tuple[int, str]] = []
        with self._guarded(cmd, retry=False):
            for _ in range(_MAX_ERRORS):
                self.write(cmd)
                code, msg = self._read_until(self._error_reply, what=cmd, timeout_s=self.profile.transport.timeout_s)
                if code == 0:
                    break
                errors.append((code, msg))
        return errors

    def check_set_errors(self) -> list[str]:
        sent = getattr(self, "_last_set", None)
        errors = self.check_errors()
        if len(errors) >= _MAX_ERRORS:
            raise self._device_fault(errors, str(sent))
        if errors:
            code, msg = errors[0]
            err = ERROR_CODES.get(code, DeviceError)(
                f"{self.profile.name}: device refused {sent!r}: "
                f"{code} {msg}; the setpoint was not applied and the device keeps its previous value"
            )
            raise with_context(err, device=self.profile.name, command=sent,
                               safe_state="unchanged (setpoint refused, previous value kept)")
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
        self._safe_sent = False
        for cmd in self.profile.safe_state.commands:
            self.write(cmd)
        self._safe_sent = True
        self._retry_ok = True
        return str(self.state)

    def _fail(self, exc: InstrumentError, command: str) -> InstrumentError:
        """Ask the device its state, put it in the safe state, return a typed error saying so.

        After a link fault (timeout, invalid reply, disconnect) the replies are first
        brought back in step, so the state reported is the device's answer, not a stale line.
        """
        self._depth += 1
        before = "unknown"
        try:
            if isinstance(exc, (CommunicationError, InstrumentTimeoutError)):
                with contextlib.suppress(InstrumentError):
                    if isinstance(exc, DisconnectedError):
                        self.reconnect()
                    self.resynchronize()
            with contextlib.suppress(InstrumentError):
                self._retry_ok = True
                before = str(self.state)
            desc = self.profile.safe_state.description
            sent = ", ".join(self.profile.safe_state.commands)
            try:
                after = self.enter_safe_state()
            except InstrumentError as exc2:
                if getattr(self, "_safe_sent", False):
                    safe = f"{desc} (commands sent; state not confirmed: {exc2})"
                    left = f"sent {sent}; hardware presumably left in: {safe}"
                else:
                    safe = "unknown"
                    left = (
                        f"could not reach the safe state ({exc2}); hardware state unknown - "
                        "check the instrument before continuing"
                    )
            else:
                safe = f"{desc} (device reports {after})"
                left = f"sent {sent}; hardware left in: {safe}"
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
        rest = "; ".join(f"{c} {m}" for c, m in errors[1:4])
        more = f" (+{len(errors) - 4} more; the error queue does not empty)" if len(errors) > 4 else ""
        base = cls(f"{self.profile.name}: device reported {code} {msg!r} after {command!r}"
                   + (f" (also: {rest}{more})" if rest else ""))
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
        """Block on ``*OPC?`` until the running operation finishes, at most ``timeout_s``
        (default: the profile's ``transport.operation_timeout_s``).

        ``*OPC?`` is asked once, never repeated, so the wait is bounded; past it the device
        is put in its safe state and :class:`OperationTimeoutError` is raised.
        """
        t = float(timeout_s if timeout_s is not None else self.profile.transport.operation_timeout_s)
        cmd = self.command("opc")
        with self._guarded(cmd, retry=False):
            self.write(cmd)
            try:
                self._read_until(lambda s: True if s.strip() == "1" else None, what=cmd, timeout_s=t)
            except InstrumentTimeoutError as exc:
                raise OperationTimeoutError(
                    f"{self.profile.name}: the operation did not finish within {t:g} s "
                    f"(transport.operation_timeout_s); {cmd} is not repeated"
                ) from exc

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

    def conditions(self) -> list[Condition]:
        """Conditions that should hold a campaign (door open, drift, reagent out); none here.

        Drivers with such readbacks override this; see :meth:`cryoopt.instruments.Bench.suspend_reason`.
        """
        return []

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
