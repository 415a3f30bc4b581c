"""``cryoopt/Staining-v0`` (staining platform) and ``cryoopt/StainingDiffusion-v0`` (simulator alone)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from cryoopt.envs._base import InstrumentEnv, term
from cryoopt.envs._core import SECTIONING_KNOBS, STAINING_KNOBS

__all__ = ["STAINING_FEATURES", "StainingDiffusionEnv", "StainingEnv", "staining_reward_terms"]

#: Names of the observation entries, in order.
STAINING_FEATURES = ("mean_label", "uniformity", "background", *(f"{k.name}_norm" for k in STAINING_KNOBS), "section_thickness_norm")

_THICKNESS = SECTIONING_KNOBS[0]


def staining_reward_terms(out: dict[str, Any], setpoints: dict[str, float], wash_min: float) -> dict[str, dict[str, float]]:
    """``label`` (mean label x uniformity), ``background`` (-free antibody), ``time``
    (-0.1 per hour of incubation + washes), ``antibody`` (-20 / dilution, reagent used)."""
    hours = (float(setpoints["time_min"]) + round(setpoints["wash_cycles"]) * wash_min) / 60.0
    return {
        "label": term(float(out.get("label_intensity", 0.0)) * float(out.get("uniformity", 0.0))),
        "background": term(-float(out.get("background", 0.0))),
        "time": term(-hours, 0.1),
        "antibody": term(-20.0 / float(setpoints["dilution"])),
    }


class _StainingBase(InstrumentEnv):
    knobs = STAINING_KNOBS

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.action_space = spaces.Box(-1.0, 1.0, (len(self.knobs),), np.float32)
        self.observation_space = spaces.Box(-1.0, 1.0, (len(STAINING_FEATURES),), np.float32)
        self.setpoints: dict[str, float] = {}
        self.thickness_nm = 100.0

    def _obs(self, out: dict[str, Any] | None, noise: float = 0.0) -> np.ndarray:
        head = [0.0, 0.0, 0.0]
        if out:
            vals = [out.get("label_intensity", 0.0), out.get("uniformity", 0.0), out.get("background", 0.0)]
            head = [float(np.clip(float(v) + (self.np_random.normal(0.0, noise) if noise else 0.0), 0.0, 1.0)) for v in vals]
        thick = _THICKNESS.normalize(self.thickness_nm, self.profiles["ultramicrotome"])
        return np.asarray(head + self._norm(self.knobs, self.setpoints) + [thick], np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._new_block(options)
        self.setpoints = self._start(self.knobs)
        self.thickness_nm = float(self.scenario.target_thickness_nm * self.np_random.uniform(0.6, 1.5))
        self.n_steps = 0
        return self._obs(None), {"setpoints": dict(self.setpoints), "section_thickness_nm": self.thickness_nm}


class StainingEnv(_StainingBase):
    """Immunolabelling protocol on an automated staining platform.

    ## Description
    One episode is one block; each step stains one of its sections with the current
    protocol (one ``PRIMARY`` antibody step with its washes) on the staining platform:
    the real :class:`~cryoopt.instruments.Stainer` driver over a simulated device
    (``backend="instruments"``/``"socket"``; validation, interlocks and reagents as on a
    bench) or the same physics called directly (``backend="direct"``, fast). The
    physics is :func:`cryoopt.sim.fast.fast_staining` (diffusion-reaction, tabulated).

    ## Action Space
    ``Box(-1, 1, (4,), float32)``: normalized deltas of ``dilution`` (+-0.1 decade),
    ``time_min`` (+-0.1 decade), ``temperature_c`` (+-2 degC) and ``wash_cycles`` (+-0.5,
    sent rounded), clipped to the stainer profile's ``step_*`` limits. Same as
    ``CLEMProtocol-v0``'s ``staining`` slice.

    ## Observation Space
    ``Box(-1, 1, (8,), float32)`` (:data:`STAINING_FEATURES`): label image metrics of
    the stained section (mean label, uniformity, background; each in [0, 1], with
    readout noise ``scenario.noise.label``), the 4 setpoints normalized over the profile
    limits (log10 for dilution and time), the section thickness normalized over the
    ultramicrotome limits.

    ## Rewards
    Sum of :func:`staining_reward_terms` (in ``info["reward_terms"]``): label x
    uniformity, minus background, minus 0.1 per hour, minus 20 / dilution.

    ## Starting State
    Protocol drawn from the scenario's start ranges; section thickness
    ``target_thickness_nm x U(0.6, 1.5)`` per block; section-to-section thickness noise
    ``scenario.noise.thickness_nm``.

    ## Episode End
    No terminal state; truncated at ``max_episode_steps=20`` (registration).

    ## Version History
    * v0: initial version.
    """

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.setpoints = self._move(self.knobs, self.setpoints, np.asarray(action, np.float64).reshape(-1))
        thick = max(20.0, self.thickness_nm + float(self.np_random.normal(0.0, self.scenario.noise.thickness_nm)))
        section = {"section_index": self.n_steps, "actual_thickness_nm": thick, "nominal_thickness_nm": self.thickness_nm,
                   "ribbon_ok": True, "quality": 1.0}
        if self.backend == "direct":
            self.chain.sections.append(section)
        else:
            tray = getattr(self.chain.bench, "tray", None)
            if tray is not None:  # the section loaded on the platform
                tray.sections.append(section)
        out = self.chain.stain(self.setpoints)
        self._images = (None, None)
        self.n_steps += 1
        terms = staining_reward_terms(out, self.setpoints, self.chain.wash_min)
        reward = float(sum(t["contribution"] for t in terms.values()))
        info = {"reward_terms": terms, "setpoints": dict(self.setpoints), "staining": dict(out),
                "prep_time_h": (self.setpoints["time_min"] + round(self.setpoints["wash_cycles"]) * self.chain.wash_min) / 60.0}
        return self._obs(out, self.scenario.noise.label), reward, False, False, info


class StainingDiffusionEnv(_StainingBase):
    """The staining diffusion-reaction simulator alone: protocol in, profile summary out.

    ## Description
    The cheap environment for pre-training and for the execution evaluator: each step
    evaluates the current protocol on a section of the block's thickness with
    :func:`cryoopt.sim.fast.fast_staining` (``solver="fast"``, default, microseconds) or
    the FEM solver :func:`cryoopt.sim.solve_staining` (``solver="fem"``, milliseconds).
    No instruments, no readout noise.

    ## Action Space
    As ``Staining-v0``: ``Box(-1, 1, (4,), float32)`` deltas of dilution, time,
    temperature and washes, clipped to the stainer profile's limits.

    ## Observation Space
    As ``Staining-v0`` (:data:`STAINING_FEATURES`), noise-free; ``background`` is the
    free antibody left after washing. ``info["profile"]`` has the full summary
    (penetration depth, label density, ``reliable``).

    ## Rewards
    As ``Staining-v0`` (:func:`staining_reward_terms`).

    ## Starting State
    As ``Staining-v0``.

    ## Episode End
    No terminal state; truncated at ``max_episode_steps=20`` (registration).

    ## Version History
    * v0: initial version.
    """

    def __init__(self, *, solver: str = "fast", **kwargs: Any) -> None:
        if solver not in ("fast", "fem"):
            raise ValueError(f"solver must be 'fast' or 'fem', got {solver!r}")
        kwargs.pop("backend", None)
        super().__init__(backend="direct", **kwargs)
        self.solver = solver
        self._tissue = self.chain._tissue()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        from cryoopt.sim.diffusion import StainingProtocol, solve_staining
        from cryoopt.sim.fast import fast_staining

        self.setpoints = self._move(self.knobs, self.setpoints, np.asarray(action, np.float64).reshape(-1))
        sp = self.setpoints
        p = StainingProtocol(
            section_thickness_nm=self.thickness_nm, antibody_dilution=sp["dilution"], incubation_min=sp["time_min"],
            temperature_c=min(max(sp["temperature_c"], 0.0), 45.0), wash_cycles=int(round(sp["wash_cycles"])),
            wash_min=self.chain.wash_min,
        )
        summary = fast_staining(p, tissue=self._tissue) if self.solver == "fast" else solve_staining(p, tissue=self._tissue, backend="skfem")
        prof = summary.summary()
        out = {"label_intensity": min(max(prof["mean_label"], 0.0), 1.0), "uniformity": prof["uniformity"],
               "background": min(max(prof["free_antibody"], 0.0), 1.0)}
        self.chain.sections = [{"section_index": self.n_steps, "actual_thickness_nm": self.thickness_nm, "quality": 1.0, **out}]
        self._images = (None, None)
        self.n_steps += 1
        terms = staining_reward_terms(out, sp, self.chain.wash_min)
        reward = float(sum(t["contribution"] for t in terms.values()))
        info = {"reward_terms": terms, "setpoints": dict(sp), "profile": dict(prof, reliable=bool(getattr(summary, "reliable", True)))}
        return self._obs(out), reward, False, False, info
