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

from cryoopt.loop.blocks import BlockRunner
from cryoopt.progress import current_sink, format_duration
from cryoopt.registry import Executor, TrialRequest, executors

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

    def run(self, trial: TrialRequest) -> dict[str, Any]:
        runner = self.runner
        seed = self.seed * 100_003 + trial.id
        if not runner.section_images or self.directory is None:
            return runner.run(trial.params, seed)
        rel = Path(IMAGES_DIR) / f"trial_{trial.id:04d}"
        folder = self.directory / rel
        shutil.rmtree(folder, ignore_errors=True)  # a re-run after a crash replaces the old images
        result = runner.run(trial.params, seed, image_dir=folder)
        for rec in result.get("section_images", []):
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
