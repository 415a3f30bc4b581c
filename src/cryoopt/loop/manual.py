"""The manual baseline: a simulated operator tuning one factor at a time (strategy ``manual_ofat``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cryoopt.optim.base import Optimizer, register_strategy
from cryoopt.optim.trial import Trial, TrialStatus
from cryoopt.space import Params, SearchSpace

__all__ = ["ManualOFAT"]


@register_strategy("manual_ofat")
class ManualOFAT(Optimizer):
    """A simulated operator tuning one factor at a time (OFAT) from the expert protocol.

    Operator model (documented, used by the headline benchmark):

    * **start**: :data:`~cryoopt.agents.EXPERT_PROTOCOL` as this operator habitually
      runs it: log-scale knobs (dilution, time, cutting speed, exposure, gain) times
      ``exp(N(0, sigma))``, thickness + ``N(0, 20 sigma)`` nm, cutting temperature
      + ``N(0, 6 sigma)`` C, staining temperature + ``N(0, 8 sigma)`` C, focus
      + ``N(0, 2 sigma)`` um (:attr:`LINEAR_SPREAD`); one draw per operator (``seed``).
    * **judgement**: the operator scores a block as ``quality - time_weight * prep_time_h``
      plus ``N(0, judgement_noise)`` (reading images by eye), per block.
    * **OFAT**: factors in :attr:`FACTORS` order; step one factor (x/÷ ``log_step``, or
      the linear step), keep it while the judged score improves, try the other direction
      once when it does not, then move to the next factor; after the last factor start
      over with half steps.

    Its state is a function of the told trials (replayed), so ``state_dict`` resumes it.
    """

    FACTORS = ("time_min", "dilution", "section_thickness_nm", "specimen_temperature_c", "exposure_ms", "focus_um", "gain",
               "cutting_speed_mm_s", "temperature_c")
    #: steps of the linear factors: thickness 10 nm, cutting temperature 3 C (the steps an operator
    #: uses to correct a ribbon), focus 0.5 um, staining temperature 4 C
    LINEAR_STEP = {"section_thickness_nm": 10.0, "specimen_temperature_c": 3.0, "focus_um": 0.5, "temperature_c": 4.0}
    #: operator spread of the linear factors at ``sigma = 1`` (the habit around the expert protocol)
    LINEAR_SPREAD = {"section_thickness_nm": 20.0, "specimen_temperature_c": 6.0, "focus_um": 2.0, "temperature_c": 8.0}

    def __init__(self, space: SearchSpace, *, seed: int = 0, objectives: Any = None, outcome_constraints: Any = None,
                 sigma: float = 0.25, time_weight: float = 0.01, judgement_noise: float = 0.01, log_step: float = 1.6) -> None:
        super().__init__(space, seed=seed, objectives=objectives, outcome_constraints=outcome_constraints)
        self.sigma, self.time_weight = float(sigma), float(time_weight)
        self.judgement_noise, self.log_step = float(judgement_noise), float(log_step)

    def _settings(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "time_weight": self.time_weight, "judgement_noise": self.judgement_noise,
                "log_step": self.log_step}

    def operator_start(self) -> Params:
        from cryoopt.agents import EXPERT_PROTOCOL

        rng = np.random.default_rng([self.seed, 7])
        s = self.sigma
        p = {}
        for par in self.space:
            base = float(EXPERT_PROTOCOL.get(par.name, 0.5 * (par.low + par.high)))
            if par.name in self.LINEAR_STEP:
                scale = self.LINEAR_SPREAD[par.name]
                v = base + rng.normal(0.0, scale * s)
            else:
                v = base * math.exp(rng.normal(0.0, s))
            p[par.name] = self._clip(par, v)
        return self.space.validate(p)

    @staticmethod
    def _clip(par: Any, v: float) -> Any:
        v = min(max(v, par.low), par.high)
        return int(round(v)) if type(par).__name__ == "IntParameter" else float(v)

    def _judge(self, t: Trial) -> float:
        v = t.values or {}
        noise = np.random.default_rng([self.seed, 11, t.id]).normal(0.0, self.judgement_noise)
        return float(v.get("quality", 0.0)) - self.time_weight * float(v.get("prep_time_h", 0.0)) + float(noise)

    def _factors(self) -> list[str]:
        return [f for f in self.FACTORS if f in self.space.names] or self.space.names

    def _replay(self) -> tuple[Params | None, int, int, int, int]:
        """(incumbent, factor index, direction, tries in this direction, round) after the told trials."""
        base, best = None, -math.inf
        fi, direction, flipped, rnd = 0, +1, False, 0
        nf = len(self._factors())
        for t in self.trials:
            if t.status is TrialStatus.PENDING or t.status is TrialStatus.ABANDONED:
                continue
            score = self._judge(t) if t.status is TrialStatus.COMPLETED else -math.inf
            if base is None:
                base, best = t.params, score
                continue
            if score > best:
                base, best = t.params, score
                flipped = True  # this direction works: keep going, do not try the other one
            elif direction == +1 and not flipped:
                direction, flipped = -1, True
            else:
                fi, direction, flipped = fi + 1, +1, False
                if fi >= nf:
                    fi, rnd = 0, rnd + 1
        return base, fi, direction, int(flipped), rnd

    def _step(self, base: Params, name: str, direction: int, rnd: int) -> Params:
        par = self.space[name] if hasattr(self.space, "__getitem__") else next(p for p in self.space if p.name == name)
        shrink = 0.5**rnd
        v = float(base[name])
        if name in self.LINEAR_STEP:
            v += direction * self.LINEAR_STEP[name] * shrink
        else:
            v *= self.log_step ** (direction * shrink)
        return self.space.validate({**base, name: self._clip(par, v)})

    def _propose(self, n: int) -> list[tuple[Params, str]]:
        base, fi, direction, _, rnd = self._replay()
        if base is None:
            first = [] if any(t.status is TrialStatus.PENDING for t in self.trials) else [self.operator_start()]
            if first:
                base = first[0]
            out = [(p, "manual") for p in first]
        else:
            out = []
        factors = self._factors()
        base = base or self.operator_start()
        while len(out) < n:  # without feedback (batch), walk on through the plan
            cand = self._step(base, factors[fi % len(factors)], direction, rnd)
            if cand == base:  # at a bound: next factor
                fi += 1
                continue
            out.append((cand, "manual"))
            fi += 1
        return out[:n]
