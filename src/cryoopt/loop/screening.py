"""A block's context before it is committed: the LM overview of its trimmed ribbon, screened.

Before a lab commits a sample block to a full series (staining, EM hours), the block is
trimmed and a short test ribbon is cut at the lab's usual sectioning setpoints; an
overview of that ribbon (reflected light, about 1 um per pixel, seconds to take) shows
how this block cuts: thickness by interference colour, compression, folds, cracks and
missing sections. :class:`ScreeningContext` simulates exactly that on the bench the
blocks run on: for a block seed it finds the block's specimen (phantom, knife wear,
debris and temperature drift, as :class:`~cryoopt.loop.BlockRunner` will meet them), cuts
``trim_sections`` sections at the trimming setpoints on its own copy of the bench with
process noise of its own (the block's sections are not seen), renders the overview
(:func:`cryoopt.sim.overview.render_ribbon`), screens it
(:func:`cryoopt.pipeline.screening.screen_ribbon`) and returns the chosen
:data:`~cryoopt.pipeline.screening.CONTEXT_FEATURES` as a :data:`~cryoopt.loop.ContextSource`.

Example:
    >>> screen = ScreeningContext({"scenario": "neurons"}, features=("compression", "thickness_cv"))
    >>> loop = OuterLoop("bo_only", context=screen, contexts=screen.ranges)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cryoopt.exceptions import ParameterError

__all__ = ["CONTEXT_RANGES", "ScreeningContext"]

#: Ranges of the screening features (:func:`~cryoopt.pipeline.screening.screening_context`) for a
#: GP's context inputs: fractions in [0, 1]; ``thickness_ratio`` (median / target) 0-3 and
#: ``thickness_cv`` 0-1 (a section past 3x the target or spread past 100 % is clipped).
CONTEXT_RANGES: dict[str, tuple[float, float]] = {
    "good_fraction": (0.0, 1.0), "thickness_ratio": (0.0, 3.0), "thickness_cv": (0.0, 1.0),
    "fold_fraction": (0.0, 1.0), "crack_fraction": (0.0, 1.0), "contamination_fraction": (0.0, 1.0),
    "too_thick_fraction": (0.0, 1.0), "missing_fraction": (0.0, 1.0), "compression": (0.0, 1.0),
}

#: stream of the trim ribbon's process noise, apart from the block's own (see :meth:`ScreeningContext.__call__`)
_TRIM_STREAM = 0x7121


class ScreeningContext:
    """Block seed -> screened overview features of the block's trimmed ribbon (a ``ContextSource``).

    Args:
        env_kwargs: the bench the blocks run on (as :class:`~cryoopt.loop.BlockRunner`'s
            ``env_kwargs``: ``scenario``, ``backend``...); the block's specimen is found there.
        features: which :data:`~cryoopt.pipeline.screening.CONTEXT_FEATURES` to return
            (each becomes one GP input: keep them few).
        trim_sections: sections in the test ribbon (4-50).
        setpoints: trimming setpoints (sectioning knobs); default
            :data:`~cryoopt.agents.EXPERT_PROTOCOL`'s, the lab's usual ones.
        env_id: the composite env.
        face_um: the trimmed block face ``(length along the cut, width)``, um; its length
            turns section lengths into ``compression``.
        ranges: ``{feature: (low, high)}`` narrower than :data:`CONTEXT_RANGES` where a
            bench's blocks span only part of a feature's range (a GP scales its inputs to
            the declared range); values are clipped to it.

    The measurement is a function of the block seed only (the same seed gives the same
    context), and results are kept, so asking twice costs nothing.
    """

    def __init__(self, env_kwargs: Mapping[str, Any] | None = None, *,
                 features: Sequence[str] = ("compression", "thickness_cv"), trim_sections: int = 8,
                 setpoints: Mapping[str, float] | None = None, env_id: str = "cryoopt/CLEMProtocol-v0",
                 face_um: tuple[float, float] = (80.0, 120.0),
                 ranges: Mapping[str, tuple[float, float]] | None = None) -> None:
        from cryoopt.pipeline.screening import CONTEXT_FEATURES

        unknown = [f for f in features if f not in CONTEXT_FEATURES]
        if unknown or not features:
            raise ParameterError(f"features must be a non-empty selection of {list(CONTEXT_FEATURES)}, got {list(features)}")
        if not 4 <= int(trim_sections) <= 50:
            raise ParameterError(f"trim_sections must be in [4, 50] sections, got {trim_sections}")
        self.env_kwargs = {"backend": "direct", **dict(env_kwargs or {})}
        self.features = tuple(features)
        self.trim_sections = int(trim_sections)
        self.setpoints = dict(setpoints) if setpoints is not None else None
        self.env_id = env_id
        self.face_um = (float(face_um[0]), float(face_um[1]))
        self._ranges = {f: CONTEXT_RANGES[f] for f in self.features}
        for f, r in dict(ranges or {}).items():
            if f not in self._ranges:
                raise ParameterError(f"ranges names {f!r}, which is not one of the features {list(self.features)}")
            lo, hi = float(r[0]), float(r[1])
            if not lo < hi:
                raise ParameterError(f"ranges[{f!r}] must be (low, high) with low < high, got {tuple(r)}")
            self._ranges[f] = (lo, hi)
        self._env: Any = None
        self._cache: dict[int, dict[str, float]] = {}

    @property
    def ranges(self) -> dict[str, tuple[float, float]]:
        """``{feature: (low, high)}``: the ``contexts=`` to declare to the optimizer."""
        return dict(self._ranges)

    def _bench(self) -> Any:
        if self._env is None:
            import gymnasium as gym

            import cryoopt.envs  # noqa: F401 - registers the envs

            # images are never taken here: the smallest size keeps the bench cheap
            self._env = gym.make(self.env_id, **{**self.env_kwargs, "image_size": 32}).unwrapped
        return self._env

    def specimen_seed(self, block_seed: int) -> int:
        """The specimen a block run with ``block_seed`` meets (as ``env.reset(seed=block_seed)`` draws it)."""
        env = self._bench()
        env.reset(seed=int(block_seed))
        return int(env.specimen_seed)

    def trim_ribbon(self, block_seed: int) -> list[dict[str, Any]]:
        """Cut the test ribbon of the block's specimen: the sections' records, in cutting order."""
        from cryoopt.agents import EXPERT_PROTOCOL, start_setpoints

        env = self._bench()
        spec = self.specimen_seed(block_seed)
        noise = int(np.random.default_rng([int(block_seed), _TRIM_STREAM]).integers(0, 2**31 - 1))
        start = start_setpoints({**EXPERT_PROTOCOL, **(self.setpoints or {})})
        env.reset(seed=int(block_seed), options={"specimen_seed": spec, "noise_seed": noise, "setpoints": start})
        sectioning = dict(env.setpoints["sectioning"])
        return [env.chain.cut(sectioning) for _ in range(self.trim_sections)]

    def overview(self, block_seed: int) -> Any:
        """The rendered LM overview (:class:`~cryoopt.sim.overview.Overview`) of the block's test ribbon."""
        from cryoopt.sim.overview import render_ribbon

        ribbon = self.trim_ribbon(block_seed)
        target = float(ribbon[0].get("nominal_thickness_nm", 100.0)) if ribbon else 100.0
        rng = np.random.default_rng([int(block_seed), _TRIM_STREAM, 1])
        return render_ribbon(ribbon, face_um=self.face_um, target_thickness_nm=target, rng=rng)

    def screen(self, block_seed: int) -> dict[str, float]:
        """All :data:`~cryoopt.pipeline.screening.CONTEXT_FEATURES` of the block's screened overview."""
        from cryoopt.exceptions import EvaluationError
        from cryoopt.pipeline.screening import CONTEXT_FEATURES, screen_ribbon, screening_context

        ov = self.overview(block_seed)
        try:
            result = screen_ribbon(ov.image, pixel_size_nm=ov.pixel_size_nm,
                                   target_thickness_nm=ov.params["target_thickness_nm"])
        except EvaluationError:  # nothing on the water: every cut failed
            return {f: (1.0 if f == "missing_fraction" else 0.0) for f in CONTEXT_FEATURES}
        vec = screening_context(result, face_length_um=self.face_um[0])
        return {f: float(np.clip(v, *CONTEXT_RANGES[f])) for f, v in zip(CONTEXT_FEATURES, vec)}

    def __call__(self, block_seed: int) -> dict[str, float]:
        seed = int(block_seed)
        if seed not in self._cache:
            full = self.screen(seed)
            self._cache[seed] = {f: float(np.clip(full[f], *self._ranges[f])) for f in self.features}
        return dict(self._cache[seed])

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
