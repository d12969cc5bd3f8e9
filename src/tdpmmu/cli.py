"""The ``tdpmmu`` command line (click + rich).

Exit codes (:class:`tdpmmu.ExitCode`): 0 nothing found, 1 violation found, 2 usage
error (unknown scenario, malformed schedule, bad option, replay mismatch), 3 internal
error (a bug in tdpmmu), 4 nondeterminism (a failure did not reproduce).

Every command accepts ``--json`` and then prints exactly one JSON document on stdout.
Errors are one line on stderr: ``tdpmmu: error: <what is wrong>``.
"""

from __future__ import annotations

import json
import os
import sys

import click

from .explore import ExitCode, explore, replay, shrink
from .explore.campaign import CHECK_STRATEGIES  # noqa: F401  (re-exported)
from .explore.engine import ExitReason
from .report.text import render_failure, render_trace
from .runtime import errors as E
from .runtime.strategies import STRATEGIES
from .scenarios import all_defects, all_scenarios, default_scenarios, get_defect, get_scenario

LONG_SCHEDULE = 400
FAILURE_DIR = "tdpmmu-failures"
DEFAULT_BUDGET = 1000


def _plain(text) -> str:
    """Escape a dynamic cell for rich: scenario, defect and kernel text is data, never
    markup (a ``[pct]`` label would otherwise be swallowed as a style tag)."""
    from rich.markup import escape
    return escape(str(text))


def _row(table, *cells) -> None:
    """add_row with every text cell escaped (:func:`_plain`); a cell meant to be styled is
    passed as a rich ``Text``, so styling is explicit and data can never be markup."""
    from rich.text import Text
    table.add_row(*(c if isinstance(c, Text) else _plain(c) for c in cells))


def _console():
    """A rich console for stdout; wide enough for the tables when output is not a TTY."""
    from rich.console import Console
    con = Console()
    if not con.is_terminal:
        con = Console(width=200)
    return con


def _parse_params(items) -> dict:
    out = {}
    for it in items:
        if "=" not in it:
            raise E.UsageError(f"--param {it!r}: expected NAME=VALUE")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _schedule_file(f) -> str | None:
    """Long schedules go to a file; returns its path (or None to print inline)."""
    if len(f.schedule) <= LONG_SCHEDULE:
        return None
    os.makedirs(FAILURE_DIR, exist_ok=True)
    path = os.path.join(FAILURE_DIR, f"{f.scenario}-{f.origin['category']}-{f.execution}.schedule")
    with open(path, "w") as fh:
        fh.write(f.schedule + "\n")
    return path


def _print_failures(result, verbose: bool, save: str | None = None):
    for f in result.failures:
        click.echo("")
        click.echo(render_failure(f, verbose, _schedule_file(f)))
        if save:
            click.echo(f"saved: {_save_failure(f, save)}")


