"""Campaign configs: pydantic models of the YAML a protocol engineer writes.

A config says *what* to optimize (search space, objectives, outcome constraints),
*how* (strategy, batch size, trials in flight, seed), *with what* (the executor that
runs a trial: a Python function now, simulated or real instruments later), *for how
long* (budget and stop conditions), and *where results go* (tracking, report).

Every model refuses unknown fields (a typo is an error, not a silently ignored
setting) and reads values strictly: ``"false"`` is not a boolean, ``true`` is not a
number, ``.nan`` and ``.inf`` are not numbers either. :func:`load_config` also refuses
what YAML itself lets through (a key given twice, non-UTF-8 bytes, alias bombs) and
reports every problem at once, each as ``file:line: field.path: what is wrong``.
What only shows when the config is put to use (the executor's target, the optimizer's
options, a feasible space) is checked by :func:`cryoopt.campaign.checks.check_config`,
which ``cryoopt validate`` and every campaign start run.

Example:
    >>> config = load_config("configs/sim_quick.yaml")
    >>> config.budget.experiments
    15

Two parts of a config play different roles on resume (see :meth:`CampaignConfig.identity`):
the *identity* (name, seed, space, objectives, constraints, optimizer, executor,
evaluation, reward, feedback) fixes what the journal's trials mean, so a journal
refuses to continue under a different identity; the *run settings* (budget, stop
conditions, batch size, trials in flight, tracking, report) may change between
sessions, e.g. to extend the budget; so may the executor's ``timeout_s`` and
``suspend_poll_s``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from cryoopt.exceptions import ConfigError, ParameterError

__all__ = [
    "BudgetConfig",
    "CampaignConfig",
    "EvaluationConfig",
    "ExecutorConfig",
    "FeedbackConfig",
    "OptimizerConfig",
    "ReportConfig",
    "RewardConfig",
    "SpaceConfig",
    "StoppingConfig",
    "TrackingConfig",
    "apply_overrides",
    "load_config",
    "parse_duration_s",
]

#: names of parameters and objectives: what a constraint expression, ``cryoopt inject NAME=VALUE``
#: and MLflow can all spell
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
#: objective / metric names may also address a nested result key (``scores.cnr``)
METRIC_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$"
#: a campaign config is a few kB; anything far larger is not one
MAX_CONFIG_BYTES = 1_000_000
#: values a config may expand to through YAML aliases (a few hundred in practice)
MAX_YAML_NODES = 100_000
#: the largest accepted seed (numpy and torch both take 32-bit seeds without surprises)
MAX_SEED = 2**32 - 1

_OUTCOME = re.compile(r"\s*([A-Za-z_]\w*)\s*(<=|>=)\s*([+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)\s*")
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?)\s*(s|sec|min|m|h|d)?\s*")
_UNIT_S = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration_s(value: Any) -> float | None:
    """``None``, a number of seconds, or a string such as ``"90 min"``, ``"2h"``, ``"45s"``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"a duration must be seconds or a string like '2h', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value)):
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise ValueError(f"cannot read duration {value!r}; write seconds (3600) or '90min', '2h', '45s', '1d'")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be a positive, finite number of seconds, got {value!r} (omit it for no limit)")
    return seconds


class _Model(BaseModel):
    # strict: a YAML string is never read as a bool or number, a bool never as a number
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class SpaceConfig(_Model):
    """The search space, as :meth:`cryoopt.space.SearchSpace.from_dict` reads it."""

    parameters: dict[str, dict[str, Any]] = Field(min_length=1)
    constraints: list[str | dict[str, Any]] = Field(default_factory=list)

    def problems(self) -> list[tuple[tuple[Any, ...], str]]:
        """What is wrong with each parameter and constraint, as ``(field path, message)``.

        Each parameter and constraint is built on its own, so every mistake is reported
        with its own line, not only the first one.
        """
        from cryoopt.space import LinearConstraint, SearchSpace

        out: list[tuple[tuple[Any, ...], str]] = []
        parameters = []
        for name, spec in self.parameters.items():
            if not re.fullmatch(NAME_PATTERN, name):
                out.append((("space", "parameters", name), f"parameter name {name!r}: use letters, digits and _ "
                                                           "(not starting with a digit), e.g. section_thickness_nm"))
                continue
            try:
                parameters += SearchSpace.from_dict({name: spec}).parameters
            except ParameterError as err:
                out.append((("space", "parameters", name), str(err)))
        constraints = []
        for i, c in enumerate(self.constraints):
            try:
                constraint = LinearConstraint.from_spec(c)
                if not out:  # names and kinds can be checked once every parameter is sound
                    SearchSpace(parameters, [constraint])
                constraints.append(constraint)
            except ParameterError as err:
                out.append((("space", "constraints", i), str(err)))
        if not out:
            try:
                SearchSpace(parameters, constraints)
            except ParameterError as err:
                out.append((("space",), str(err)))
        return out


