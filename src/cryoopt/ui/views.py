"""What the campaign page shows, read from the journal: JSON views and plotly figures.

Everything here reads; every write goes through :class:`~cryoopt.campaign.Campaign`
(the same calls as the CLI). Figures are plotly figure dicts (``plotly.graph_objects``
serialized), drawn in the browser by plotly.js; they show the same things as the
report's PNGs (:mod:`cryoopt.campaign.report`), with the same recommendation.
"""

from __future__ import annotations

import json
import math
import threading
import warnings
from pathlib import Path
from typing import Any

from cryoopt.campaign.journal import Journal, TrialRecord
from cryoopt.campaign.outcomes import Outcomes, config_from_journal
from cryoopt.campaign.recommendation import Recommendation, fit_model, recommend, units
from cryoopt.config import CampaignConfig

__all__ = ["CampaignView"]


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


class CampaignView:
    """Read-side of one campaign directory for the page (cached per journal version)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.config: CampaignConfig = config_from_journal(self.directory)
        self.outcomes = Outcomes(self.config)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[Any, Any]] = {}

    # ------------------------------------------------------------------ journal reads
    def version(self) -> str:
        """A token that changes whenever trials, feedback, requests, events or the campaign's state change."""
        j = Journal.open(self.directory, readonly=True)
        try:
            token = [j.count(), j.status_counts(), j.last_feedback_id(), len(j.pending_requests()), len(j.events()),
                     j.meta("state"), j.meta("operator_paused", False), j.meta("paused"), j.meta("elapsed_s")]
        finally:
            j.close()
        return json.dumps(token, sort_keys=True, default=str)

    def _read(self) -> tuple[list[TrialRecord], dict[str, Any], dict[int, float], list[Any], int]:
        j = Journal.open(self.directory, readonly=True)
        try:
            return j.trials(), j.all_meta(), j.mean_ratings(), j.feedback(), len(j.pending_requests())
        finally:
            j.close()

    def _cached(self, name: str, version: str, build: Any) -> Any:
        with self._lock:
            hit = self._cache.get(name)
            if hit is not None and hit[0] == version:
                return hit[1]
        value = build()
        with self._lock:
            self._cache[name] = (version, value)
        return value

    def _model_and_recommendation(self, version: str, trials: list[TrialRecord]) -> tuple[Any, Recommendation | None]:
        def build() -> tuple[Any, Recommendation | None]:
            model = fit_model(self.config, trials)
            return model, recommend(self.config, trials, model=model, fit=False)

        return self._cached("model", version, build)

    # ------------------------------------------------------------------ the page's state
    def state(self) -> dict[str, Any]:
        """Everything the page shows except the GP slices (:meth:`effects`) and section images (:meth:`trial`)."""
        version = self.version()
        return self._cached("state", version, lambda: self._state(version))

    def _state(self, version: str) -> dict[str, Any]:
        from cryoopt.campaign.journal import CampaignLock

        trials, meta, ratings, notes, queued = self._read()
        self.config = config_from_journal(self.directory)  # run settings (budget, ...) may change between sessions
        model, rec = self._model_and_recommendation(version, trials)
        cfg = self.config
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.status] = counts.get(t.status, 0) + 1
        running = CampaignLock(self.directory).held_by_other()
        best = self.outcomes.best(trials)
        return {
            "version": version,
            "name": cfg.name,
            "description": cfg.description.strip(),
            "directory": str(self.directory),
            "state": "running" if running else ("interrupted" if meta.get("state") == "running" else meta.get("state", "new")),
            "paused": bool(meta.get("operator_paused", False)),
            "bench_paused": meta.get("paused") or None,  # a suspended bench (the executor says why)
            "stop_reason": meta.get("stop_reason"),
            "counts": counts,
            "started": sum(t.started for t in trials),
            "budget": cfg.budget.experiments,
            "queued_requests": queued,
            "objectives": dict(cfg.objectives),
            "units": units(cfg),
            "parameters": self.parameters(),
            "recommendation": None if rec is None else rec.to_dict(),
            "best_observed": None if best is None else {"trial": best.id, "values": best.values,
                                                        "label": "best observed" if len(cfg.objectives) == 1
                                                        else "Pareto compromise"},
            "trials": [self._row(t, ratings) for t in trials],
            "feedback": [{"trial": n.trial_id, "rating": n.rating, "note": n.note, "author": n.author} for n in notes],
            "figures": self.figures(trials, rec, model),
        }

    def parameters(self) -> list[dict[str, Any]]:
        """The search space as the inject form needs it."""
        out = []
        for p in self.config.search_space():
            spec = self.config.space.parameters[p.name]
            out.append({"name": p.name, "type": p.type_name, "unit": spec.get("unit"),
                        "low": getattr(p, "low", None), "high": getattr(p, "high", None),
                        "choices": list(p.choices) if not p.is_numeric else None,
                        "log": bool(getattr(p, "log", False)), "description": spec.get("description")})
        return out

    def _row(self, t: TrialRecord, ratings: dict[int, float]) -> dict[str, Any]:
        n_images = len(t.result.get("section_images", [])) if isinstance(t.result, dict) else 0
        return {"id": t.id, "status": t.status, "source": t.source, "params": t.params,
                "values": {k: _finite(v) for k, v in (t.values or {}).items() if k in self.config.objectives},
                "duration_s": t.duration_s, "rating": ratings.get(t.id), "error": t.error, "sections": n_images,
                "feasible": self.outcomes.feasible(t.values) if t.status == "completed" else None}

    def trial(self, trial_id: int) -> dict[str, Any] | None:
        """One trial with its sections (image URLs under ``/files/``, per-section scores) and its feedback."""
        j = Journal.open(self.directory, readonly=True)
        try:
            t = j.trial(trial_id)
            notes = j.feedback(trial_id)
        finally:
            j.close()
        if t is None:
            return None
        result = t.result if isinstance(t.result, dict) else {}
        sections = []
        for s in result.get("section_images", []):
            sections.append({**s, "lm": f"/files/{s['lm']}" if s.get("lm") else None,
                             "em": f"/files/{s['em']}" if s.get("em") else None})
        metrics = {k: _finite(v) for k, v in (t.values or {}).items()}
        return {"id": t.id, "status": t.status, "source": t.source, "params": t.params, "values": metrics,
                "error": t.error, "sections": sections,
                "feedback": [{"rating": n.rating, "note": n.note, "author": n.author} for n in notes]}

    # ------------------------------------------------------------------ figures
    def _label(self, name: str, direction: bool = False) -> str:
        from cryoopt.campaign.report import axis_label

        return axis_label(self.config, name, direction=direction)

    def figures(self, trials: list[TrialRecord], rec: Recommendation | None, model: Any) -> dict[str, Any]:
        figs = {"convergence": self._convergence(trials, rec), "parallel": self._parallel(trials, rec)}
        if len(self.config.objectives) >= 2:
            figs["pareto"] = self._pareto(trials, rec)
        return figs

    def _convergence(self, trials: list[TrialRecord], rec: Recommendation | None) -> dict[str, Any]:
        import plotly.graph_objects as go

        name, direction = next(iter(self.config.objectives.items()))
        sign = 1.0 if direction == "maximize" else -1.0
        started = sorted((t for t in trials if t.started_at is not None), key=lambda t: (t.started_at or 0.0, t.id))
        xs, best, best_val = [], [], -math.inf
        for k, t in enumerate(started, start=1):
            if t.status == "completed" and self.outcomes.feasible(t.values) and sign * t.values[name] > best_val:  # type: ignore[index]
                best_val = sign * t.values[name]  # type: ignore[index]
            xs.append(k)
            best.append(sign * best_val if math.isfinite(best_val) else None)
        obs = [(k, t) for k, t in enumerate(started, start=1) if t.status == "completed" and name in (t.values or {})]
        fig = go.Figure()
        fig.add_scatter(x=[k for k, _ in obs], y=[t.values[name] for _, t in obs], mode="markers",  # type: ignore[index]
                        name="observed", text=[f"trial {t.id} ({t.source})" for _, t in obs],
                        marker={"symbol": ["diamond" if t.source == "replicate" else "circle" for _, t in obs],
                                "color": ["#1f77b4" if self.outcomes.feasible(t.values) else "#aaaaaa" for _, t in obs]})
        fig.add_scatter(x=xs, y=best, mode="lines", line={"shape": "hv", "color": "#ff7f0e"},
                        name="best single observation so far")
        if rec is not None:
            exp, iv = rec.expected[name], rec.interval.get(name)
            fig.add_hline(y=exp, line={"color": "black"})
            fig.add_scatter(x=[xs[0] if xs else 0, xs[-1] if xs else 1], y=[exp, exp], mode="lines", line={"color": "black"},
                            name=f"recommended (trial {rec.trial_id}): expected {exp:.3g}")
            if iv:
                fig.add_hrect(y0=iv[0], y1=iv[1], fillcolor="black", opacity=0.1, line_width=0)
        failed = [k for k, t in enumerate(started, start=1) if t.status in ("failed", "abandoned")]
        if failed:
            fig.add_scatter(x=failed, y=[0] * len(failed), mode="markers", marker={"symbol": "x", "color": "red"},
                            name="failed / abandoned")
        fig.update_layout(title="convergence", xaxis_title="experiment (trials in the order they started)",
                          yaxis_title=self._label(name, True), margin={"t": 40, "l": 60, "r": 10, "b": 50}, height=360,
                          legend={"font": {"size": 10}})
        fig.update_xaxes(dtick=1 if len(xs) <= 20 else None)
        return json.loads(fig.to_json())

    def _pareto(self, trials: list[TrialRecord], rec: Recommendation | None) -> dict[str, Any]:
        import plotly.graph_objects as go

        (n1, d1), (n2, d2) = list(self.config.objectives.items())[:2]
        s1, s2 = (1 if d1 == "maximize" else -1), (1 if d2 == "maximize" else -1)
        done = [t for t in trials if t.status == "completed" and n1 in (t.values or {}) and n2 in (t.values or {})]
        feas = [t for t in done if self.outcomes.feasible(t.values)]
        pts = [(s1 * t.values[n1], s2 * t.values[n2]) for t in feas]  # type: ignore[index]
        front = sorted((t for t, p in zip(feas, pts) if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in pts)),
                       key=lambda t: t.values[n1])  # type: ignore[index]
        fig = go.Figure()
        fig.add_scatter(x=[t.values[n1] for t in done], y=[t.values[n2] for t in done], mode="markers", name="observed",  # type: ignore[index]
                        text=[f"trial {t.id}" for t in done],
                        marker={"color": ["#1f77b4" if t in feas else "#aaaaaa" for t in done]})
        fig.add_scatter(x=[t.values[n1] for t in front], y=[t.values[n2] for t in front], mode="lines+markers",  # type: ignore[index]
                        line={"shape": "hv" if s1 * s2 < 0 else "vh", "color": "#ff7f0e"}, name="Pareto front (single runs)")
        if rec is not None:
            ix, iy = rec.interval.get(n1), rec.interval.get(n2)
            x, y = rec.expected[n1], rec.expected[n2]
            fig.add_scatter(x=[x], y=[y], mode="markers", marker={"symbol": "star", "size": 16, "color": "black"},
                            name=f"recommended (trial {rec.trial_id})",
                            error_x=None if not ix else {"type": "data", "symmetric": False, "array": [ix[1] - x], "arrayminus": [x - ix[0]]},
                            error_y=None if not iy else {"type": "data", "symmetric": False, "array": [iy[1] - y], "arrayminus": [y - iy[0]]})
        fig.update_layout(title=f"trade-off: {n1} vs {n2}", xaxis_title=self._label(n1, True),
                          yaxis_title=self._label(n2, True), margin={"t": 40, "l": 60, "r": 10, "b": 50}, height=360,
                          legend={"font": {"size": 10}})
        return json.loads(fig.to_json())

    def _parallel(self, trials: list[TrialRecord], rec: Recommendation | None) -> dict[str, Any]:
        import plotly.graph_objects as go

        name = next(iter(self.config.objectives))
        done = [t for t in trials if t.status == "completed" and name in (t.values or {})]
        dims = []
        for p in self.config.search_space():
            if p.is_numeric:
                import numpy as np

                vals = [float(t.params[p.name]) for t in done]
                if p.log:
                    dims.append({"label": self._label(p.name) + " [log10]", "values": [float(np.log10(v)) for v in vals],
                                 "range": [float(np.log10(p.low)), float(np.log10(p.high))]})
                else:
                    dims.append({"label": self._label(p.name), "values": vals, "range": [float(p.low), float(p.high)]})
            else:
                choices = list(p.choices)
                dims.append({"label": p.name, "values": [choices.index(t.params[p.name]) for t in done],
                             "tickvals": list(range(len(choices))), "ticktext": [str(c) for c in choices]})
        ys = [t.values[name] for t in done]  # type: ignore[index]
        dims.append({"label": self._label(name, True), "values": ys})
        fig = go.Figure(go.Parcoords(line={"color": ys, "colorscale": "Viridis", "showscale": True}, dimensions=dims))
        fig.update_layout(title="every trial's protocol (coloured by " + name + ")", height=360,
                          margin={"t": 70, "l": 60, "r": 60, "b": 30})
        return json.loads(fig.to_json())

    def effects(self) -> dict[str, Any] | None:
        """GP slices through the recommended protocol (one panel per parameter, first objective), or ``None``."""
        version = self.version()
        return self._cached("effects", version, lambda: self._effects(version))

    def _effects(self, version: str) -> dict[str, Any] | None:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        from cryoopt.campaign.report import slice_grid

        trials, *_ = self._read()
        model, rec = self._model_and_recommendation(version, trials)
        if model is None or rec is None:
            return None
        name = next(iter(self.config.objectives))
        params = list(self.config.search_space())
        ncols = min(4, len(params))
        rows = math.ceil(len(params) / ncols)
        fig = make_subplots(rows=rows, cols=ncols, subplot_titles=[self._label(p.name) for p in params])
        floor = 0.0 if all(t.values[name] >= 0 for t in trials if t.status == "completed" and t.values) else None  # type: ignore[index]
        for i, p in enumerate(params):
            grid = slice_grid(p)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mean, std = model.predict([{**rec.params, p.name: v} for v in grid])
            m, s = mean[:, 0], std[:, 0]
            lo = [max(a - 1.96 * b, floor) if floor is not None else a - 1.96 * b for a, b in zip(m, s)]
            hi = [float(a + 1.96 * b) for a, b in zip(m, s)]
            r, c = i // ncols + 1, i % ncols + 1
            xs = [str(g) for g in grid] if not p.is_numeric else grid
            fig.add_scatter(x=list(xs) + list(xs)[::-1], y=hi + lo[::-1], fill="toself", fillcolor="rgba(31,119,180,0.2)",
                            line={"width": 0}, showlegend=False, row=r, col=c, hoverinfo="skip")
            fig.add_scatter(x=xs, y=[float(v) for v in m], mode="lines", line={"color": "#1f77b4"}, showlegend=False,
                            row=r, col=c)
            fig.add_vline(x=rec.params[p.name] if p.is_numeric else str(rec.params[p.name]), line={"dash": "dash"},
                          row=r, col=c)
            if p.is_numeric and p.log:
                fig.update_xaxes(type="log", row=r, col=c)
        fig.update_layout(title=f"effect of each parameter on {self._label(name)}: GP mean and 95 % band, "
                                f"others at the recommended protocol (dashed)", height=260 * rows,
                          margin={"t": 60, "l": 50, "r": 10, "b": 30}, font={"size": 10})
        return json.loads(fig.to_json())
