"""Campaign executor ``simulated_clem``: each trial is one simulated CLEM block.

Importing this module registers the executor in :data:`cryoopt.registry.executors`;
:func:`cryoopt.campaign.executors.make_executor` imports it when a config names it.

Files it keeps in the campaign directory (given by :meth:`Executor.prepare`):

* ``agent/``: the agent as pre-trained (HRL: settings, option policy, controllers) with
  ``pretraining.json``, the settings it was trained with. A resumed campaign loads it
  instead of pre-training again; changed settings train a new one.
* ``images/trial_NNNN/sNN_lm.png``, ``sNN_em.png``: each section's LM and EM images
  (8-bit PNG, at most 128 px: about 10 kB each); the trial's result lists them under
  ``section_images`` with paths relative to the campaign directory (see
  :meth:`~cryoopt.loop.BlockRunner.run`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from cryoopt.loop.blocks import RESULT_KEYS, BlockFailure, BlockRunner
from cryoopt.progress import current_sink, format_duration
from cryoopt.registry import Executor, Problem, TrialRequest, executors, option_problems

__all__ = ["AGENT_DIR", "IMAGES_DIR", "SimulatedCLEMExecutor"]

AGENT_DIR = "agent"
IMAGES_DIR = "images"
_PRETRAIN_KEYS = ("agent", "agent_kwargs", "pretrain_steps", "instrument_pretrain_steps", "max_sections", "env_kwargs",
                  "pretrain_space")


class SimulatedCLEMExecutor(Executor):
    """Campaign executor ``simulated_clem``: each trial is one simulated CLEM block.

    ``executor.options`` are :class:`~cryoopt.loop.BlockRunner`'s keyword arguments
    (``agent``, ``agent_kwargs``, ``agent_path``, ``env_kwargs``, ``max_sections``,
    ``learn_steps_per_block``, ``pretrain_steps``, ``instrument_pretrain_steps``) plus
    ``section_images`` (default true: keep each section's images when the campaign has a
    directory). The agent's seed defaults to ``config.seed``; the block seed is
    ``config.seed * 100_003 + trial.id``. Idempotent unless the agent learns per block.

    The agent is built (and pre-trained, or loaded) in :meth:`prepare`, which a campaign
    calls with its directory before the first trial (or on first use, without a
    directory): the pre-trained agent is saved there and reused on resume.
    """

    idempotent = True
    result_keys = RESULT_KEYS

    @classmethod
    def check_config(cls, config: Any) -> list[Problem]:
        """``executor.options`` are BlockRunner's keywords, of the right types, naming a known agent."""
        options = config.executor.options
        problems = option_problems(BlockRunner, options, "executor.options")
        agent = options.get("agent", "hrl")
        if isinstance(agent, str) and ":" not in agent and not any(p[0] == "executor.options.agent" for p in problems):
            from cryoopt.agents import available_agents

            if agent not in available_agents():
                problems.append(("executor.options.agent",
                                 f"unknown agent {agent!r}; available: {', '.join(available_agents())} (or module:Class)"))
        problems += _count_problems(options, {p[0] for p in problems})
        if not any(p[0].startswith(("executor.options.env_kwargs", "executor.options.env_id")) for p in problems):
            problems += _env_problems(options)
        return problems

    def __init__(self, config: Any) -> None:
        opts = dict(config.executor.options)
        self.seed = int(config.seed)
        self.keep_images = bool(opts.pop("section_images", True))
        kwargs = dict(opts.get("agent_kwargs") or {})
        if _takes_seed(opts.get("agent", "hrl")):
            kwargs.setdefault("seed", self.seed)  # a campaign's seed reproduces its agent too
        opts["agent_kwargs"] = kwargs
        self.options = opts
        self.directory: Path | None = None
        self._runner: BlockRunner | None = None
        self.idempotent = bool(config.executor.idempotent if config.executor.idempotent is not None
                               else int(opts.get("learn_steps_per_block", 0)) == 0)

    def prepare(self, directory: str | Path) -> None:
        """Keep files in ``directory``; load the agent saved there, or pre-train and save it."""
        self.directory = Path(directory)
        self.runner  # noqa: B018 - builds it now, outside any trial's time

    @property
    def runner(self) -> BlockRunner:
        """The block runner (built, and its agent pre-trained or loaded, on first use)."""
        if self._runner is None:
            self._runner = self._build_runner()
        return self._runner

    def _pretraining(self) -> dict[str, Any]:
        return json.loads(json.dumps({k: self.options.get(k) for k in _PRETRAIN_KEYS}, sort_keys=True, default=str))

    def _build_runner(self) -> BlockRunner:
        opts = dict(self.options, section_images=self.keep_images and self.directory is not None)
        saved = self.directory / AGENT_DIR if self.directory is not None else None
        say = current_sink() or (lambda line: None)
        if saved is not None and "agent_path" not in opts and _saved_matches(saved, self._pretraining()):
            opts.update(agent_path=str(saved), pretrain_steps=0, instrument_pretrain_steps=0)
            say(f"agent: loading the pre-trained {opts.get('agent', 'hrl')} agent from {saved} (no pre-training)")
            return BlockRunner(**opts)
        steps, inst = int(opts.get("pretrain_steps", 0) or 0), opts.get("instrument_pretrain_steps")
        if steps or inst:
            say(f"agent: pre-training {opts.get('agent', 'hrl')} ("
                + (f"{int(inst)} steps on each per-instrument env, then " if inst else "")
                + f"{steps} sections in the composite env)" + (f"; saved to {saved} for resume" if saved else ""))
        runner = BlockRunner(**opts)
        if saved is not None and (steps or inst) and hasattr(runner.agent, "save"):
            _save_atomically(runner.agent, saved, self._pretraining())
        return runner

    def run(self, trial: TrialRequest) -> dict[str, Any] | BlockFailure:
        runner = self.runner
        seed = self.seed * 100_003 + trial.id
        if not runner.section_images or self.directory is None:
            return runner.run(trial.params, seed)
        rel = Path(IMAGES_DIR) / f"trial_{trial.id:04d}"
        folder = self.directory / rel
        shutil.rmtree(folder, ignore_errors=True)  # a re-run after a crash replaces the old images
        result = runner.run(trial.params, seed, image_dir=folder)
        records = result.measured.get("section_images", []) if isinstance(result, BlockFailure) else result.get("section_images", [])
        for rec in records:
            for key in ("lm", "em"):
                if rec.get(key):
                    rec[key] = (rel / rec[key]).as_posix()
        return result

    def suspended(self) -> str | None:
        """Why the next trial should wait (a door open, a temperature drifting, a reagent out), or
        ``None``: the env's instrument bench's :meth:`~cryoopt.instruments.Bench.suspend_reason`
        on the ``instruments``/``socket`` backends; always ``None`` on ``direct`` (no instruments)."""
        chain = getattr(self.runner.env.unwrapped, "chain", None)
        bench = getattr(chain, "bench", None)
        if chain is None or chain.backend == "direct" or bench is None:
            return None
        reason = getattr(bench, "suspend_reason", None)
        return reason() if callable(reason) else None

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()


