"""The ``cryoopt`` command.

Commands::

    cryoopt run CONFIG [--dir DIR] [--set KEY=VALUE ...]   start or continue a campaign
    cryoopt resume DIR [--budget N]         continue a campaign with the config in its journal
    cryoopt status DIR [--json] [--watch]   recommended protocol, trials, in flight
    cryoopt serve DIR [--port P]            live campaign page in a browser (needs the [ui] extra)
    cryoopt report DIR [--out OUT]          plots (PNG) and report.md
    cryoopt feedback DIR TRIAL --rating 1-5 [--note TEXT]
    cryoopt inject DIR NAME=VALUE ...       queue a trial with your own params
    cryoopt suggest DIR [-n N] [--json]     manual loop: get the next trial(s) to run by hand
    cryoopt tell DIR TRIAL VALUE            manual loop: enter a result (number, JSON dict, or 'fail[:reason]')
    cryoopt validate CONFIG                 check a config (as `run` would) and print it resolved

Exit codes (stable, for scripts):

====  =====================================================================
0     success (campaign finished: budget, target, patience or wall time)
1     unexpected internal error (a bug: please report it with the traceback)
2     command-line usage error
3     invalid config (message: ``file:line: field: problem``, one line per problem);
      ``validate`` refuses exactly what ``run`` would, and a refused ``run`` leaves
      no journal behind (or the existing one untouched)
4     journal problem: no campaign here, another campaign's journal, incompatible
      config, directory not writable, campaign in use by another process
5     invalid input: unknown or already finished trial, rating out of range,
      parameter value outside the space or given twice, malformed value (``tell``
      takes finite numbers; write ``fail:reason`` to record a failed experiment)
130   stopped by the operator (Ctrl-C/SIGTERM); the journal is resumable
====  =====================================================================

Errors go to stderr as ``cryoopt: error: ...``; nothing is written to the journal
when a command fails on bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_JOURNAL = 4
EXIT_INPUT = 5
EXIT_STOPPED = 130

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cryoopt", description="Closed-loop optimization campaigns for CLEM sample preparation.",
                                epilog="exit codes: 0 ok, 1 internal error, 2 usage, 3 invalid config, 4 journal problem, "
                                       "5 invalid input, 130 stopped by the operator")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="start or continue a campaign from a config")
    r.add_argument("config", type=Path)
    r.add_argument("--dir", type=Path, default=None, help="campaign directory (default runs/<name>)")
    r.add_argument("-q", "--quiet", action="store_true", help="no line per trial")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set budget.experiments=4 --set seed=3 (VALUE read as YAML)")

    r = sub.add_parser("resume", help="continue a campaign with the config stored in its journal")
    r.add_argument("dir", type=Path)
    r.add_argument("--budget", type=int, default=None, help="new experiment budget (extend a finished campaign)")
    r.add_argument("-q", "--quiet", action="store_true", help="no line per trial")

    r = sub.add_parser("status", help="recommended protocol, trials, in flight")
    r.add_argument("dir", type=Path)
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.add_argument("--all", action="store_true", help="list every trial (default: the last 20)")
    r.add_argument("--watch", nargs="?", type=float, const=5.0, default=None, metavar="SECONDS",
                   help="redraw every SECONDS (default 5) until Ctrl-C")

    r = sub.add_parser("serve", help="live campaign page: trials, plots, section images, rate/inject/pause")
    r.add_argument("dir", type=Path)
    r.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    r.add_argument("--port", type=int, default=8765)

    r = sub.add_parser("report", help="write plots and a Markdown summary")
    r.add_argument("dir", type=Path)
    r.add_argument("--out", type=Path, default=None, help="output folder (default DIR/report)")

    r = sub.add_parser("feedback", help="rate a trial 1-5 (allowed while the campaign runs)")
    r.add_argument("dir", type=Path)
    r.add_argument("trial", type=int, help="trial id (the first column of `cryoopt status`)")
    r.add_argument("--rating", type=int, required=True, help="1 (unusable) to 5 (excellent)")
    r.add_argument("--note", default=None, help="free text stored with the rating")
    r.add_argument("--author", default=None, help="who rated (default: none recorded)")

    r = sub.add_parser("inject", help="queue a trial with your own params (NAME=VALUE ...)")
    r.add_argument("dir", type=Path)
    r.add_argument("params", nargs="+", metavar="NAME=VALUE", help="every parameter of the space, e.g. dilution=200")

    r = sub.add_parser("suggest", help="manual loop: trial(s) to run by hand")
    r.add_argument("dir", type=Path)
    r.add_argument("-n", type=int, default=1, help="how many trials to hand out (default 1)")
    r.add_argument("--json", action="store_true", help="machine-readable output")

    r = sub.add_parser("tell", help="manual loop: enter the result of a trial")
    r.add_argument("dir", type=Path)
    r.add_argument("trial", type=int)
    r.add_argument("value", help="a number, a JSON object of objectives/metrics, or 'fail[:reason]'")

    r = sub.add_parser("validate", help="check a config; print it with defaults filled in")
    r.add_argument("config", type=Path)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cryoopt`` command; returns the exit code."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args = _parser().parse_args(argv)
    from cryoopt.exceptions import ConfigError, CryoOptError, JournalError

    try:
        return _COMMANDS[args.command](args)
    except ConfigError as err:
        return _fail(err, EXIT_CONFIG)
    except JournalError as err:
        return _fail(err, EXIT_JOURNAL)
    except CryoOptError as err:  # TrialError, ParameterError, StateError, ...
        return _fail(err, EXIT_INPUT)
    except KeyboardInterrupt:
        print("cryoopt: aborted; trials in flight stay 'running' and follow the crash rule on resume", file=sys.stderr)
        return EXIT_STOPPED
    except BrokenPipeError:
        return EXIT_OK
    except sqlite3.Error as err:  # a journal the library could not read or write
        return _fail(JournalError(f"journal error: {err} (is the campaign directory writable, the disk full?)"), EXIT_JOURNAL)


def _fail(err: Exception, code: int) -> int:
    print(f"cryoopt: error: {err}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------------- commands
def _run(args: argparse.Namespace) -> int:
    from cryoopt.campaign import Campaign
    from cryoopt.config import load_config

    campaign = Campaign(load_config(args.config, overrides=_overrides(args.overrides)), args.dir, progress=not args.quiet)
    return _finish(campaign.run())


def _overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["budget.experiments=4", "seed=3"]`` -> ``{"budget.experiments": 4, "seed": 3}`` (values read as YAML)."""
    import yaml

    from cryoopt.exceptions import ConfigError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes KEY=VALUE (e.g. budget.experiments=4), got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: cannot read the value as YAML ({err})") from None
    return out


