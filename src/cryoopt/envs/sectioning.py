"""``cryoopt/Sectioning-v0``: serial cryo-sectioning of one sample block."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium import spaces

from cryoopt.envs._base import InstrumentEnv, term
from cryoopt.envs._core import SECTIONING_KNOBS
from cryoopt.instruments.simulated.sim_physics import section_quality

__all__ = ["SECTIONING_FEATURES", "SectioningEnv", "sectioning_features"]

#: Names of the observation entries, in order.
SECTIONING_FEATURES = (
    "thickness_error", "compression", "chatter", "cracks", "ribbon_failed",
    *(f"{k.name}_norm" for k in SECTIONING_KNOBS), "knife_wear",
)


def sectioning_features(section: dict[str, Any] | None, norm_setpoints: list[float], wear: float, *,
                        measured_thickness_nm: float | None = None) -> list[float]:
    """The 11 sectioning features (see :class:`SectioningEnv`); zeros before the first cut."""
    if not section:
        head = [0.0] * 5
    else:
        nominal = float(section.get("nominal_thickness_nm", section.get("actual_thickness_nm", 100.0)))
        thick = float(section.get("actual_thickness_nm", nominal)) if measured_thickness_nm is None else measured_thickness_nm
        head = [
            float(np.clip((thick - nominal) / 50.0, -1.0, 1.0)),
            float(np.clip(section.get("compression", 0.0), 0.0, 1.0)),
            float(np.clip(section.get("chatter", 0.0), 0.0, 1.0)),
            float(1.0 - math.exp(-max(float(section.get("crack_density_per_um", 0.0)), 0.0))),
            0.0 if bool(section.get("ribbon_ok", True)) else 1.0,
        ]
    return head + list(norm_setpoints) + [float(np.clip(wear, 0.0, 1.0))]


class SectioningEnv(InstrumentEnv):
    """Serial sectioning of a sample block on a cryo-ultramicrotome.

    ## Description
    One episode is one sample block, one step one serial section. The agent moves the
    ultramicrotome setpoints by bounded normalized deltas; the cut section's quality
    comes from the stochastic defect model :class:`cryoopt.sim.sectioning.SectioningModel`
    (compression, chatter, crevasses, knife marks, ribbon failure, knife wear), through
    the real driver over a simulated device (``backend="instruments"`` / ``"socket"``) or
    called directly with the same clipping (``backend="direct"``, the fast default).

    ## Action Space
    ``Box(-1, 1, (5,), float32)``: normalized deltas of ``section_thickness_nm`` (+-10 nm),
    ``cutting_speed_mm_s`` (+-0.1 decade), ``specimen_/knife_/chamber_temperature_c``
    (+-3 degC each). New setpoints are clipped to the ultramicrotome profile's limits,
    so the driver never refuses one. Same as ``CLEMProtocol-v0``'s ``sectioning`` slice.

    ## Observation Space
    ``Box(-1, 1, (11,), float32)`` (:data:`SECTIONING_FEATURES`): measured thickness
    error ``/50 nm`` (clipped), compression, chatter, ``1 - exp(-crack density per um)``,
    ribbon failed (0/1), the 5 setpoints normalized to [-1, 1] over the profile limits
    (log10 for speed), knife wear (0 new, 1 blunt). Before the first cut the section
    features are 0. Same as ``CLEMProtocol-v0``'s first 11 features.

    ## Rewards
    ``quality + thickness + failure`` with ``info["reward_terms"]``: ``quality`` =
    ``(1 - compression)(1 - chatter) exp(-crack density)`` (0 for a failed ribbon);
    ``thickness`` = ``-0.5 min(1, |t - target| / target)`` (target from the scenario,
    100 nm by default); ``failure`` = -1 when the ribbon fails. Range [-1.5, 1].

    ## Starting State
    Setpoints drawn uniformly (log-uniformly for speed) from the scenario's start ranges
    (operator variability), knife wear from ``initial_knife_wear``, all from ``np_random``.

    ## Episode End
    Terminated when the block is used up (``scenario.block_sections`` sections, 50 by
    default) or the ribbon fails (``failure_limit`` consecutive failed sections, 2 by
    default). Truncated at ``max_episode_steps=50`` (registration).

    ## Arguments
    ``scenario`` (name/path/dict, see :mod:`cryoopt.envs.scenarios`), ``backend``
    (``"direct"``, ``"instruments"``, ``"socket"``), ``bench`` (your instruments),
    ``failure_limit``, ``render_mode="rgb_array"``.

    ## Version History
    * v0: initial version.
    """

    knobs = SECTIONING_KNOBS

    def __init__(self, *, failure_limit: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failure_limit = int(failure_limit)
        self.action_space = spaces.Box(-1.0, 1.0, (len(self.knobs),), np.float32)
        self.observation_space = spaces.Box(-1.0, 1.0, (len(SECTIONING_FEATURES),), np.float32)
        self.setpoints: dict[str, float] = {}

    def _obs(self, section: dict[str, Any] | None, measured: float | None = None) -> np.ndarray:
        wear = float(section.get("wear", self._initial_wear)) if section else self._initial_wear
        f = sectioning_features(section, self._norm(self.knobs, self.setpoints), wear, measured_thickness_nm=measured)
        return np.asarray(f, np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._new_block(options)
        self.setpoints = self._start(self.knobs)
        self.n_cut, self.fails = 0, 0
        return self._obs(None), {"setpoints": dict(self.setpoints), "knife_wear": self._initial_wear}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = np.asarray(action, np.float64).reshape(-1)
        self.setpoints = self._move(self.knobs, self.setpoints, a)
        section = self.chain.cut(self.setpoints)
        self._images = (None, None)
        self.n_cut += 1
        ok = bool(section.get("ribbon_ok", True))
        self.fails = 0 if ok else self.fails + 1
        measured = float(section.get("actual_thickness_nm", self.setpoints["section_thickness_nm"]))
        measured += float(self.np_random.normal(0.0, self.scenario.noise.thickness_nm))
        target = self.scenario.target_thickness_nm
        terms = {
            "quality": term(section_quality(section)),
            "thickness": term(-min(1.0, abs(float(section.get("actual_thickness_nm", measured)) - target) / target), 0.5),
            "failure": term(0.0 if ok else -1.0),
        }
        reward = float(sum(t["contribution"] for t in terms.values()))
        terminated = self.n_cut >= self.scenario.block_sections or self.fails >= self.failure_limit
        info = {
            "reward_terms": terms, "setpoints": dict(self.setpoints), "section": dict(section),
            "ribbon_failed": not ok, "sections_cut": self.n_cut,
        }
        return self._obs(section, measured), reward, terminated, False, info
