"""The :class:`Agent` protocol, its registry, and the block runner every agent shares.

An agent acts *within* one sample block (one episode of ``cryoopt/CLEMProtocol-v0``,
one step per serial section): it reads the observation and returns the env's full
13-d action (normalized setpoint deltas, see ``env.unwrapped.action_groups``; the
``stop`` entry > 0.5 ends the block). The outer loop (:mod:`cryoopt.loop`)
chooses the block's *starting* protocol and calls :func:`run_block`.

A user's agent plugs in with one class::

    from cryoopt.agents import BaseAgent, register_agent

    @register_agent("nudge_staining")
    class Nudge(BaseAgent):
        def act(self, obs, info=None):
            a = self.zero_action()
            a[5] = 0.1          # a little more dilute every section
            return a

    make_agent("nudge_staining")          # or make_agent(Nudge), or the class in a config
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from cryoopt.registry import Registry

__all__ = [
    "ACTION_DIM",
    "EXPERT_PROTOCOL",
    "PARAM_ALIASES",
    "Agent",
    "BaseAgent",
    "agents",
    "start_setpoints",
    "available_agents",
    "make_agent",
    "register_agent",
    "run_block",
]

ACTION_DIM = 13
STOP_INDEX = 12

#: The documented expert manual protocol (the reference study's "established manual
#: protocol", in this simulator's knobs), Tokuyasu practice: 70 nm sections cut at
#: 1 mm/s with specimen, knife and chamber at -120 C (ultrathin sections at about
#: -120 C: Tokuyasu, J. Microsc. 143, 139 (1986); Slot & Geuze, Nat. Protoc. 2, 2480
#: (2007)); primary antibody 1:100 for 30 min at room temperature (22 C) with 3 washes
#: (primaries at 1:50-1:100 for 20-60 min; Slot & Geuze 2007; Peters & Pierson, Methods
#: Cell Biol. 88, 131 (2008)); LM/EM at 100 ms exposure, detector gain 4, nominal focus.
EXPERT_PROTOCOL: dict[str, float] = {
    "section_thickness_nm": 70.0, "cutting_speed_mm_s": 1.0, "specimen_temperature_c": -120.0,
    "knife_temperature_c": -120.0, "chamber_temperature_c": -120.0,
    "dilution": 100.0, "time_min": 30.0, "temperature_c": 22.0, "wash_cycles": 3.0,
    "exposure_ms": 100.0, "gain": 4.0, "focus_um": 0.0,
}

#: Alternative parameter names accepted for a block's starting protocol.
PARAM_ALIASES = {"antibody_dilution": "dilution", "incubation_min": "time_min", "staining_temperature_c": "temperature_c"}


@runtime_checkable
class Agent(Protocol):
    """What the outer loop and the campaign need from an agent.

    ``act`` is required; the others have no-op defaults in :class:`BaseAgent`.
    """

    def reset(self) -> None:
        """A new block starts (clear per-block state such as the current option)."""

    def act(self, obs: Any, info: Mapping[str, Any] | None = None) -> np.ndarray:
        """The 13-d action (float32 in [-1, 1]) for this section."""

    def observe(self, obs: Any, reward: float, terminated: bool, truncated: bool, info: Mapping[str, Any]) -> None:
        """The outcome of the last action (for option termination, online learning)."""

    def learn(self, env: Any, total_timesteps: int) -> Any:
        """Train on ``env`` (a CLEMProtocol-v0 env) for ``total_timesteps`` sections."""

    def save(self, path: str | Path) -> Path:
        """Write the agent to ``path`` (a directory); :meth:`load` reads it back."""


agents: Registry[Callable[..., Agent]] = Registry("agent")


def register_agent(name: str) -> Callable[[Any], Any]:
    """Class decorator: make an agent class (or factory) available by ``name``."""

    def _wrap(cls: Any) -> Any:
        agents.register(name, cls)
        try:
            cls.registered_name = name
        except (AttributeError, TypeError):  # a plain function factory
            pass
        return cls

    return _wrap


def available_agents() -> list[str]:
    """Names of the registered agents (``make_agent`` builds them)."""
    return agents.names()


def make_agent(name: str | type | Agent, **kwargs: Any) -> Agent:
    """Build an agent from a registered name, a class (or factory), or ``"module:Class"``.

    An already-built agent is returned as is (``kwargs`` must then be empty).
    """
    if isinstance(name, str):
        if ":" in name and name not in agents:
            from cryoopt.registry import resolve_target

            factory = resolve_target(name)
        else:
            factory = agents.get(name)
        return factory(**kwargs)
    if isinstance(name, type) or callable(name) and not isinstance(name, Agent):
        return name(**kwargs)
    if kwargs:
        raise TypeError("make_agent got an agent instance and keyword arguments; pass one or the other")
    return name


class BaseAgent:
    """Convenience base: no-op ``reset``/``observe``/``learn``, JSON ``save``/``load`` of ``kwargs``.

    Subclasses write :meth:`act`; stateful/learning agents override the rest.
    """

    registered_name: str = ""

    def __init__(self, seed: int | None = 0, **kwargs: Any) -> None:
        self.seed = seed
        self.kwargs = dict(kwargs)
        self.rng = np.random.default_rng(seed)

    @staticmethod
    def zero_action() -> np.ndarray:
        """Hold every setpoint (and do not stop)."""
        a = np.zeros(ACTION_DIM, np.float32)
        a[STOP_INDEX] = -1.0
        return a

    @staticmethod
    def stop_action() -> np.ndarray:
        a = np.zeros(ACTION_DIM, np.float32)
        a[STOP_INDEX] = 1.0
        return a

    def reset(self) -> None:
        return None

    def act(self, obs: Any, info: Mapping[str, Any] | None = None) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def observe(self, obs: Any, reward: float, terminated: bool, truncated: bool, info: Mapping[str, Any]) -> None:
        return None

    def learn(self, env: Any, total_timesteps: int) -> BaseAgent:
        return self

    def _config(self) -> dict[str, Any]:
        return {"class": f"{type(self).__module__}:{type(self).__qualname__}", "seed": self.seed, "kwargs": self.kwargs}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "agent.json").write_text(json.dumps(self._config(), indent=2, default=float))
        return path

    @classmethod
    def load(cls, path: str | Path) -> BaseAgent:
        cfg = json.loads((Path(path) / "agent.json").read_text())
        return cls(seed=cfg.get("seed"), **cfg.get("kwargs", {}))

    def evaluate(self, env: Any, n_episodes: int = 3, seed: int = 0, max_sections: int | None = None) -> dict[str, float]:
        """Mean block summary over ``n_episodes`` blocks (starting setpoints from the scenario)."""
        rows = [run_block(self, env, seed=seed + i, max_sections=max_sections) for i in range(n_episodes)]
        keys = [k for k in rows[0] if isinstance(rows[0][k], (int, float))]
        return {k: float(np.mean([r[k] for r in rows if r[k] is not None])) for k in keys}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"


def _knob_groups() -> dict[str, tuple[Any, ...]]:
    from cryoopt.envs._core import IMAGING_KNOBS, SECTIONING_KNOBS, STAINING_KNOBS

    return {"sectioning": SECTIONING_KNOBS, "staining": STAINING_KNOBS, "imaging": IMAGING_KNOBS}


def start_setpoints(params: Mapping[str, Any] | None) -> dict[str, float]:
    """The env setpoints named by a starting protocol ``params`` (names as :data:`EXPERT_PROTOCOL`
    or :data:`PARAM_ALIASES`; names that are no env setpoint, and ``None`` values, are dropped)."""
    if not params:
        return {}
    known = {k.name for knobs in _knob_groups().values() for k in knobs}
    p = {PARAM_ALIASES.get(k, k): v for k, v in params.items()}
    return {k: float(v) for k, v in p.items() if k in known and v is not None}


def run_block(agent: Agent, env: Any, *, seed: int | None = None, start: Mapping[str, Any] | None = None,
              max_sections: int | None = None, min_sections: int = 0,
              on_step: Callable[..., None] | None = None, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run one sample block with ``agent`` on ``env`` from the starting protocol ``start``.

    ``options`` are more ``env.reset`` options (e.g. ``specimen_seed``, ``noise_seed`` on benches
    that pair blocks by specimen). ``max_sections`` is the block's budget (the block is stopped when it is used);
    before ``min_sections`` sections the agent's stop action is overridden (the lab
    cuts at least that many sections from a block, whatever the agent prefers).

    Returns the env's final ``quality_summary`` plus ``return`` (sum of rewards),
    ``steps``, ``stopped`` (the agent stopped the block), ``options`` (how often each HRL
    option was chosen in *this* block, if the agent has options) and ``quality``
    (= ``fused_score``; failed blocks get 0).
    """
    start = start if start is not None else getattr(agent, "start_protocol", None)
    obs, info = env.reset(seed=seed, options={**dict(options or {}), "setpoints": start_setpoints(start)})
    agent.reset()
    counts_before = dict(getattr(agent, "option_counts", {}))  # the agent's counts run over all its blocks
    total, steps, stopped = 0.0, 0, False
    limit = max_sections if max_sections is not None else math.inf
    while True:
        action = agent.act(obs, info)
        if steps >= limit or steps < min_sections:
            action = np.asarray(action, np.float32).copy()
            action[STOP_INDEX] = 1.0 if steps >= limit else -1.0  # budget used: stop; too early: go on
        obs, reward, terminated, truncated, info = env.step(action)
        steps += 1
        total += float(reward)
        agent.observe(obs, float(reward), bool(terminated), bool(truncated), info)
        if on_step is not None:
            on_step(obs, reward, info)
        if terminated or truncated:
            break
    summary = dict(info.get("quality_summary", {}))
    q = summary.get("fused_score")
    summary.update(quality=float(q) if q is not None else 0.0, steps=steps, stopped=bool(info.get("stopped", False)),
                   block_return=total)
    if hasattr(agent, "option_counts"):
        summary["options"] = {k: n - counts_before.get(k, 0) for k, n in agent.option_counts.items()
                              if n > counts_before.get(k, 0)}
    return summary