class OptimizerConfig(_Model):
    """Which strategy proposes trials (``bo``, ``random``, ``sobol``) and its keyword options."""

    strategy: str = Field(default="bo", min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)


class BudgetConfig(_Model):
    """How much a campaign may spend: experiments started, and active wall time."""

    experiments: int = Field(gt=0, description="trials started on the executor (completed, failed or lost in a crash)")
    wall_time_s: float | None = Field(
        default=None, description="active run time over all sessions; seconds or '2h', '90min'"
    )

    @field_validator("wall_time_s", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float | None:
        return parse_duration_s(v)


class StoppingConfig(_Model):
    """Early stop conditions besides the budget."""

    target: float | dict[str, float] | None = Field(
        default=None, description="stop once a feasible trial reaches this value of the (first / named) objective(s)"
    )
    patience: int | None = Field(default=None, gt=0, description="stop after this many finished trials without improvement")
    min_improvement: float = Field(default=0.0, ge=0.0, description="smallest gain that counts as an improvement")

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, v: Any) -> Any:
        def finite(x: Any, what: str) -> float:
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                raise ValueError(f"{what} must be a finite number, got {x!r}")
            return float(x)

        if v is None:
            return None
        if isinstance(v, Mapping):
            return {str(k): finite(x, f"target of {k!r}") for k, x in v.items()}
        return finite(v, "target")


class ExecutorConfig(_Model):
    """What runs a trial. ``type`` names a registered executor (``function``, ``manual``, ...).

    ``function``: ``target`` is ``"module:callable"``; the callable gets the params dict
    (plus ``options`` as keyword arguments) and returns a float or a dict of results.
    If ``target`` names a class, it is instantiated with ``options`` and then called.
    ``idempotent`` says whether re-running a trial interrupted by a crash is harmless
    (true for pure functions and simulators, never for real instruments).

    ``timeout_s``: a trial still running after this long is interrupted and follows the
    crash rule (its result re-checked, re-run if idempotent, else abandoned), as if the
    process had died; the hung call is left behind on its own thread. ``suspend_poll_s``:
    how often a suspended bench (door open, reagent out, ...) is asked whether it may
    start trials again. Both are run settings (not part of the identity).

    ``ray``: the trials run on benches (Ray actors) of a cluster: ``bench`` is the
    executor each bench runs (any other type), ``address`` the cluster (``auto``,
    ``ray://host:10001``; default: a local one), ``options`` as
    :class:`cryoopt.scale.options.RayExecutorOptions` reads them.
    """

    type: str = Field(default="function", min_length=1)
    target: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    idempotent: bool | None = Field(default=None, description="default: the executor type's own declaration")
    timeout_s: float | None = Field(default=None, description="per-trial time limit; seconds or '2h', '90min'")
    suspend_poll_s: float = Field(default=5.0, gt=0.0, le=3600.0,
                                  description="seconds between checks of a suspended bench")
    bench: ExecutorConfig | None = Field(default=None, description="type ray: the executor each bench runs")
    address: str | None = Field(default=None, description="type ray: the Ray cluster to join (default: a local one)")

    @field_validator("timeout_s", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float | None:
        return parse_duration_s(v)

    @model_validator(mode="after")
    def _target(self) -> ExecutorConfig:
        if self.type == "function":
            if not isinstance(self.target, str) or not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", self.target):
                raise ValueError(
                    f"a function executor needs target: 'package.module:callable', got {self.target!r}"
                )
        if self.type == "ray":
            from cryoopt.scale.options import ray_options_error

            if self.bench is None or self.bench.type in ("ray", "manual"):
                raise ValueError("a ray executor needs bench: the executor each bench runs, e.g. "
                                 "{type: simulated_clem, options: {...}} (not ray or manual)")
            if self.idempotent is not None or self.target is not None:
                raise ValueError("set target and idempotent on executor.bench (the executor that runs the trials), "
                                 "not on ray")
            error = ray_options_error(self.options)
            if error:
                raise ValueError(error)
        elif self.bench is not None or self.address is not None:
            raise ValueError(f"bench and address belong to executor type ray, not {self.type!r}")
        return self

    def identity(self) -> dict[str, Any]:
        """What fixes the meaning of a trial (see :meth:`CampaignConfig.identity`).

        For ``ray`` it is the bench executor's: where, and on how many benches, trials
        run may change between sessions (a campaign started on threads may resume on a
        cluster, and the other way round).
        """
        if self.bench is not None:
            return self.bench.identity()
        return self.model_dump(mode="json", exclude={"bench", "address", "timeout_s", "suspend_poll_s"})


class EvaluationConfig(_Model):
    """How an executor's result becomes the objective values.

    ``metrics`` maps an objective (or constraint metric) name to the result key that
    holds it, e.g. ``{quality: fused_score}``; names not listed are read as-is.
    ``options`` are passed to executors that run an evaluation pipeline.
    """

    metrics: dict[str, str] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)


