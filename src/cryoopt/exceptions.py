"""The exceptions cryoopt raises.

One root, :class:`CryoOptError`, so ``except CryoOptError`` catches everything the
library raises on purpose. Each subclass also inherits the matching builtin
(``ParameterError`` is a ``ValueError``), so code that already catches builtins
keeps working. Messages say what went wrong *and* what to do about it.
"""

from __future__ import annotations


class CryoOptError(Exception):
    """Root of every error cryoopt raises on purpose."""


# -- configuration and inputs -------------------------------------------------
class ParameterError(CryoOptError, ValueError):
    """A parameter value or definition is invalid (names the parameter and range)."""


class ConstraintError(ParameterError):
    """A parameter set violates a linear constraint between parameters."""


class ConfigError(CryoOptError, ValueError):
    """A campaign or scenario config is invalid (names the field and, if known, the line)."""


class RegistryError(CryoOptError, LookupError):
    """A name is missing from a registry, or registered twice."""


# -- optimization ---------------------------------------------------------------
class OptimizerError(CryoOptError, RuntimeError):
    """The optimizer cannot propose or learn (e.g. the whole space keeps failing)."""


class TrialError(CryoOptError, ValueError):
    """A trial is unknown, or told twice, or its value has the wrong shape."""


class StateError(CryoOptError, ValueError):
    """A saved state (optimizer, journal) cannot be restored into this object."""


# -- campaign -------------------------------------------------------------------
class JournalError(CryoOptError, RuntimeError):
    """The campaign journal is unusable: wrong campaign, incompatible config, corrupt."""


class TrialInterruptedError(CryoOptError, RuntimeError):
    """A trial was cut off before it could finish (the worker, node or bench running it died).

    Not a result and not a failed experiment: an executor raises it from ``run`` and
    the campaign applies its crash rule to the trial (re-check, re-run if the executor
    is idempotent, otherwise abandon). ``executor_lost``: the executor cannot run any
    further trial (e.g. no bench is left); the campaign stops, resumable.
    """

    def __init__(self, message: str, *, executor_lost: bool = False) -> None:
        super().__init__(message)
        self.executor_lost = executor_lost


# -- instruments ----------------------------------------------------------------
class InstrumentError(CryoOptError, RuntimeError):
    """An instrument failed; the message says what state the hardware was left in."""


class CommunicationError(InstrumentError, ConnectionError):
    """Bytes could not be exchanged with an instrument (disconnect, garbled reply)."""


class InstrumentTimeoutError(InstrumentError, TimeoutError):
    """An instrument did not answer in time."""


class InterlockError(InstrumentError):
    """A safety interlock refused an action (door open, temperature not stable, ...)."""


class DeviceError(InstrumentError):
    """The instrument reported an error code of its own (``SYST:ERR?``)."""


# -- simulation and evaluation --------------------------------------------------
class SimulationError(CryoOptError, RuntimeError):
    """A simulator could not produce a result (diverged, bad mesh, missing backend)."""


class BackendUnavailableError(SimulationError, ImportError):
    """An optional backend (e.g. dolfinx) is not importable here."""


class EvaluationError(CryoOptError, ValueError):
    """Images or metrics cannot be evaluated (bad dtype, NaN pixels, shape mismatch)."""


class InconsistentJudgmentError(EvaluationError):
    """An AHP pairwise comparison matrix is too inconsistent (CR > 0.1) to use."""


class RegistrationError(EvaluationError):
    """Two images could not be registered with confidence (too few common structures)."""


__all__ = [name for name in dir() if name.endswith("Error")]
