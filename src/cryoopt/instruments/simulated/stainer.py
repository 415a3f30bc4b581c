"""Simulated staining platform speaking the reference command set.

A run walks the loaded steps; each step lasts ``time_min`` plus ``wash_cycles`` x
``sim.wash_time_s``. When a step begins the device checks the door (open -> pause, error
301) and draws the step's reagent and wash volumes (short -> pause, error 302). When
the last step ends the staining backend computes the section's staining features.

Device faults (``door_open``, ``reagent_out``, ``temperature_drift`` of the ``stage``)
start when a step begins or at a simulated time, and clear by themselves after their
``duration_s`` or by :meth:`clear_faults`: the door closes, the reagent is refilled to
the level it had, the stage temperature relaxes back. A door opened mid-run pauses the run.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cryoopt.instruments.simulated.device import SettingsConflict, SimulatedDevice
from cryoopt.instruments.simulated.physics import staining_backends

__all__ = ["SimulatedStainer"]

_FIELDS = ("reagent", "dilution", "volume_ul", "time_min", "temperature_c", "agitation_rpm", "wash_cycles")


class SimulatedStainer(SimulatedDevice):
    default_profile = "stainer-ref"
    idn = "CRYOOPT,REFSTAIN-1,SIM0001,0.1"
    settings_map: ClassVar[dict[str, str]] = {"TEMP": "temperature_c"}

    def __init__(self, profile: Any = None, **kwargs: Any) -> None:
        super().__init__(profile, **kwargs)
        if self.physics is None:
            self.physics = staining_backends.get("default")()
        self.reagents = {k: float(v) for k, v in self.sim.get("reagents_ul", {}).items()}
        self.door = "CLOSED"
        self.steps: list[dict[str, Any]] = []
        self.state = "IDLE"
        self.step = 0  # 1-based index of the running step, 0 when idle
        self.t_in_step = 0.0
        self.elapsed = 0.0
        self.measured_temp = float(self.settings.get("temperature_c", 22.0))
        self._active: dict[int, tuple[Any, float, float]] = {}  # id(fault) -> (fault, started at, memo)
        self._done: set[int] = set()
        self.commands.update({
            "MEAS:TEMP?": lambda a: f"{self.measured_temp:.2f}",
            "DOOR?": lambda a: self.door,
            "PROT:CLE": lambda a: self._clear(),
            "PROT:STEP": self._add_step,
            "PROT:COUN?": lambda a: str(len(self.steps)),
            "STAIN:RUN": lambda a: self._run(),
            "STAIN:PAUS": lambda a: self._pause(),
            "STAIN:RES": lambda a: self._resume(),
            "STAIN:ABOR": lambda a: self._abort(),
            "STAIN:STEP?": lambda a: str(self.step),
            "STAIN:PROG?": lambda a: f"{self.progress:.4f}",
            "REAG:LIST?": lambda a: ",".join(self.reagents),
            "REAG:LEV?": lambda a: f"{self.reagents[a.strip().upper()]:.1f}",
        })

    @property
    def status(self) -> str:  # type: ignore[override]
        return self.state

    def busy(self) -> bool:
        return self.state == "RUNNING"

    # -- protocol -----------------------------------------------------------------------------
    def _clear(self) -> None:
        if self.state in ("RUNNING", "PAUSED"):
            raise SettingsConflict("abort the run before clearing the protocol")
        self.steps, self.state = [], "IDLE"

    def _add_step(self, arg: str) -> None:
        if self.state in ("RUNNING", "PAUSED"):
            raise SettingsConflict("cannot edit the protocol during a run")
        parts = [p.strip() for p in arg.split(",")]
        if len(parts) != len(_FIELDS):
            raise ValueError(arg)
        step: dict[str, Any] = {"reagent": parts[0].upper()}
        if step["reagent"] not in self.reagents:
            raise ValueError(arg)
        for name, raw in zip(_FIELDS[1:], parts[1:]):
            step[name] = int(float(raw)) if name == "wash_cycles" else float(raw)
            lim = self.profile.limits.get(f"step_{name}")
            if lim is not None and not lim.low <= step[name] <= lim.high:  # type: ignore[operator]
                raise ValueError(arg)
        self.steps.append(step)
        self.state = "LOADED"

    def step_duration(self, step: dict[str, Any]) -> float:
        return 60.0 * step["time_min"] + step["wash_cycles"] * float(self.sim.get("wash_time_s", 60.0))

    @property
    def progress(self) -> float:
        total = sum(self.step_duration(s) for s in self.steps)
        if self.state == "DONE":
            return 1.0
        return min(self.elapsed / total, 1.0) if total > 0 else 0.0

    def _run(self) -> None:
        if not self.steps:
            raise SettingsConflict("no protocol loaded")
        if self.state in ("RUNNING", "PAUSED"):
            raise SettingsConflict("already running")
        self.state, self.step, self.t_in_step, self.elapsed = "RUNNING", 0, 0.0, 0.0
        self._begin_step(1)

    def _pause(self) -> None:
        if self.state == "RUNNING":
            self.state = "PAUSED"

    def _resume(self) -> None:
        if self.state != "PAUSED":
            raise SettingsConflict("not paused")
        if self.door != "CLOSED":
            self.push_error(301, "Door open; run paused")
            return
        self.state = "RUNNING"
        if self.t_in_step == 0.0 and not self._draw(self.steps[self.step - 1]):
            self.state = "PAUSED"

    def _abort(self) -> None:
        if self.state in ("RUNNING", "PAUSED"):
            self.state, self.step = "ABORTED", 0

    # -- dynamics --------------------------------------------------------------------------------
    def _draw(self, step: dict[str, Any]) -> bool:
        wash = str(self.profile.interlocks.get("wash_reagent", "PBS"))
        need = {step["reagent"]: step["volume_ul"]}
        need[wash] = need.get(wash, 0.0) + step["wash_cycles"] * step["volume_ul"]
        for r, v in need.items():
            if self.reagents.get(r, 0.0) + 1e-9 < v:
                self.push_error(302, f"Reagent low; {r} has {self.reagents.get(r, 0.0):.1f} ul, step needs {v:.1f} ul")
                return False
        for r, v in need.items():
            self.reagents[r] -= v
        return True

    def _begin_step(self, k: int) -> None:
        self.step, self.t_in_step = k, 0.0
        self._update_faults(step=k)
        if self.door != "CLOSED":
            self.state = "PAUSED"
            self.push_error(301, f"Door open; run paused at step {k}")
            return
        if not self._draw(self.steps[k - 1]):
            self.state = "PAUSED"

    # -- device faults ------------------------------------------------------------------------
    def _update_faults(self, step: int | None = None) -> None:
        live = self.faults.device_faults("door_open") + self.faults.device_faults("reagent_out")
        live_ids = {id(f) for f in live}
        for key in [k for k in self._active if k not in live_ids]:  # cleared by hand
            self._end_fault(key)
        for f in live:
            key = id(f)
            if key in self._done:
                continue
            if key in self._active:
                if f.duration_s is not None and self.now >= self._active[key][1] + f.duration_s:
                    self._end_fault(key)
                continue
            if (f.start_s is not None and self.now >= f.start_s) or (step is not None and f.at_step == step):
                self._start_fault(f, mid_run=step is None)

    def _start_fault(self, f: Any, *, mid_run: bool) -> None:
        memo = 0.0
        if f.kind == "door_open":
            self.door = "OPEN"
            self.faults.note("door_open", f"t={self.now:g} s, step {self.step}")
            if mid_run and self.state == "RUNNING":
                self.state = "PAUSED"
                self.push_error(301, f"Door open; run paused at step {self.step}")
        else:
            reagent = f.reagent.upper()
            if reagent not in self.reagents:
                self._done.add(id(f))
                return
            memo, self.reagents[reagent] = self.reagents[reagent], 0.0
            self.faults.note("reagent_out", f"{f.reagent} at t={self.now:g} s, step {self.step}")
        self._active[id(f)] = (f, self.now, memo)

    def _end_fault(self, key: int) -> None:
        f, _, memo = self._active.pop(key)
        self._done.add(key)
        if f.kind == "door_open":
            if not any(g.kind == "door_open" for g, _, _ in self._active.values()):
                self.door = "CLOSED"
            self.faults.note("door_closed", f"t={self.now:g} s")
        else:
            reagent = f.reagent.upper()
            self.reagents[reagent] = max(self.reagents[reagent], memo)
            self.faults.note("reagent_refilled", f"{f.reagent} at t={self.now:g} s")

    def _stage_drift_c_per_s(self) -> float:
        return sum(f.rate_c_per_s for f in self.faults.device_faults("temperature_drift")
                   if f.sensor == "stage" and f.active(self.now))

    def _next_event_dt(self) -> float:
        if self.state != "RUNNING":
            return 1.0
        step_left = self.step_duration(self.steps[self.step - 1]) - self.t_in_step
        return max(min(step_left, self._next_fault_dt()), 1e-3)

    def _next_fault_dt(self) -> float:
        """Simulated seconds until a device fault starts or ends (``inf`` if none is due)."""
        due = [float("inf")]
        for f in self.faults.device_faults("door_open") + self.faults.device_faults("reagent_out"):
            key = id(f)
            if key in self._active and f.duration_s is not None:
                due.append(self._active[key][1] + f.duration_s - self.now)
            elif key not in self._active and key not in self._done and f.start_s is not None:
                due.append(f.start_s - self.now)
        return min(d for d in due if d > 0) if any(d > 0 for d in due) else float("inf")

    def _evolve(self, dt: float) -> None:
        target = float(self.settings.get("temperature_c", 22.0))
        if self.state == "RUNNING" and self.step:
            target = self.steps[self.step - 1]["temperature_c"]
        drift = self._stage_drift_c_per_s()
        if drift:
            self.measured_temp += drift * dt
        else:
            self.measured_temp = target + (self.measured_temp - target) * 0.5
        while dt > 1e-12 and self.state == "RUNNING":
            remaining = self.step_duration(self.steps[self.step - 1]) - self.t_in_step
            step = min(dt, remaining)
            self.t_in_step += step
            self.elapsed += step
            dt -= step
            if self.t_in_step >= self.step_duration(self.steps[self.step - 1]) - 1e-9:
                if self.step == len(self.steps):
                    self._finish()
                else:
                    self._begin_step(self.step + 1)

    def _finish(self) -> None:
        self.state, self.step = "DONE", 0
        if not self.tray.sections:
            self.tray.sections.append({"section_index": 0, "t_s": self.now})
        section = self.tray.sections[-1]
        section.update(self.physics.run([dict(s) for s in self.steps], self.rng, section=dict(section)))
        section["stained"] = True