class RewardConfig(_Model):
    """Reward fusion settings for executors that fuse metrics (see :mod:`cryoopt.fusion`)."""

    weights: dict[str, float] | None = None
    comparisons: list[list[float]] | None = Field(default=None, description="AHP pairwise comparison matrix over the terms")
    terms: list[str] | None = None

    @model_validator(mode="after")
    def _shapes(self) -> RewardConfig:
        if self.weights is not None and any(w < 0 for w in self.weights.values()):
            raise ValueError(f"reward weights must be >= 0, got {self.weights}")
        if self.comparisons is not None:
            n = len(self.comparisons)
            if n == 0 or any(len(row) != n for row in self.comparisons):
                raise ValueError("comparisons must be a square matrix (one row and one column per term)")
            if any(x <= 0 for row in self.comparisons for x in row):
                raise ValueError("comparisons entries must be > 0 (Saaty scale 1/9 .. 9)")
            if self.terms is not None and len(self.terms) != n:
                raise ValueError(f"comparisons is {n} x {n} but terms names {len(self.terms)} terms")
        return self


class FeedbackConfig(_Model):
    """How operator ratings (1-5) enter the optimization.

    ``record``: stored in the journal and shown in reports, the objective is untouched.
    ``blend``: the rated trial's ``objective`` becomes
    ``(1 - weight) * value + weight * (rating - 1) / 4`` (the mean rating if rated
    several times); sensible for objectives scaled to ``[0, 1]``.
    """

    mode: Literal["record", "blend"] = "record"
    objective: str | None = Field(default=None, description="objective to blend into (default: the first)")
    weight: float = Field(default=0.3, ge=0.0, le=1.0)


class TrackingConfig(_Model):
    """MLflow tracking. ``uri`` defaults to ``sqlite:///<campaign dir>/mlflow.db``."""

    enabled: bool = True
    uri: str | None = Field(default=None, min_length=1)
    experiment: str | None = Field(default=None, min_length=1, description="MLflow experiment name (default: the campaign name)")
    log_trials: bool = Field(default=True, description="one child run per trial")


class ReportConfig(_Model):
    """Write the report (plots + Markdown) when a run ends, and log it to MLflow."""

    on_finish: bool = True


