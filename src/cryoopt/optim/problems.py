"""Benchmark problems with known optima, for tests and ``benchmarks/optimizer.py``.

Each problem declares its search space, a noise-free ``evaluate_true`` and its
optimal value (the BoTorch ``test_functions`` convention), and is called as a
noisy objective. Branin and Hartmann-6 come from :mod:`botorch.test_functions`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch
from botorch.test_functions import Branin as _Branin
from botorch.test_functions import Hartmann as _Hartmann

from cryoopt.space import Params, SearchSpace


class Problem(ABC):
    """A maximization problem with a known optimum and additive Gaussian noise."""

    name: ClassVar[str]
    optimal_value: ClassVar[float]
    #: an approximate range of the objective over the space, to scale noise and regret
    value_range: ClassVar[float]

    def __init__(self, *, noise_frac: float = 0.05, seed: int = 0) -> None:
        self.noise_std = noise_frac * self.value_range
        self._rng = np.random.default_rng(seed)
        self.space = self.make_space()

    @abstractmethod
    def make_space(self) -> SearchSpace: ...

    @abstractmethod
    def evaluate_true(self, params: Params) -> float:
        """Noise-free objective value (to maximize)."""

    def __call__(self, params: Params) -> float:
        return self.evaluate_true(params) + float(self._rng.normal(0.0, self.noise_std))

    def normalized_regret(self, params: Params) -> float:
        """``(f* - f(x)) / range``: 0 at the optimum, about 1 at a typical bad point."""
        return (self.optimal_value - self.evaluate_true(params)) / self.value_range


class Branin(Problem):
    """Negated Branin on ``[-5, 10] x [0, 15]``; maximum -0.397887 at three points."""

    name = "branin"
    optimal_value = -0.397887
    value_range = 308.13 - 0.397887
    _f = _Branin()

    def make_space(self) -> SearchSpace:
        return SearchSpace.from_dict(
            {"x1": {"type": "float", "low": -5, "high": 10}, "x2": {"type": "float", "low": 0, "high": 15}}
        )

    def evaluate_true(self, params: Params) -> float:
        x = torch.tensor([[params["x1"], params["x2"]]], dtype=torch.double)
        return -float(self._f.evaluate_true(x))


class Hartmann6(Problem):
    """Negated Hartmann-6 on ``[0, 1]^6``; maximum 3.32237."""

    name = "hartmann6"
    optimal_value = 3.32237
    value_range = 3.32237
    _f = _Hartmann(dim=6)

    def make_space(self) -> SearchSpace:
        return SearchSpace.from_dict({f"x{i}": {"type": "float", "low": 0, "high": 1} for i in range(6)})

    def evaluate_true(self, params: Params) -> float:
        x = torch.tensor([[params[f"x{i}"] for i in range(6)]], dtype=torch.double)
        return -float(self._f.evaluate_true(x))


class StainingLandscape(Problem):
    """A mixed 5-D immunostaining-quality landscape (project-made, for benchmarks and demos).

    Quality in ``[0, 1]`` of a label: penetration through the section needs
    incubation time growing with thickness squared (diffusion time ~ L^2 / D);
    too concentrated antibody (low dilution) raises background, too dilute starves
    the label; cutting too fast adds chatter. The buffer shifts the optimum (TBS
    best, HEPES worst). Maximum ~0.97 at about 80 nm, 1.1 mm/s, 1:500, 60 min, TBS.
    """

    name = "staining5d"
    value_range = 1.0
    optimal_value = float("nan")  # set in __init__ by a dense search

    BUFFER_GAIN: ClassVar[dict[str, float]] = {"PBS": 0.92, "TBS": 1.0, "HEPES": 0.8}

    def __init__(self, *, noise_frac: float = 0.05, seed: int = 0) -> None:
        super().__init__(noise_frac=noise_frac, seed=seed)
        self.optimal_value = self._dense_max()

    def make_space(self) -> SearchSpace:
        return SearchSpace.from_dict(
            {
                "section_thickness_nm": {"type": "float", "low": 50, "high": 300},
                "cutting_speed_mm_s": {"type": "float", "low": 0.1, "high": 10, "log": True},
                "antibody_dilution": {"type": "float", "low": 50, "high": 2000, "log": True},
                "incubation_min": {"type": "int", "low": 5, "high": 240},
                "buffer": {"type": "categorical", "choices": ["PBS", "TBS", "HEPES"]},
            }
        )

    @staticmethod
    def _quality(t_nm: float, v: float, dil: float, inc: float) -> float:
        needed_min = 20.0 * (t_nm / 100.0) ** 2 * (dil / 500.0) ** 0.5  # diffusion time ~ L^2/D, slower when dilute
        penetration = 1.0 - math.exp(-inc / needed_min)
        background = 1.0 / (1.0 + (dil / 150.0) ** 2)  # free antibody left when concentrated
        signal = 1.0 / (1.0 + (dil / 1500.0) ** 2)
        chatter = math.exp(-((math.log(v) - math.log(1.1)) ** 2) / (2 * 0.8**2))
        thin_bonus = math.exp(-(((t_nm - 80.0) / 120.0) ** 2))
        overstain = math.exp(-max(inc - 6 * needed_min, 0.0) / 300.0)
        return penetration * signal * (1 - 0.8 * background) * chatter * (0.6 + 0.4 * thin_bonus) * overstain

    def evaluate_true(self, params: Params) -> float:
        q = self._quality(
            float(params["section_thickness_nm"]),
            float(params["cutting_speed_mm_s"]),
            float(params["antibody_dilution"]),
            float(params["incubation_min"]),
        )
        return q * self.BUFFER_GAIN[str(params["buffer"])]

    def _dense_max(self) -> float:
        best = -math.inf
        for t in np.linspace(50, 300, 26):
            for v in np.geomspace(0.1, 10, 21):
                for dil in np.geomspace(50, 2000, 31):
                    for inc in range(5, 241, 5):
                        best = max(best, self._quality(t, v, dil, inc))
        return best * self.BUFFER_GAIN["TBS"]


class SpecimenStaining:
    """Immunostaining whose best incubation depends on the specimen (project-made, for benchmarks).

    A specimen's permeability ``c`` in ``[0, 1]`` (what a quick LM look at the block's
    overview can screen) sets how fast antibody penetrates: the incubation a section
    needs scales like ``L^2 / D(c)`` with ``D(c)`` growing ninefold from ``c = 0`` to
    ``c = 1``, and over-incubation adds background. So the best incubation moves from
    ~130 min (``c = 0``) to ~15 min (``c = 1``), each worth quality ~0.80, while the best
    single protocol for all specimens averages ~0.65. On top, each block has an unmeasured
    specimen effect (Gaussian, sd ``specimen_sd``, default 0.1). At a fixed good
    protocol, the specimen-to-specimen variance (context + random effect) is about 3/4
    of the variance of block quality across protocols and specimens, as on the bench.

    Quality in ``[0, 1]``; ``evaluate_true(params, context)`` is noise-free and
    ``__call__(params, context)`` adds the specimen effect. ``optimal_value(context)``
    comes from a dense search.
    """

    name = "specimen_staining"
    value_range = 1.0
    context_name = "permeability"

    def __init__(self, *, specimen_sd: float = 0.1, seed: int = 0) -> None:
        self.specimen_sd = float(specimen_sd)
        self._rng = np.random.default_rng(seed)
        self.space = SearchSpace.from_dict(
            {
                "section_thickness_nm": {"type": "float", "low": 50, "high": 300},
                "incubation_min": {"type": "float", "low": 5, "high": 240, "log": True},
                "antibody_dilution": {"type": "float", "low": 50, "high": 2000, "log": True},
            }
        )
        self.contexts = {self.context_name: (0.0, 1.0)}

    def sample_contexts(self, n: int, rng: np.random.Generator) -> list[dict[str, float]]:
        """Specimens' screened permeabilities (uniform)."""
        return [{self.context_name: float(c)} for c in rng.random(n)]

    def evaluate_true(self, params: Params, context: dict[str, float]) -> float:
        t_nm = float(params["section_thickness_nm"])
        inc = float(params["incubation_min"])
        dil = float(params["antibody_dilution"])
        diffusivity = 0.3 + 2.4 * float(context[self.context_name])  # 9x from c = 0 to 1
        needed = 25.0 * (t_nm / 100.0) ** 2 * (dil / 500.0) ** 0.5 / diffusivity
        penetration = 1.0 - math.exp(-inc / needed)
        overstain = math.exp(-max(inc - 3.0 * needed, 0.0) / (2.0 * needed))
        background = 1.0 / (1.0 + (dil / 150.0) ** 2)
        signal = 1.0 / (1.0 + (dil / 1500.0) ** 2)
        thin = math.exp(-(((t_nm - 80.0) / 150.0) ** 2))
        return penetration * overstain * signal * (1 - 0.8 * background) * (0.6 + 0.4 * thin)

    def __call__(self, params: Params, context: dict[str, float]) -> float:
        return self.evaluate_true(params, context) + float(self._rng.normal(0.0, self.specimen_sd))

    def optimal_value(self, context: dict[str, float]) -> float:
        best = -math.inf
        for t in np.linspace(50, 300, 11):
            for inc in np.geomspace(5, 240, 41):
                for dil in np.geomspace(50, 2000, 21):
                    best = max(best, self.evaluate_true(
                        {"section_thickness_nm": t, "incubation_min": inc, "antibody_dilution": dil}, context))
        return best


PROBLEMS: dict[str, type[Problem]] = {p.name: p for p in (Branin, Hartmann6, StainingLandscape)}
