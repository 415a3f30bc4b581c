"""Device profiles: a YAML file per device model, validated by pydantic.

A profile says how to talk to one model (transport, terminations, timeouts, retries),
which bytes mean what (``commands``: overrides of the reference command set in
``instruments/PROTOCOL.md``), what each setpoint may be (``limits``), which interlocks
apply and what the safe state is. A user adapts a profile to their hardware by
copying one of the shipped files and editing it; no Python changes.

Profiles are found by name in, in order: the directories in ``$CRYOOPT_INSTRUMENTS_DIR``
(``os.pathsep``-separated), ``./instruments`` and the ``instruments/`` folder shipped
beside the package source. A path to a ``.yaml`` file works anywhere a name does.

Example:
    >>> p = load_profile("ultramicrotome-ref")
    >>> p.device_class, p.limits["section_thickness_nm"].high
    ('ultramicrotome', 1000.0)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cryoopt.exceptions import ConfigError
from cryoopt.instruments.validators import Choices, Limits

__all__ = [
    "CommandSpec",
    "LimitSpec",
    "Profile",
    "SafeStateSpec",
    "TransportSettings",
    "list_profiles",
    "load_profile",
    "profile_dirs",
]

DeviceClass = Literal["ultramicrotome", "stainer", "microscope"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TransportSettings(_Model):
    """How bytes travel: pyserial URL or VISA resource, terminations, timeouts, retries."""

    kind: Literal["serial", "visa"] = "serial"
    address: str | None = None
    baud_rate: int = Field(115200, gt=0)
    write_termination: str = "\n"
    read_termination: str = "\n"
    timeout_s: float = Field(1.0, gt=0, description="per exchange (one write + one read)")
    query_retries: int = Field(2, ge=0, description="extra attempts for a failed query; actions are never repeated")
    retry_delay_s: float = Field(0.05, ge=0, description="wait before a retry; late replies are flushed")
    operation_timeout_s: float = Field(3600.0, gt=0, description="for *OPC? after long actions (cut, stain run)")
    visa_library: str = Field("", description="pyvisa backend, e.g. '@py' or 'path/to/defs.yaml@sim'")


class CommandSpec(_Model):
    """Bytes for one property (``get``/``set``, ``set`` is a printf format) or one action (``write``)."""

    get: str | None = None
    set: str | None = None
    write: str | None = None


class LimitSpec(_Model):
    """Either a numeric range (``low``/``high``/``unit``) or a set of ``choices``."""

    low: float | None = None
    high: float | None = None
    unit: str = ""
    choices: list[str] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> LimitSpec:
        numeric = self.low is not None or self.high is not None
        if numeric == (self.choices is not None):
            raise ValueError("a limit has either low/high or choices, not both and not neither")
        if numeric and (self.low is None or self.high is None or self.low > self.high):
            raise ValueError(f"need low <= high, got low={self.low}, high={self.high}")
        return self

    def build(self, name: str) -> Limits | Choices:
        if self.choices is not None:
            return Choices(name, tuple(self.choices))
        return Limits(name, float(self.low), float(self.high), self.unit)  # type: ignore[arg-type]


class SafeStateSpec(_Model):
    """Commands that put the device in its safe state, and a sentence saying what that state is."""

    commands: list[str]
    description: str


class Profile(_Model):
    """One device model. See ``instruments/PROTOCOL.md`` for the meaning of every field."""

    name: str
    device_class: DeviceClass
    model: str = ""
    idn_contains: str = Field("", description="substring *IDN? must contain; empty = accept any")
    transport: TransportSettings = TransportSettings()
    commands: dict[str, CommandSpec] = {}
    limits: dict[str, LimitSpec] = {}
    interlocks: dict[str, Any] = {}
    safe_state: SafeStateSpec
    sim: dict[str, Any] = Field({}, description="settings for the simulated device (ignored on hardware)")
    source: str | None = Field(None, description="file the profile was loaded from")

    def limit(self, name: str) -> Limits | Choices:
        try:
            return self.limits[name].build(name)
        except KeyError:
            raise ConfigError(
                f"profile {self.name!r} has no limits for {name!r}; add it under 'limits:' "
                f"(known: {', '.join(sorted(self.limits))})"
            ) from None

    def with_overrides(self, **changes: Any) -> Profile:
        """A copy with top-level fields replaced (``transport=...`` may be a dict of changes)."""
        data = self.model_dump()
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return Profile.model_validate(data)


def profile_dirs() -> list[Path]:
    """Directories searched for profiles by name, in order."""
    dirs = [Path(p) for p in os.environ.get("CRYOOPT_INSTRUMENTS_DIR", "").split(os.pathsep) if p]
    dirs.append(Path.cwd() / "instruments")
    # src/cryoopt/instruments/profiles.py -> repository root / instruments
    dirs.append(Path(__file__).resolve().parents[3] / "instruments")
    seen: list[Path] = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


def list_profiles() -> list[str]:
    """Names of all profiles found in :func:`profile_dirs`."""
    names: set[str] = set()
    for d in profile_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def _resolve(name_or_path: str | os.PathLike[str]) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"device profile file {str(p)!r} does not exist")
        return p
    for d in profile_dirs():
        for ext in (".yaml", ".yml"):
            cand = d / f"{name_or_path}{ext}"
            if cand.is_file():
                return cand
    raise ConfigError(
        f"no device profile named {str(name_or_path)!r}; known: {', '.join(list_profiles()) or '(none)'}; "
        "pass a path to a .yaml file or set CRYOOPT_INSTRUMENTS_DIR"
    )


def load_profile(name_or_path: str | os.PathLike[str] | Profile | dict[str, Any]) -> Profile:
    """Load and validate a profile by name, path, dict, or pass a :class:`Profile` through.

    Raises:
        ConfigError: the file is missing or a field is invalid (the message names the field).
    """
    if isinstance(name_or_path, Profile):
        return name_or_path
    if isinstance(name_or_path, dict):
        data, source = dict(name_or_path), None
    else:
        path = _resolve(name_or_path)
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"device profile {str(path)!r} is not valid YAML: {exc}") from exc
        source = str(path)
        if not isinstance(data, dict):
            raise ConfigError(f"device profile {str(path)!r} must be a YAML mapping")
    data.setdefault("source", source)
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        where = source or "<dict>"
        raise ConfigError(f"device profile {where!r} is invalid:\n{exc}") from exc
