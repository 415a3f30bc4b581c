"""Campaign report: PNG plots and a Markdown summary, from the journal alone.

Plots (matplotlib, written to ``<dir>/report/``):

* ``convergence.png``: best feasible value so far against experiments, every
  observation, and a noise band (+-2 sigma of the observation noise, estimated as
  the RMS residual of a GP fitted to the trials) around the best-so-far line;
* ``pareto.png`` (several objectives): the first two objectives, Pareto front marked;
* ``effects.png``: GP posterior slices (mean +-2 sd) through the incumbent, one
  panel per parameter and objective; the model is a
  :class:`~cryoopt.optim.BayesianOptimizer` fitted to the journal's trials, whatever
  strategy ran the campaign;
* ``parallel.png``: parallel coordinates of all trials, coloured by the first objective.

``report.md`` lists the counts, stop reason, incumbent, top trials and operator notes.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from cryoopt.campaign.journal import Journal, TrialRecord
from cryoopt.campaign.outcomes import Outcomes, config_from_journal
from cryoopt.config import CampaignConfig

__all__ = ["write_report"]


def write_report(directory: str | Path, *, config: CampaignConfig | None = None,
                 out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write the plots and ``report.md`` for the campaign in ``directory``; returns ``{name: path}``."""
    directory = Path(directory)
    cfg = config if config is not None else config_from_journal(directory)
    outcomes = Outcomes(cfg)
    j = Journal.open(directory, readonly=True)
    try:
        trials = j.trials()
        ratings = j.mean_ratings()
        notes = j.feedback()
        meta = j.all_meta()
    finally:
        j.close()
    out = Path(out_dir) if out_dir is not None else directory / "report"
    out.mkdir(parents=True, exist_ok=True)
    space = cfg.search_space()
    model = _fit_model(cfg, space, trials)
    best = outcomes.best(trials)
    paths: dict[str, Path] = {}
    paths["convergence"] = _convergence(out / "convergence.png", cfg, outcomes, trials, model)
    if len(cfg.objectives) >= 2:
        paths["pareto"] = _pareto(out / "pareto.png", cfg, outcomes, trials)
    if model is not None and best is not None:
        paths["effects"] = _effects(out / "effects.png", cfg, space, model, best)
    paths["parallel"] = _parallel(out / "parallel.png", cfg, space, trials)
    paths["summary"] = _markdown(out / "report.md", cfg, outcomes, trials, ratings, notes, meta, paths, best)
    return paths


# ---------------------------------------------------------------------------- model
def _fit_model(cfg: CampaignConfig, space: Any, trials: list[TrialRecord]) -> Any:
    done = [t for t in trials if t.status == "completed"]
    if len(done) < 3:
        return None
    from cryoopt.optim import BayesianOptimizer, Trial, TrialStatus

    opt = BayesianOptimizer(space, seed=cfg.seed, objectives=dict(cfg.objectives),
                            outcome_constraints=list(cfg.outcome_constraints), num_restarts=2, raw_samples=32)
    status = {"completed": TrialStatus.COMPLETED, "failed": TrialStatus.FAILED}
    opt.trials = [
        Trial(id=i, params=t.params, status=status[t.status], values=t.values, error=t.error, source=t.source)
        for i, t in enumerate(x for x in trials if x.status in status)
    ]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.predict([done[0].params])
    except Exception:  # noqa: BLE001 - no model, no model-based panels
        return None
    return opt


def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=110, layout="constrained")