def _save_failure(f, directory: str) -> str:
    """Write a failure as JSON (what `tdpmmu report` reads); returns the path."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise E.UsageError(f"cannot create {directory}: {e.strerror}") from None
    path = os.path.join(directory, f"{f.scenario}-{f.category}-{f.execution}.json")
    with open(path, "w") as fh:
        fh.write(f.to_json())
    return path


def _strategy_options(strategy: str, depth, bound) -> dict:
    opts = {}
    if depth is not None:
        if strategy != "pct":
            raise E.UsageError("--depth applies to --strategy pct only")
        opts["depth"] = depth
    if bound is not None:
        if strategy != "dfs":
            raise E.UsageError("--bound applies to --strategy dfs only")
        opts["preemption_bound"] = None if bound < 0 else bound
    return opts


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tdpmmu")
def cli():
    """Explore the concurrency of KVM x86's TDP MMU model.

    \b
    tdpmmu check                       the main job: every default scenario
    tdpmmu explore sync-counter --defect counter-racy-rmw
    tdpmmu replay SCENARIO --schedule v1:...
    tdpmmu list
    """


@cli.command()
@click.option("--budget", type=click.IntRange(1), default=DEFAULT_BUDGET, show_default=True,
              help="schedules per scenario and strategy")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--scenario", "scenarios", multiple=True, help="only these scenarios (repeatable)")
@click.option("--defect", "defects", multiple=True, help="re-introduce a named bug (repeatable)")
@click.option("--jobs", type=click.IntRange(1), default=None,
              help="worker processes (default: one per CPU)")
@click.option("--stop-on-first", is_flag=True,
              help="stop at the first violation (the one the full campaign reports first)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@click.option("-v", "--verbose", is_flag=True, help="full interleavings in reports")
def check(budget, seed, scenarios, defects, jobs, stop_on_first, as_json, verbose):
    """The main job: explore every default scenario with PCT, random walk and bounded
    DFS; exit 0 only when nothing was found.

    \b
    tdpmmu check
    tdpmmu check --budget 5000 --seed 7
    tdpmmu check --defect counter-racy-rmw

    With --defect, the scenarios that exercise the defect run (and report) first.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table
    from rich.text import Text

    from .explore.campaign import check_plan, run_campaign
    jobs_plan = check_plan(budget, seed, scenarios, defects)
    err = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=err, transient=True, disable=as_json or not err.is_terminal) as prog:
        total = prog.add_task("tdpmmu check", total=len(jobs_plan))

        def done(job, r):
            prog.update(total, advance=1, description=_plain(f"{job.scenario} [{job.strategy}]"))
        results = run_campaign(jobs_plan, jobs, done, stop_on_first)
    code = max((r.exit_code for r in results), default=ExitCode.OK)
    if as_json:
        click.echo(json.dumps({"schema": 1, "budget": budget, "seed": seed,
                               "defects": list(defects), "exit_code": int(code),
                               "stopped_on_first": bool(stop_on_first),
                               "runs": [r.to_dict() for r in results]}, indent=2))
        return code
    table = Table(title=f"tdpmmu check (budget {budget}, seed {seed})")
    for col in ("scenario", "strategy", "schedules", "steps", "violations", "racy branches reached",
                "status"):
        table.add_column(col, justify="right" if col in ("schedules", "steps", "violations") else "left")
    # a key branch counts as missed only if no run of the scenario (any strategy, any
    # variant: some configurations cannot reach it, e.g. PML never write-protects) did
    under = sorted({(r.scenario, b) for r in results for b in r.under_explored
                    if all(b in x.under_explored for x in results if x.scenario == r.scenario)})
    for r in results:
        status = Text("exhausted" if r.exit_reason is ExitReason.EXHAUSTED else "budget")
        missed = [b for b in r.under_explored if (r.scenario, b) in under]
        if missed:
            status.append(f" under-explored: {', '.join(missed)}", style="yellow")
        nv = len(r.failures)
        cov = ", ".join(f"{k} {v}" for k, v in sorted(r.coverage.items())) or "-"
        _row(table, _run_label(r), r.strategy, r.executions, r.steps,
             Text(str(nv), style="red") if nv else "0", cov, status)
    _console().print(table)
    if under:
        click.echo("under-explored (a key racy branch no strategy reached): "
                   + "; ".join(f"{sc}: {b}" for sc, b in under))
    for r in results:
        _print_failures(r, verbose)
    n = sum(len(r.failures) for r in results)
    click.echo("" if n else "no violations found")
    if n:
        click.echo(f"{n} violation(s) found")
    return code


def _run_label(r) -> str:
    """The scenario, with the parameters a variant (or a defect) sets."""
    from .explore.failure import param_overrides
    from .scenarios import get_scenario
    diff = param_overrides(r.params or {}, get_scenario(r.scenario).params)
    return f"{r.scenario} ({', '.join(diff)})" if diff else r.scenario


