"""Campaign report: PNG plots and a Markdown summary, from the journal alone.

Everything is read from the journal; the protocol the report recommends is the one
:mod:`cryoopt.campaign.recommendation` picks (the same as ``cryoopt status``, the progress
lines, MLflow and ``cryoopt serve``). Plots (matplotlib, written to ``<dir>/report/``),
with units from the config:

* ``convergence.png``: every observation of the first objective against experiments
  (replicates of one protocol as diamonds), the best single observation so far, and
  the recommended protocol's expected value with its 95 % interval and the
  *single-run spread* (±2 σ of the observation noise, σ estimated as the RMS
  residual of the GP: where one more run of that protocol would land 95 % of the time);
* ``pareto.png`` (several objectives): the first two objectives, the Pareto front of
  single observations, the balanced compromise, outcome-constraint bounds and the
  recommendation (expected values with 95 % intervals);
* ``effects.png``: GP posterior slices (mean and 95 % band, clipped to the physical
  range) through the recommended protocol, one panel per parameter and objective; the
  GP is fitted to the journal's trials with the config's settings, whatever strategy
  ran the campaign;
* ``parallel.png``: parallel coordinates of all trials (one labelled axis per
  parameter, with its range and unit, and one for the first objective), the
  recommended protocol drawn on top.

``report.md`` starts with the recommendation, then the best observed trial, counts,
top trials, failures and operator notes.

A plot is drawn only when its inputs changed: each is a function of the config and the
journal's trials, whose SHA-256 (with the library and matplotlib versions) is kept in
``<dir>/report/.plot_keys.json``; a report rebuilt on an unchanged journal (a campaign
rerun with nothing left to do) keeps the PNGs it has and rewrites only ``report.md``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from cryoopt.campaign.journal import Journal, TrialRecord
from cryoopt.campaign.outcomes import Outcomes, config_from_journal
from cryoopt.campaign.recommendation import Recommendation, fit_model, recommend, units
from cryoopt.config import _OUTCOME, CampaignConfig
from cryoopt.progress import Progress

_PLOT_KEYS = ".plot_keys.json"

__all__ = ["axis_label", "recommendation_lines", "slice_grid", "write_report"]


def write_report(directory: str | Path, *, config: CampaignConfig | None = None,
                 out_dir: str | Path | None = None, optimizer: Any = None) -> dict[str, Path]:
    """Write the plots and ``report.md`` for the campaign in ``directory``; returns ``{name: path}``.

    ``optimizer``: the running campaign's optimizer, whose fitted GP is reused when it has one.
    """
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
    n_plots = 3 + (len(cfg.objectives) >= 2)
    key = _plot_inputs_key(cfg, trials)
    stored = _read_plot_keys(out)
    plots = ["convergence", "effects", "parallel"] + (["pareto"] if len(cfg.objectives) >= 2 else [])
    fresh = {name for name in plots if stored.get(name) == key and (out / f"{name}.png").is_file()}
    with Progress(f"writing the report to {out}", total=n_plots + 2, unit="parts") as progress:
        model = fit_model(cfg, trials, optimizer=optimizer)
        rec = recommend(cfg, trials, model=model, fit=False)
        progress.update()
        best = outcomes.best(trials)
        paths: dict[str, Path] = {}

        def plot(name: str, draw: Any, *args: Any) -> None:
            path = out / f"{name}.png"
            paths[name] = path if name in fresh else draw(path, *args)
            stored[name] = key

        plot("convergence", _convergence, cfg, outcomes, trials, model, rec)
        progress.update()
        if len(cfg.objectives) >= 2:
            plot("pareto", _pareto, cfg, outcomes, trials, rec, best)
            progress.update()
        if model is not None and rec is not None:
            plot("effects", _effects, cfg, space, model, rec, trials)
        progress.update()
        plot("parallel", _parallel, cfg, space, trials, rec)
        progress.update()
        (out / _PLOT_KEYS).write_text(json.dumps({k: v for k, v in stored.items() if k in paths}, indent=1))
        paths["summary"] = _markdown(out / "report.md", cfg, outcomes, trials, ratings, notes, meta, paths, best, rec)
        progress.update()
    return paths


# ---------------------------------------------------------------------------- helpers
def _plot_inputs_key(cfg: CampaignConfig, trials: list[TrialRecord]) -> str:
    """SHA-256 of everything the plots are drawn from: the config, the trials (without the
    MLflow bookkeeping flag) and the versions of the code that draws them."""
    import matplotlib

    from cryoopt import __version__

    rows = [{k: v for k, v in asdict(t).items() if k != "tracked"} for t in trials]
    text = json.dumps({"config": cfg.model_dump(mode="json"), "trials": rows,
                       "versions": [__version__, matplotlib.__version__]}, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def _read_plot_keys(out: Path) -> dict[str, str]:
    """The input keys of the plots already in ``out`` (empty when missing or unreadable: all are drawn)."""
    try:
        keys = json.loads((out / _PLOT_KEYS).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in keys.items()} if isinstance(keys, dict) else {}


def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=110, layout="constrained")


def axis_label(cfg: CampaignConfig, name: str, *, direction: bool = False) -> str:
    """``name (unit)``, with ``, maximize`` when asked: ``prep_time_h (h, minimize)``."""
    unit = units(cfg).get(name)
    bits = [b for b in (unit, cfg.objectives.get(name) if direction else None) if b]
    return f"{name} ({', '.join(bits)})" if bits else name


def _nonnegative(trials: list[TrialRecord], name: str) -> bool:
    vals = [t.values[name] for t in trials if t.status == "completed" and t.values and name in t.values]
    return bool(vals) and min(vals) >= 0


def _replicated_ids(trials: list[TrialRecord]) -> set[int]:
    """Completed trials whose protocol ran more than once."""
    import json

    groups: dict[str, list[int]] = {}
    for t in trials:
        if t.status == "completed":
            groups.setdefault(json.dumps(t.params, sort_keys=True, default=str), []).append(t.id)
    return {i for ids in groups.values() if len(ids) > 1 for i in ids}


def _readable_log_axis(axis: Any) -> None:
    """Log axis with plain major labels at 1-2-5 steps and no minor labels (none overlap)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=6))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _noise_sd(model: Any, trials: list[TrialRecord], name: str, k: int) -> float | None:
    done = [t for t in trials if t.status == "completed" and t.values and name in t.values]
    if model is None or len(done) < 3:
        return None
    mean, _ = model.predict([t.params for t in done])
    resid = np.array([t.values[name] for t in done]) - mean[:, k]  # type: ignore[index]
    return float(np.sqrt(np.mean(resid**2)))