class CampaignConfig(_Model):
    """A whole campaign. See ``configs/sim_quick.yaml`` for an annotated example."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    description: str = ""
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    space: SpaceConfig
    objectives: dict[str, Literal["maximize", "minimize"]] = Field(default_factory=lambda: {"objective": "maximize"})
    outcome_constraints: list[str] = Field(default_factory=list)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    budget: BudgetConfig
    batch_size: int = Field(default=1, gt=0, le=1000, description="trials proposed together (one ask)")
    max_in_flight: int = Field(default=1, gt=0, le=256, description="trials executed at the same time (asynchronous when > 1)")
    executor: ExecutorConfig
    start_protocols: list[dict[str, Any]] = Field(
        default_factory=list,
        description="known protocols (e.g. the lab's current one) run first on a fresh campaign, before any proposal",
    )
    replicate_every: int = Field(
        default=0, ge=0,
        description="every this many trials, rerun the incumbent (the optimizer's best) instead of a new proposal; "
                    "0: never. Shows the model the run-to-run noise and confirms an incumbent that may have been lucky",
    )
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    stopping: StoppingConfig = Field(default_factory=StoppingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    # where the config came from, to point errors found later (checks.py) at file:line
    _source: str = PrivateAttr(default="<config>")
    _lines: dict[tuple[Any, ...], int] = PrivateAttr(default_factory=dict)

    @field_validator("objectives", mode="before")
    @classmethod
    def _objectives(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {v: "maximize"}
        if isinstance(v, list):  # [{name, direction}] or [name]
            out: dict[str, Any] = {}
            for item in v:
                if isinstance(item, str):
                    name, direction = item, "maximize"
                elif isinstance(item, Mapping) and "name" in item and set(item) <= {"name", "direction"}:
                    name, direction = item["name"], item.get("direction", "maximize")
                else:
                    raise ValueError(f"objective {item!r}: give a name or {{name, direction}}")
                if not isinstance(name, str) or name in out:
                    raise ValueError(f"objective {name!r}: each objective needs its own name (text)")
                out[name] = direction
            return out
        return v

    @field_validator("objectives")
    @classmethod
    def _nonempty(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError("at least one objective is needed, e.g. {quality: maximize}")
        for name in v:
            if not re.fullmatch(METRIC_PATTERN, name):
                raise ValueError(f"objective name {name!r}: use letters, digits, _ (and . for a nested result key)")
        return v

    @field_validator("outcome_constraints")
    @classmethod
    def _constraints(cls, v: list[str]) -> list[str]:
        for text in v:
            m = _OUTCOME.fullmatch(text)
            if not m:
                raise ValueError(f"outcome constraint {text!r}: write it as 'metric <= number' or 'metric >= number'")
            if not math.isfinite(float(m.group(3))):
                raise ValueError(f"outcome constraint {text!r}: the bound must be a finite number")
        return v

    @field_validator("replicate_every")
    @classmethod
    def _replicates(cls, v: int) -> int:
        if v == 1:
            raise ValueError("replicate_every must be 0 (never) or >= 2 trials (1 would only ever rerun the incumbent)")
        return v

    def problems(self) -> list[tuple[tuple[Any, ...], str]]:
        """What is wrong across fields, as ``(field path, message)``: the space (see
        :meth:`SpaceConfig.problems`), start protocols outside it, and names that refer to
        objectives that do not exist. Empty for a sound config."""
        out = list(self.space.problems())
        if self.feedback.objective is not None and self.feedback.objective not in self.objectives:
            out.append((("feedback", "objective"),
                        f"{self.feedback.objective!r} is not an objective; objectives: {list(self.objectives)}"))
        if isinstance(self.stopping.target, dict):
            for name in self.stopping.target:
                if name not in self.objectives:
                    out.append((("stopping", "target", name),
                                f"unknown objective {name!r}; objectives: {list(self.objectives)}"))
        if self.start_protocols and not out:
            space = self.search_space()
            for i, protocol in enumerate(self.start_protocols):
                try:
                    space.validate(protocol)
                except ParameterError as err:
                    out.append((("start_protocols", i), f"start_protocols[{i}]: {err}"))
        return out

    # ------------------------------------------------------------------ derived objects
    def search_space(self):  # noqa: ANN201 - SearchSpace, imported lazily
        """The :class:`~cryoopt.space.SearchSpace` (raises :class:`ConfigError` naming the parameter)."""
        from cryoopt.space import SearchSpace

        try:
            return SearchSpace.from_dict(self.space.parameters, constraints=self.space.constraints)
        except ParameterError as err:
            raise ConfigError(f"space: {err}") from err

    @property
    def objective_names(self) -> list[str]:
        return list(self.objectives)

    @property
    def required_metrics(self) -> list[str]:
        """What every result must report: the objectives, then the outcome constraints' metrics."""
        names = list(self.objectives)
        for text in self.outcome_constraints:
            m = _OUTCOME.fullmatch(text)
            if m is not None and m.group(1) not in names:
                names.append(m.group(1))
        return names

    def identity(self) -> dict[str, Any]:
        """The part of the config that fixes what the journal's trials mean (see module doc)."""
        keys = ("name", "seed", "space", "objectives", "outcome_constraints", "optimizer", "executor",
                "evaluation", "reward", "feedback")
        data = self.model_dump(mode="json")
        return {k: data[k] for k in keys} | {"executor": self.executor.identity()}

    def config_hash(self) -> str:
        """SHA-256 of :meth:`identity` (canonical JSON), the journal's compatibility key."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def incompatibilities(self, other: CampaignConfig) -> list[str]:
        """Identity fields that differ from ``other`` (empty when a journal may continue)."""
        mine, theirs = self.identity(), other.identity()
        return [k for k in mine if mine[k] != theirs[k]]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> CampaignConfig:
        """Validate a plain dict (errors name the field path)."""
        return _validate(data, source=source, lines={})

    # ------------------------------------------------------------------ error reporting
    def where(self, loc: Sequence[Any]) -> str:
        """``file:line`` of the field at ``loc`` (``file`` when the line is unknown)."""
        line = _where(tuple(loc), self._lines)
        return f"{self._source}:{line}" if line else self._source

    def refuse(self, problems: Sequence[tuple[Sequence[Any], str]]) -> ConfigError:
        """A :class:`ConfigError` listing ``problems`` (field path, message), each with its file:line."""
        return _config_error([(self.where(loc), ".".join(map(str, loc)) or "(top level)", msg) for loc, msg in problems])


# ---------------------------------------------------------------------------- loading
def _config_error(items: Sequence[tuple[str, str, str]]) -> ConfigError:
    lines = list(dict.fromkeys(f"{where}: {field}: {msg}" for where, field, msg in items))
    return ConfigError("invalid campaign config:\n  " + "\n  ".join(lines))


def _key_name(key: yaml.Node) -> str:
    """A mapping key as the field paths spell it (``~`` and ``null`` keys are ``None``)."""
    if key.tag == "tag:yaml.org,2002:null":
        return "None"
    return str(key.value)


def _line_map(node: yaml.Node, path: tuple[Any, ...] = (), out: dict | None = None) -> dict[tuple[Any, ...], int]:
    """Map every key path in a composed YAML document to its 1-based line."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = path + (_key_name(key),)
            if sub in out:
                continue  # a merged (<<) key under an explicit one, or an alias seen before
            out[sub] = key.start_mark.line + 1
            _line_map(value, sub, out)
            out[sub] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, path + (i,), out)
    return out


