"""What a config can get wrong that only shows once it is put to use.

:func:`cryoopt.config.load_config` checks each field on its own; :func:`check_config`
checks the config against the code it names, without running a trial or touching an
instrument: the strategy exists and takes the optimizer options (types and ranges),
the executor type exists, its target imports and takes its options, its results carry
the objectives (where the executor declares them), and the space has room for a trial
under its constraints. ``cryoopt validate`` runs it, and so does every campaign start
*before* the journal is created or changed, so a config that ``validate`` passes is
one that ``run`` accepts, and a refused start leaves nothing behind.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Sequence
from typing import Any

from cryoopt.config import CampaignConfig
from cryoopt.exceptions import ConfigError, CryoOptError
from cryoopt.registry import Executor, option_problems

__all__ = ["check_config", "executor_problems", "optimizer_problems"]

Loc = tuple[Any, ...]

#: optimizer keywords the campaign sets itself, and where the config sets them
_RESERVED = {
    "space": "set by the campaign from `space`",
    "seed": "set by the campaign from the top-level `seed`",
    "objectives": "set by the campaign from `objectives`",
    "outcome_constraints": "set by the campaign from `outcome_constraints`",
}


#: strategies registered by a layer above ``optim`` (imported only when a config names them), so that
#: whether a strategy is known does not depend on what else the process imported first
_LAZY_STRATEGIES = {"manual_ofat": "cryoopt.loop.manual"}


def check_config(config: CampaignConfig, *, executor: Executor | None = None) -> None:
    """Refuse, with every problem and its ``file:line``, what a run of ``config`` would refuse.

    Args:
        executor: an executor object given to the campaign directly (its type's checks
            are skipped, its ``result_keys`` used).

    Raises:
        ConfigError: listing each problem as ``file:line: field.path: message``.
    """
    problems: list[tuple[Loc, str]] = list(config.problems())  # again: a config built without load_config
    if not problems:
        problems += _space_problems(config)
        problems += optimizer_problems(config)
    problems += executor_problems(config, executor)
    if problems:
        raise config.refuse(problems)


def _loc(path: str) -> Loc:
    return tuple(path.split(".")) if path else ()


def _space_problems(config: CampaignConfig) -> list[tuple[Loc, str]]:
    space = config.search_space()
    if not space.constraints:
        return []
    try:
        space.sample(1, rng=config.seed)
    except CryoOptError:
        return [(("space", "constraints"), "no parameter set meets all the constraints (tried 100 random draws); "
                                           "the feasible region is empty or tiny")]
    return []


def optimizer_problems(config: CampaignConfig) -> list[tuple[Loc, str]]:
    """The strategy exists and accepts ``optimizer.options`` (names, types, ranges).

    A strategy class may check its own options with a classmethod
    ``validate_options(options)`` raising ``ValueError``/``TypeError``; otherwise its
    constructor's signature is read: unknown keywords and wrong types are refused, a
    count whose default is >= 1 must be >= 1 and no number may be negative where the
    default is not; then the optimizer is built once on the config's space, which
    runs the strategy's own checks.
    """
    from cryoopt.optim import available_strategies, make_optimizer, strategy_class

    name, options = config.optimizer.strategy, config.optimizer.options
    if name in _LAZY_STRATEGIES:
        importlib.import_module(_LAZY_STRATEGIES[name])  # registers itself; heavy, so only when named
    if name not in available_strategies():
        known = sorted(set(available_strategies()) | set(_LAZY_STRATEGIES))
        return [(("optimizer", "strategy"), f"unknown strategy {name!r}; available: {', '.join(known)}")]
    cls = strategy_class(name)
    validate = getattr(cls, "validate_options", None)
    if callable(validate):
        try:
            validate(dict(options))
        except (TypeError, ValueError) as err:
            return [(("optimizer", "options"), str(err))]
        problems: list[tuple[Loc, str]] = []
    else:
        problems = [(_loc(p), m) for p, m in option_problems(cls, options, "optimizer.options", reserved=_RESERVED, skip=1)]
        problems += _range_problems(cls, options, {p[0][2] for p in problems if len(p[0]) > 2})
    if problems:
        return problems
    try:
        make_optimizer(name, config.search_space(), seed=config.seed, objectives=dict(config.objectives),
                       outcome_constraints=list(config.outcome_constraints), **options)
    except (TypeError, ValueError, CryoOptError) as err:
        return [(("optimizer", "options"), f"strategy {name!r} refuses the options: {err}")]
    return []


def _range_problems(cls: type, options: dict[str, Any], already: set[str]) -> list[tuple[Loc, str]]:
    """Counts (int options whose default is >= 1) must be >= 1; other numbers >= 0 where the default is."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return []
    out: list[tuple[Loc, str]] = []
    for key, value in options.items():
        p = params.get(key)
        if key in already or p is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        default = p.default
        is_count = isinstance(default, int) and not isinstance(default, bool) and default >= 1
        if is_count and value < 1:
            out.append((("optimizer", "options", key), f"must be >= 1 (default {default}), got {value}"))
        elif value < 0 and (default is None or (isinstance(default, (int, float)) and not isinstance(default, bool)
                                                and math.isfinite(default) and default >= 0)):
            out.append((("optimizer", "options", key), f"must be >= 0, got {value}"))
    return out


def executor_problems(config: CampaignConfig, executor: Executor | None = None) -> list[tuple[Loc, str]]:
    """The executor type exists, passes its own :meth:`~cryoopt.registry.Executor.check_config`,
    and its results carry every objective and constraint metric (where it declares its keys)."""
    from cryoopt.campaign.executors import executor_factory

    if executor is not None:
        keys = getattr(executor, "result_keys", None)
        problems: list[tuple[Loc, str]] = []
    else:
        try:
            factory = executor_factory(config.executor.type)
        except ConfigError as err:
            return [(("executor", "type"), str(err))]
        check = getattr(factory, "check_config", None)
        problems = [(_loc(p), m) for p, m in check(config)] if callable(check) else []
        keys = getattr(factory, "result_keys", None)
    if keys is not None:
        problems += _result_key_problems(config, keys)
    return problems


def _result_key_problems(config: CampaignConfig, keys: Sequence[str] | Any) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    keys = set(keys)
    for name in config.required_metrics:
        key = config.evaluation.metrics.get(name, name)
        if key not in keys:
            loc = ("evaluation", "metrics", name) if name in config.evaluation.metrics else (
                ("objectives", name) if name in config.objectives else ("outcome_constraints",))
            out.append((loc, f"the {config.executor.type!r} executor's results have no {key!r}; they carry: "
                             f"{', '.join(sorted(keys))} (map a name to one with evaluation.metrics)"))
    return out
