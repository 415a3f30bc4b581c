"""Hierarchical agent: an SB3 option policy over per-instrument SB3 controllers.

High level: a PPO policy (SB3, ``Discrete(5)``) picks an option from :data:`OPTIONS`
(``sectioning``, ``staining``, ``imaging``, ``hold``, ``stop``) on the full CLEM
observation plus the block's drift state (:data:`~cryoopt.agents.drift.DRIFT_FEATURES`,
from the instrument readbacks). It decides on a slower timescale: a new option only when
the running one terminates (:class:`OptionTermination`: ``k`` sections, target reward met,
or no progress for ``patience`` sections). Holding costs nothing and changing pays only
when it lifts the sections that follow, which is what the option policy learns.

Low level: one SB3 controller per instrument option (PPO by default, SAC with
``controller_algo="sac"``) on *its own* setpoint deltas and *its own* view
(:class:`ControllerView`): the slice of the observation that is exactly the per-instrument
env's observation (:data:`GROUP_OBS`), plus, for sectioning, the drift state, and for
imaging, the bench's dose and saturation readbacks when the env reports them. The
sectioning controller acts as a residual on a drift feedforward (``feedforward=True``):
its temperature deltas are added to the moves that hold the measured temperatures at the
block's starting setpoints (:meth:`~cryoopt.agents.drift.DriftTracker.feedforward`), so it
learns where the temperature should be rather than re-learning the readback arithmetic
(residual reinforcement learning: Johannink et al., ICRA 2019; Silver et al., arXiv
1812.06298). The same feedforward regulates the temperatures under every other option too
(``regulate=True``): like the instrument's own temperature loop, it runs beneath the options,
so ``hold`` holds the *measured* temperatures and a staining or imaging option does not let
the block warm out of its cutting window while it acts. Controllers pre-train cheaply on ``Sectioning-v0`` / ``Staining-v0`` (their
proxy rewards, :meth:`HRLAgent.pretrain`), then on the fused objective itself in the
composite env through :class:`GroupControlEnv` (:meth:`HRLAgent.learn`). ``hold`` keeps
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
from cryoopt.agents.drift import DRIFT_FEATURES, TEMPERATURE_KNOBS, DriftTracker
from cryoopt.agents.sb3 import build_model, configure_mlflow_logger, learn_with_progress, load_model

__all__ = ["GROUP_ACTIONS", "GROUP_OBS", "OPTIONS", "ControllerView", "GroupControlEnv", "HRLAgent", "InstrumentView",
           "OptionEnv", "OptionTermination", "regulate_temperatures"]

OPTIONS = ("sectioning", "staining", "imaging", "hold", "stop")
#: the observation slice each controller sees (= the per-instrument env's observation)
GROUP_OBS = {"sectioning": slice(0, 11), "staining": slice(11, 19), "imaging": slice(19, 29)}
#: the action slice each controller moves (``CLEMProtocolEnv.action_groups``)
GROUP_ACTIONS = {"sectioning": slice(0, 5), "staining": slice(5, 9), "imaging": slice(9, 12)}
#: per-instrument envs a controller can pre-train on
PRETRAIN_ENVS = {"sectioning": "cryoopt/Sectioning-v0", "staining": "cryoopt/Staining-v0"}
#: composite-env readbacks the imaging controller also sees, when the env reports them (cumulative
#: electron dose and light on the grid, saturation of the last images)
IMAGING_READBACKS = ("em_charging_fraction", "em_grid_dose", "lm_grid_exposure", "lm_saturated_fraction",
                     "em_saturated_fraction")


def _feat(obs: Any) -> np.ndarray:
    return np.asarray(obs["features"] if isinstance(obs, Mapping) else obs, np.float32)


def _clem_feature_index(names: tuple[str, ...]) -> list[int]:
    """Positions of ``names`` in the composite env's scalar observation (those it has)."""
    from cryoopt.envs.clem import CLEM_FEATURES

    return [CLEM_FEATURES.index(n) for n in names if n in CLEM_FEATURES]


