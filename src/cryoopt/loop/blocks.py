"""One sample block = one episode of an agent in ``cryoopt/CLEMProtocol-v0``.

:class:`BlockRunner` owns one env and one agent and runs a block from a starting
protocol: the agent adapts setpoints per serial section and may stop early. A block's
``quality`` (maximized) is the mean fused score of its good sections times the
fraction of the section budget that gave good sections (failed ribbons, failed
evaluations and sections never cut count 0); its ``prep_time_h`` is minimized. A block
in which no section gave a valid evaluation is a failed experiment:
:meth:`BlockRunner.run` returns :class:`~cryoopt.optim.Failure` with the reason, never a
quality of 0 for a model to learn from (it keeps what the block measured, e.g. its prep
time; :meth:`BlockRunner.measure` returns the measurements either way, for benchmarks that
judge a protocol by what the lab would get).

:func:`block_space` is the search space over a block's starting protocol, the space the
outer loop (:mod:`cryoopt.loop.outer_loop`) optimizes over.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cryoopt.optim.trial import Failure
from cryoopt.space import SearchSpace

__all__ = ["DEFAULT_BLOCK_SPACE", "OBJECTIVES", "RESULT_KEYS", "BlockFailure", "BlockRunner", "SimulatedCLEMBlock",
           "block_space"]

#: The starting-protocol knobs the GP searches by default (names as the env's setpoints), over
#: the ranges of Tokuyasu practice: ultrathin sections of 50-120 nm cut at -125 to -110 C
#: (the knife and chamber stay at the expert protocol's -120 C), primaries from 1:20 to
#: 1:1000 for 5-120 min, and the detectors' full gain range.
DEFAULT_BLOCK_SPACE: dict[str, dict[str, Any]] = {
    "section_thickness_nm": {"type": "float", "low": 50.0, "high": 120.0, "unit": "nm"},
    "cutting_speed_mm_s": {"type": "float", "low": 0.2, "high": 2.0, "log": True, "unit": "mm/s"},
    "specimen_temperature_c": {"type": "float", "low": -125.0, "high": -110.0, "unit": "C"},
    "dilution": {"type": "float", "low": 20.0, "high": 1000.0, "log": True, "description": "antibody 1:N"},
    "time_min": {"type": "float", "low": 5.0, "high": 120.0, "log": True, "unit": "min"},
    "temperature_c": {"type": "float", "low": 15.0, "high": 37.0, "unit": "C"},
    "exposure_ms": {"type": "float", "low": 10.0, "high": 200.0, "log": True, "unit": "ms"},
    "gain": {"type": "float", "low": 1.0, "high": 64.0, "log": True},
    "focus_um": {"type": "float", "low": -2.0, "high": 2.0, "unit": "um"},
}

#: A block's objectives: quality up, preparation time down.
OBJECTIVES = {"quality": "maximize", "prep_time_h": "minimize"}

#: The keys of every block result :meth:`BlockRunner.run` returns (HRL agents add ``option_<name>`` counts).
RESULT_KEYS = frozenset({
    "quality", "prep_time_h", "good_sections", "fused_score", "cnr", "lm_cnr", "frc_resolution_nm", "sections",
    "failed_sections", "failed_evaluations", "steps", "stopped", "block_return",
})


@dataclass(frozen=True)
class BlockFailure(Failure):
    """A block in which no section gave a valid evaluation: the reason, and what the block
    still measured (its prep time, sections cut, ...), which a journal keeps and a model never sees."""

    measured: Mapping[str, float] = field(default_factory=dict)


def block_space(parameters: Mapping[str, Mapping[str, Any]] | None = None) -> SearchSpace:
    """The search space over a block's starting protocol (default :data:`DEFAULT_BLOCK_SPACE`)."""
    return SearchSpace.from_dict(dict(parameters or DEFAULT_BLOCK_SPACE))


def _json_seed(params: Mapping[str, Any], seed: int) -> int:
    text = json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True, default=str)
    return (int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) + 7919 * int(seed)) % (2**31 - 1)