#: BlockRunner's counts and the smallest value each may take (``max_sections`` may also be null: no limit)
_COUNTS = {"max_sections": 1, "min_sections": 0, "pretrain_steps": 0, "instrument_pretrain_steps": 0,
           "learn_steps_per_block": 0}


def _count_problems(options: dict[str, Any], already: set[str]) -> list[Problem]:
    """Counts below their smallest sensible value (a block of 0 sections runs nothing)."""
    out: list[Problem] = []
    for key, low in _COUNTS.items():
        value, where = options.get(key), f"executor.options.{key}"
        if where in already or value is None or isinstance(value, bool) or not isinstance(value, int):
            continue
        if value < low:
            out.append((where, f"must be an integer >= {low}" + (" (or null: no limit)" if key == "max_sections" else "")
                        + f", got {value}"))
    return out


def _env_problems(options: dict[str, Any]) -> list[Problem]:
    """Build the block's env once (no instrument is opened) so that a bad ``env_kwargs`` (unknown
    scenario or backend, a misspelt keyword) is refused before the campaign starts, not at pre-training."""
    import gymnasium as gym

    import cryoopt.envs  # noqa: F401 - registers the envs
    from cryoopt.exceptions import CryoOptError

    env_kwargs = options.get("env_kwargs") or {}
    if not isinstance(env_kwargs, dict):
        return []  # option_problems reported the type
    size = env_kwargs.get("image_size")
    if isinstance(size, int) and not isinstance(size, bool) and size < 1:
        return [("executor.options.env_kwargs.image_size", f"must be a positive number of pixels, got {size}")]
    env_id = options.get("env_id", "cryoopt/CLEMProtocol-v0")
    try:
        env = gym.make(env_id, **env_kwargs)
    except gym.error.Error as err:  # no such env id
        return [("executor.options.env_id", f"{err} Registered cryoopt envs: "
                 + ", ".join(sorted(k for k in gym.registry if k.startswith("cryoopt/"))))]
    except (CryoOptError, TypeError, ValueError) as err:
        return [("executor.options.env_kwargs", f"{env_id} refuses them: {str(err).split(' was raised from the env')[0]}")]
    env.close()
    return []


def _takes_seed(agent: Any) -> bool:
    """Whether the agent factory ``agent`` (a registered name, class or instance) accepts ``seed``."""
    import inspect

    from cryoopt.agents import agents

    factory = agents.get(agent) if isinstance(agent, str) and agent in agents else agent
    if not callable(factory) or isinstance(agent, str) and agent not in agents:
        return False
    try:
        return "seed" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def _saved_matches(folder: Path, pretraining: dict[str, Any]) -> bool:
    try:
        return json.loads((folder / "pretraining.json").read_text()) == pretraining and (folder / "agent.json").is_file()
    except (OSError, ValueError):
        return False


def _save_atomically(agent: Any, folder: Path, pretraining: dict[str, Any]) -> None:
    """Save into a temporary folder and rename it into place: a kill leaves the old agent or the new one."""
    import time

    t0 = time.monotonic()
    tmp = folder.with_name(folder.name + ".saving")
    shutil.rmtree(tmp, ignore_errors=True)
    agent.save(tmp)
    (tmp / "pretraining.json").write_text(json.dumps(pretraining, indent=2, sort_keys=True))
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    say = current_sink()
    if say is not None:
        say(f"agent: saved to {folder} ({format_duration(time.monotonic() - t0)})")


if "simulated_clem" not in executors:
    executors.register("simulated_clem", SimulatedCLEMExecutor)