# ---------------------------------------------------------------------------- plots
def _convergence(path: Path, cfg: CampaignConfig, outcomes: Outcomes, trials: list[TrialRecord], model: Any) -> Path:
    name, direction = next(iter(cfg.objectives.items()))
    sign = 1.0 if direction == "maximize" else -1.0
    started = sorted((t for t in trials if t.started_at is not None), key=lambda t: t.started_at or 0.0)
    fig = _figure(7.5, 4.2)
    ax = fig.add_subplot()
    xs, best_line, best_ids = [], [], []
    best_val, best_id = -math.inf, None
    for k, t in enumerate(started, start=1):
        if t.status == "completed" and outcomes.feasible(t.values) and sign * t.values[name] > best_val:  # type: ignore[index]
            best_val, best_id = sign * t.values[name], t.id  # type: ignore[index]
        xs.append(k)
        best_line.append(sign * best_val if math.isfinite(best_val) else np.nan)
        best_ids.append(best_id)
    obs = [(k, t) for k, t in enumerate(started, start=1) if t.status == "completed"]
    feas = [(k, t.values[name]) for k, t in obs if outcomes.feasible(t.values)]  # type: ignore[index]
    infeas = [(k, t.values[name]) for k, t in obs if not outcomes.feasible(t.values)]  # type: ignore[index]
    if feas:
        ax.scatter(*zip(*feas), s=22, color="tab:blue", alpha=0.7, label="observed (feasible)", zorder=3)
    if infeas:
        ax.scatter(*zip(*infeas), s=22, facecolors="none", edgecolors="tab:gray", label="observed (infeasible)", zorder=3)
    failed = [k for k, t in enumerate(started, start=1) if t.status in ("failed", "abandoned")]
    ax.step(xs, best_line, where="post", color="tab:orange", lw=2, label="best so far")
    if model is not None and feas:
        done = [t for _, t in obs]
        mean, _ = model.predict([t.params for t in done])
        resid = np.array([t.values[name] for t in done]) - mean[:, 0]  # type: ignore[index]
        noise = float(np.sqrt(np.mean(resid**2)))
        y = np.array(best_line, dtype=float)
        ax.fill_between(xs, y - 2 * noise, y + 2 * noise, step="post", color="tab:orange", alpha=0.18,
                        label=f"noise band (±2σ, σ≈{noise:.3g})")
    if failed:
        lo = ax.get_ylim()[0]
        ax.scatter(failed, [lo] * len(failed), marker="x", color="tab:red", label="failed / abandoned", zorder=4, clip_on=False)
    if cfg.stopping.target is not None and not isinstance(cfg.stopping.target, dict):
        ax.axhline(float(cfg.stopping.target), color="tab:green", ls=":", label="target")
    ax.set_xlabel("experiment")
    ax.set_ylabel(f"{name} ({direction})")
    ax.set_title(f"{cfg.name}: convergence")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.savefig(path)
    return path


def _pareto(path: Path, cfg: CampaignConfig, outcomes: Outcomes, trials: list[TrialRecord]) -> Path:
    (n1, d1), (n2, d2) = list(cfg.objectives.items())[:2]
    s1, s2 = (1 if d1 == "maximize" else -1), (1 if d2 == "maximize" else -1)
    done = [t for t in trials if t.status == "completed"]
    feas = [t for t in done if outcomes.feasible(t.values)]
    pts = [(s1 * t.values[n1], s2 * t.values[n2]) for t in feas]  # type: ignore[index]
    front = [t for t, p in zip(feas, pts) if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in pts)]
    fig = _figure(6, 4.5)
    ax = fig.add_subplot()
    other = [t for t in done if t not in feas]
    if other:
        ax.scatter([t.values[n1] for t in other], [t.values[n2] for t in other], s=20, facecolors="none",  # type: ignore[index]
                   edgecolors="tab:gray", label="infeasible")
    ax.scatter([t.values[n1] for t in feas], [t.values[n2] for t in feas], s=20, color="tab:blue", alpha=0.6, label="feasible")  # type: ignore[index]
    if front:
        front.sort(key=lambda t: t.values[n1])  # type: ignore[index]
        ax.plot([t.values[n1] for t in front], [t.values[n2] for t in front], "o-", color="tab:orange",  # type: ignore[index]
                drawstyle="steps-post" if s1 * s2 < 0 else "steps-pre", label="Pareto front")
        for t in front:
            ax.annotate(str(t.id), (t.values[n1], t.values[n2]), fontsize=7, xytext=(3, 3), textcoords="offset points")  # type: ignore[index]
    ax.set_xlabel(f"{n1} ({d1})")
    ax.set_ylabel(f"{n2} ({d2})")
    ax.set_title(f"{cfg.name}: Pareto front")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path)
    return path


