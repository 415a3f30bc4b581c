"""Base class of the instrument environments: scenario, backend chain, rendering, reward terms."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from cryoopt.envs._core import Chain, Knob, draw_start
from cryoopt.envs.scenarios import Scenario, load_scenario
from cryoopt.exceptions import ParameterError
from cryoopt.instruments.simulated.sim_physics import BlockConditions

__all__ = ["InstrumentEnv", "term", "to_uint8"]


def term(raw: float, weight: float = 1.0, value: float | None = None) -> dict[str, float]:
    """One entry of ``info["reward_terms"]`` (same shape as the fusion's breakdown)."""
    v = float(raw if value is None else value)
    return {"weight": float(weight), "raw": float(raw), "value": v, "contribution": float(weight) * v}


def to_uint8(img: np.ndarray | None, size: int) -> np.ndarray:
    """Image scaled to uint8 by its 1st-99th percentiles, resampled (nearest) to ``size x size``."""
    if img is None:
        return np.zeros((size, size), np.uint8)
    a = np.asarray(img, np.float32)
    lo, hi = np.percentile(a, (1, 99))
    a = np.clip((a - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0)
    ri = (np.arange(size) * a.shape[0] // size).astype(int)
    ci = (np.arange(size) * a.shape[1] // size).astype(int)
    return (a[np.ix_(ri, ci)] * 255.0 + 0.5).astype(np.uint8)


class InstrumentEnv(gym.Env):
    """Shared parts: ``scenario``/``backend``/``bench`` arguments, seeding, ``render``."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, *, scenario: str | Mapping[str, Any] | Scenario | None = None, backend: str = "direct",
                 bench: Any = None, section_reader: Any = None, render_mode: str | None = None,
                 render_size: int = 128) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.render_size = int(render_size)
        self.scenario = load_scenario(scenario)  # type: ignore[arg-type]
        self.backend = backend
        self.chain = Chain(backend, self.scenario, bench=bench, section_reader=section_reader)
        self.profiles = self.chain.profiles
        self._images: tuple[np.ndarray | None, np.ndarray | None] = (None, None)

    # -- helpers -------------------------------------------------------------------------
    def _new_block(self, options: Mapping[str, Any] | None = None) -> None:
        """Reset the chain (fresh bench/physics) from ``self.np_random``.

        The specimen seed (``options["specimen_seed"]``, the scenario's, or a draw) fixes
        the phantom and the block's conditions (knife wear, edge debris rate, temperature
        drift: :meth:`block_conditions`), so blocks on the same specimen seed are paired;
        ``options["noise_seed"]`` and ``options["image_seed"]`` fix the process noise
        (sectioning, staining) and the image noise streams (default: drawn)."""
        rng = self.np_random
        opts = dict(options or {})
        spec_seed = opts.get("specimen_seed", self.scenario.specimen_seed)
        if spec_seed is None:
            spec_seed = int(rng.integers(0, 2**31 - 1))
        noise_seed = opts.get("noise_seed")
        if noise_seed is None:
            noise_seed = int(rng.integers(0, 2**31 - 1))
        image_seed = opts.get("image_seed")
        for name, v in (("specimen_seed", spec_seed), ("noise_seed", noise_seed), ("image_seed", image_seed)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0):
                raise ParameterError(f"reset options {name!r} must be a non-negative integer, got {v!r}")
        self.conditions = self.block_conditions(int(spec_seed))
        self.chain.reset(int(noise_seed), conditions=self.conditions, specimen_seed=int(spec_seed),
                         image_seed=None if image_seed is None else int(image_seed))
        self.specimen_seed = int(spec_seed)
        self._initial_wear = self.conditions.knife_wear
        self._images = (None, None)

    def block_conditions(self, specimen_seed: int) -> BlockConditions:
        """The block's conditions on specimen ``specimen_seed``: uniform draws from the
        scenario's ``initial_knife_wear`` and ``block`` ranges, seeded by the specimen."""
        g = np.random.default_rng([int(specimen_seed), 0xB10C])
        sc = self.scenario
        return BlockConditions(
            knife_wear=float(g.uniform(*sc.initial_knife_wear)),
            debris_per_cut=float(g.uniform(*sc.block.debris_per_cut)),
            temperature_drift_c_per_cut=float(g.uniform(*sc.block.temperature_drift_c_per_cut)),
        )

    def _start(self, knobs: tuple[Knob, ...]) -> dict[str, float]:
        return draw_start(knobs, self.scenario, self.np_random, self.profiles)

    def _norm(self, knobs: tuple[Knob, ...], values: Mapping[str, float]) -> list[float]:
        return [k.normalize(values[k.name], self.profiles[k.device]) for k in knobs]

    def _move(self, knobs: tuple[Knob, ...], values: dict[str, float], action: np.ndarray) -> dict[str, float]:
        out = dict(values)
        for k, a in zip(knobs, action):
            out[k.name] = k.move(values[k.name], float(a), self.profiles[k.device])
        return out

    # -- rendering -------------------------------------------------------------------------
    def _render_images(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """LM and EM images of the latest section at ``render_size`` (own rng: no effect on the episode)."""
        if self._images[0] is not None:
            return self._images
        phys = self.chain.physics.get("microscope")
        sample = self.chain.latest() if self.chain.simulated else {}
        if phys is None or not sample:
            return None, None
        rng = np.random.default_rng(len(self.chain.sections))
        preview = {"image_size_px": self.render_size, "exposure_ms": 50.0, "gain": 4.0, "preview": True}
        lm = phys.acquire({"modality": "LM", **preview}, rng, sample=sample)
        em = phys.acquire({"modality": "EM", **preview}, rng, sample=sample)
        return lm, em

    def render(self) -> np.ndarray | None:
        """The current LM (left) and EM (right) images side by side, RGB ``uint8`` ``(S, 2S, 3)``."""
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; pass render_mode='rgb_array' to make()")
            return None
        lm, em = self._render_images()
        s = self.render_size
        side = np.concatenate([to_uint8(lm, s), to_uint8(em, s)], axis=1)
        return np.repeat(side[:, :, None], 3, axis=2)

    def close(self) -> None:
        self.chain.close()
        super().close()