def _where(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    """The line of the deepest part of ``loc`` the map knows (ints are list positions or numeric keys)."""
    for n in range(len(loc), -1, -1):
        for key in (tuple(p if isinstance(p, int) else str(p) for p in loc[:n]), tuple(str(p) for p in loc[:n])):
            if key in lines:
                return lines[key]
    return None


def _validate(data: Any, *, source: str, lines: dict[tuple[Any, ...], int]) -> CampaignConfig:
    def at(loc: tuple[Any, ...]) -> str:
        line = _where(loc, lines)
        return f"{source}:{line}" if line else source

    if not isinstance(data, Mapping):
        raise ConfigError(f"{at(())}: a campaign config must be a mapping of fields (name, space, budget, executor, ...), "
                          f"got {type(data).__name__}")
    problems: list[tuple[str, str, str]] = []
    config = None
    try:
        config = CampaignConfig.model_validate(dict(data))
    except ValidationError as err:
        for e in err.errors():
            loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            # pydantic appends the union member tried ('str', 'float', ...) for unions; drop it
            loc = tuple(p for p in loc if p not in ("str", "float", "int", "dict[str,float]", "dict[str,any]",
                                                    "list[list[float]]", "list[str]"))
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = _unknown_field_message(loc)
            if loc and loc[-1] == "[key]":  # a mapping key that is not text (a number, null, ...)
                loc, msg = loc[:-1], f"names here must be text, got {e['input']!r}"
            problems.append((at(loc), ".".join(str(p) for p in loc) or "(top level)", msg))
    # each parameter and constraint on its own, so that every broken one is named with its line
    cross: list[tuple[tuple[Any, ...], str]] = []
    if config is not None:
        cross = config.problems()
    elif isinstance(data.get("space"), Mapping):
        try:
            cross = SpaceConfig.model_validate(dict(data["space"])).problems()
        except ValidationError:
            pass  # reported above
    problems += [(at(loc), ".".join(map(str, loc)), msg) for loc, msg in cross]
    if problems or config is None:
        raise _config_error(problems)
    config._source, config._lines = source, lines
    return config


def _model_at(loc: Sequence[Any]) -> type[BaseModel] | None:
    """The config model that holds the field at ``loc`` (``None`` below a free-form mapping)."""
    import typing

    model: type[BaseModel] = CampaignConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return model


def _unknown_field_message(loc: Sequence[Any]) -> str:
    """``unknown field``, with the fields allowed there and the closest one (a typo, most often)."""
    import difflib

    model = _model_at(loc) if loc else None
    if model is None:
        return "unknown field (check the spelling; the allowed fields are in cryoopt.config)"
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown field; {hint}allowed here: {', '.join(allowed)}"


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error
    (PyYAML keeps the last one silently: a parameter defined twice would lose its first
    definition). Keys merged in with ``<<`` may still be overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: construct_mapping refuses it below
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {first}); each key may appear once",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, memo: dict[int, int], active: set[int]) -> int:
    """How many values ``node`` expands to once aliases are copied (what a dump would write)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise ConfigError(f"line {node.start_mark.line + 1}: a YAML alias refers to the collection that contains it")
    active.add(key)
    size = 1
    if isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo, active) + _expanded_size(v, memo, active) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(item, memo, active) for item in node.value)
    active.discard(key)
    memo[key] = min(size, MAX_YAML_NODES + 1)
    return memo[key]


def _read_text(path: Path) -> str:
    try:
        if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size} bytes is not a campaign config (those are a few kB)")
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x}); save the config as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def _parse_yaml(text: str, path: Path) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """The document and its key -> line map, refusing duplicate keys and alias bombs."""
    try:
        loader = _StrictLoader(text)
    except yaml.reader.ReaderError as err:  # a character YAML does not allow (NUL, most control characters)
        line = text[: err.position].count("\n") + 1
        raise ConfigError(f"{path}:{line}: not valid YAML: character {err.character!r} is not allowed") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        if _expanded_size(node, {}, set()) > MAX_YAML_NODES:
            raise ConfigError(f"{path}: the config expands to over {MAX_YAML_NODES} values through YAML aliases; "
                              "a campaign config needs a few hundred")
        return loader.construct_document(node), _line_map(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(err, 'problem', None) or err}") from None
    except ConfigError as err:
        if str(err).startswith("line "):
            raise ConfigError(f"{path}:{str(err).removeprefix('line ')}") from None
        raise
    except RecursionError:
        raise ConfigError(f"{path}: the YAML is nested too deeply to be a campaign config") from None
    finally:
        loader.dispose()


def load_config(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> CampaignConfig:
    """Read and validate a campaign config from YAML.

    ``overrides`` set fields by dotted path before validation, e.g.
    ``{"budget.experiments": 4, "executor.options.pretrain_steps": 0}`` (``cryoopt run --set``).

    Raises:
        ConfigError: the file is missing, is not UTF-8 YAML, gives a key twice, or a
            field is invalid; the message lists every problem as
            ``file:line: field.path: what is wrong``.
    """
    path = Path(path)
    data, lines = _parse_yaml(_read_text(path), path)
    if data is None:
        raise ConfigError(f"{path}: the config is empty; it needs at least name, space, budget and executor "
                          "(see configs/sim_quick.yaml)")
    if overrides and isinstance(data, Mapping):
        data = apply_overrides(data, overrides)
    return _validate(data, source=str(path), lines=lines)


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a config dict with ``{"dotted.path": value}`` set (intermediate mappings created)."""
    import copy

    out = copy.deepcopy(dict(data))
    for dotted, value in overrides.items():
        keys = [k for k in str(dotted).split(".")]
        if not all(keys):
            raise ConfigError(f"override {dotted!r}: write a dotted field path such as budget.experiments")
        node: Any = out
        for i, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {dotted!r}: {'.'.join(keys[:i + 1])} is not a mapping of fields")
            node = child
        node[keys[-1]] = value
    return out
