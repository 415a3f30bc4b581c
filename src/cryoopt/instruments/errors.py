"""Instrument errors: the typed errors of :mod:`cryoopt.exceptions`, refined.

Every error a driver raises after a fault carries three attributes besides its
message, so the campaign journal can record them without parsing text:

- ``device``: the profile name of the instrument (``"ultramicrotome-ref"``);
- ``command``: the command being exchanged when the fault happened (or ``None``);
- ``safe_state``: what state the hardware was left in (``None`` when no safe state was
  needed, e.g. a setpoint refused before any byte was sent).

The subclasses below also inherit the builtin their parent inherits
(``GarbledReplyError`` is a ``ConnectionError``), so ``except CommunicationError`` and
``except ConnectionError`` both keep working.
"""

from __future__ import annotations

from cryoopt.exceptions import (
    CommunicationError,
    DeviceError,
    InstrumentError,
    InstrumentTimeoutError,
    InterlockError,
    ParameterError,
)

__all__ = [
    "CommunicationError",
    "DeviceError",
    "DisconnectedError",
    "DoorOpenError",
    "GarbledReplyError",
    "InstrumentError",
    "InstrumentTimeoutError",
    "InterlockError",
    "OperationTimeoutError",
    "ParameterError",
    "ReagentError",
    "TemperatureInterlockError",
    "WrongInstrumentError",
    "with_context",
]


class GarbledReplyError(CommunicationError):
    """A reply arrived but is not a valid answer to the query.

    Noise on the line, junk (``OK`` where a number was asked), two values where one was
    expected, ``nan``, a word the device does not use, or replies out of step.
    """


class DisconnectedError(CommunicationError):
    """The channel closed (cable pulled, socket reset) in the middle of an exchange."""


class OperationTimeoutError(InstrumentTimeoutError):
    """A long operation (cut, stain run, acquisition) did not finish within ``operation_timeout_s``.

    ``*OPC?`` is asked once and never repeated, so the wait is bounded by the profile's
    ``transport.operation_timeout_s``; the device is then put in its safe state.
    """


class WrongInstrumentError(InstrumentError):
    """The device does not identify (``*IDN?``) as the model its profile is for.

    Raised by :func:`~cryoopt.instruments.connect` before any other command is sent; the
    link is closed again.
    """


class DoorOpenError(InterlockError):
    """The staining platform's door is (or was) open; runs refuse to start or pause."""


class ReagentError(InterlockError):
    """A reagent is below the volume a protocol needs (before or during a run)."""


class TemperatureInterlockError(InterlockError):
    """Temperatures are not within tolerance of their setpoints (not yet stable, or drifting)."""


def with_context(
    error: InstrumentError | ParameterError,
    *,
    device: str | None = None,
    command: str | None = None,
    safe_state: str | None = None,
) -> InstrumentError | ParameterError:
    """Attach ``device``, ``command`` and ``safe_state`` attributes to ``error`` and return it."""
    error.device = device  # type: ignore[union-attr]
    error.command = command  # type: ignore[union-attr]
    error.safe_state = safe_state  # type: ignore[union-attr]
    return error