class BlockRunner:
    """Runs sample blocks: one env (``env_id``, ``env_kwargs``) and one agent.

    Args:
        agent: an agent, a registered agent name, or a class (see :func:`cryoopt.agents.make_agent`).
        agent_kwargs: arguments when ``agent`` is a name or class.
        agent_path: load a saved agent from this directory instead (``agent`` names its class).
        env_id: the composite env (default ``cryoopt/CLEMProtocol-v0``).
        env_kwargs: e.g. ``scenario``, ``backend`` (``direct`` by default), ``image_size``.
        max_sections: the block's budget of serial sections (the agent may stop earlier).
        learn_steps_per_block: after each block, train the agent this many sections.
        pretrain_steps: for agents with ``learn``: train this many sections in the
            composite env before the first block.
        instrument_pretrain_steps: for agents with ``pretrain`` (HRL): steps on each cheap
            per-instrument env (thousands per second) before that (default ``pretrain_steps``).
        min_sections: sections every block yields before the agent may stop it.
        pretrain_space: composite-env pre-training starts each episode from a random
            protocol of this space (the blocks the outer loop will hand the agent) instead
            of the scenario's start ranges; :class:`OuterLoop` passes its space.
        section_images: make the env able to render each section's LM and EM images, so
            that :meth:`run` can save them (``image_dir``); costs nothing until used.
    """

    def __init__(self, agent: Any = "hrl", *, agent_kwargs: Mapping[str, Any] | None = None, agent_path: str | None = None,
                 env_id: str = "cryoopt/CLEMProtocol-v0", env_kwargs: Mapping[str, Any] | None = None,
                 max_sections: int | None = 8, learn_steps_per_block: int = 0, pretrain_steps: int = 0,
                 instrument_pretrain_steps: int | None = None, min_sections: int = 0,
                 pretrain_space: SearchSpace | Mapping[str, Any] | None = None, section_images: bool = False) -> None:
        import gymnasium as gym

        import cryoopt.envs  # noqa: F401 - registers the envs
        from cryoopt.agents import agents as agent_registry
        from cryoopt.agents import make_agent

        self.env_kwargs = {"image_size": 64, **dict(env_kwargs or {})}
        render = {"render_mode": "rgb_array", "render_size": min(int(self.env_kwargs["image_size"]), 128)} \
            if section_images else {}
        self.env = gym.make(env_id, **{**render, **self.env_kwargs})
        self.section_images = bool(section_images)
        if agent_path is not None:
            cls = agent_registry.get(agent) if isinstance(agent, str) else agent
            self.agent = cls.load(agent_path)
        else:
            self.agent = make_agent(agent, **dict(agent_kwargs or {}))
        self.max_sections, self.min_sections = max_sections, int(min_sections)
        self.pretrain_space = (pretrain_space if isinstance(pretrain_space, SearchSpace) or pretrain_space is None
                               else block_space(pretrain_space))
        self.learn_steps_per_block = int(learn_steps_per_block)
        self.blocks_run = 0
        if pretrain_steps or instrument_pretrain_steps:
            self.pretrain(pretrain_steps, instrument_pretrain_steps)

    def pretrain(self, steps: int, instrument_steps: int | None = None) -> None:
        """Pre-train the agent: HRL on the per-instrument envs (``instrument_steps``, default
        ``steps``), then any agent ``steps`` sections in the composite env.

        Bit-reproducible for a given agent seed: the composite env is seeded before
        training, and torch runs on one thread meanwhile (its float sums depend on the
        thread count; the agents' small networks lose nothing by it).
        """
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self._pretrain(steps, instrument_steps)
        finally:
            torch.set_num_threads(threads)

    def _pretrain(self, steps: int, instrument_steps: int | None) -> None:
        n_inst = steps if instrument_steps is None else int(instrument_steps)
        if hasattr(self.agent, "pretrain") and n_inst:
            self.agent.pretrain(n_inst, **{k: v for k, v in self.env_kwargs.items() if k == "scenario"})
        if steps:
            import gymnasium as gym

            from cryoopt.agents.starts import RandomStarts

            # seed the env's RNG first: SB3 resets it without a seed, and an env never seeded draws
            # its RNG from the OS, so pre-training would differ from run to run
            self.env.reset(seed=int(getattr(self.agent, "seed", None) or 0))
            env = self.env if self.pretrain_space is None else RandomStarts(self.env, self.pretrain_space)
            if self.max_sections:  # episodes as long as the blocks it will run: a series cut past
                env = gym.wrappers.TimeLimit(env, int(self.max_sections))  # the structure scores nothing
            self.agent.learn(env, steps)

    def run(self, params: Mapping[str, Any], seed: int, *, image_dir: str | Path | None = None,
            options: Mapping[str, Any] | None = None) -> dict[str, Any] | BlockFailure:
        """Run one block from the starting protocol ``params``; returns the result dict
        (``quality``, ``prep_time_h``, ``cnr``, ``frc_resolution_nm``, ``sections``, ...), or a
        :class:`BlockFailure` (a :class:`~cryoopt.optim.Failure`) with the reason when no section
        of the block gave a valid evaluation (every ribbon failed, every evaluation failed, or
        none was cut). ``options``: more ``env.reset`` options (e.g. ``specimen_seed`` to pair
        blocks by specimen).

        With ``image_dir`` (and ``section_images=True``) each section's LM and EM images
        are saved there as 8-bit PNGs (``s01_lm.png``, ``s01_em.png``, ...; a section whose
        ribbon failed has none) and the result carries ``section_images``: one record per
        section with ``section``, ``lm``/``em`` (file names in ``image_dir``, or ``None``),
        ``reward``, ``failed`` and the section's headline ``scores``.
        """
        result = self.measure(params, seed, image_dir=image_dir, options=options)
        reason = result.pop("failure_reason", None)
        return BlockFailure(reason, measured=result) if reason else result

    def measure(self, params: Mapping[str, Any], seed: int, *, image_dir: str | Path | None = None,
                options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run one block and return everything it measured, failed or not: a block with no valid
        evaluation has ``quality`` 0 and says why in ``failure_reason`` (for judging a protocol
        by what the lab would get; an optimizer must be told :meth:`run`'s failure instead)."""
        from cryoopt.agents import EXPERT_PROTOCOL, run_block

        start = {**EXPERT_PROTOCOL, **dict(params)}
        why: list[str] = []
        sections: list[dict[str, Any]] = []
        saver = None
        if image_dir is not None:
            if not self.section_images:
                raise ValueError("image_dir needs a BlockRunner made with section_images=True")
            saver = _SectionImageSaver(self.env, Path(image_dir), sections)

        def on_step(obs: Any, reward: float, info: Mapping[str, Any]) -> None:
            if info.get("evaluation_failed"):
                why.append(str(info.get("failure_reason") or "evaluation failed"))
            if saver is not None:
                saver(obs, reward, info)

        out = run_block(self.agent, self.env, seed=int(seed), start=start, max_sections=self.max_sections,
                        min_sections=self.min_sections, on_step=on_step, options=options)
        self.blocks_run += 1
        if self.learn_steps_per_block > 0:
            self.agent.learn(self.env, self.learn_steps_per_block)
        result: dict[str, Any] = {}
        for k, v in out.items():
            if isinstance(v, (bool, int, float, np.integer, np.floating)) or v is None:
                result[k] = float(v) if v is not None else math.nan
            elif k == "options":
                result.update({f"option_{o}": float(c) for o, c in v.items()})
        good = out.get("sections", 0) - out.get("failed_sections", 0) - out.get("failed_evaluations", 0)
        budget = self.max_sections or max(int(out.get("sections", 0)), 1)
        result["good_sections"] = float(good)
        result["quality"] = float(out["quality"]) * max(good, 0) / budget
        result["prep_time_h"] = float(out["prep_time_h"])
        if image_dir is not None:
            result["section_images"] = sections
        if out.get("fused_score") is None:
            result["failure_reason"] = _no_evaluation_reason(out, why)
        return result

    def close(self) -> None:
        self.env.close()


#: the per-section scores a section's image record keeps (``Scores`` names)
SECTION_SCORES = ("em_cnr", "lm_cnr", "em_frc_resolution_nm", "em_artifact_fraction", "registration_tre_nm")


class _SectionImageSaver:
    """``run_block``'s ``on_step``: saves each cut section's rendered LM and EM images as PNG."""

    def __init__(self, env: Any, directory: Path, records: list[dict[str, Any]]) -> None:
        self.env, self.directory, self.records = env, directory, records
        directory.mkdir(parents=True, exist_ok=True)

    def __call__(self, obs: Any, reward: float, info: Mapping[str, Any]) -> None:
        if info.get("stopped"):
            return  # the stop action cuts nothing
        from PIL import Image

        k = len(self.records) + 1
        rec: dict[str, Any] = {"section": k, "lm": None, "em": None, "reward": float(reward),
                               "failed": bool(info.get("section_failed") or info.get("evaluation_failed"))}
        if not info.get("section_failed"):  # a failed ribbon leaves nothing to image
            frame = self.env.render()
            if frame is not None:
                s = frame.shape[1] // 2
                for name, half in (("lm", frame[:, :s, 0]), ("em", frame[:, s:, 0])):
                    file = f"s{k:02d}_{name}.png"
                    Image.fromarray(np.ascontiguousarray(half)).save(self.directory / file, optimize=True)
                    rec[name] = file
        scores = (info.get("scores") or {}).get("scores") or {}  # Scores.to_dict()
        rec["scores"] = {n: _score_value(scores.get(n)) for n in SECTION_SCORES if n in scores}
        self.records.append(rec)


def _score_value(entry: Any) -> float | None:
    v = entry.get("value") if isinstance(entry, Mapping) else entry
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _no_evaluation_reason(out: Mapping[str, Any], why: list[str]) -> str:
    """Why a block gave no valid evaluation, e.g. ``"no section gave a valid evaluation: 6 cut,
    2 ribbons failed, 4 evaluations failed (impact/novelty is nan)"``."""
    cut, ribbons, evals = int(out.get("sections", 0)), int(out.get("failed_sections", 0)), len(why)
    if cut == 0:
        return "no section gave a valid evaluation: the block ended before any section was cut"
    parts = [f"{cut} cut"]
    if ribbons:
        parts.append(f"{ribbons} ribbon{'s' if ribbons != 1 else ''} failed")
    if evals:
        reasons = "; ".join(dict.fromkeys(why))
        parts.append(f"{evals} evaluation{'s' if evals != 1 else ''} failed ({reasons})")
    return "no section gave a valid evaluation: " + ", ".join(parts)


class SimulatedCLEMBlock(BlockRunner):
    """A :class:`BlockRunner` callable with a params dict (for a ``function`` executor).

    The block seed comes from the params and ``seed``, so re-running a trial gives the
    same answer (idempotent) as long as the agent does not learn between blocks.
    """

    def __init__(self, seed: int = 0, **kwargs: Any) -> None:
        self.seed = int(seed)
        super().__init__(**kwargs)

    def __call__(self, params: Mapping[str, Any]) -> dict[str, Any] | BlockFailure:
        return self.run(params, _json_seed(params, self.seed))