# ---------------------------------------------------------------------------- plots
def _convergence(path: Path, cfg: CampaignConfig, outcomes: Outcomes, trials: list[TrialRecord], model: Any,
                 rec: Recommendation | None) -> Path:
    name, direction = next(iter(cfg.objectives.items()))
    sign = 1.0 if direction == "maximize" else -1.0
    started = sorted((t for t in trials if t.started_at is not None), key=lambda t: (t.started_at or 0.0, t.id))
    fig = _figure(7.5, 4.4)
    ax = fig.add_subplot()
    xs, best_line = [], []
    best_val = -math.inf
    for k, t in enumerate(started, start=1):
        if t.status == "completed" and outcomes.feasible(t.values) and sign * t.values[name] > best_val:  # type: ignore[index]
            best_val = sign * t.values[name]  # type: ignore[index]
        xs.append(k)
        best_line.append(sign * best_val if math.isfinite(best_val) else np.nan)
    reps = _replicated_ids(trials)
    obs = [(k, t) for k, t in enumerate(started, start=1) if t.status == "completed" and name in (t.values or {})]
    groups = {
        "observed (feasible)": ([(k, t) for k, t in obs if outcomes.feasible(t.values) and t.id not in reps],
                                dict(marker="o", color="tab:blue")),
        "observed, replicated protocol": ([(k, t) for k, t in obs if outcomes.feasible(t.values) and t.id in reps],
                                          dict(marker="D", color="tab:purple")),
        "observed, violates a constraint": ([(k, t) for k, t in obs if not outcomes.feasible(t.values)],
                                            dict(marker="o", facecolors="none", edgecolors="tab:gray")),
    }
    for label, (pts, style) in groups.items():
        if pts:
            ax.scatter([k for k, _ in pts], [t.values[name] for _, t in pts], s=24, alpha=0.8, label=label,  # type: ignore[index]
                       zorder=3, **style)
    ax.step(xs, best_line, where="post", color="tab:orange", lw=1.5,
            label="best single observation so far (may be a lucky specimen)")
    floor = 0.0 if _nonnegative(trials, name) else -math.inf
    if rec is not None:
        exp = rec.expected[name]
        ax.axhline(exp, color="k", lw=1.5, label=f"recommended protocol (trial {rec.trial_id}): expected {exp:.3g}")
        iv = rec.interval.get(name)
        if iv:
            ax.axhspan(iv[0], iv[1], color="k", alpha=0.12, label="95 % interval of its expected value")
        sd = _noise_sd(model, trials, name, 0)
        if sd:
            lo, hi = max(exp - 2 * sd, floor), exp + 2 * sd
            ax.axhline(lo, color="k", ls=":", lw=1)
            ax.axhline(hi, color="k", ls=":", lw=1, label=f"single-run spread (±2σ noise, σ≈{sd:.2g}): where one more run lands")
        ids = set(rec.trial_ids)
        ks = [k for k, t in obs if t.id in ids]
        ax.scatter(ks, [t.values[name] for k, t in obs if t.id in ids], s=110, marker="*", color="k", zorder=4,  # type: ignore[index]
                   label="runs of the recommended protocol")
    failed = [k for k, t in enumerate(started, start=1) if t.status in ("failed", "abandoned")]
    if failed:
        lo = ax.get_ylim()[0]
        ax.scatter(failed, [lo] * len(failed), marker="x", color="tab:red", label="failed / abandoned", zorder=4, clip_on=False)
    if cfg.stopping.target is not None and not isinstance(cfg.stopping.target, dict):
        ax.axhline(float(cfg.stopping.target), color="tab:green", ls="--", lw=1, label=f"target {float(cfg.stopping.target):g}")
    if math.isfinite(floor):
        ax.set_ylim(bottom=min(floor, ax.get_ylim()[0]) if ax.get_ylim()[0] < floor else ax.get_ylim()[0])
        lo, hi = ax.get_ylim()
        ax.set_ylim(max(lo, floor - 0.02 * (hi - lo)), hi)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("experiment (trials in the order they started)")
    ax.set_ylabel(axis_label(cfg, name, direction=True))
    ax.set_title(f"{cfg.name}: convergence")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.set_size_inches(10.5, 4.4)
    fig.savefig(path)
    return path