class ControllerView:
    """What one option's controller sees and how its action reaches the env.

    Observation: the group's slice of the composite observation (:data:`GROUP_OBS`, the same
    as the per-instrument env's), then for ``sectioning`` the drift state
    (:data:`~cryoopt.agents.drift.DRIFT_FEATURES`, with ``drift=True``) and for ``imaging``
    the :data:`IMAGING_READBACKS` the env has.

    Action: the group's normalized deltas; for ``sectioning`` with ``feedforward=True`` the
    temperature deltas are ``feedforward + residual_scale * action`` (clipped), so a zero
    action holds the measured temperatures at the block's starting setpoints.
    """

    def __init__(self, group: str, *, drift: bool = True, feedforward: bool = True, residual_scale: float = 0.5) -> None:
        if group not in GROUP_OBS:
            raise ValueError(f"group must be one of {list(GROUP_OBS)}, got {group!r}")
        self.group = group
        self.drift = bool(drift) and group == "sectioning"
        self.feedforward = bool(feedforward) and group == "sectioning"
        self.residual_scale = float(residual_scale)
        self.extra = _clem_feature_index(IMAGING_READBACKS) if group == "imaging" and drift else []
        from cryoopt.envs._core import SECTIONING_KNOBS

        self._temp_index = {k.name: i for i, k in enumerate(SECTIONING_KNOBS) if k.name in TEMPERATURE_KNOBS}

    @property
    def base_dim(self) -> int:
        o = GROUP_OBS[self.group]
        return o.stop - o.start

    @property
    def obs_dim(self) -> int:
        return self.base_dim + (len(DRIFT_FEATURES) if self.drift else 0) + len(self.extra)

    @property
    def action_dim(self) -> int:
        a = GROUP_ACTIONS[self.group]
        return a.stop - a.start

    def observation(self, group_obs: np.ndarray, tracker: DriftTracker, full: np.ndarray | None = None) -> np.ndarray:
        """The controller's observation from the group's slice (and the full composite one for readbacks)."""
        parts = [np.asarray(group_obs, np.float32).reshape(-1)]
        if self.drift:
            parts.append(tracker.features())
        if self.extra:
            f = np.zeros(len(self.extra), np.float32) if full is None or full.size <= max(self.extra) else full[self.extra]
            parts.append(np.asarray(f, np.float32))
        return np.concatenate(parts).astype(np.float32)

    def to_env(self, action: np.ndarray, tracker: DriftTracker) -> np.ndarray:
        """The group's env deltas for the controller's ``action``."""
        a = np.clip(np.asarray(action, np.float32).reshape(-1), -1.0, 1.0)
        if not self.feedforward:
            return a
        out = a.copy()
        ff = tracker.feedforward()
        for name, i in self._temp_index.items():
            out[i] = float(np.clip(ff.get(name, 0.0) + self.residual_scale * a[i], -1.0, 1.0))
        return out


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


def regulate_temperatures(action: np.ndarray, tracker: DriftTracker) -> np.ndarray:
    """Set the temperature deltas of a 13-d env ``action`` (in place) to the drift feedforward
    (:meth:`~cryoopt.agents.drift.DriftTracker.feedforward`): the regulation beneath the
    options that holds the measured temperatures at the block's starting setpoints."""
    from cryoopt.envs._core import SECTIONING_KNOBS

    index = {k.name: i for i, k in enumerate(SECTIONING_KNOBS)}
    for knob, move in tracker.feedforward().items():
        action[GROUP_ACTIONS["sectioning"].start + index[knob]] = move
    return action