def _resume(args: argparse.Namespace) -> int:
    from cryoopt.campaign import Campaign
    from cryoopt.config import CampaignConfig
    from cryoopt.exceptions import TrialError

    campaign = Campaign.open(args.dir, progress=not args.quiet)
    if args.budget is not None:
        if args.budget < 1:
            raise TrialError(f"--budget must be a positive number of experiments, got {args.budget}")
        data = campaign.config.model_dump(mode="json")
        data["budget"]["experiments"] = args.budget
        campaign = type(campaign)(CampaignConfig.from_dict(data), args.dir, progress=not args.quiet)
    return _finish(campaign.run())


def _finish(summary: Any) -> int:
    if summary.report.get("summary"):
        print(f"report: {summary.report['summary']}")
    return EXIT_STOPPED if summary.stop_reason == "operator" else EXIT_OK


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def _status(args: argparse.Namespace) -> int:
    if args.watch is None:
        return _status_once(args)
    import time

    if args.watch <= 0:
        from cryoopt.exceptions import TrialError

        raise TrialError(f"--watch takes a positive number of seconds, got {args.watch}")
    while True:  # Ctrl-C ends it (exit code 130, nothing to resume)
        text = _capture(lambda: _status_once(args))
        print("\033[2J\033[H" + time.strftime("%H:%M:%S") + f"  (every {args.watch:g} s, Ctrl-C to stop)\n" + text,
              end="", flush=True)
        time.sleep(args.watch)


