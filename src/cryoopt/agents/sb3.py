"""Flat SB3 agents (``ppo``, ``sac``) and the MLflow output for SB3's logger.

A flat agent is one SB3 policy on the whole 13-d action of ``CLEMProtocol-v0``
(including the ``stop`` entry). Networks are small by default (``net_arch=(32, 32)``);
pass ``algo_kwargs`` for anything SB3's constructor takes.

MLflow: ``mlflow=True`` (or :func:`configure_mlflow_logger`) routes SB3's logger to
:class:`MLflowOutputFormat`, a :class:`~stable_baselines3.common.logger.KVWriter`
that logs every numeric key (``train/loss``, ``rollout/ep_rew_mean``, ...) to the
active MLflow run (one is started if none is active).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import HumanOutputFormat, KVWriter, Logger

from cryoopt.agents.base import BaseAgent, register_agent
from cryoopt.progress import Progress

__all__ = ["FlatPPOAgent", "FlatSACAgent", "MLflowOutputFormat", "ProgressCallback", "SB3Agent", "algo_class",
           "configure_mlflow_logger", "folderless_logger", "learn_with_progress", "load_model"]


class ProgressCallback(BaseCallback):
    """SB3 callback that reports the timesteps of one ``learn`` call to a :class:`~cryoopt.progress.Progress`."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress
        self._start = 0

    def _on_training_start(self) -> None:
        self._start = self.model.num_timesteps

    def _on_step(self) -> bool:
        self.progress.set(self.model.num_timesteps - self._start)
        return True


def learn_with_progress(model: Any, timesteps: int, label: str, *, unit: str = "steps", callback: Any = None) -> Any:
    """``model.learn(timesteps)`` (continuing its step count) with progress lines and an ETA."""
    total = int(timesteps)
    rollout = int(getattr(model, "n_steps", 0) or 0) * int(getattr(model, "n_envs", 1) or 1)
    if rollout:  # on-policy algorithms collect whole rollouts: SB3 runs up to the next multiple
        total = -(-total // rollout) * rollout
    with Progress(label, total=total, unit=unit) as progress:
        cb = ProgressCallback(progress)
        model.learn(int(timesteps), callback=[callback, cb] if callback is not None else cb, reset_num_timesteps=False)
    return model


class MLflowOutputFormat(KVWriter):
    """SB3 logger output that logs numeric values as MLflow metrics (SB3 docs, "Integrations")."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        import mlflow

        metrics = {}
        for key, value in key_values.items():
            excluded = key_excluded.get(key)
            if excluded is not None and "mlflow" in excluded:
                continue
            if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
                metrics[self.prefix + key] = float(value)
        if metrics:
            if mlflow.active_run() is None:
                mlflow.start_run()
            mlflow.log_metrics(metrics, step=int(step))

    def close(self) -> None:
        return None


def configure_mlflow_logger(model: Any, *, prefix: str = "", stdout: bool = False) -> Logger:
    """Make ``model`` (any SB3 algorithm) log to MLflow; returns the new logger."""
    formats: list[KVWriter] = [MLflowOutputFormat(prefix)]
    if stdout:
        formats.append(HumanOutputFormat(sys.stdout))
    logger = Logger(folder=None, output_formats=formats)
    model.set_logger(logger)
    return logger


def folderless_logger(verbose: int = 0) -> Logger:
    """An SB3 logger that writes nothing to disk (stdout only when ``verbose``).

    Without one, every ``learn`` call of a model whose logger was never set makes an empty
    ``SB3-<date>`` folder in the system's temporary directory (SB3's ``configure`` with no
    folder); a campaign trains many controllers, so those folders pile up."""
    return Logger(folder=None, output_formats=[HumanOutputFormat(sys.stdout)] if verbose >= 1 else [])


def load_model(algo: str, path: str | Path) -> Any:
    """An SB3 model saved by :meth:`SB3Agent.save` (or the HRL agent), on CPU, with a :func:`folderless_logger`."""
    model = algo_class(algo).load(path, device="cpu")
    model.set_logger(folderless_logger(int(getattr(model, "verbose", 0) or 0)))
    return model


def algo_class(name: str) -> Any:
    """The SB3 algorithm class for ``"ppo"``, ``"sac"``, ``"a2c"``, ``"td3"``."""
    import stable_baselines3 as sb3

    try:
        return {"ppo": sb3.PPO, "sac": sb3.SAC, "a2c": sb3.A2C, "td3": sb3.TD3}[name.lower()]
    except KeyError:
        raise ValueError(f"unknown SB3 algorithm {name!r}; use ppo, sac, a2c or td3") from None


#: small defaults per algorithm (CPU, a few hundred steps in tests)
DEFAULT_ALGO_KWARGS: dict[str, dict[str, Any]] = {
    "ppo": {"n_steps": 64, "batch_size": 32, "n_epochs": 4, "learning_rate": 3e-4},
    "a2c": {"n_steps": 8},
    "sac": {"buffer_size": 10_000, "learning_starts": 32, "batch_size": 32, "train_freq": 1, "gradient_steps": 1},
    "td3": {"buffer_size": 10_000, "learning_starts": 32, "batch_size": 32},
}


def build_model(algo: str, env: Any, *, seed: int | None, net_arch: Any, algo_kwargs: Mapping[str, Any] | None,
                verbose: int = 0) -> Any:
    """An SB3 model with a small MLP, CPU device, the algorithm's small defaults and a :func:`folderless_logger`."""
    kw = {**DEFAULT_ALGO_KWARGS.get(algo, {}), **dict(algo_kwargs or {})}
    policy_kwargs = {"net_arch": list(net_arch), **kw.pop("policy_kwargs", {})}
    model = algo_class(algo)("MlpPolicy", env, policy_kwargs=policy_kwargs, seed=seed, device="cpu", verbose=verbose, **kw)
    model.set_logger(folderless_logger(verbose))
    return model