class GroupControlEnv(gym.Env):
    """One instrument's view of the composite env (:class:`ControllerView`): the other groups
    hold (with ``regulate=True`` the temperatures are regulated against the drift while a
    staining or imaging controller acts, as under :class:`HRLAgent`), no stop, reward = the
    composite env's fused reward. Trains an option's controller on the objective the block
    is judged by."""

    metadata = {"render_modes": []}

    def __init__(self, env: gym.Env, group: str, view: ControllerView | None = None, regulate: bool = False) -> None:
        self.env, self.group, self.regulate = env, group, bool(regulate)
        self.view = view if view is not None else ControllerView(group)
        if self.view.group != group:
            raise ValueError(f"view is for {self.view.group!r}, not {group!r}")
        self.tracker = DriftTracker()
        self.observation_space = spaces.Box(-1.0, 1.0, (self.view.obs_dim,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (self.view.action_dim,), np.float32)

    def _obs(self, obs: Any) -> np.ndarray:
        f = _feat(obs)
        return self.view.observation(f[GROUP_OBS[self.group]], self.tracker, f)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        obs, info = self.env.reset(seed=seed, options=options)
        self.tracker.reset(info)
        return self._obs(obs), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        full = np.zeros(ACTION_DIM, np.float32)
        full[STOP_INDEX] = -1.0
        if self.regulate and self.group != "sectioning":
            regulate_temperatures(full, self.tracker)
        full[GROUP_ACTIONS[self.group]] = self.view.to_env(action, self.tracker)
        obs, r, te, tr, info = self.env.step(full)
        self.tracker.update(info)
        return self._obs(obs), float(r), te, tr, info


class InstrumentView(gym.Wrapper):
    """A per-instrument env (``Sectioning-v0``, ``Staining-v0``) seen through a controller's
    :class:`ControllerView`, for cheap pre-training on the instrument's own proxy reward."""

    def __init__(self, env: gym.Env, view: ControllerView) -> None:
        super().__init__(env)
        self.view = view
        self.tracker = DriftTracker()
        self.observation_space = spaces.Box(-1.0, 1.0, (view.base_dim + (len(DRIFT_FEATURES) if view.drift else 0),),
                                            np.float32)

    def _obs(self, obs: Any) -> np.ndarray:
        parts = [np.asarray(obs, np.float32).reshape(-1)]
        if self.view.drift:
            parts.append(self.tracker.features())
        return np.concatenate(parts).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.tracker.reset(info)
        return self._obs(obs), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, r, te, tr, info = self.env.step(self.view.to_env(action, self.tracker))
        self.tracker.update(info)
        return self._obs(obs), float(r), te, tr, info


class OptionEnv(gym.Env):
    """The option level as a Gymnasium env: ``step(option)`` runs that option's
    controller on the composite env until :class:`OptionTermination` (or the block)
    ends it. Observation: the composite features plus the drift state (``agent.drift``).
    Reward: the sum of the section rewards minus ``time_weight`` per hour of prep time
    spent, where a failed section (ribbon or evaluation) counts
    ``agent.option_failure_reward`` instead of the env's failure reward. ``info`` adds
    ``option``, ``option_steps`` and ``termination``."""

    metadata = {"render_modes": []}

    def __init__(self, env: gym.Env, agent: HRLAgent) -> None:
        self.env, self.agent = env, agent
        n = _feat(env.observation_space.sample()).size + (len(DRIFT_FEATURES) if agent.drift else 0)
        self.observation_space = spaces.Box(-1.0, 1.0, (n,), np.float32)
        self.action_space = spaces.Discrete(len(OPTIONS))
        self.tracker = DriftTracker()
        self._obs: Any = None
        self._prep = 0.0
        self._n = 0

    def _observation(self) -> np.ndarray:
        return self.agent.option_observation(self._obs, self.tracker)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        obs, info = self.env.reset(seed=seed, options=options)
        self.tracker.reset(info)
        self._obs, self._prep, self._n = obs, float(info.get("prep_time_h", 0.0)), 0
        return self._observation(), info

    def step(self, option: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        name = self.agent.allowed(OPTIONS[int(np.asarray(option).reshape(-1)[0])], self._n)
        term = self.agent.new_termination()
        total, n, reason = 0.0, 0, None
        te = tr = False
        info: dict[str, Any] = {}
        while True:
            a = self.agent.option_action(name, self._obs, deterministic=False, tracker=self.tracker)
            obs, r, te, tr, info = self.env.step(a)
            self.tracker.update(info)
            self._obs = obs
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
        return self._observation(), total, bool(te), bool(tr), info


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
        drift: the option policy and the sectioning controller see the block's drift state
            (readbacks tracked by :class:`~cryoopt.agents.drift.DriftTracker`), the imaging
            controller the dose and saturation readbacks.
        feedforward: the sectioning controller is a residual on the drift feedforward
            (:class:`ControllerView`); ``residual_scale`` scales its temperature deltas.
        regulate: the drift feedforward also moves the temperature setpoints under the
            ``hold``, ``staining`` and ``imaging`` options (:func:`regulate_temperatures`), so
            no option lets the block drift out of its window; ``False``: those options hold
            the setpoints and the temperatures drift with the block.
        controller_algo: ``"ppo"`` or ``"sac"`` for the low-level controllers.
        net_arch: hidden layers of every network.
        option_kwargs / controller_kwargs: more SB3 constructor arguments.
        mlflow: SB3 training metrics to MLflow (``option/...``, ``sectioning/...``).

    Before any training the option policy is absent and the agent holds (``hold``).
    """

    def __init__(self, seed: int | None = 0, k: int = 4, target: float | None = None, patience: int | None = 2,
                 min_delta: float = 0.01, time_weight: float = 0.05, option_failure_reward: float | None = 0.0,
                 min_sections: int = 4, drift: bool = True, feedforward: bool = True, residual_scale: float = 0.5,
                 regulate: bool = True, controller_algo: str = "ppo", net_arch: Any = (32, 32), option_kwargs: Mapping[str, Any] | None = None,
                 controller_kwargs: Mapping[str, Any] | None = None, mlflow: bool = False,
                 deterministic: bool = True, verbose: int = 0) -> None:
        super().__init__(seed=seed, k=k, target=target, patience=patience, min_delta=min_delta, time_weight=time_weight,
                         option_failure_reward=option_failure_reward, min_sections=min_sections, drift=drift,
                         feedforward=feedforward, residual_scale=residual_scale, regulate=regulate,
                         controller_algo=controller_algo, net_arch=list(net_arch), option_kwargs=dict(option_kwargs or {}),
                         controller_kwargs=dict(controller_kwargs or {}), mlflow=mlflow, deterministic=deterministic,
                         verbose=verbose)
        self.k, self.target, self.patience, self.min_delta = int(k), target, patience, float(min_delta)
        self.min_sections = int(min_sections)
        self.option_failure_reward = None if option_failure_reward is None else float(option_failure_reward)
        self.time_weight, self.controller_algo, self.net_arch = float(time_weight), controller_algo, list(net_arch)
        self.drift, self.feedforward, self.residual_scale = bool(drift), bool(feedforward), float(residual_scale)
        self.regulate = bool(regulate)
        self.views = {g: ControllerView(g, drift=self.drift, feedforward=self.feedforward, residual_scale=self.residual_scale)
                      for g in GROUP_ACTIONS}
        self.option_kwargs = {"n_steps": 32, "batch_size": 16, "n_epochs": 4, **dict(option_kwargs or {})}
        self.controller_kwargs = dict(controller_kwargs or {})
        self.mlflow, self.deterministic, self.verbose = mlflow, deterministic, verbose
        self.option_model: Any = None
        self.controllers: dict[str, Any] = {}
        self.option_counts: Counter[str] = Counter()
        self.option_log: list[tuple[str, int, str]] = []
        self.tracker = DriftTracker()
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

    def option_observation(self, obs: Any, tracker: DriftTracker | None = None) -> np.ndarray:
        """The option policy's observation: the composite features (and the drift state)."""
        f = _feat(obs)
        if not self.drift:
            return f
        return np.concatenate([f, (tracker or self.tracker).features()]).astype(np.float32)

    def option_action(self, option: str, obs: Any, deterministic: bool | None = None,
                      tracker: DriftTracker | None = None) -> np.ndarray:
        """The 13-d env action of ``option`` for ``obs`` (``tracker``: the block's drift, default the agent's own)."""
        a = np.zeros(ACTION_DIM, np.float32)
        a[STOP_INDEX] = -1.0
        if option == "stop":
            a[STOP_INDEX] = 1.0
            return a
        tr = tracker or self.tracker
        if self.regulate and (option != "sectioning" or option not in self.controllers):
            regulate_temperatures(a, tr)
        if option in GROUP_ACTIONS and option in self.controllers:
            det = self.deterministic if deterministic is None else deterministic
            view, f = self.views[option], _feat(obs)
            sub, _ = self.controllers[option].predict(view.observation(f[GROUP_OBS[option]], tr, f), deterministic=det)
            a[GROUP_ACTIONS[option]] = view.to_env(sub, tr)
        return a

    def choose_option(self, obs: Any) -> str:
        if self.option_model is None:
            return "hold"
        o, _ = self.option_model.predict(self.option_observation(obs), deterministic=self.deterministic)
        return OPTIONS[int(np.asarray(o).reshape(-1)[0])]

    # -- Agent protocol ------------------------------------------------------------------
    def reset(self) -> None:
        self.current = None
        self._block_steps = 0
        self._term.reset()
        self.tracker = DriftTracker()

    def act(self, obs: Any, info: Mapping[str, Any] | None = None) -> np.ndarray:
        if not self.tracker.started and info is not None:
            self.tracker.reset(info)
        if self.current is None:
            self.current = self.allowed(self.choose_option(obs), self._block_steps)
            self._term.reset()
            self.option_counts[self.current] += 1
        return self.option_action(self.current, obs)

    def observe(self, obs: Any, reward: float, terminated: bool, truncated: bool, info: Mapping[str, Any]) -> None:
        self._block_steps += 1
        self.tracker.update(info)
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
        ``Staining-v0`` (their proxy rewards; ``env_kwargs`` e.g. ``scenario=``) for
        ``timesteps`` steps each. The imaging controller has no per-instrument env: it
        starts in :meth:`learn`, on the fused objective."""
        import cryoopt.envs  # noqa: F401 - registers the envs

        for group, env_id in PRETRAIN_ENVS.items():
            env = InstrumentView(gym.make(env_id, **env_kwargs), self.views[group])
            env.reset(seed=self.seed)
            self._train_controller(group, env, timesteps, f"on {env_id}")
        return self

    def learn(self, env: gym.Env, total_timesteps: int, controller_timesteps: int | None = None, callback: Any = None) -> HRLAgent:
        """Train each controller on the fused objective in ``env`` (``controller_timesteps``
        sections each, default ``total_timesteps // 4``), then the option policy for
        ``total_timesteps // k`` option decisions (at least one rollout)."""
        ct = total_timesteps // 4 if controller_timesteps is None else int(controller_timesteps)
        if ct > 0:
            for group in GROUP_ACTIONS:
                self._train_controller(group, GroupControlEnv(env, group, self.views[group], regulate=self.regulate), ct,
                                       "in the composite env")
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
            agent.option_model = load_model("ppo", path / "option_policy.zip")
        for group in GROUP_ACTIONS:
            f = path / f"controller_{group}.zip"
            if f.exists():
                agent.controllers[group] = load_model(agent.controller_algo, f)
        return agent
