"""Failure: one distinct finding, as plain data (serialisable to JSON, schema 1).

Built by the explorer from a *traced replay* of the (shrunk) failing schedule, so
everything in it -- the interleaving, the evidence, the traceback -- comes from an
execution that really happened with exactly that schedule.

JSON schema (``Failure.to_dict``), version 1:

=====================  =========================================================
key                    meaning
=====================  =========================================================
schema                 1
scenario, params       scenario name and its full parameter dict
defects                active defects (list of names)
strategy, seed         strategy description ("pct(d=3)") and seed
execution, executions  the failing execution's 1-based index, and the budget
category, family       violation class name and its checker family
message                one sentence
origin                 {"category", "site"}: what shrinking preserves
evidence               [[label, text], ...]
failing_task           task in which the violation was raised (or null)
schedule               shrunk schedule string (replay it with ``tdpmmu replay``)
original_schedule      the schedule as first found
steps, original_steps  step counts after / before shrinking
preemptions, original_preemptions
shrink_runs            executions spent shrinking
tasks                  task names in id order
trace                  [{step, task, op, kind, object, effect, site, preempted}]
traceback              trimmed traceback lines (model frames)
nondeterministic       true when the failure did not reproduce on replay
note                   extra explanation (e.g. what differed on replay)
=====================  =========================================================
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass, field

SCHEMA = 1


@dataclass
class Failure:
    scenario: str
    params: dict
    defects: list
    strategy: str
    seed: int
    execution: int
    executions: int
    category: str
    family: str
    message: str
    origin: dict
    evidence: list
    failing_task: str | None
    schedule: str
    original_schedule: str
    steps: int
    original_steps: int
    preemptions: int
    original_preemptions: int
    shrink_runs: int
    tasks: list
    trace: list
    traceback: list
    nondeterministic: bool = False
    note: str = ""
    default_params: dict = field(default_factory=dict, repr=False)
    schema: int = SCHEMA

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("default_params", None)
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict) -> "Failure":
        from ..runtime.errors import UsageError
        if d.get("schema") != SCHEMA:
            raise UsageError(f"failure file has schema {d.get('schema')!r}, this tdpmmu reads {SCHEMA}")
        known = {f for f in cls.__dataclass_fields__}
        try:
            return cls(**{k: v for k, v in d.items() if k in known})
        except TypeError as e:
            raise UsageError(f"malformed failure file: {e}") from None

    def replay_argv(self, schedule_file: str | None = None) -> list[str]:
        argv = ["tdpmmu", "replay", self.scenario]
        for dname in self.defects:
            argv += ["--defect", dname]
        for kv in param_overrides(self.params, self.default_params):
            argv += ["--param", kv]
        if schedule_file:
            argv += ["--schedule-file", schedule_file]
        else:
            argv += ["--schedule", self.schedule]
        return argv

    def replay_command(self, schedule_file: str | None = None) -> str:
        return " ".join(shlex.quote(a) for a in self.replay_argv(schedule_file))


def param_overrides(params: dict, defaults: dict) -> list[str]:
    """``NAME=VALUE`` (as ``--param`` takes it) for each parameter not at its default."""
    return [f"{k}={_fmt(v)}" for k, v in sorted(params.items())
            if defaults.get(k, object()) != v]


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
