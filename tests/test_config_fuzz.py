"""Broken configs, one mistake each: every one is refused by ``cryoopt validate`` with exit 3,
its ``file:line``, the field it is about and a message that says what is wrong; none is
accepted, none raises a traceback.

The variants come from an adversarial pass over the config format (types YAML reads in
ways a user does not expect, values pydantic would coerce, numbers that overflow or are
not numbers, options only the code behind a name can check, and YAML's own traps). Each
is the base config below with one line replaced (or added).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from cryoopt.cli import EXIT_CONFIG, EXIT_OK, main

BASE = """\
name: fuzz
description: fuzz base
seed: 0
space:
  parameters:
    x: {type: float, low: 0, high: 1}
    t: {type: float, low: 0, high: 10, safety: {low: 1, high: 9}}
    y: {type: int, low: 0, high: 10}
    lg: {type: float, low: 0.1, high: 10, log: true}
    buffer: {type: categorical, choices: [PBS, TBS]}
  constraints: ["x + t <= 9.5"]
objectives: {objective: maximize}
outcome_constraints: []
optimizer: {strategy: bo, options: {n_initial: 3}}
budget: {experiments: 5, wall_time_s: 1h}
batch_size: 1
max_in_flight: 1
executor: {type: function, target: cryoopt.campaign.demo:zero_cost, options: {}}
start_protocols: []
replicate_every: 0
evaluation: {metrics: {}}
reward: {}
feedback: {mode: record, weight: 0.3}
stopping: {target: 0.9, patience: 5, min_improvement: 0.0}
tracking: {enabled: false}
report: {on_finish: false}
"""
P = "    {}: {}"  # a parameter line
STAINING = "executor: {type: function, target: cryoopt.campaign.demo:staining_quality, options: %s}"
CLEM = "executor: {type: simulated_clem, options: %s}"


@dataclass(frozen=True)
class Case:
    id: str
    line: int  # the line replaced (1-based); negative: insert after line -line
    text: str | bytes
    at: int | None  # the line the error must cite (None: the file, no line)
    field: str | None  # the field path it must name (None: a file-level problem)
    match: str  # regex the message must match

    def config(self) -> bytes:
        lines = BASE.splitlines()
        if isinstance(self.text, bytes):
            out = "\n".join(lines[: self.line - 1]).encode() + b"\n" + self.text + b"\n" \
                + "\n".join(lines[self.line:]).encode() + b"\n"
            return out
        if self.line > 0:
            lines[self.line - 1] = self.text
        else:
            lines.insert(-self.line, self.text)
        return ("\n".join(lines) + "\n").encode()


def c(id: str, line: int, text: str | bytes, at: int | None, field: str | None, match: str) -> Case:  # noqa: A002
    return Case(id, line, text, at, field, match)


def par(name: str, spec: str) -> str:
    return P.format(name, spec)


CASES = [
    # ---- the file itself
    c("not-utf8", 2, b"description: caf\xe9 latte", 2, None, "not UTF-8"),
    c("utf16", 2, "description: ok".encode("utf-16"), 2, None, "not UTF-8"),
    c("nul-byte", 2, b"description: a\x00b", 2, None, "not valid YAML"),
    c("syntax", 6, "    x: {type: float, low: 0, high: 1", 7, None, "not valid YAML"),
    c("tab-indent", 6, "\tx: {type: float, low: 0, high: 1}", 6, None, "not valid YAML"),
    c("python-tag", 2, "description: !!python/object/apply:os.system [echo]", 2, None, "not valid YAML"),
    c("dup-top-key", -26, "budget: {experiments: 9}", 27, None, "duplicate key 'budget'.*line 15"),
    c("dup-parameter", -6, par("x", "{type: float, low: 5, high: 6}"), 7, None, "duplicate key 'x'.*line 6"),
    c("dup-flow-key", 6, par("x", "{type: float, low: 0, low: 1, high: 2}"), 6, None, "duplicate key 'low'"),
    c("dup-objective", 12, "objectives: {q: maximize, q: minimize}", 12, None, "duplicate key 'q'"),
    c("alias-cycle", 19, "start_protocols: &a [*a]", 19, None, "alias refers to the collection"),
    c("alias-bomb", 2, "description: x\nbomb: &a [1,1,1,1,1,1,1,1,1,1]\nb2: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                       "b3: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nb4: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                       "b5: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nb6: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]", None, None,
      "expands to over"),
    c("deep-nesting", 2, "description: " + "[" * 2000 + "]" * 2000, None, None, "nested too deeply|not valid YAML"),
    c("top-is-list", 1, "- name: fuzz", 2, None, "not valid YAML"),
    c("unknown-top-field", -1, "budjet: {experiments: 3}", 2, "budjet", "unknown field; did you mean 'budget'\\?"),
    # ---- name / description / seed
    c("name-missing", 1, "# no name", 2, "name", "Field required"),
    c("name-empty", 1, "name: ''", 1, "name", "pattern"),
    c("name-space", 1, "name: my campaign", 1, "name", "pattern"),
    c("name-path", 1, "name: ../evil", 1, "name", "pattern"),
    c("name-number", 1, "name: 5", 1, "name", "valid string"),
    c("name-list", 1, "name: [a]", 1, "name", "valid string"),
    c("name-too-long", 1, "name: " + "a" * 101, 1, "name", "at most 100"),
    c("description-list", 2, "description: [a, b]", 2, "description", "valid string"),
    c("seed-text", 3, "seed: abc", 3, "seed", "valid integer"),
    c("seed-float", 3, "seed: 1.5", 3, "seed", "valid integer"),
    c("seed-bool", 3, "seed: true", 3, "seed", "valid integer"),
    c("seed-negative", 3, "seed: -1", 3, "seed", "greater than or equal to 0"),
    c("seed-huge", 3, "seed: 1180591620717411303424", 3, "seed", "less than or equal to 4294967295"),
    c("seed-null", 3, "seed: null", 3, "seed", "valid integer"),
    c("seed-nan", 3, "seed: .nan", 3, "seed", "valid integer"),
    # ---- space
    c("space-misspelt", 4, "spaces:", 4, "spaces", "unknown field"),
    c("space-list", 4, "space: []\nxx_parameters:", 4, "space", "valid dictionary|unknown field"),
    c("parameters-empty", 5, "  parameters: {}\n  unused:", 5, "space.parameters", "at least 1 item"),
    c("parameters-list", 5, "  parameters: [x, y]\n  unused:", 5, "space.parameters", "valid dictionary"),
    c("param-not-mapping", 6, par("x", "5"), 6, "space.parameters.x", "valid dictionary"),
    c("param-no-type", 6, par("x", "{low: 0, high: 1}"), 6, "space.parameters.x", "'type' must be one of"),
    c("param-bad-type", 6, par("x", "{type: double, low: 0, high: 1}"), 6, "space.parameters.x", "'type' must be one of"),
    c("param-no-low", 6, par("x", "{type: float, high: 1}"), 6, "space.parameters.x", "needs 'low'"),
    c("param-no-high", 6, par("x", "{type: float, low: 0}"), 6, "space.parameters.x", "needs 'high'"),
    c("low-text", 6, par("x", "{type: float, low: abc, high: 1}"), 6, "space.parameters.x", "low must be a number"),
    c("low-list", 6, par("x", "{type: float, low: [0], high: 1}"), 6, "space.parameters.x", "low must be a number"),
    c("low-null", 6, par("x", "{type: float, low: null, high: 1}"), 6, "space.parameters.x", "low must be a number"),
    c("low-quoted", 6, par("x", "{type: float, low: '0', high: 1}"), 6, "space.parameters.x", "low must be a number"),
    c("low-bool", 6, par("x", "{type: float, low: true, high: 1}"), 6, "space.parameters.x", "low must be a number"),
    c("low-nan", 6, par("x", "{type: float, low: .nan, high: 1}"), 6, "space.parameters.x", "finite low < high"),
    c("high-inf", 6, par("x", "{type: float, low: 0, high: .inf}"), 6, "space.parameters.x", "finite low < high"),
    c("high-1e999", 6, par("x", "{type: float, low: 0, high: 1.0e+999}"), 6, "space.parameters.x", "finite low < high"),
    c("high-1e999-unsigned", 6, par("x", "{type: float, low: 0, high: 1e999}"), 6, "space.parameters.x",
      "high must be a number"),  # YAML 1.1 reads 1e999 as text
    c("range-overflow", 6, par("x", "{type: float, low: -1.0e+308, high: 1.0e+308}"), 6, "space.parameters.x", "too wide"),
    c("low-eq-high", 6, par("x", "{type: float, low: 1, high: 1}"), 6, "space.parameters.x", "low < high"),
    c("low-gt-high", 6, par("x", "{type: float, low: 2, high: 1}"), 6, "space.parameters.x", "low < high"),
    c("log-string-false", 9, par("lg", "{type: float, low: 0.1, high: 10, log: 'false'}"), 9, "space.parameters.lg",
      "log must be true or false"),
    c("log-yes-string", 9, par("lg", "{type: float, low: 0.1, high: 10, log: 'yes'}"), 9, "space.parameters.lg",
      "log must be true or false"),
    c("log-one", 9, par("lg", "{type: float, low: 0.1, high: 10, log: 1}"), 9, "space.parameters.lg", "true or false"),
    c("log-null", 9, par("lg", "{type: float, low: 0.1, high: 10, log: null}"), 9, "space.parameters.lg", "true or false"),
    c("log-nonpositive", 9, par("lg", "{type: float, low: 0, high: 10, log: true}"), 9, "space.parameters.lg",
      "log scale needs low > 0"),
    c("param-unknown-field", 6, par("x", "{type: float, low: 0, high: 1, lo: 0}"), 6, "space.parameters.x",
      r"unknown field\(s\) \['lo'\]"),
    c("unit-number", 6, par("x", "{type: float, low: 0, high: 1, unit: 5}"), 6, "space.parameters.x", "unit must be text"),
    c("description-list-param", 6, par("x", "{type: float, low: 0, high: 1, description: [a]}"), 6, "space.parameters.x",
      "description must be text"),
    c("safety-text", 7, par("t", "{type: float, low: 0, high: 10, safety: abc}"), 7, "space.parameters.t", "safety must be"),
    c("safety-one", 7, par("t", "{type: float, low: 0, high: 10, safety: [1]}"), 7, "space.parameters.t", "safety must be"),
    c("safety-three", 7, par("t", "{type: float, low: 0, high: 10, safety: [1, 2, 3]}"), 7, "space.parameters.t",
      "safety must be"),
    c("safety-half", 7, par("t", "{type: float, low: 0, high: 10, safety: {low: 1}}"), 7, "space.parameters.t",
      "safety must be"),
    c("safety-text-values", 7, par("t", "{type: float, low: 0, high: 10, safety: {low: a, high: b}}"), 7,
      "space.parameters.t", "safety low must be a number"),
    c("safety-reversed", 7, par("t", "{type: float, low: 0, high: 10, safety: {low: 9, high: 1}}"), 7,
      "space.parameters.t", "safety range"),
    c("safety-outside", 7, par("t", "{type: float, low: 0, high: 10, safety: {low: -1, high: 9}}"), 7,
      "space.parameters.t", "must lie inside"),
    c("safety-extra-key", 7, par("t", "{type: float, low: 0, high: 10, safety: {low: 1, high: 9, mid: 5}}"), 7,
      "space.parameters.t", "safety must be"),
    c("safety-nan", 7, par("t", "{type: float, low: 0, high: 10, safety: [.nan, 9]}"), 7, "space.parameters.t",
      "safety range"),
    c("int-fraction-low", 8, par("y", "{type: int, low: 0.5, high: 10}"), 8, "space.parameters.y", "must be an integer"),
    c("int-log-zero", 8, par("y", "{type: int, low: 0, high: 10, log: true}"), 8, "space.parameters.y", "log scale"),
    c("int-fraction-safety", 8, par("y", "{type: int, low: 0, high: 10, safety: [0.5, 5]}"), 8, "space.parameters.y",
      "must be an integer"),
    c("choices-string", 10, par("buffer", "{type: categorical, choices: PBS}"), 10, "space.parameters.buffer",
      "choices must be a list"),
    c("choices-number", 10, par("buffer", "{type: categorical, choices: 5}"), 10, "space.parameters.buffer",
      "choices must be a list"),
    c("choices-nested", 10, par("buffer", "{type: categorical, choices: [[PBS, TBS]]}"), 10, "space.parameters.buffer",
      "string or a finite number"),
    c("choices-empty", 10, par("buffer", "{type: categorical, choices: []}"), 10, "space.parameters.buffer",
      "at least one choice"),
    c("choices-duplicate", 10, par("buffer", "{type: categorical, choices: [PBS, PBS]}"), 10, "space.parameters.buffer",
      "duplicate choices"),
    c("choices-mapping", 10, par("buffer", "{type: categorical, choices: {PBS: 1}}"), 10, "space.parameters.buffer",
      "choices must be a list"),
    c("choices-null", 10, par("buffer", "{type: categorical, choices: [PBS, null]}"), 10, "space.parameters.buffer",
      "string or a finite number"),
    c("choices-bool", 10, par("buffer", "{type: categorical, choices: [true, 1]}"), 10, "space.parameters.buffer",
      "string or a finite number"),
    c("choices-nan", 10, par("buffer", "{type: categorical, choices: [.nan]}"), 10, "space.parameters.buffer",
      "string or a finite number"),
    c("choices-equal-numbers", 10, par("buffer", "{type: categorical, choices: [1, 1.0]}"), 10, "space.parameters.buffer",
      "duplicate choices"),
    c("choices-missing", 10, par("buffer", "{type: categorical}"), 10, "space.parameters.buffer", "needs 'choices'"),
    c("choices-with-low", 10, par("buffer", "{type: categorical, choices: [a], low: 0}"), 10, "space.parameters.buffer",
      "unknown field"),
    c("param-name-empty", 6, par("''", "{type: float, low: 0, high: 1}"), 6, "space.parameters.", "parameter name ''"),
    c("param-name-space", 6, par("'my x'", "{type: float, low: 0, high: 1}"), 6, "space.parameters.my x", "parameter name 'my x'"),
    c("param-name-equals", 6, par("'x=1'", "{type: float, low: 0, high: 1}"), 6, "space.parameters.x=1", "parameter name 'x=1'"),
    c("param-name-number", 6, par("5", "{type: float, low: 0, high: 1}"), 6, "space.parameters.5", "must be text"),
    c("param-name-null", 6, par("~", "{type: float, low: 0, high: 1}"), 6, "space.parameters.None", "must be text"),
    c("param-name-digit-first", 6, par("'1x'", "{type: float, low: 0, high: 1}"), 6, "space.parameters.1x", "parameter name '1x'"),
    # ---- constraints (each cites its own line)
    c("constraint-product", 11, '  constraints: ["x * t <= 10"]', 11, "space.constraints.0", "no products"),
    c("constraint-juxtaposed", 11, '  constraints: ["x t <= 10"]', 11, "space.constraints.0", r"expected \+ or -"),
    c("constraint-rhs-text", 11, '  constraints: ["x + t <= abc"]', 11, "space.constraints.0", "write it as"),
    c("constraint-strict-less", 11, '  constraints: ["x + t < 10"]', 11, "space.constraints.0", "write it as"),
    c("constraint-dangling-plus", 11, '  constraints: ["x + <= 10"]', 11, "space.constraints.0", "cannot read the term"),
    c("constraint-unknown-param", 11, '  constraints: ["x + zz <= 10"]', 11, "space.constraints.0", "unknown parameter 'zz'"),
    c("constraint-categorical", 11, '  constraints: ["buffer + x <= 1"]', 11, "space.constraints.0", "categorical"),
    c("constraint-log", 11, '  constraints: ["lg + x <= 1"]', 11, "space.constraints.0", "log-scaled"),
    c("constraint-inf-rhs", 11, '  constraints: ["x + t <= 1e999"]', 11, "space.constraints.0", "finite"),
    c("constraint-inf-coef", 11, '  constraints: ["1e999 x + t <= 1"]', 11, "space.constraints.0", "finite"),
    c("constraint-infeasible", 11, '  constraints: ["x + t >= 100"]', 11, "space.constraints",
      "no parameter set meets all the constraints"),
    c("constraint-not-list", 11, '  constraints: "x <= 1"', 11, "space.constraints", "valid list"),
    c("constraint-number", 11, "  constraints: [5]", 11, "space.constraints.0", "valid string|valid dictionary"),
    c("constraint-coef-text", 11, "  constraints: [{coefficients: {x: a}, rhs: 1}]", 11, "space.constraints.0",
      "finite number"),
    c("constraint-coef-number", 11, "  constraints: [{coefficients: 5, rhs: 1}]", 11, "space.constraints.0",
      "finite number"),
    c("constraint-expression-number", 11, "  constraints: [{expression: 5}]", 11, "space.constraints.0",
      "expression string"),
    c("constraint-no-rhs", 11, "  constraints: [{coefficients: {x: 1}}]", 11, "space.constraints.0", "rhs"),
    c("constraint-nan-rhs", 11, "  constraints: [{coefficients: {x: 1}, rhs: .nan}]", 11, "space.constraints.0",
      "finite number"),
    c("constraint-second-line", 11, '  constraints:\n    - "x + t <= 9.5"\n    - "x * y <= 3"', 13,
      "space.constraints.1", "no products"),
    # ---- objectives and outcome constraints
    c("objectives-empty", 12, "objectives: {}", 12, "objectives", "at least one objective"),
    c("objective-direction", 12, "objectives: {objective: up}", 12, "objectives.objective", "maximize"),
    c("objective-empty-name", 12, "objectives: {'': maximize}", 12, "objectives", "objective name ''"),
    c("objective-list-number", 12, "objectives: [5]", 12, "objectives", "give a name"),
    c("objective-list-empty-name", 12, "objectives: [{name: ''}]", 12, "objectives", "objective name ''"),
    c("objective-no-name", 12, "objectives: [{direction: minimize}]", 12, "objectives", "give a name"),
    c("objective-number", 12, "objectives: 5", 12, "objectives", "valid dictionary"),
    c("objective-list-direction", 12, "objectives: [{name: q, direction: up}]", 12, "objectives.q", "maximize"),
    c("objective-name-space", 12, "objectives: {'my q': maximize}", 12, "objectives", "objective name 'my q'"),
    c("objective-list-typo", 12, "objectives: [{name: q, direktion: minimize}]", 12, "objectives", "give a name"),
    c("outcome-strict-less", 13, 'outcome_constraints: ["t < 3"]', 13, "outcome_constraints", "metric <= number"),
    c("outcome-rhs-text", 13, 'outcome_constraints: ["prep_time_h <= abc"]', 13, "outcome_constraints", "metric <= number"),
    c("outcome-inf", 13, 'outcome_constraints: ["prep_time_h <= 1e999"]', 13, "outcome_constraints", "finite"),
    c("outcome-string", 13, 'outcome_constraints: "prep_time_h <= 5"', 13, "outcome_constraints", "valid list"),
    c("outcome-number", 13, "outcome_constraints: [5]", 13, "outcome_constraints.0", "valid string"),
    c("outcome-missing-from-float", 13, 'outcome_constraints: ["prep_time_h <= 5"]', 12, "objectives",
      "returns one number"),
    # ---- optimizer (checked against the strategy's own signature)
    c("strategy-unknown", 14, "optimizer: {strategy: nope}", 14, "optimizer.strategy",
      "unknown strategy 'nope'; available: bo, manual_ofat, random, sobol"),
    c("strategy-number", 14, "optimizer: {strategy: 5}", 14, "optimizer.strategy", "valid string"),
    c("strategy-empty", 14, "optimizer: {strategy: ''}", 14, "optimizer.strategy", "at least 1 character"),
    c("options-list", 14, "optimizer: {strategy: bo, options: [1]}", 14, "optimizer.options", "valid dictionary"),
    c("n-initial-negative", 14, "optimizer: {strategy: bo, options: {n_initial: -3}}", 14, "optimizer.options.n_initial",
      ">= 0"),
    c("raw-samples-zero", 14, "optimizer: {strategy: bo, options: {raw_samples: 0}}", 14, "optimizer.options.raw_samples",
      ">= 1"),
    c("num-restarts-zero", 14, "optimizer: {strategy: bo, options: {num_restarts: 0}}", 14,
      "optimizer.options.num_restarts", ">= 1"),
    c("mc-samples-negative", 14, "optimizer: {strategy: bo, options: {mc_samples: -1}}", 14,
      "optimizer.options.mc_samples", ">= 1"),
    c("noise-floor-two", 14, "optimizer: {strategy: bo, options: {noise_floor: 2}}", 14, "optimizer.options",
      "noise_floor"),
    c("noise-floor-nan", 14, "optimizer: {strategy: bo, options: {noise_floor: .nan}}", 14,
      "optimizer.options.noise_floor", "finite"),
    c("option-typo", 14, "optimizer: {strategy: bo, options: {n_intial: 3}}", 14, "optimizer.options.n_intial",
      "unknown option.*n_initial"),
    c("option-float-for-int", 14, "optimizer: {strategy: bo, options: {n_initial: 1.5}}", 14,
      "optimizer.options.n_initial", "valid integer"),
    c("option-text-for-int", 14, "optimizer: {strategy: bo, options: {n_initial: '3'}}", 14,
      "optimizer.options.n_initial", "valid integer"),
    c("option-bool-for-int", 14, "optimizer: {strategy: bo, options: {raw_samples: true}}", 14,
      "optimizer.options.raw_samples", "valid integer"),
    c("option-for-other-strategy", 14, "optimizer: {strategy: sobol, options: {n_initial: 3}}", 14,
      "optimizer.options.n_initial", "unknown option"),
    c("option-seed", 14, "optimizer: {strategy: bo, options: {seed: 3}}", 14, "optimizer.options.seed",
      "top-level `seed`"),
    c("optimizer-typo-field", 14, "optimizer: {strategy: bo, option: {}}", 14, "optimizer.option", "unknown field"),
    # ---- budget and parallelism
    c("experiments-zero", 15, "budget: {experiments: 0}", 15, "budget.experiments", "greater than 0"),
    c("experiments-negative", 15, "budget: {experiments: -1}", 15, "budget.experiments", "greater than 0"),
    c("experiments-bool", 15, "budget: {experiments: true}", 15, "budget.experiments", "valid integer"),
    c("experiments-float", 15, "budget: {experiments: 1.5}", 15, "budget.experiments", "valid integer"),
    c("experiments-text", 15, "budget: {experiments: '10'}", 15, "budget.experiments", "valid integer"),
    c("experiments-missing", 15, "budget: {wall_time_s: 1h}", 15, "budget.experiments", "Field required"),
    c("budget-number", 15, "budget: 5", 15, "budget", "valid dictionary"),
    c("wall-nan", 15, "budget: {experiments: 5, wall_time_s: .nan}", 15, "budget.wall_time_s", "finite"),
    c("wall-text", 15, "budget: {experiments: 5, wall_time_s: abc}", 15, "budget.wall_time_s", "cannot read duration"),
    c("wall-negative", 15, "budget: {experiments: 5, wall_time_s: -5}", 15, "budget.wall_time_s", "positive"),
    c("wall-zero", 15, "budget: {experiments: 5, wall_time_s: 0}", 15, "budget.wall_time_s", "positive"),
    c("wall-bool", 15, "budget: {experiments: 5, wall_time_s: true}", 15, "budget.wall_time_s", "duration"),
    c("wall-inf", 15, "budget: {experiments: 5, wall_time_s: .inf}", 15, "budget.wall_time_s", "finite"),
    c("wall-1e999", 15, "budget: {experiments: 5, wall_time_s: 1.0e+999}", 15, "budget.wall_time_s", "finite"),
    c("wall-unit", 15, "budget: {experiments: 5, wall_time_s: 5 fortnights}", 15, "budget.wall_time_s",
      "cannot read duration"),
    c("batch-zero", 16, "batch_size: 0", 16, "batch_size", "greater than 0"),
    c("batch-bool", 16, "batch_size: true", 16, "batch_size", "valid integer"),
    c("batch-float", 16, "batch_size: 1e6", 16, "batch_size", "valid integer"),
    c("batch-huge", 16, "batch_size: 1000000", 16, "batch_size", "less than or equal to 1000"),
    c("in-flight-zero", 17, "max_in_flight: 0", 17, "max_in_flight", "greater than 0"),
    c("in-flight-huge", 17, "max_in_flight: 100000", 17, "max_in_flight", "less than or equal to 256"),
    c("in-flight-text", 17, "max_in_flight: '2'", 17, "max_in_flight", "valid integer"),
    # ---- executor (checked against the target's signature)
    c("executor-type-unknown", 18, "executor: {type: nope}", 18, "executor.type", "unknown campaign executor 'nope'"),
    c("executor-no-target", 18, "executor: {type: function}", 18, "executor", "needs target"),
    c("executor-target-format", 18, "executor: {type: function, target: no-colon}", 18, "executor", "needs target"),
    c("executor-module-missing", 18, "executor: {type: function, target: cryoopt.nope:fn}", 18, "executor.target",
      "cannot import module"),
    c("executor-attr-missing", 18, "executor: {type: function, target: cryoopt.campaign.demo:nope}", 18,
      "executor.target", "has no 'nope'"),
    c("executor-not-callable", 18, "executor: {type: function, target: cryoopt.campaign.demo:__all__}", 18,
      "executor.target", "not callable"),
    c("executor-option-typo", 18, STAINING % "{noise_fracc: 0.1}", 18, "executor.options.noise_fracc",
      "unknown option.*noise_frac"),
    c("executor-option-for-no-options", 18,
      "executor: {type: function, target: cryoopt.campaign.demo:zero_cost, options: {a: 1}}", 18, "executor.options.a",
      "unknown option"),
    c("executor-option-type", 18, STAINING % "{seed: abc}", 18, "executor.options.seed", "valid integer"),
    c("executor-option-nan", 18, STAINING % "{noise_frac: .nan}", 18, "executor.options.noise_frac", "finite"),
    c("executor-idempotent-text", 18,
      "executor: {type: function, target: cryoopt.campaign.demo:zero_cost, idempotent: 'yes'}", 18,
      "executor.idempotent", "valid boolean"),
    c("executor-idempotent-number", 18,
      "executor: {type: function, target: cryoopt.campaign.demo:zero_cost, idempotent: 5}", 18,
      "executor.idempotent", "valid boolean"),
    c("executor-options-list", 18, "executor: {type: function, target: cryoopt.campaign.demo:zero_cost, options: [1]}",
      18, "executor.options", "valid dictionary"),
    c("executor-string", 18, "executor: function", 18, "executor", "valid dictionary"),
    c("executor-timeout-negative", 18,
      "executor: {type: function, target: cryoopt.campaign.demo:zero_cost, timeout_s: -1}", 18, "executor.timeout_s",
      "positive"),
    c("executor-timeout-text", 18,
      "executor: {type: function, target: cryoopt.campaign.demo:zero_cost, timeout_s: soon}", 18, "executor.timeout_s",
      "cannot read duration"),
    c("executor-poll-zero", 18,
      "executor: {type: function, target: cryoopt.campaign.demo:zero_cost, suspend_poll_s: 0}", 18,
      "executor.suspend_poll_s", "greater than 0"),
    c("executor-unknown-field", 18, "executor: {type: function, target: cryoopt.campaign.demo:zero_cost, timeout: 5}", 18,
      "executor.timeout", "unknown field; did you mean 'timeout_s'\\? allowed here: type, target, options"),
    c("clem-agent-unknown", 18, CLEM % "{agent: nope}", 18, "executor.options.agent", "unknown agent 'nope'"),
    c("clem-option-typo", 18, CLEM % "{max_section: 3}", 18, "executor.options.max_section", "unknown option"),
    c("clem-option-type", 18, CLEM % "{max_sections: many}", 18, "executor.options.max_sections", "valid integer"),
    c("clem-objective-missing", 18, CLEM % "{}", 12, "objectives.objective", "results have no 'objective'"),
    # the block's env is checked before the campaign starts, not at pre-training (after the journal exists)
    c("clem-sections-zero", 18, CLEM % "{max_sections: 0}", 18, "executor.options.max_sections", "integer >= 1"),
    c("clem-pretrain-negative", 18, CLEM % "{pretrain_steps: -5}", 18, "executor.options.pretrain_steps", ">= 0"),
    c("clem-scenario-unknown", 18, CLEM % "{env_kwargs: {scenario: neuron}}", 18, "executor.options.env_kwargs",
      "unknown scenario 'neuron'; available: bead_calibration, neurons, tissue_block"),
    c("clem-backend-unknown", 18, CLEM % "{env_kwargs: {backend: hardware}}", 18, "executor.options.env_kwargs",
      r"backend must be one of \('direct', 'instruments', 'socket'\)"),
    c("clem-env-typo", 18, CLEM % "{env_kwargs: {image_sise: 64}}", 18, "executor.options.env_kwargs", "image_sise"),
    c("clem-image-size-zero", 18, CLEM % "{env_kwargs: {image_size: 0}}", 18, "executor.options.env_kwargs.image_size",
      "positive number of pixels"),
    c("clem-env-id-unknown", 18, CLEM % "{env_id: cryoopt/Nope-v0}", 18, "executor.options.env_id",
      "Registered cryoopt envs: cryoopt/CLEMProtocol-v0"),
    # ---- start protocols, replicates
    c("start-outside", 19, "start_protocols: [{x: 5, t: 5, y: 1, lg: 1, buffer: PBS}]", 19, "start_protocols.0",
      r"start_protocols\[0\].*'x' = 5"),
    c("start-number", 19, "start_protocols: [5]", 19, "start_protocols.0", "valid dictionary"),
    c("start-mapping", 19, "start_protocols: {x: 1}", 19, "start_protocols", "valid list"),
    c("start-unknown-param", 19, "start_protocols: [{x: 0.5, t: 5, y: 1, lg: 1, buffer: PBS, z: 1}]", 19,
      "start_protocols.0", "unknown parameter"),
    c("start-second-outside", 19, "start_protocols:\n  - {x: 0.5, t: 5, y: 1, lg: 1, buffer: PBS}\n"
                                  "  - {x: 0.5, t: 5, y: 1, lg: 1, buffer: HEPES}", 21, "start_protocols.1",
      "not an allowed choice"),
    c("start-violates-constraint", 19, "start_protocols: [{x: 1, t: 9, y: 1, lg: 1, buffer: PBS}]", 19,
      "start_protocols.0", "is violated"),
    c("replicate-one", 20, "replicate_every: 1", 20, "replicate_every", "0 \\(never\\) or >= 2"),
    c("replicate-negative", 20, "replicate_every: -1", 20, "replicate_every", "greater than or equal to 0"),
    c("replicate-bool", 20, "replicate_every: true", 20, "replicate_every", "valid integer"),
    # ---- evaluation, reward, feedback
    c("metrics-number", 21, "evaluation: {metrics: {objective: 5}}", 21, "evaluation.metrics.objective", "valid string"),
    c("metrics-list", 21, "evaluation: {metrics: [a]}", 21, "evaluation.metrics", "valid dictionary"),
    c("reward-weight-nan", 22, "reward: {weights: {a: .nan}}", 22, "reward.weights.a", "finite"),
    c("reward-weight-negative", 22, "reward: {weights: {a: -1}}", 22, "reward", ">= 0"),
    c("reward-not-square", 22, "reward: {comparisons: [[1, 2], [3]]}", 22, "reward", "square"),
    c("reward-zero-entry", 22, "reward: {comparisons: [[1, 0], [0, 1]]}", 22, "reward", "> 0"),
    c("reward-terms-size", 22, "reward: {comparisons: [[1, 2], [0.5, 1]], terms: [a]}", 22, "reward", "2 x 2"),
    c("feedback-mode", 23, "feedback: {mode: blend2}", 23, "feedback.mode", "record.*blend"),
    c("feedback-weight-two", 23, "feedback: {mode: blend, weight: 2}", 23, "feedback.weight", "less than or equal to 1"),
    c("feedback-weight-nan", 23, "feedback: {mode: blend, weight: .nan}", 23, "feedback.weight", "finite"),
    c("feedback-objective-unknown", 23, "feedback: {mode: blend, objective: nope}", 23, "feedback.objective",
      "'nope' is not an objective"),
    # ---- stopping
    c("target-nan", 24, "stopping: {target: .nan}", 24, "stopping.target", "finite number"),
    c("target-inf", 24, "stopping: {target: .inf}", 24, "stopping.target", "finite number"),
    c("target-text", 24, "stopping: {target: abc}", 24, "stopping.target", "finite number"),
    c("target-bool", 24, "stopping: {target: true}", 24, "stopping.target", "finite number"),
    c("target-unknown-objective", 24, "stopping: {target: {nope: 1}}", 24, "stopping.target.nope", "unknown objective"),
    c("target-dict-nan", 24, "stopping: {target: {objective: .nan}}", 24, "stopping.target", "finite number"),
    c("patience-zero", 24, "stopping: {patience: 0}", 24, "stopping.patience", "greater than 0"),
    c("patience-bool", 24, "stopping: {patience: true}", 24, "stopping.patience", "valid integer"),
    c("min-improvement-negative", 24, "stopping: {min_improvement: -1}", 24, "stopping.min_improvement",
      "greater than or equal to 0"),
    c("min-improvement-nan", 24, "stopping: {min_improvement: .nan}", 24, "stopping.min_improvement", "finite"),
    # ---- tracking, report
    c("tracking-enabled-text", 25, "tracking: {enabled: 'yes'}", 25, "tracking.enabled", "valid boolean"),
    c("tracking-uri-number", 25, "tracking: {enabled: true, uri: 5}", 25, "tracking.uri", "valid string"),
    c("tracking-experiment-empty", 25, "tracking: {enabled: true, experiment: ''}", 25, "tracking.experiment",
      "at least 1 character"),
    c("tracking-log-trials-text", 25, "tracking: {log_trials: 'no'}", 25, "tracking.log_trials", "valid boolean"),
    c("report-on-finish-text", 26, "report: {on_finish: 'no'}", 26, "report.on_finish", "valid boolean"),
]


def test_there_are_enough_variants() -> None:
    assert len(CASES) >= 150 and len({k.id for k in CASES}) == len(CASES)


def test_the_base_config_is_valid(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(BASE)
    assert main(["validate", str(p)]) == EXIT_OK


@pytest.mark.parametrize("case", CASES, ids=[k.id for k in CASES])
def test_broken_config_is_refused_with_its_line(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import re

    p = tmp_path / "c.yaml"
    p.write_bytes(case.config())
    code = main(["validate", str(p)])
    err = capsys.readouterr().err
    assert code == EXIT_CONFIG, f"accepted or wrong exit {code}: {err}"
    assert "Traceback" not in err
    where = f"{p}:{case.at}:" if case.at is not None else f"{p}:"
    assert where in err, err
    if case.field is not None:
        assert re.search(rf"{re.escape(where)} (?:{case.field}): .*(?:{case.match})", err), err
    else:
        assert re.search(case.match, err), err


def test_a_strategy_of_a_higher_layer_is_known_in_a_fresh_process(tmp_path: Path) -> None:
    """``manual_ofat`` registers itself in ``cryoopt.loop``: a config naming it is valid whether or not
    something else imported the loop first (it was refused in a fresh ``cryoopt validate``)."""
    import subprocess
    import sys

    p = tmp_path / "c.yaml"
    p.write_bytes(Case("ofat", 14, "optimizer: {strategy: manual_ofat}", None, None, "").config())
    done = subprocess.run([sys.executable, "-m", "cryoopt", "validate", str(p)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == EXIT_OK, done.stderr