def _capture(fn: Any) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        fn()
    return buf.getvalue()


def _status_once(args: argparse.Namespace) -> int:
    from cryoopt.campaign import Campaign
    from cryoopt.campaign.recommendation import recommend

    campaign = Campaign.open(args.dir, progress=False)
    st = campaign.status()
    names = list(st.objectives)
    rec = recommend(campaign.config, st.trials)
    if args.json:
        print(json.dumps({
            "name": st.name, "state": st.state, "stop_reason": st.stop_reason, "counts": st.counts,
            "started": st.started, "budget": st.budget, "elapsed_s": st.elapsed_s, "queued_requests": st.queued_requests,
            "recommendation": None if rec is None else rec.to_dict(),
            "operator_paused": bool(campaign.journal.meta("operator_paused", False)),
            "best": None if st.best is None else {"trial": st.best.id, "values": st.best.values, "params": st.best.params},
            "in_flight": [r.id for r in st.in_flight], "paused": st.paused,
        }))
        return EXIT_OK
    c = st.counts
    paused = bool(campaign.journal.meta("operator_paused", False))
    print(f"campaign {st.name}  ({st.directory})  state: {st.state}" + (f", stopped: {st.stop_reason}" if st.stop_reason else "")
          + (", PAUSED (no new trial starts until unpaused)" if paused else ""))
    print(f"experiments {st.started}/{st.budget}   completed {c['completed']}  failed {c['failed']}  "
          f"abandoned {c['abandoned']}  in flight {c['running']}  queued {c['proposed'] + st.queued_requests}   "
          f"active time {st.elapsed_s:.1f} s")
    if rec is not None:
        print("recommended: " + rec.summary(names))
        print("             " + ", ".join(f"{k}={_fmt(v)}" for k, v in rec.params.items()))
    else:
        print("recommended: - (no feasible completed trial yet)")
    label = "best observed" if len(names) == 1 else "Pareto compromise"
    if st.best is not None:
        print(f"{label}: trial {st.best.id}  " + "  ".join(f"{n}={_fmt(st.best.values[n])}" for n in names)
              + "  (one run)")
    if st.paused:
        print(f"paused: {st.paused} (starts no trial until the bench clears it; resumes by itself)")
    if campaign.journal.meta("operator_paused", False):
        print("paused by the operator (no new trial starts until unpaused)")
    if st.in_flight:
        print("in flight: " + ", ".join(f"trial {r.id}" for r in st.in_flight))
    rows = st.trials if args.all else st.trials[-20:]
    if not rows:
        return EXIT_OK
    pnames = list(rows[0].params)
    why = any(r.status in ("failed", "abandoned") for r in rows)  # a column for the reasons, when there are any
    header = ["trial", "status", "source", *names, "time_s", "rating", *pnames] + (["why"] if why else [])
    table = [header]
    for r in rows:
        table.append([str(r.id), r.status, r.source, *[_fmt((r.values or {}).get(n)) for n in names],
                      _fmt(r.duration_s), _fmt(st.ratings.get(r.id)), *[_fmt(r.params[p]) for p in pnames]]
                     + ([_why(r.error) if r.status in ("failed", "abandoned") else ""] if why else []))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print()
    for k, row in enumerate(table):
        mark = "*" if k and rec is not None and row[0] in {str(i) for i in rec.trial_ids} else " "
        print(mark + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if len(rows) < len(st.trials):
        print(f"  ... {len(st.trials) - len(rows)} earlier trials (--all lists them)")
    if rec is not None:
        print("(* runs of the recommended protocol)")
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from cryoopt.campaign.journal import Journal
    from cryoopt.exceptions import JournalError

    if not Journal.exists(args.dir):
        Journal.open(args.dir, readonly=True)  # raises the journal's own error (no directory / no journal)
    try:
        from cryoopt.ui import serve
    except ImportError as err:
        raise JournalError(f"cryoopt serve needs the web extra: pip install 'cryoopt[ui]' ({err})") from None
    serve(args.dir, host=args.host, port=args.port)
    return EXIT_OK


def _why(error: str | None, width: int = 70) -> str:
    """A failure's reason on one table line."""
    text = " ".join((error or "-").split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _report(args: argparse.Namespace) -> int:
    from cryoopt.campaign.report import write_report
    from cryoopt.campaign.runner import Campaign
    from cryoopt.exceptions import JournalError

    campaign = Campaign.open(args.dir, progress=False)
    if args.out is not None:
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise JournalError(f"cannot write the report to {args.out}: {err.strerror or err}; choose a writable --out") from None
    paths = write_report(args.dir, config=campaign.config, out_dir=args.out)
    for name, p in paths.items():
        print(f"{name}: {p}")
    return EXIT_OK


def _feedback(args: argparse.Namespace) -> int:
    from cryoopt.campaign import Campaign

    campaign = Campaign.open(args.dir, progress=False)
    fid = campaign.feedback(args.trial, args.rating, args.note, author=args.author)
    mode = campaign.config.feedback.mode
    print(f"feedback {fid} stored: trial {args.trial} rated {args.rating}"
          + (" (blended into the objective at the next step)" if mode == "blend" else " (recorded)"))
    return EXIT_OK


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _inject(args: argparse.Namespace) -> int:
    from cryoopt.campaign import Campaign
    from cryoopt.exceptions import ParameterError

    params: dict[str, Any] = {}
    for item in args.params:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ParameterError(f"write parameters as NAME=VALUE, got {item!r}")
        if name in params:
            raise ParameterError(f"parameter {name!r} is given twice; give each parameter once")
        params[name] = _parse_value(value.strip())
    campaign = Campaign.open(args.dir, progress=False)
    rid = campaign.inject(params)
    print(f"request {rid} queued: the campaign runs these params next")
    return EXIT_OK


def _suggest(args: argparse.Namespace) -> int:
    from cryoopt.campaign import Campaign
    from cryoopt.exceptions import TrialError

    if args.n < 1:
        raise TrialError(f"-n must be at least 1, got {args.n}")
    campaign = Campaign.open(args.dir, progress=False)
    trials = campaign.suggest(args.n)
    if args.json:
        print(json.dumps([{"trial": t.id, "params": t.params} for t in trials]))
    for t in trials if not args.json else []:
        print(f"trial {t.id}: " + "  ".join(f"{k}={_fmt(v)}" for k, v in t.params.items()))
    if not trials:
        print("cryoopt: the experiment budget is spent; nothing to suggest", file=sys.stderr)
    return EXIT_OK


def _tell(args: argparse.Namespace) -> int:
    from cryoopt.campaign import Campaign
    from cryoopt.exceptions import TrialError
    from cryoopt.optim.trial import Failure

    text = args.value.strip()
    value: Any
    if re.fullmatch(r"(?is)fail(ed)?\s*(:.*)?", text):
        value = Failure(text.partition(":")[2].strip() or "failed (told by the operator)")
    else:
        value = _parse_value(text)
        if not isinstance(value, (int, float, dict)) or isinstance(value, bool):
            raise TrialError(f"cannot read {args.value!r} as a result: give a number, a JSON object, or 'fail[:reason]'")
        bad = [v for v in ([value] if not isinstance(value, dict) else value.values())
               if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise TrialError(f"{args.value!r} holds {bad[0]}, not a finite number; to record a failed experiment, "
                             "write 'fail:reason'")
    campaign = Campaign.open(args.dir, progress=False)
    rec = campaign.tell(args.trial, value, strict=True)
    print(f"trial {rec.id} {rec.status}" + (f": {rec.values}" if rec.values else f" ({rec.error})"))
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    from cryoopt.campaign.checks import check_config
    from cryoopt.config import load_config

    cfg = load_config(args.config)
    check_config(cfg)  # what `run` would refuse: strategy, options, executor, target, result keys
    print(cfg.to_yaml(), end="")
    print(f"# config ok; identity hash {cfg.config_hash()[:12]}", file=sys.stderr)
    return EXIT_OK


_COMMANDS = {
    "run": _run, "resume": _resume, "status": _status, "report": _report, "feedback": _feedback,
    "inject": _inject, "suggest": _suggest, "tell": _tell, "validate": _validate, "serve": _serve,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
