"""Plain-text rendering of failures and results.

A violation report, in this order (hypothesis + shuttle + loom):

1. headline: violation class and one sentence;
2. aligned context lines: scenario, strategy and seed, execution n of N, shrinking;
3. the interleaving as a numbered script -- step, task, operation, effect -- with
   preemptions marked ``*`` and the violating step marked ``>>``;
4. labelled evidence lines (held locks, alloc/free/access sites, racing accesses);
5. the trimmed traceback (model frames only);
6. one last line: a copy-pasteable replay command.

Long interleavings are elided in the middle unless ``verbose``.
"""

from __future__ import annotations

from ..explore.failure import Failure

MAX_SCRIPT_LINES = 80


def _params_desc(f: Failure) -> str:
    if not f.params:
        return f.scenario
    inner = ", ".join(f"{k}={v}" for k, v in f.params.items())
    return f"{f.scenario} ({inner})"


def context_lines(f: Failure) -> list[tuple[str, str]]:
    rows = [("scenario", _params_desc(f))]
    if f.defects:
        rows.append(("defects", ", ".join(f.defects)))
    rows.append(("strategy", f"{f.strategy}, seed {f.seed}"))
    rows.append(("execution", f"{f.execution} of {f.executions}"))
    if f.nondeterministic:
        rows.append(("replay", "DID NOT REPRODUCE: " + f.note))
    else:
        rows.append(("shrunk", f"{f.original_steps} -> {f.steps} steps, "
                               f"{f.original_preemptions} -> {f.preemptions} preemptions, "
                               f"in {f.shrink_runs} runs"))
    if f.failing_task:
        rows.append(("task", f.failing_task))
    rows.append(("origin", f"{f.origin['category']} at {f.origin['site']}"))
    return rows


def _aligned(rows, indent: str = "  ") -> list[str]:
    if not rows:
        return []
    w = max(len(k) for k, _ in rows)
    return [f"{indent}{k.ljust(w)}  {v}" for k, v in rows]


def script_lines(f: Failure, verbose: bool = False) -> list[str]:
    trace = f.trace
    if not trace:
        return ["  (no trace recorded)"]
    wt = max(4, max(len(s["task"]) for s in trace))
    wo = min(44, max(9, max(len(s["op"]) for s in trace)))
    last = trace[-1]["step"]
    out = [f"       {'step':>4}  {'task'.ljust(wt)}  {'operation'.ljust(wo)}  effect"]

    def line(s):
        mark = ">>" if s["step"] == last else "  "
        pre = "*" if s["preempted"] else " "
        return (f"    {mark}{pre}{s['step']:>4}  {s['task'].ljust(wt)}  "
                f"{s['op'].ljust(wo)}  {s['effect']}").rstrip()

    if verbose or len(trace) <= MAX_SCRIPT_LINES:
        out += [line(s) for s in trace]
    else:
        head = MAX_SCRIPT_LINES // 4
        tail = MAX_SCRIPT_LINES - head
        out += [line(s) for s in trace[:head]]
        out.append(f"       ... {len(trace) - head - tail} steps elided (--verbose shows all) ...")
        out += [line(s) for s in trace[-tail:]]
    out.append("    (* = preemption, >> = the step that raised the violation)")
    return out


def render_failure(f: Failure, verbose: bool = False, schedule_file: str | None = None) -> str:
    lines = [f"{f.category}: {f.message}", ""]
    lines += _aligned(context_lines(f))
    lines += ["", "Interleaving:"]
    lines += script_lines(f, verbose)
    if f.evidence:
        lines += ["", "Evidence:"]
        lines += _aligned([(k, v) for k, v in f.evidence])
    if f.traceback:
        lines += ["", "Traceback (model frames):"]
        lines += ["  " + t for t in f.traceback]
    lines += ["", "Replay:", f.replay_command(schedule_file)]
    return "\n".join(lines)


def render_trace(trace: list, tasks: list) -> str:
    f = Failure(scenario="", params={}, defects=[], strategy="", seed=0, execution=0,
                executions=0, category="", family="", message="", origin={}, evidence=[],
                failing_task=None, schedule="", original_schedule="", steps=0,
                original_steps=0, preemptions=0, original_preemptions=0, shrink_runs=0,
                tasks=tasks, trace=trace, traceback=[])
    out = script_lines(f, verbose=True)
    return "\n".join(out[:-1]).replace(">>", "  ")