class SB3Agent(BaseAgent):
    """One SB3 policy over the whole 13-d action. Before any ``learn`` it holds setpoints.

    Args:
        seed: SB3 seed.
        net_arch: hidden layer sizes of policy and value/Q networks.
        algo_kwargs: more keyword arguments to the SB3 constructor.
        mlflow: log SB3's training metrics to MLflow (:class:`MLflowOutputFormat`).
        deterministic: act with the policy's mean action.
    """

    algo: ClassVar[str] = "ppo"

    def __init__(self, seed: int | None = 0, net_arch: Any = (32, 32), algo_kwargs: Mapping[str, Any] | None = None,
                 mlflow: bool = False, deterministic: bool = True, verbose: int = 0) -> None:
        super().__init__(seed=seed, net_arch=list(net_arch), algo_kwargs=dict(algo_kwargs or {}), mlflow=mlflow,
                         deterministic=deterministic, verbose=verbose)
        self.net_arch, self.algo_kwargs = list(net_arch), dict(algo_kwargs or {})
        self.mlflow, self.deterministic, self.verbose = mlflow, deterministic, verbose
        self.model: Any = None

    def learn(self, env: Any, total_timesteps: int, callback: Any = None) -> SB3Agent:
        """Train (or keep training) on ``env`` for ``total_timesteps`` env steps."""
        if self.model is None:
            self.model = build_model(self.algo, env, seed=self.seed, net_arch=self.net_arch,
                                     algo_kwargs=self.algo_kwargs, verbose=self.verbose)
            if self.mlflow:
                configure_mlflow_logger(self.model, prefix=f"{self.algo}/")
        else:
            self.model.set_env(env)
        learn_with_progress(self.model, int(total_timesteps), f"training {self.algo}", callback=callback)
        return self

    def act(self, obs: Any, info: Mapping[str, Any] | None = None) -> np.ndarray:
        if self.model is None:
            return self.zero_action()
        action, _ = self.model.predict(obs, deterministic=self.deterministic)
        return np.asarray(action, np.float32)

    def save(self, path: str | Path) -> Path:
        path = super().save(path)
        if self.model is not None:
            self.model.save(path / "model.zip")
        return path

    @classmethod
    def load(cls, path: str | Path) -> SB3Agent:
        path = Path(path)
        cfg = json.loads((path / "agent.json").read_text())
        agent = cls(seed=cfg.get("seed"), **cfg.get("kwargs", {}))
        if (path / "model.zip").exists():
            agent.model = load_model(cls.algo, path / "model.zip")
        return agent


@register_agent("ppo")
class FlatPPOAgent(SB3Agent):
    """Flat PPO (SB3) on the 13-d CLEM action."""

    algo = "ppo"


@register_agent("sac")
class FlatSACAgent(SB3Agent):
    """Flat SAC (SB3) on the 13-d CLEM action."""

    algo = "sac"
