"""What a controller knows about a block's drift: the temperature readbacks, tracked section by section.

Within a sample block the bench drifts: the specimen and knife temperatures depart from
their setpoints by an offset that grows cut by cut (the regulation's droop as the LN2
dewar empties), the knife edge collects debris, the block face recedes. The instrument
reports what it measured (``info["section"]["measured_specimen_temperature_c"]``, the
readback a real cryo-ultramicrotome gives), so a controller can see the offset and move
the setpoints against it.

:class:`DriftTracker` keeps that per block: the starting setpoints (the reference the
outer loop chose), the offset of every cut (measured minus set), its rate per section
and the offset the *next* cut will see if nothing changes. :meth:`DriftTracker.features`
turns that into :data:`DRIFT_FEATURES` for a policy's observation, and
:meth:`DriftTracker.feedforward` into the setpoint deltas that hold the measured
temperatures at the reference (a classical disturbance feedforward; the HRL agent's
sectioning controller learns a residual on top of it, the ``compensate`` agent is that
feedforward alone).

Readbacks are taken from the step ``info`` (the env's observation clips its readback
features at +-10 C, less than a block drifts); on a bench without them the offset stays
0 and the features and feedforward are zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["DRIFT_FEATURES", "TEMPERATURE_KNOBS", "DriftTracker", "flat_setpoints"]

#: The temperature setpoints the drift moves (specimen arm and knife), with the readback that reports each.
TEMPERATURE_KNOBS: dict[str, str] = {
    "specimen_temperature_c": "measured_specimen_temperature_c",
    "knife_temperature_c": "measured_knife_temperature_c",
}

#: Names of :meth:`DriftTracker.features`, in order (temperatures in units of ``temperature_scale_c``).
DRIFT_FEATURES = (
    "measured_minus_reference",   # last cut's measured specimen temperature minus the block's starting setpoint
    "next_minus_reference",       # what the next cut will measure if the setpoints are held, minus the reference
    "setpoint_minus_reference",   # how far the specimen setpoint has been moved from the reference
    "offset",                     # measured minus set, last cut
    "offset_rate",                # offset growth per section (per 5 C)
    "sections_cut",               # sections cut in this block / 16
)


def flat_setpoints(info: Mapping[str, Any] | None) -> dict[str, float]:
    """The setpoints in a step ``info``, flattened (``CLEMProtocol-v0`` groups them by instrument)."""
    sp = (info or {}).get("setpoints") or {}
    out: dict[str, float] = {}
    for k, v in sp.items():
        if isinstance(v, Mapping):
            out.update({kk: float(vv) for kk, vv in v.items() if isinstance(vv, (int, float))})
        elif isinstance(v, (int, float)):
            out[k] = float(v)
    return out


class DriftTracker:
    """Temperature drift of one block, from the readbacks of its cuts.

    Args:
        prior_rate_c: offset growth per section assumed before two cuts have shown it
            (0: none; an agent that has seen blocks can learn the typical rate).
        window: the rate is the mean offset increment over the last ``window`` cuts.
        temperature_scale_c: temperatures in :meth:`features` are divided by this (and
            clipped to [-1, 1]).
        step_c: the setpoint change of a full action (``Knob.step`` of the temperature knobs).

    Call :meth:`reset` with the reset ``info`` (its setpoints are the reference), then
    :meth:`update` with every step's ``info``.
    """

    def __init__(self, *, prior_rate_c: float = 0.0, window: int = 4, temperature_scale_c: float = 20.0,
                 step_c: float = 3.0) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 cut, got {window}")
        if temperature_scale_c <= 0 or step_c <= 0:
            raise ValueError("temperature_scale_c and step_c must be positive")
        self.prior_rate_c, self.window = float(prior_rate_c), int(window)
        self.scale, self.step_c = float(temperature_scale_c), float(step_c)
        self.reset()

    def reset(self, info: Mapping[str, Any] | None = None) -> None:
        """A new block; the setpoints in ``info`` (if any) become the reference."""
        self.reference: dict[str, float] = {}
        self.setpoints: dict[str, float] = {}
        self.offsets: dict[str, list[float]] = {k: [] for k in TEMPERATURE_KNOBS}
        self.measured: dict[str, float] = {}
        self.cuts = 0
        if info is not None:
            self._take_setpoints(info, reference=True)

    @property
    def started(self) -> bool:
        """Whether a reference is known (a reset ``info`` with setpoints was seen)."""
        return bool(self.reference)

    def _take_setpoints(self, info: Mapping[str, Any], *, reference: bool = False) -> None:
        sp = flat_setpoints(info)
        temps = {k: sp[k] for k in TEMPERATURE_KNOBS if k in sp}
        if temps:
            self.setpoints.update(temps)
            if reference or not self.reference:
                self.reference = dict(temps)

    def update(self, info: Mapping[str, Any]) -> None:
        """One step's ``info``: the setpoints used for the cut and the section's readbacks."""
        section = info.get("section") or {}
        if not section:  # a stop, or a step without a cut
            return
        self._take_setpoints(info)
        self.cuts += 1
        for knob, readback in TEMPERATURE_KNOBS.items():
            value = section.get(readback)
            if value is None or knob not in self.setpoints or not math.isfinite(float(value)):
                continue
            self.measured[knob] = float(value)
            self.offsets[knob].append(float(value) - self.setpoints[knob])

    # -- what the next cut will see --------------------------------------------------------
    def rate(self, knob: str = "specimen_temperature_c") -> float:
        """Offset growth per section (C), from the last ``window`` increments (``prior_rate_c`` before two cuts)."""
        o = self.offsets[knob]
        if len(o) < 2:
            return self.prior_rate_c
        recent = o[-(self.window + 1):]
        return float((recent[-1] - recent[0]) / (len(recent) - 1))

    def offset(self, knob: str = "specimen_temperature_c") -> float:
        """Measured minus set at the last cut (C; 0 before any readback)."""
        o = self.offsets[knob]
        return o[-1] if o else 0.0

    def next_offset(self, knob: str = "specimen_temperature_c") -> float:
        """The offset the next cut will see (C): the last one plus one section's growth (0 before any
        readback: a block starts at its setpoints, and a bench without readbacks shows no drift)."""
        if not self.offsets[knob]:
            return 0.0
        return self.offset(knob) + self.rate(knob)

    def next_offset_sd(self, knob: str = "specimen_temperature_c") -> float:
        """Uncertainty (sd, C) of :meth:`next_offset`: the spread of the recent increments, at least 0.5 C
        (0 before any readback, the rate or a guess of half of it before two increments)."""
        o = self.offsets[knob]
        if not o:
            return 0.0
        inc = np.diff(o[-(self.window + 1):])
        if inc.size >= 2:
            return float(math.sqrt(np.var(inc, ddof=1) + 0.25))
        return float(max(0.5, 0.5 * abs(self.rate(knob))))

    def next_measured(self, knob: str = "specimen_temperature_c", setpoint: float | None = None) -> float | None:
        """The temperature the next cut will measure at ``setpoint`` (default: the current one)."""
        sp = self.setpoints.get(knob) if setpoint is None else float(setpoint)
        return None if sp is None else sp + self.next_offset(knob)

    def feedforward(self, target: Mapping[str, float] | None = None) -> dict[str, float]:
        """Normalized setpoint deltas (``[-1, 1]``, one full action = ``step_c``) that bring the next
        cut's measured temperatures to ``target`` (default: the reference) as far as one step allows."""
        out = {}
        for knob in TEMPERATURE_KNOBS:
            goal = (target or self.reference).get(knob)
            nxt = self.next_measured(knob)
            if goal is None or nxt is None:
                continue
            out[knob] = float(np.clip((goal - nxt) / self.step_c, -1.0, 1.0))
        return out

    def features(self) -> np.ndarray:
        """:data:`DRIFT_FEATURES` (float32, each in [-1, 1])."""
        k = "specimen_temperature_c"
        ref, sp = self.reference.get(k), self.setpoints.get(k)
        if ref is None or sp is None:
            return np.zeros(len(DRIFT_FEATURES), np.float32)
        measured = self.measured.get(k, sp)
        nxt = self.next_measured(k)
        f = [(measured - ref) / self.scale, ((nxt if nxt is not None else sp) - ref) / self.scale, (sp - ref) / self.scale,
             self.offset(k) / self.scale, self.rate(k) / 5.0, self.cuts / 16.0]
        return np.clip(np.asarray(f, np.float32), -1.0, 1.0)