def _pareto(path: Path, cfg: CampaignConfig, outcomes: Outcomes, trials: list[TrialRecord],
            rec: Recommendation | None, best: TrialRecord | None) -> Path:
    (n1, d1), (n2, d2) = list(cfg.objectives.items())[:2]
    s1, s2 = (1 if d1 == "maximize" else -1), (1 if d2 == "maximize" else -1)
    done = [t for t in trials if t.status == "completed"]
    feas = [t for t in done if outcomes.feasible(t.values)]
    pts = [(s1 * t.values[n1], s2 * t.values[n2]) for t in feas]  # type: ignore[index]
    front = [t for t, p in zip(feas, pts) if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in pts)]
    reps = _replicated_ids(trials)
    fig = _figure(7.5, 4.8)
    ax = fig.add_subplot()
    other = [t for t in done if t not in feas]
    if other:
        ax.scatter([t.values[n1] for t in other], [t.values[n2] for t in other], s=20, facecolors="none",  # type: ignore[index]
                   edgecolors="tab:gray", label="violates a constraint")
    single = [t for t in feas if t.id not in reps]
    multi = [t for t in feas if t.id in reps]
    if single:
        ax.scatter([t.values[n1] for t in single], [t.values[n2] for t in single], s=20, color="tab:blue", alpha=0.6,  # type: ignore[index]
                   label="observed")
    if multi:
        ax.scatter([t.values[n1] for t in multi], [t.values[n2] for t in multi], s=26, marker="D", color="tab:purple",  # type: ignore[index]
                   alpha=0.7, label="observed, replicated protocol")
    if front:
        front.sort(key=lambda t: t.values[n1])  # type: ignore[index]
        ax.plot([t.values[n1] for t in front], [t.values[n2] for t in front], "o-", color="tab:orange", ms=4, lw=1,  # type: ignore[index]
                drawstyle="steps-post" if s1 * s2 < 0 else "steps-pre", label="Pareto front of single observations")
        for t in front:
            ax.annotate(str(t.id), (t.values[n1], t.values[n2]), fontsize=7, xytext=(3, 3), textcoords="offset points")  # type: ignore[index]
    if best is not None:
        ax.scatter([best.values[n1]], [best.values[n2]], s=90, facecolors="none", edgecolors="tab:orange", lw=2,  # type: ignore[index]
                   label=f"balanced Pareto compromise (trial {best.id}, one observation)", zorder=4)
    for text in cfg.outcome_constraints:
        m = _OUTCOME.fullmatch(text)
        if m and m.group(1) in (n1, n2):
            bound = float(m.group(3))
            line = ax.axvline if m.group(1) == n1 else ax.axhline
            line(bound, color="tab:red", ls="--", lw=1, label=f"constraint {m.group(1)} {m.group(2)} {bound:g}")
    if rec is not None:
        x, y = rec.expected[n1], rec.expected[n2]
        ix, iy = rec.interval.get(n1), rec.interval.get(n2)
        xerr = [[x - ix[0]], [ix[1] - x]] if ix else None
        yerr = [[y - iy[0]], [iy[1] - y]] if iy else None
        ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="*", ms=14, color="k", capsize=3, zorder=5,
                    label=f"recommended (trial {rec.trial_id}): expected, 95 % interval")
    for name, axis in ((n1, "x"), (n2, "y")):
        if _nonnegative(trials, name):
            lo, hi = (ax.get_xlim() if axis == "x" else ax.get_ylim())
            (ax.set_xlim if axis == "x" else ax.set_ylim)(max(lo, -0.02 * (hi - max(lo, 0))), hi)
    ax.set_xlabel(axis_label(cfg, n1, direction=True))
    ax.set_ylabel(axis_label(cfg, n2, direction=True))
    ax.set_title(f"{cfg.name}: trade-off between {n1} and {n2}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.set_size_inches(10.5, 4.8)
    fig.savefig(path)
    return path


def slice_grid(p: Any, n: int = 41) -> list[Any]:
    """Values of parameter ``p`` for a slice plot: ``n`` points over its safety (else search) range, log-spaced
    on a log scale; every choice of a categorical."""
    if not p.is_numeric:
        return list(p.choices)
    lo, hi = p.safety if getattr(p, "safety", None) else (p.low, p.high)
    xs = np.geomspace(lo, hi, n) if p.log else np.linspace(lo, hi, n)
    if p.type_name == "int":
        return sorted({int(round(x)) for x in xs})
    return [float(x) for x in xs]


def _effects(path: Path, cfg: CampaignConfig, space: Any, model: Any, rec: Recommendation, trials: list[TrialRecord]) -> Path:
    import warnings

    names = list(cfg.objectives)[:2]
    params = list(space)
    ncols = min(4, len(params))
    prow = math.ceil(len(params) / ncols)
    fig = _figure(3.0 * ncols, 2.5 * prow * len(names) + 0.4)
    axes = fig.subplots(prow * len(names), ncols, squeeze=False)
    floors = {n: 0.0 if _nonnegative(trials, n) else -math.inf for n in names}
    for col_i, p in enumerate(params):
        grid = slice_grid(p)
        points = [{**rec.params, p.name: v} for v in grid]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mean, std = model.predict(points)
        for row_i, name in enumerate(names):
            ax = axes[row_i * prow + col_i // ncols][col_i % ncols]
            m, s = mean[:, row_i], std[:, row_i]
            lo, hi = np.maximum(m - 1.96 * s, floors[name]), m + 1.96 * s
            if p.is_numeric:
                ax.plot(grid, m, color="tab:blue")
                ax.fill_between(grid, lo, hi, color="tab:blue", alpha=0.2)
                ax.axvline(float(rec.params[p.name]), color="k", ls="--", lw=1)
                if p.log:
                    ax.set_xscale("log")
                    _readable_log_axis(ax.xaxis)
            else:
                xs = np.arange(len(grid))
                ax.errorbar(xs, m, yerr=[m - lo, hi - m], fmt="o", color="tab:blue", capsize=3)
                ax.set_xticks(xs, [str(g) for g in grid])
                ax.axvline(grid.index(rec.params[p.name]), color="k", ls="--", lw=1)
            ax.set_xlabel(axis_label(cfg, p.name), fontsize=8)
            if col_i % ncols == 0:
                ax.set_ylabel(axis_label(cfg, name), fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    for k in range(len(params), prow * ncols):  # empty cells of the last row
        for row_i in range(len(names)):
            axes[row_i * prow + k // ncols][k % ncols].set_visible(False)
    fig.suptitle(f"{cfg.name}: effect of each parameter, the others held at the recommended protocol "
                 f"(trial {rec.trial_id}, dashed)\nGP posterior mean and 95 % band", fontsize=9)
    fig.savefig(path)
    return path


def _parallel(path: Path, cfg: CampaignConfig, space: Any, trials: list[TrialRecord], rec: Recommendation | None) -> Path:
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    name = next(iter(cfg.objectives))
    params = list(space)
    done = [t for t in trials if t.status == "completed" and name in (t.values or {})]
    vals = np.array([t.values[name] for t in done]) if done else np.array([0.0])  # type: ignore[index]
    vmin, vmax = float(vals.min()), float(vals.max())
    if vmax <= vmin:
        vmax = vmin + 1.0
    norm = Normalize(vmin=vmin, vmax=vmax)
    cmap = colormaps["viridis"]
    fig = _figure(max(7.0, 1.3 * (len(params) + 1) + 1.5), 4.6)
    ax = fig.add_subplot()
    xs = np.arange(len(params) + 1)
    bounds = space.encoded_bounds()

    def coords(params_: dict[str, Any]) -> np.ndarray:
        return (np.asarray(space.encode(params_)) - bounds[0]) / np.where(bounds[1] > bounds[0], bounds[1] - bounds[0], 1)

    order = sorted(trials, key=lambda t: (t.status == "completed", (t.values or {}).get(name, -np.inf)))
    for t in order:
        u = coords(t.params)
        if t.status == "completed" and name in (t.values or {}):
            y = norm(t.values[name])  # type: ignore[index]
            ax.plot(xs, [*u, y], color=cmap(y), alpha=0.8, lw=1.2)
        elif t.status in ("failed", "abandoned"):
            ax.plot(xs[:-1], u, color="tab:red", alpha=0.5, lw=1, ls="--")
    if rec is not None:
        ax.plot(xs, [*coords(rec.params), norm(rec.expected[name])], color="k", lw=3, alpha=0.85,
                label=f"recommended protocol (trial {rec.trial_id}; last axis: expected {name})")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    labels = [axis_label(cfg, p.name) for p in params] + [axis_label(cfg, name, direction=True)]
    ax.set_xticks(xs, labels, rotation=20, fontsize=8, ha="right")
    for i, p in enumerate(params):
        ax.axvline(i, color="k", lw=0.5)
        if p.is_numeric:
            ax.text(i, -0.05, f"{p.low:g}", ha="center", va="top", fontsize=7)
            ax.text(i, 1.03, f"{p.high:g}" + (" (log)" if p.log else ""), ha="center", va="bottom", fontsize=7)
        else:
            for k, c in enumerate(p.choices):
                ax.text(i + 0.04, k / max(len(p.choices) - 1, 1), str(c), fontsize=7, va="center")
    ax.axvline(len(params), color="k", lw=0.5)
    ax.text(len(params), -0.05, f"{vmin:.3g}", ha="center", va="top", fontsize=7)
    ax.text(len(params), 1.03, f"{vmax:.3g}", ha="center", va="bottom", fontsize=7)
    ax.set_ylim(-0.12, 1.12)
    ax.set_yticks([])
    ax.set_ylabel("position in each parameter's range (low -> high)", fontsize=8)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=axis_label(cfg, name))
    ax.set_title(f"{cfg.name}: every trial's protocol, coloured by {name} (dashed red: failed)")
    fig.savefig(path)
    return path


# ---------------------------------------------------------------------------- markdown
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def recommendation_lines(cfg: CampaignConfig, rec: Recommendation | None) -> list[str]:
    """Markdown lines that present the recommendation (the report's first section)."""
    if rec is None:
        return ["No feasible completed trial yet: nothing to recommend."]
    u = units(cfg)
    how = ("a GP fitted to every completed trial: its posterior mean at this protocol, with the 95 % interval of that mean"
           if rec.basis == "model" else "the observed mean of its runs (too few trials for a GP)")
    lines = [f"Adopt the protocol of trial {rec.trial_id}"
             + (f" (run {rec.n_replicates} times: trials {', '.join(map(str, rec.trial_ids))}, pooled)" if rec.n_replicates > 1 else "")
             + f". Expected from {how}:", ""]
    lines += ["| objective | expected | 95 % interval | observed mean of its runs |", "|---|---|---|---|"]
    for n in cfg.objectives:
        iv = rec.interval.get(n)
        lines.append(f"| {axis_label(cfg, n, direction=True)} | {rec.expected[n]:.4g} | "
                     + (f"{iv[0]:.4g} to {iv[1]:.4g}" if iv else "-") + f" | {rec.observed[n]:.4g} |")
    if rec.target is not None:
        lines += ["", f"Target {rec.objective} {rec.target:g}: "
                  + ("expected to be reached" + (" (the best of the others among protocols expected to reach it)" if len(cfg.objectives) > 1 else "")
                     if rec.meets_target else "no protocol is expected to reach it yet; this is the best expected")]
    lines += ["", "| parameter | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)}{(' ' + u[k]) if k in u else ''} |" for k, v in rec.params.items()]
    return lines


def _markdown(path: Path, cfg: CampaignConfig, outcomes: Outcomes, trials: list[TrialRecord], ratings: dict[int, float],
              notes: list[Any], meta: dict[str, Any], plots: dict[str, Path], best: TrialRecord | None,
              rec: Recommendation | None) -> Path:
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
        "## Recommended protocol",
        "",
        *recommendation_lines(cfg, rec),
        "",
        "## Best single observation" + (" (balanced Pareto compromise)" if len(names) > 1 else ""),
        "",
    ]
    if best is None:
        lines.append("No feasible completed trial yet.")
    else:
        what = ("the Pareto-optimal trial with the most balanced objectives" if len(names) > 1
                else "the highest observed value" if cfg.objectives[names[0]] == "maximize" else "the lowest observed value")
        lines.append(f"Trial {best.id} ({best.source}, {what}; one run, so it may owe part of it to a lucky specimen): "
                     + ", ".join(f"{n} = {_fmt(best.values[n])}" for n in names))  # type: ignore[index]
    done = [t for t in trials if t.status == "completed"]
    first, direction = names[0], cfg.objectives[names[0]]
    done.sort(key=lambda t: t.values[first], reverse=direction == "maximize")  # type: ignore[index]
    pnames = list(trials[0].params) if trials else []
    lines += ["", "## Top trials", "", "| trial | source | " + " | ".join(names) + " | feasible | rating | " + " | ".join(pnames) + " |",
              "|---" * (len(names) + 4 + len(pnames)) + "|"]
    for t in done[:10]:
        lines.append(f"| {t.id} | {t.source} | " + " | ".join(_fmt(t.values[n]) for n in names)  # type: ignore[index]
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