def _grid(p: Any, n: int = 41) -> list[Any]:
    if not p.is_numeric:
        return list(p.choices)
    lo, hi = p.safety if getattr(p, "safety", None) else (p.low, p.high)
    xs = np.geomspace(lo, hi, n) if p.log else np.linspace(lo, hi, n)
    if p.type_name == "int":
        return sorted({int(round(x)) for x in xs})
    return [float(x) for x in xs]


def _effects(path: Path, cfg: CampaignConfig, space: Any, model: Any, best: TrialRecord) -> Path:
    names = list(cfg.objectives)[:2]
    params = list(space)
    fig = _figure(2.8 * len(params), 2.6 * len(names))
    axes = fig.subplots(len(names), len(params), squeeze=False)
    for col, p in enumerate(params):
        grid = _grid(p)
        points = [{**best.params, p.name: v} for v in grid]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mean, std = model.predict(points)
        for row, name in enumerate(names):
            ax = axes[row][col]
            m, s = mean[:, row], std[:, row]
            if p.is_numeric:
                ax.plot(grid, m, color="tab:blue")
                ax.fill_between(grid, m - 2 * s, m + 2 * s, color="tab:blue", alpha=0.2)
                ax.axvline(float(best.params[p.name]), color="tab:orange", ls="--", lw=1)
                if p.log:
                    ax.set_xscale("log")
            else:
                xs = np.arange(len(grid))
                ax.errorbar(xs, m, yerr=2 * s, fmt="o", color="tab:blue", capsize=3)
                ax.set_xticks(xs, [str(g) for g in grid])
                ax.axvline(grid.index(best.params[p.name]), color="tab:orange", ls="--", lw=1)
            if row == len(names) - 1:
                ax.set_xlabel(p.name, fontsize=8)
            if col == 0:
                ax.set_ylabel(name, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    fig.suptitle(f"{cfg.name}: parameter effects (GP mean ±2 sd, slices through incumbent trial {best.id})", fontsize=9)
    fig.savefig(path)
    return path


def _parallel(path: Path, cfg: CampaignConfig, space: Any, trials: list[TrialRecord]) -> Path:
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    name = next(iter(cfg.objectives))
    params = list(space)
    done = [t for t in trials if t.status == "completed"]
    vals = np.array([t.values[name] for t in done]) if done else np.array([0.0])  # type: ignore[index]
    norm = Normalize(vmin=float(vals.min()), vmax=float(vals.max()) if vals.max() > vals.min() else float(vals.min()) + 1)
    cmap = colormaps["viridis"]
    fig = _figure(max(6.0, 1.4 * (len(params) + 1)), 4.2)
    ax = fig.add_subplot()
    xs = np.arange(len(params) + 1)
    bounds = space.encoded_bounds()

    def coords(t: TrialRecord) -> np.ndarray:
        u = (np.asarray(space.encode(t.params)) - bounds[0]) / np.where(bounds[1] > bounds[0], bounds[1] - bounds[0], 1)
        return u

    order = sorted(trials, key=lambda t: (t.status == "completed", (t.values or {}).get(name, -np.inf)))
    for t in order:
        u = coords(t)
        if t.status == "completed":
            y = norm(t.values[name])  # type: ignore[index]
            ax.plot(xs, [*u, y], color=cmap(y), alpha=0.8, lw=1.2)
        elif t.status in ("failed", "abandoned"):
            ax.plot(xs[:-1], u, color="tab:red", alpha=0.5, lw=1, ls="--")
    ax.set_xticks(xs, [p.name for p in params] + [name], rotation=20, fontsize=8, ha="right")
    for i, p in enumerate(params):
        ax.axvline(i, color="k", lw=0.5)
        if p.is_numeric:
            lo, hi = p.low, p.high
            ax.text(i, -0.06, f"{lo:g}", ha="center", va="top", fontsize=7)
            ax.text(i, 1.04, f"{hi:g}", ha="center", va="bottom", fontsize=7)
        else:
            for k, c in enumerate(p.choices):
                ax.text(i + 0.04, k / max(len(p.choices) - 1, 1), str(c), fontsize=7, va="center")
    ax.axvline(len(params), color="k", lw=0.5)
    ax.set_ylim(-0.12, 1.12)
    ax.set_yticks([])
    fig.colorbar(__import__("matplotlib.cm", fromlist=["ScalarMappable"]).ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=name)
    ax.set_title(f"{cfg.name}: trials in parallel coordinates (dashed red: failed)")
    fig.savefig(path)
    return path


# ---------------------------------------------------------------------------- markdown
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _markdown(path: Path, cfg: CampaignConfig, outcomes: Outcomes, trials: list[TrialRecord], ratings: dict[int, float],
              notes: list[Any], meta: dict[str, Any], plots: dict[str, Path], best: TrialRecord | None) -> Path:
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    names = list(cfg.objectives)
    lines = [
        f"# Campaign report: {cfg.name}",
        "",
        cfg.description.strip(),
        "",
        f"- written: {time.strftime('%Y-%m-%d %H:%M:%S')}",
        f"- strategy: `{cfg.optimizer.strategy}`, seed {cfg.seed}, batch {cfg.batch_size}, in flight {cfg.max_in_flight}",
        f"- executor: `{cfg.executor.type}` {cfg.executor.target or ''}",
        f"- objectives: {', '.join(f'{k} ({v})' for k, v in cfg.objectives.items())}"
        + (f"; constraints: {', '.join(cfg.outcome_constraints)}" if cfg.outcome_constraints else ""),
        f"- experiments: {sum(t.started for t in trials)} of {cfg.budget.experiments}; "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
        f"- state: {meta.get('state')}, stop reason: {meta.get('stop_reason') or '-'}, active time {float(meta.get('elapsed_s') or 0):.1f} s",
        f"- config hash: `{meta.get('config_hash', '')[:12]}`",
        "",
        "## Incumbent",
        "",
    ]
    if best is None:
        lines.append("No feasible completed trial yet.")
    else:
        lines.append(f"Trial {best.id} ({best.source}): " + ", ".join(f"{n} = {_fmt(best.values[n])}" for n in names))  # type: ignore[index]
        lines += ["", "| parameter | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in best.params.items()]
    done = [t for t in trials if t.status == "completed"]
    first, direction = names[0], cfg.objectives[names[0]]
    done.sort(key=lambda t: t.values[first], reverse=direction == "maximize")  # type: ignore[index]
    pnames = list(trials[0].params) if trials else []
    lines += ["", "## Top trials", "", "| trial | " + " | ".join(names) + " | feasible | rating | " + " | ".join(pnames) + " |",
              "|---" * (len(names) + 3 + len(pnames)) + "|"]
    for t in done[:10]:
        lines.append(f"| {t.id} | " + " | ".join(_fmt(t.values[n]) for n in names)  # type: ignore[index]
                     + f" | {'yes' if outcomes.feasible(t.values) else 'no'} | {_fmt(ratings.get(t.id, '-'))} | "
                     + " | ".join(_fmt(t.params[p]) for p in pnames) + " |")
    bad = [t for t in trials if t.status in ("failed", "abandoned")]
    if bad:
        lines += ["", "## Failed and abandoned trials", ""]
        lines += [f"- trial {t.id} ({t.status}): {t.error}" for t in bad]
    if notes:
        lines += ["", "## Operator feedback", ""]
        lines += [f"- trial {n.trial_id}: rating {n.rating}" + (f", \"{n.note}\"" if n.note else "")
                  + (f" ({n.author})" if n.author else "") for n in notes]
    lines += ["", "## Plots", ""]
    lines += [f"![{k}]({p.name})" for k, p in plots.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