@cli.command("explore")
@click.argument("scenario")
@click.option("--strategy", type=click.Choice(sorted(STRATEGIES)), default="pct", show_default=True)
@click.option("--schedules", type=click.IntRange(1), default=DEFAULT_BUDGET, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--defect", "defects", multiple=True, help="re-introduce a named bug (repeatable)")
@click.option("--param", "params", multiple=True, help="scenario parameter NAME=VALUE (repeatable)")
@click.option("--depth", type=click.IntRange(1), default=None, help="PCT depth d (default 3)")
@click.option("--bound", type=int, default=None, help="DFS preemption bound (-1: unbounded)")
@click.option("--max-steps", type=click.IntRange(1), default=None, help="step bound per execution")
@click.option("--no-shrink", is_flag=True, help="report failures as found")
@click.option("--stop-on-first", is_flag=True, help="stop at the first distinct failure")
@click.option("--save", default=None, metavar="DIR", help="write each failure as JSON into DIR")
@click.option("--json", "as_json", is_flag=True)
@click.option("-v", "--verbose", is_flag=True)
def explore_cmd(scenario, strategy, schedules, seed, defects, params, depth, bound, max_steps,
                no_shrink, stop_on_first, save, as_json, verbose):
    """Explore one scenario; print each distinct failure (shrunk).

    \b
    tdpmmu explore sync-rcu-pointer --defect rcu-reader-unlocked
    tdpmmu explore sync-counter --strategy dfs --bound -1 --param incs=3
    """
    r = explore(scenario, strategy=strategy, schedules=schedules, seed=seed,
                params=_parse_params(params), defects=defects, max_steps=max_steps,
                shrink=not no_shrink, stop_on_first=stop_on_first,
                strategy_options=_strategy_options(strategy, depth, bound))
    if as_json:
        if save:
            for f in r.failures:
                _save_failure(f, save)
        click.echo(json.dumps(r.to_dict(), indent=2))
        return r.exit_code
    click.echo(f"{r.scenario}: {r.executions} schedules with {r.strategy} (seed {r.seed}), "
               f"{r.steps} steps: {r.exit_reason.value}; "
               f"{len(r.failures)} distinct failure(s)")
    _print_failures(r, verbose, save)
    return r.exit_code


def _read_schedule(schedule, schedule_file) -> str:
    if (schedule is None) == (schedule_file is None):
        raise E.UsageError("give exactly one of --schedule and --schedule-file")
    if schedule_file is not None:
        try:
            with open(schedule_file) as fh:
                return fh.read().strip()
        except OSError as e:
            raise E.UsageError(f"cannot read schedule file {schedule_file}: {e.strerror}") from None
    return schedule


_schedule_opts = [
    click.option("--schedule", default=None, help="schedule string v1:..."),
    click.option("--schedule-file", default=None, help="file holding the schedule string"),
    click.option("--defect", "defects", multiple=True),
    click.option("--param", "params", multiple=True),
    click.option("--max-steps", type=click.IntRange(1), default=None),
    click.option("--json", "as_json", is_flag=True),
    click.option("-v", "--verbose", is_flag=True),
]


def _with_schedule_opts(fn):
    for opt in reversed(_schedule_opts):
        fn = opt(fn)
    return fn


@cli.command("replay")
@click.argument("scenario")
@_with_schedule_opts
def replay_cmd(scenario, schedule, schedule_file, defects, params, max_steps, as_json, verbose):
    """Replay a recorded schedule step by step; print its trace or its failure.

    \b
    tdpmmu replay sync-counter --defect counter-racy-rmw --schedule v1:...
    """
    text = _read_schedule(schedule, schedule_file)
    r = replay(scenario, text, params=_parse_params(params), defects=defects, max_steps=max_steps)
    if as_json:
        click.echo(json.dumps(r.to_dict(), indent=2))
        return r.exit_code
    if r.failure is not None:
        click.echo(render_failure(r.failure, verbose, _schedule_file(r.failure)))
    else:
        click.echo(render_trace(r.trace, r.tasks))
        click.echo(f"\n{r.scenario}: {r.steps} steps, {r.preemptions} preemptions, no violation")
    return r.exit_code


@cli.command("shrink")
@click.argument("scenario")
@_with_schedule_opts
def shrink_cmd(scenario, schedule, schedule_file, defects, params, max_steps, as_json, verbose):
    """Shrink a failing schedule (fewer preemptions, fewer steps, same failure)."""
    text = _read_schedule(schedule, schedule_file)
    f = shrink(scenario, text, params=_parse_params(params), defects=defects, max_steps=max_steps)
    if as_json:
        click.echo(f.to_json())
    else:
        click.echo(render_failure(f, verbose, _schedule_file(f)))
    return ExitCode.NONDETERMINISM if f.nondeterministic else ExitCode.VIOLATION


def _violation_classes():
    out = []
    stack = [E.Violation]
    while stack:
        k = stack.pop(0)
        if k is not E.Violation:
            fam = next(b for b in k.__mro__ if E.Violation in b.__bases__)
            out.append({"name": k.__name__, "family": fam.__name__, "summary": k.summary})
        stack.extend(k.__subclasses__())
    return out


@cli.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_cmd(as_json):
    """List scenarios, defects and the violation classes the checkers report."""
    scs = [s.to_dict() for s in all_scenarios()]
    dfs = [d.to_dict() for d in all_defects()]
    vs = _violation_classes()
    if as_json:
        from .scenarios.catalogue import OUT_OF_SCOPE, OUT_OF_SCOPE_VARIANTS
        click.echo(json.dumps({"schema": 1, "scenarios": scs, "defects": dfs, "violations": vs,
                               "out_of_scope": {**OUT_OF_SCOPE, **OUT_OF_SCOPE_VARIANTS}},
                              indent=2))
        return ExitCode.OK
    from rich.table import Table
    con = _console()
    t = Table(title="scenarios")
    for c in ("name", "parameters", "default", "description"):
        t.add_column(c)
    for s in scs:
        _row(t, s["name"], ", ".join(f"{k}={v}" for k, v in s["params"].items()),
             "yes" if s["default"] else "no", s["description"])
    con.print(t)
    t = Table(title="defects (model negative controls, design variants, self-checks)")
    for c in ("name", "expected", "scenarios", "title"):
        t.add_column(c)
    for d in dfs:
        if not d["catalogue"]:
            _row(t, d["name"], d["expected"], ", ".join(d["scenarios"]), d["title"])
    con.print(t)
    cat = [d for d in dfs if d["catalogue"]]
    if cat:
        t = Table(title="the historical bug catalogue (shared/reference/bugs.md)")
        for c in ("defect", "expected", "scenarios", "kernel fix", "title"):
            t.add_column(c)
        for d in cat:
            _row(t, d["name"], d["expected"], ", ".join(d["scenarios"]), d["fix"], d["title"])
        con.print(t)
        from .scenarios.catalogue import OUT_OF_SCOPE, OUT_OF_SCOPE_VARIANTS
        for name, why in {**OUT_OF_SCOPE, **OUT_OF_SCOPE_VARIANTS}.items():
            con.print(_plain(f"out of scope: {name}: {why}"))
    t = Table(title="violation classes (oracles and checkers)")
    for c in ("class", "family", "meaning"):
        t.add_column(c)
    for v in vs:
        _row(t, v["name"], v["family"], v["summary"])
    con.print(t)
    return ExitCode.OK


@cli.command("report")
@click.argument("failure_json", metavar="FAILURE.json")
@click.option("--html", "html_out", default=None, metavar="OUT.html",
              help="write a self-contained HTML timeline of the interleaving")
@click.option("--index", type=click.IntRange(0), default=0,
              help="which failure, when the file holds several (explore/check --json)")
@click.option("--json", "as_json", is_flag=True, help="print the failure (schema 1)")
@click.option("-v", "--verbose", is_flag=True)
def report_cmd(failure_json, html_out, index, as_json, verbose):
    """Render a saved failure: as text, or as an HTML timeline (one lane per task, lock
    and RCU bars, the violating step highlighted, hover for the source line).

    \b
    tdpmmu explore sync-refcount --defect refcount-put-then-use --save failures/
    tdpmmu report failures/sync-refcount-UseAfterFree-3.json --html uaf.html
    """
    from .explore.failure import Failure
    from .report.html import render_html
    try:
        with open(failure_json) as fh:
            doc = json.load(fh)
    except OSError as e:
        raise E.UsageError(f"cannot read {failure_json}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise E.UsageError(f"{failure_json} is not JSON: {e.msg} at line {e.lineno}") from None
    candidates = []
    if isinstance(doc, dict) and "category" in doc:
        candidates = [doc]
    elif isinstance(doc, dict) and isinstance(doc.get("failure"), dict):
        candidates = [doc["failure"]]
    elif isinstance(doc, dict) and "failures" in doc:
        candidates = list(doc["failures"])
    elif isinstance(doc, dict) and "runs" in doc:
        candidates = [f for run in doc["runs"] for f in run.get("failures", [])]
    if not candidates:
        raise E.UsageError(f"{failure_json} holds no failure")
    if index >= len(candidates):
        raise E.UsageError(f"{failure_json} holds {len(candidates)} failure(s); --index {index} "
                           f"is out of range")
    f = Failure.from_dict(candidates[index])
    if html_out:
        try:
            with open(html_out, "w") as fh:
                fh.write(render_html(f))
        except OSError as e:
            raise E.UsageError(f"cannot write {html_out}: {e.strerror}") from None
        if not as_json:
            click.echo(f"wrote {html_out}")
    if as_json:
        click.echo(f.to_json())
    elif not html_out:
        click.echo(render_failure(f, verbose))
    return ExitCode.OK


@cli.command("locks")
@click.option("--json", "as_json", is_flag=True, help="a list of objects (function, mmu_lock, ...)")
@click.option("--markdown", is_flag=True, help="the table as Markdown, for documentation")
def locks_cmd(as_json, markdown):
    """The TDP MMU's lock table, generated from the model's own declarations: which
    paths need mmu_lock for read, for write, either, or none (RCU only / lockless).

    \b
    tdpmmu locks
    tdpmmu locks --json
    tdpmmu locks --markdown > docs/locking.md
    """
    from .mmu.locking import REGISTRY, lock_table, lock_table_markdown
    if as_json and markdown:
        raise E.UsageError("give at most one of --json and --markdown")
    if as_json:
        click.echo(json.dumps(lock_table(), indent=2))
        return ExitCode.OK
    if markdown:
        click.echo(lock_table_markdown())
        return ExitCode.OK
    from rich.table import Table
    from rich.text import Text
    rows = lock_table()
    t = Table(title=f"TDP MMU lock requirements ({len(rows)} functions, from the model's "
                    f"@requires declarations)")
    for c in ("function", "mmu_lock", "other locks / RCU", "yields", "callers", "kernel"):
        t.add_column(c, overflow="fold")
    colour = {"read": "green", "write": "red", "either": "yellow", "none": "cyan"}
    for r in rows:
        req = REGISTRY[r["function"]][0]
        mode = req.describe_mmu_lock()
        c = colour.get(r["mmu_lock"], "white")
        _row(t, r["function"], Text(mode, style=c), req.other(), "yes" if r["yields"] else "no",
             ", ".join(r["callers"]) or "-", r["kernel"])
    _console().print(t)
    return ExitCode.OK


def main(argv=None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    try:
        rv = cli.main(args=argv, prog_name="tdpmmu", standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("tdpmmu: aborted", err=True)
        return 130
    except click.UsageError as e:
        click.echo(f"tdpmmu: error: {e.format_message()}", err=True)
        return int(ExitCode.USAGE_ERROR)
    except click.ClickException as e:
        click.echo(f"tdpmmu: error: {e.format_message()}", err=True)
        return int(ExitCode.USAGE_ERROR)
    except E.UsageError as e:
        click.echo(f"tdpmmu: error: {e}", err=True)
        return int(ExitCode.USAGE_ERROR)
    except E.ModelInternalError as e:
        click.echo(f"tdpmmu: {e}", err=True)
        return int(ExitCode.INTERNAL_ERROR)
    except Exception as e:  # noqa: BLE001 - anything else is our own bug
        if os.environ.get("TDPMMU_DEBUG"):
            raise
        click.echo(f"tdpmmu: internal error in tdpmmu - please file a bug: "
                   f"{type(e).__name__}: {e} (set TDPMMU_DEBUG=1 for the traceback)", err=True)
        return int(ExitCode.INTERNAL_ERROR)
    if rv is None:
        return int(ExitCode.OK)
    return int(rv)


def console_main() -> None:
    sys.exit(main())
