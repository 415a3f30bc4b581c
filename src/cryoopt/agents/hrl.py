"""Hierarchical agent: an SB3 option policy over per-instrument SB3 controllers.

High level: a PPO policy (SB3, ``Discrete(5)``) picks an option from :data:`OPTIONS`
(``sectioning``, ``staining``, ``imaging``, ``hold``, ``stop``) on the full CLEM
observation. It decides on a slower timescale: a new option only when the running
one terminates (:class:`OptionTermination`: ``k`` sections, target reward met, or no
progress for ``patience`` sections).

Low level: one SB3 controller per instrument option (PPO by default, SAC with
``controller_algo="sac"``) on *its own* setpoint deltas and *its own* slice of the
observation (:data:`GROUP_OBS`). The slices are exactly the observations of the
per-instrument envs, so the sectioning controller pre-trains on ``Sectioning-v0`` and
the staining one on ``Staining-v0`` (:meth:`HRLAgent.pretrain`), then all are
fine-tuned in the composite env through :class:`GroupControlEnv`. ``hold`` keeps
every setpoint; ``stop`` ends the block.

Training is SB3's own: :class:`OptionEnv` is a Gymnasium env whose step runs one
option to termination, so the option policy is an ordinary ``PPO("MlpPolicy", OptionEnv)``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from cryoopt.agents.base import ACTION_DIM, STOP_INDEX, BaseAgent, register_agent
from cryoopt.agents.sb3 import algo_class, build_model, configure_mlflow_logger, learn_with_progress

__all__ = ["GROUP_ACTIONS", "GROUP_OBS", "OPTIONS", "GroupControlEnv", "HRLAgent", "OptionEnv", "OptionTermination"]

OPTIONS = ("sectioning", "staining", "imaging", "hold", "stop")
#: the observation slice each controller sees (= the per-instrument env's observation)
GROUP_OBS = {"sectioning": slice(0, 11), "staining": slice(11, 19), "imaging": slice(19, 29)}
#: the action slice each controller moves (``CLEMProtocolEnv.action_groups``)
GROUP_ACTIONS = {"sectioning": slice(0, 5), "staining": slice(5, 9), "imaging": slice(9, 12)}
#: per-instrument envs a controller can pre-train on
PRETRAIN_ENVS = {"sectioning": "cryoopt/Sectioning-v0", "staining": "cryoopt/Staining-v0"}


def _feat(obs: Any) -> np.ndarray:
    return np.asarray(obs["features"] if isinstance(obs, Mapping) else obs, np.float32)


class OptionTermination:
    """When the running option ends: after ``k`` sections, when a section's reward
    reaches ``target`` (``None``: never), or after ``patience`` sections without a reward
    gain of at least ``min_delta`` over the option's best (``None``: never).

    :meth:`update` returns the reason (``"k_steps"``, ``"target_met"``, ``"no_progress"``)
    or ``None`` while the option continues.
    """

    def __init__(self, k: int = 4, target: float | None = None, patience: int | None = 2, min_delta: float = 0.01) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k, self.target, self.patience, self.min_delta = int(k), target, patience, float(min_delta)
        self.reset()

    def reset(self) -> None:
        self.steps, self.best, self.stale = 0, -math.inf, 0

    def update(self, reward: float) -> str | None:
        self.steps += 1
        if reward > self.best + self.min_delta:
            self.best, self.stale = reward, 0
        else:
            self.stale += 1
        if self.target is not None and reward >= self.target:
            return "target_met"
        if self.patience is not None and self.steps > 1 and self.stale >= self.patience:
            return "no_progress"
        if self.steps >= self.k:
            return "k_steps"
        return None


class GroupControlEnv(gym.Env):
    """One instrument's view of the composite env: its observation slice and its deltas
    (the other groups hold, no stop). Fine-tunes an option's controller with SB3."""

    metadata = {"render_modes": []}

    def __init__(self, env: gym.Env, group: str) -> None:
        if group not in GROUP_OBS:
            raise ValueError(f"group must be one of {list(GROUP_OBS)}, got {group!r}")
        self.env, self.group = env, group
        o, a = GROUP_OBS[group], GROUP_ACTIONS[group]
        self.observation_space = spaces.Box(-1.0, 1.0, (o.stop - o.start,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (a.stop - a.start,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        obs, info = self.env.reset(seed=seed, options=options)
        return _feat(obs)[GROUP_OBS[self.group]], info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        full = np.zeros(ACTION_DIM, np.float32)
        full[STOP_INDEX] = -1.0
        full[GROUP_ACTIONS[self.group]] = np.asarray(action, np.float32).reshape(-1)
        obs, r, te, tr, info = self.env.step(full)
        return _feat(obs)[GROUP_OBS[self.group]], float(r), te, tr, info


class OptionEnv(gym.Env):
    """The option level as a Gymnasium env: ``step(option)`` runs that option's
    controller on the composite env until :class:`OptionTermination` (or the block)
    ends it. Reward: the sum of the section rewards minus ``time_weight`` per hour of
    prep time spent, where a failed section (ribbon or evaluation) counts
    ``agent.option_failure_reward`` instead of the env's failure reward. ``info`` adds
    ``option``, ``option_steps`` and ``termination``."""

    metadata = {"render_modes": []}

    def __init__(self, env: gym.Env, agent: HRLAgent) -> None:
        self.env, self.agent = env, agent
        self.observation_space = spaces.Box(-1.0, 1.0, (_feat(env.observation_space.sample()).size,), np.float32)
        self.action_space = spaces.Discrete(len(OPTIONS))
        self._obs: np.ndarray | None = None
        self._prep = 0.0
        self._n = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        obs, info = self.env.reset(seed=seed, options=options)
        self._obs, self._prep, self._n = _feat(obs), float(info.get("prep_time_h", 0.0)), 0
        return self._obs, info

    def step(self, option: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        name = self.agent.allowed(OPTIONS[int(np.asarray(option).reshape(-1)[0])], self._n)
        term = self.agent.new_termination()
        total, n, reason = 0.0, 0, None
        te = tr = False
        info: dict[str, Any] = {}
        while True:
            a = self.agent.option_action(name, self._obs, deterministic=False)
            obs, r, te, tr, info = self.env.step(a)
            self._obs = _feat(obs)
            total += self.agent.option_reward(float(r), info)
            n += 1
            self._n += 1
            reason = "block_end" if (te or tr) else term.update(float(r))
            if reason is not None:
                break
        prep = float(info.get("prep_time_h", self._prep))
        total -= self.agent.time_weight * (prep - self._prep)
        self._prep = prep
        info = dict(info, option=name, option_steps=n, termination=reason)
        return self._obs, total, bool(te), bool(tr), info


@register_agent("hrl")
class HRLAgent(BaseAgent):
    """Options over SB3 controllers (see the module docstring).

    Args:
        seed: seeds every SB3 model.
        k: most sections per option (the slower timescale).
        target: a section reward that ends the option (target met); ``None``: off.
        patience: sections without progress that end the option; ``None``: off.
        min_delta: the reward gain that counts as progress.
        time_weight: option-level penalty per hour of prep time (quality vs time).
        option_failure_reward: what a failed section is worth to the option policy
            (``None``: the env's failure reward, -1 by default). The default 0 matches the
            block's quality, where a failed section, like one never cut, adds nothing: with
            -1 the option policy learns that stopping beats risking a failure, and ends
            blocks that would still have yielded good sections. The controllers keep the
            env's reward (a failure is what they must learn to avoid).
        min_sections: ``stop`` acts as ``hold`` before this many sections (a block must
            yield a sample; an untrained option policy may otherwise stop at once).
        controller_algo: ``"ppo"`` or ``"sac"`` for the low-level controllers.
        net_arch: hidden layers of every network.
        option_kwargs / controller_kwargs: more SB3 constructor arguments.
        mlflow: SB3 training metrics to MLflow (``option/...``, ``sectioning/...``).

    Before any training the option policy is absent and the agent holds (``hold``).
    """

    def __init__(self, seed: int | None = 0, k: int = 4, target: float | None = None, patience: int | None = 2,
                 min_delta: float = 0.01, time_weight: float = 0.05, option_failure_reward: float | None = 0.0,
                 min_sections: int = 4, controller_algo: str = "ppo",
                 net_arch: Any = (32, 32), option_kwargs: Mapping[str, Any] | None = None,
                 controller_kwargs: Mapping[str, Any] | None = None, mlflow: bool = False,
                 deterministic: bool = True, verbose: int = 0) -> None:
        super().__init__(seed=seed, k=k, target=target, patience=patience, min_delta=min_delta, time_weight=time_weight,
                         option_failure_reward=option_failure_reward, min_sections=min_sections,
                         controller_algo=controller_algo, net_arch=list(net_arch), option_kwargs=dict(option_kwargs or {}),
                         controller_kwargs=dict(controller_kwargs or {}), mlflow=mlflow, deterministic=deterministic,
                         verbose=verbose)
        self.k, self.target, self.patience, self.min_delta = int(k), target, patience, float(min_delta)
        self.min_sections = int(min_sections)
        self.option_failure_reward = None if option_failure_reward is None else float(option_failure_reward)
        self.time_weight, self.controller_algo, self.net_arch = float(time_weight), controller_algo, list(net_arch)
        self.option_kwargs = {"n_steps": 32, "batch_size": 16, "n_epochs": 4, **dict(option_kwargs or {})}
        self.controller_kwargs = dict(controller_kwargs or {})
        self.mlflow, self.deterministic, self.verbose = mlflow, deterministic, verbose
        self.option_model: Any = None
        self.controllers: dict[str, Any] = {}
        self.option_counts: Counter[str] = Counter()
        self.option_log: list[tuple[str, int, str]] = []
        self._term = self.new_termination()
        self.current: str | None = None
        self._block_steps = 0

    def allowed(self, option: str, sections: int) -> str:
        """``option``, or ``hold`` for ``stop`` before ``min_sections`` sections."""
        return "hold" if option == "stop" and sections < self.min_sections else option

    # -- options ----------------------------------------------------------------------
    def option_reward(self, reward: float, info: Mapping[str, Any]) -> float:
        """A section's reward as the option policy sees it (see ``option_failure_reward``)."""
        failed = info.get("section_failed") or info.get("evaluation_failed")
        return self.option_failure_reward if failed and self.option_failure_reward is not None else reward

    def new_termination(self) -> OptionTermination:
        return OptionTermination(self.k, self.target, self.patience, self.min_delta)

    def option_action(self, option: str, obs: Any, deterministic: bool | None = None) -> np.ndarray:
        """The 13-d env action of ``option`` for ``obs``."""
        a = np.zeros(ACTION_DIM, np.float32)
        a[STOP_INDEX] = -1.0
        if option == "stop":
            a[STOP_INDEX] = 1.0
        elif option in GROUP_ACTIONS and option in self.controllers:
            det = self.deterministic if deterministic is None else deterministic
            sub, _ = self.controllers[option].predict(_feat(obs)[GROUP_OBS[option]], deterministic=det)
            a[GROUP_ACTIONS[option]] = np.asarray(sub, np.float32).reshape(-1)
        return a

    def choose_option(self, obs: Any) -> str:
        if self.option_model is None:
            return "hold"
        o, _ = self.option_model.predict(_feat(obs), deterministic=self.deterministic)
        return OPTIONS[int(np.asarray(o).reshape(-1)[0])]

    # -- Agent protocol ------------------------------------------------------------------
    def reset(self) -> None:
        self.current = None
        self._block_steps = 0
        self._term.reset()

    def act(self, obs: Any, info: Mapping[str, Any] | None = None) -> np.ndarray:
        if self.current is None:
            self.current = self.allowed(self.choose_option(obs), self._block_steps)
            self._term.reset()
            self.option_counts[self.current] += 1
        return self.option_action(self.current, obs)

    def observe(self, obs: Any, reward: float, terminated: bool, truncated: bool, info: Mapping[str, Any]) -> None:
        self._block_steps += 1
        if self.current is None:
            return
        reason = "block_end" if (terminated or truncated) else self._term.update(float(reward))
        if reason is not None:
            self.option_log.append((self.current, self._term.steps, reason))
            self.current = None

    # -- training --------------------------------------------------------------------------
    def _new_controller(self, group: str, env: gym.Env) -> Any:
        model = build_model(self.controller_algo, env, seed=self.seed, net_arch=self.net_arch,
                            algo_kwargs=self.controller_kwargs, verbose=self.verbose)
        if self.mlflow:
            configure_mlflow_logger(model, prefix=f"{group}/")
        return model

    def _train_controller(self, group: str, env: gym.Env, timesteps: int, where: str) -> None:
        if group not in self.controllers:
            self.controllers[group] = self._new_controller(group, env)
        else:
            self.controllers[group].set_env(env)
        learn_with_progress(self.controllers[group], int(timesteps), f"training hrl: {group} controller {where}")

    def pretrain(self, timesteps: int = 256, **env_kwargs: Any) -> HRLAgent:
        """Pre-train the sectioning and staining controllers on ``Sectioning-v0`` and
        ``Staining-v0`` (``env_kwargs`` e.g. ``scenario=``) for ``timesteps`` steps each."""
        import cryoopt.envs  # noqa: F401 - registers the envs

        for group, env_id in PRETRAIN_ENVS.items():
            env = gym.make(env_id, **env_kwargs)
            env.reset(seed=self.seed)
            self._train_controller(group, env, timesteps, f"on {env_id}")
        return self

    def learn(self, env: gym.Env, total_timesteps: int, controller_timesteps: int | None = None, callback: Any = None) -> HRLAgent:
        """Fine-tune each controller in ``env`` (``controller_timesteps`` sections each,
        default ``total_timesteps // 4``), then train the option policy for
        ``total_timesteps // k`` option decisions (at least one rollout)."""
        ct = total_timesteps // 4 if controller_timesteps is None else int(controller_timesteps)
        if ct > 0:
            for group in GROUP_ACTIONS:
                self._train_controller(group, GroupControlEnv(env, group), ct, "in the composite env")
        oenv = OptionEnv(env, self)
        if self.option_model is None:
            self.option_model = build_model("ppo", oenv, seed=self.seed, net_arch=self.net_arch,
                                            algo_kwargs=self.option_kwargs, verbose=self.verbose)
            if self.mlflow:
                configure_mlflow_logger(self.option_model, prefix="option/")
        else:
            self.option_model.set_env(oenv)
        decisions = max(int(total_timesteps) // self.k, int(self.option_kwargs.get("n_steps", 32)))
        learn_with_progress(self.option_model, decisions, "training hrl: option policy in the composite env",
                            unit="option decisions", callback=callback)
        return self

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """``path/agent.json`` (settings), ``option_policy.zip`` and ``controller_<option>.zip``."""
        path = super().save(path)
        if self.option_model is not None:
            self.option_model.save(path / "option_policy.zip")
        for group, model in self.controllers.items():
            model.save(path / f"controller_{group}.zip")
        return path

    @classmethod
    def load(cls, path: str | Path) -> HRLAgent:
        path = Path(path)
        cfg = json.loads((path / "agent.json").read_text())
        agent = cls(seed=cfg.get("seed"), **cfg.get("kwargs", {}))
        if (path / "option_policy.zip").exists():
            agent.option_model = algo_class("ppo").load(path / "option_policy.zip", device="cpu")
        for group in GROUP_ACTIONS:
            f = path / f"controller_{group}.zip"
            if f.exists():
                agent.controllers[group] = algo_class(agent.controller_algo).load(f, device="cpu")
        return agent
