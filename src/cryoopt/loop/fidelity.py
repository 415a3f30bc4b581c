"""An LM quick look of a protocol: the cheap fidelity before an EM series.

A full block (:meth:`BlockRunner.run`) cuts, stains and images a whole series of sections
in LM *and* EM and is judged by the fused score of the EM-led pipeline. An LM quick look
cuts the first ``sections`` sections of a block with the protocol, stains them and looks at
them in the light microscope only. What it sees: whether the ribbon formed, the label's
LM contrast (``lm_cnr``), and the staining model's terms that need no image
(``d_repro``: robustness to pipetting, ``meta``: agreement with the model's time). Its
score (:meth:`QuickLook.look`, ``quality``) is those terms weighted as the block reward
weights them (:data:`~cryoopt.envs.clem.DEFAULT_WEIGHTS`, the EM-only terms left out and
the rest renormalized), ``impact`` replaced by the LM contrast credit
``lm_cnr / (lm_cnr + 3)`` (the pipeline's own half-credit at CNR 3), averaged over the
sections with a failed ribbon counting 0, as a block's quality counts them.

Its cost is the bench's own time model for what it does: the cuts, the staining of the
sections cut and one LM exposure each, no EM exposure (``prep_time_h``).

Example:
    >>> look = QuickLook(sections=2, runner_kwargs={"env_kwargs": {"scenario": "neurons"}})
    >>> look.look({"section_thickness_nm": 80.0}, seed=3)["quality"]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cryoopt.exceptions import ParameterError
from cryoopt.loop.blocks import BlockFailure, BlockRunner, _score_value

__all__ = ["LM_CNR_HALF", "LM_TERMS", "QuickLook"]

#: the block reward's terms an LM quick look can measure (``impact`` from LM contrast only)
LM_TERMS = ("impact", "d_repro", "meta")
#: half credit of LM contrast, as the pipeline's image-quality index gives it (``cnr_half``)
LM_CNR_HALF = 3.0


def _value(scores: Mapping[str, Any], name: str) -> float:
    """A section score's value, NaN where it is missing or not finite."""
    value = _score_value(scores.get(name))
    return math.nan if value is None else value


class QuickLook:
    """Runs LM quick looks: the first ``sections`` sections of a block, LM only.

    Args:
        runner: the :class:`BlockRunner` whose env and agent cut the sections (its agent acts
            within the look as within a block), or ``None`` to build one from ``runner_kwargs``
            (default agent ``"fixed"``: the protocol held).
        sections: sections cut and looked at (1 to the runner's block budget).
        weights: reward weights of :data:`LM_TERMS` (default: the block reward's).
    """

    def __init__(self, runner: BlockRunner | None = None, *, sections: int = 2,
                 weights: Mapping[str, float] | None = None, runner_kwargs: Mapping[str, Any] | None = None) -> None:
        if runner is None:
            kw = {"agent": "fixed", **dict(runner_kwargs or {})}
            runner = BlockRunner(kw.pop("agent"), **kw)
        budget = runner.max_sections or math.inf
        if isinstance(sections, bool) or not isinstance(sections, int) or not 1 <= sections <= budget:
            raise ParameterError(f"sections must be an int in [1, {budget}] (the block's budget), got {sections!r}")
        if weights is None:
            from cryoopt.envs.clem import DEFAULT_WEIGHTS

            weights = {k: DEFAULT_WEIGHTS[k] for k in LM_TERMS}
        bad = sorted(set(weights) - set(LM_TERMS))
        if bad or any(not (float(w) >= 0.0) for w in weights.values()) or sum(weights.values()) <= 0:
            raise ParameterError(f"weights must map terms of {LM_TERMS} to weights >= 0 (not all 0), got {dict(weights)!r}")
        total = float(sum(weights.values()))
        self.weights = {k: float(weights.get(k, 0.0)) / total for k in LM_TERMS}
        self.runner, self.sections = runner, int(sections)

    def section_score(self, info: Mapping[str, Any]) -> float:
        """One section's LM score in [0, 1] from the env's step ``info`` (0 for a failed ribbon or
        an LM image without a finite contrast)."""
        if info.get("section_failed"):
            return 0.0
        scores = (info.get("scores") or {}).get("scores") or {}
        lm_cnr = _value(scores, "lm_cnr")
        if not math.isfinite(lm_cnr):
            return 0.0
        lm_cnr = max(lm_cnr, 0.0)
        terms = {"impact": lm_cnr / (lm_cnr + LM_CNR_HALF)}
        for name in ("d_repro", "meta"):
            v = _value(scores, name)
            terms[name] = min(max(v, 0.0), 1.0) if math.isfinite(v) else 0.0
        return float(sum(self.weights[k] * terms[k] for k in LM_TERMS))

    def look(self, params: Mapping[str, Any], seed: int, *,
             options: Mapping[str, Any] | None = None) -> dict[str, Any] | BlockFailure:
        """Quick-look the starting protocol ``params`` on the block ``seed``.

        Returns ``quality`` (the LM score, mean over the sections, failed ribbons 0),
        ``lm_cnr`` (mean over the sections imaged), ``prep_time_h`` (cuts, staining and LM
        exposures), ``sections``, ``failed_sections`` and ``fidelity`` (``"lm_quick_look"``);
        or a :class:`BlockFailure` when no section could be imaged (every ribbon failed).
        """
        from cryoopt.agents import EXPERT_PROTOCOL, run_block

        infos: list[Mapping[str, Any]] = []

        def on_step(obs: Any, reward: float, info: Mapping[str, Any]) -> None:
            if not info.get("stopped"):
                infos.append(info)

        start = {**EXPERT_PROTOCOL, **dict(params)}
        out = run_block(self.runner.agent, self.runner.env, seed=int(seed), start=start, max_sections=self.sections,
                        min_sections=self.sections, on_step=on_step, options=options)
        imaged = [i for i in infos if not i.get("section_failed")]
        em_hours = sum(float(i["setpoints"]["imaging"]["exposure_ms"]) / 3.6e6 for i in imaged)  # the env books LM + EM
        lm = [_value((i.get("scores") or {}).get("scores") or {}, "lm_cnr") for i in imaged]
        lm = [v for v in lm if math.isfinite(v)]
        result = {
            "quality": float(sum(self.section_score(i) for i in infos) / max(len(infos), 1)),
            "lm_cnr": float(sum(lm) / len(lm)) if lm else math.nan,
            "prep_time_h": float(out["prep_time_h"]) - em_hours,
            "sections": float(len(infos)),
            "failed_sections": float(len(infos) - len(imaged)),
            "fidelity": "lm_quick_look",
        }
        if not imaged:
            return BlockFailure(f"no section could be imaged: {len(infos)} cut, every ribbon failed", measured=result)
        return result
