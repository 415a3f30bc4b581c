"""Settings of the ``ray`` campaign executor: how many benches, what each reserves, where they live.

A *bench* is one instrument set (ultramicrotome, staining platform, microscope; real or
simulated) run by one Ray actor, one trial at a time. These models validate the
``executor.options`` of a config whose ``executor.type`` is ``ray``; the executor each
bench runs is ``executor.bench`` (any other executor type) and the cluster is
``executor.address``. This module is light (pydantic only) so that config validation can
use it without importing Ray.

Example (YAML)::

    max_in_flight: 4                 # one trial per bench at a time
    executor:
      type: ray
      address: auto                  # join the running cluster; omit for a local one
      bench: {type: simulated_clem, options: {max_sections: 6}}
      options:
        benches: 4
        num_cpus: 1                  # CPUs each bench reserves on its node
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["BenchSpec", "RayExecutorOptions", "ResolvedBench", "ray_options_error"]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BenchSpec(_Model):
    """One bench of a list, where benches differ (their instruments' ports, the node they sit on).

    Unset fields take the executor-wide value (:class:`RayExecutorOptions`).
    """

    name: str | None = Field(default=None, pattern=_NAME, max_length=60,
                             description="the bench's actor name (default bench-<i>)")
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="merged over executor.bench.options for this bench (e.g. its ports)")
    num_cpus: float | None = Field(default=None, ge=0)
    num_gpus: float | None = Field(default=None, ge=0)
    resources: dict[str, float] | None = Field(
        default=None, description="custom Ray resources, e.g. {microtome_a: 1} to place the bench on the node "
                                  "that advertises it (`ray start --resources '{\"microtome_a\": 1}'`)")


class ResolvedBench(_Model):
    """A bench with every setting decided: what its actor is given."""

    index: int
    name: str
    options: dict[str, Any]
    num_cpus: float
    num_gpus: float
    resources: dict[str, float]


class RayExecutorOptions(_Model):
    """``executor.options`` of the ``ray`` executor.

    Attributes:
        benches: how many identical benches (default: ``max_in_flight``), or one
            :class:`BenchSpec` per bench. Each bench runs one trial at a time, so the
            campaign's ``max_in_flight`` must equal the number of benches.
        num_cpus, num_gpus, resources: what each bench reserves on its node (Ray
            scheduling); a simulated bench computes, a real one mostly waits on its
            instruments and needs little.
        namespace: Ray namespace of the bench actors (default: from the campaign's name
            and identity hash). Two campaigns with the same name and identity on one
            cluster need different namespaces.
        max_restarts: how many times a bench that died is replaced by a fresh one before
            the campaign gives it up.
        recover_wait_s: on resume, how long to wait for a bench that is still running a
            trial the killed campaign started (None: until it finishes).
        runtime_env: Ray ``runtime_env`` for a cluster whose nodes lack cryoopt or the
            bench's code (e.g. ``{working_dir: ., pip: [...]}``).
    """

    benches: int | list[BenchSpec] | None = None
    num_cpus: float = Field(default=1.0, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)
    resources: dict[str, float] = Field(default_factory=dict)
    namespace: str | None = Field(default=None, pattern=_NAME, max_length=120)
    max_restarts: int = Field(default=3, ge=0)
    recover_wait_s: float | None = Field(default=None, gt=0)
    runtime_env: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> RayExecutorOptions:
        if isinstance(self.benches, int) and not isinstance(self.benches, bool) and self.benches < 1:
            raise ValueError(f"benches must be at least 1, got {self.benches}")
        if isinstance(self.benches, list):
            if not self.benches:
                raise ValueError("benches is an empty list; give a number of benches or one entry per bench")
            names = [b.name for b in self.benches if b.name is not None]
            if len(set(names)) != len(names):
                raise ValueError(f"bench names must differ, got {names}")
        for key, amount in self.resources.items():
            if amount < 0:
                raise ValueError(f"resources.{key} must be >= 0, got {amount}")
        return self

    def count(self, max_in_flight: int) -> int:
        """Number of benches (``max_in_flight`` when ``benches`` is unset)."""
        if self.benches is None:
            return max_in_flight
        return self.benches if isinstance(self.benches, int) else len(self.benches)

    def resolve(self, max_in_flight: int) -> list[ResolvedBench]:
        """Every bench with its name, option overrides and reserved resources."""
        specs = self.benches if isinstance(self.benches, list) else [BenchSpec()] * self.count(max_in_flight)
        out = []
        for i, spec in enumerate(specs):
            out.append(ResolvedBench(
                index=i, name=spec.name or f"bench-{i}", options=dict(spec.options),
                num_cpus=self.num_cpus if spec.num_cpus is None else spec.num_cpus,
                num_gpus=self.num_gpus if spec.num_gpus is None else spec.num_gpus,
                resources=dict(self.resources if spec.resources is None else spec.resources),
            ))
        return out


def ray_options_error(options: dict[str, Any]) -> str | None:
    """Why ``options`` are not valid ray-executor options (``executor.options.<field>: ...``), or None."""
    try:
        RayExecutorOptions.model_validate(options)
    except ValidationError as err:
        errors = err.errors()
        if any(e["loc"][:2] == ("benches", "list[BenchSpec]") and len(e["loc"]) > 2 for e in errors):
            # a list of benches was meant: the union's other member (an int) only adds noise
            errors = [e for e in errors if e["loc"][:2] != ("benches", "int")]
        msgs = []
        for e in errors:
            loc = [str(p) for p in e["loc"] if not str(p).startswith(("function-", "list[", "int"))]
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                model = BenchSpec if loc[:1] == ["benches"] else RayExecutorOptions
                what = "a bench entry" if model is BenchSpec else "the ray executor"
                msg = f"unknown option ({what} takes {', '.join(model.model_fields)})"
            msgs.append(f"executor.options{'.' + '.'.join(loc) if loc else ''}: {msg}")
        return "; ".join(dict.fromkeys(msgs))
    return None
