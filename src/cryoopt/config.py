"""Campaign configs: pydantic models of the YAML a protocol engineer writes.

A config says *what* to optimize (search space, objectives, outcome constraints),
*how* (strategy, batch size, trials in flight, seed), *with what* (the executor that
runs a trial: a Python function now, simulated or real instruments later), *for how
long* (budget and stop conditions), and *where results go* (tracking, report).

Every model refuses unknown fields (a typo is an error, not a silently ignored
setting). :func:`load_config` reports errors with the YAML file, line and field path.

Example:
    >>> config = load_config("configs/sim_quick.yaml")
    >>> config.budget.experiments
    20

Two parts of a config play different roles on resume (see :meth:`CampaignConfig.identity`):
the *identity* (name, seed, space, objectives, constraints, optimizer, executor,
evaluation, reward, feedback) fixes what the journal's trials mean, so a journal
refuses to continue under a different identity; the *run settings* (budget, stop
conditions, batch size, trials in flight, tracking, report) may change between
sessions, e.g. to extend the budget.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    else:
        m = _DURATION.fullmatch(str(value))
        if not m:
            raise ValueError(f"cannot read duration {value!r}; write seconds (3600) or '90min', '2h', '45s', '1d'")
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpaceConfig(_Model):
    """The search space, as :meth:`cryoopt.space.SearchSpace.from_dict` reads it."""

    parameters: dict[str, dict[str, Any]] = Field(min_length=1)
    constraints: list[str | dict[str, Any]] = Field(default_factory=list)


class OptimizerConfig(_Model):
    """Which strategy proposes trials (``bo``, ``random``, ``sobol``) and its keyword options."""

    strategy: str = "bo"
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


class ExecutorConfig(_Model):
    """What runs a trial. ``type`` names a registered executor (``function``, ``manual``, ...).

    ``function``: ``target`` is ``"module:callable"``; the callable gets the params dict
    (plus ``options`` as keyword arguments) and returns a float or a dict of results.
    If ``target`` names a class, it is instantiated with ``options`` and then called.
    ``idempotent`` says whether re-running a trial interrupted by a crash is harmless
    (true for pure functions and simulators, never for real instruments).

    ``ray``: the trials run on benches (Ray actors) of a cluster: ``bench`` is the
    executor each bench runs (any other type), ``address`` the cluster (``auto``,
    ``ray://host:10001``; default: a local one), ``options`` as
    :class:`cryoopt.scale.options.RayExecutorOptions` reads them.
    """

    type: str = "function"
    target: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    idempotent: bool | None = Field(default=None, description="default: the executor type's own declaration")
    bench: ExecutorConfig | None = Field(default=None, description="type ray: the executor each bench runs")
    address: str | None = Field(default=None, description="type ray: the Ray cluster to join (default: a local one)")

    @model_validator(mode="after")
    def _target(self) -> ExecutorConfig:
        if self.type == "function":
            if not self.target or not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", self.target):
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
        return self.model_dump(mode="json", exclude={"bench", "address"})


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
    uri: str | None = None
    experiment: str | None = Field(default=None, description="MLflow experiment name (default: the campaign name)")
    log_trials: bool = Field(default=True, description="one child run per trial")


class ReportConfig(_Model):
    """Write the report (plots + Markdown) when a run ends, and log it to MLflow."""

    on_finish: bool = True


class CampaignConfig(_Model):
    """A whole campaign. See ``configs/sim_quick.yaml`` for an annotated example."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    description: str = ""
    seed: int = 0
    space: SpaceConfig
    objectives: dict[str, Literal["maximize", "minimize"]] = Field(default_factory=lambda: {"objective": "maximize"})
    outcome_constraints: list[str] = Field(default_factory=list)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    budget: BudgetConfig
    batch_size: int = Field(default=1, gt=0, description="trials proposed together (one ask)")
    max_in_flight: int = Field(default=1, gt=0, description="trials executed at the same time (asynchronous when > 1)")
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

    @field_validator("objectives", mode="before")
    @classmethod
    def _objectives(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {v: "maximize"}
        if isinstance(v, list):  # [{name, direction}] or [name]
            out: dict[str, Any] = {}
            for item in v:
                if isinstance(item, str):
                    out[item] = "maximize"
                elif isinstance(item, Mapping) and "name" in item:
                    out[item["name"]] = item.get("direction", "maximize")
                else:
                    raise ValueError(f"objective {item!r}: give a name or {{name, direction}}")
            return out
        return v

    @field_validator("objectives")
    @classmethod
    def _nonempty(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError("at least one objective is needed, e.g. {quality: maximize}")
        return v

    @field_validator("outcome_constraints")
    @classmethod
    def _constraints(cls, v: list[str]) -> list[str]:
        for text in v:
            if not _OUTCOME.fullmatch(text):
                raise ValueError(f"outcome constraint {text!r}: write it as 'metric <= number' or 'metric >= number'")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> CampaignConfig:
        if self.feedback.objective is not None and self.feedback.objective not in self.objectives:
            raise ValueError(
                f"feedback.objective {self.feedback.objective!r} is not an objective; objectives: {list(self.objectives)}"
            )
        if isinstance(self.stopping.target, dict):
            unknown = set(self.stopping.target) - set(self.objectives)
            if unknown:
                raise ValueError(f"stopping.target names unknown objective(s) {sorted(unknown)}")
        if self.replicate_every == 1:
            raise ValueError("replicate_every must be 0 (never) or >= 2 trials (1 would only ever rerun the incumbent)")
        if self.start_protocols:
            space = self.search_space()
            for i, protocol in enumerate(self.start_protocols):
                try:
                    space.validate(protocol)
                except ParameterError as err:
                    raise ValueError(f"start_protocols[{i}]: {err}") from None
        return self

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


# ---------------------------------------------------------------------------- loading
def _line_map(node: yaml.Node, path: tuple[Any, ...] = (), out: dict | None = None) -> dict[tuple[Any, ...], int]:
    """Map every key path in a composed YAML document to its 1-based line."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = path + (key.value,)
            out[sub] = key.start_mark.line + 1
            _line_map(value, sub, out)
            out[sub] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, path + (i,), out)
    return out


def _where(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    for n in range(len(loc), -1, -1):
        key = tuple(str(p) if not isinstance(p, int) else p for p in loc[:n])
        if key in lines:
            return lines[key]
    return None


def _validate(data: Any, *, source: str, lines: dict[tuple[Any, ...], int]) -> CampaignConfig:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a campaign config must be a mapping of fields, got {type(data).__name__}")
    try:
        config = CampaignConfig.model_validate(dict(data))
    except ValidationError as err:
        msgs = []
        for e in err.errors():
            loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            # pydantic appends the union member tried ('str', 'float', ...) for unions; drop it
            loc = tuple(p for p in loc if p not in ("str", "float", "int", "dict[str,float]", "dict[str,any]"))
            line = _where(loc, lines)
            field = ".".join(str(p) for p in loc) or "(top level)"
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown field (check the spelling; allowed fields are in cryoopt.config)"
            where = f"{source}:{line}" if line else source
            msgs.append(f"{where}: {field}: {msg}")
        uniq = list(dict.fromkeys(msgs))
        raise ConfigError("invalid campaign config:\n  " + "\n  ".join(uniq)) from None
    try:
        config.search_space()
    except ConfigError as err:
        name = re.search(r"parameter '([^']+)'", str(err))
        loc = ("space", "parameters", name.group(1)) if name else ("space",)
        line = _where(loc, lines)
        where = f"{source}:{line}" if line else source
        raise ConfigError(f"invalid campaign config:\n  {where}: {'.'.join(loc)}: {err.args[0].removeprefix('space: ')}") from None
    return config


def load_config(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> CampaignConfig:
    """Read and validate a campaign config from YAML.

    ``overrides`` set fields by dotted path before validation, e.g.
    ``{"budget.experiments": 4, "executor.options.pretrain_steps": 0}`` (``cryoopt run --set``).

    Raises:
        ConfigError: the file is missing, is not YAML, or a field is invalid; the
            message gives ``file:line: field.path: what is wrong``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror or err}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(err, 'problem', None) or err}") from None
    lines = _line_map(node) if node is not None else {}
    data = data if data is not None else {}
    if overrides:
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
