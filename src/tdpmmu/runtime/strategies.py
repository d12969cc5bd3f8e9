"""Strategies: whatever decides which task performs the next step.

A strategy is a small class that knows nothing about primitives.  It sees tasks
(``id``, ``name``, the ``pending`` operation) and answers three questions:

* :meth:`Strategy.new_execution` -- prepare the next execution; ``False`` when the
  strategy has nothing left to try (bounded DFS finished its search space).
* :meth:`Strategy.next_task(runnable, current, yielding) <Strategy.next_task>` --
  ``runnable`` is non-empty and sorted by task id; ``current`` is the task that
  reached the scheduling point (it may be blocked or finished, in which case it is
  not in ``runnable``); ``yielding`` says the current task volunteered to yield.
* :meth:`Strategy.next_value(n, label, preemptive) <Strategy.next_value>` -- a
  data choice in ``range(n)``.

All randomness comes from one ``random.Random`` seeded at construction, so the same
seed gives the same sequence of executions.  Strategies are only consulted when
more than one task is runnable (replay is consulted at every step to check it).

A *preemption* is a switch away from a current task that is still runnable and did
not yield.  ``need_resched``-like data choices count as preemptions when non-zero.
"""

from __future__ import annotations

import random

from . import traps
from .errors import ScheduleMismatch, UsageError


class Strategy:
    name = "strategy"
    #: replay wants to see (and check) forced steps too
    consult_forced = False

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.rng = random.Random(seed)

    def new_execution(self) -> bool:
        return True

    def next_task(self, runnable, current, yielding):
        raise NotImplementedError

    def next_value(self, n: int, label: str, preemptive: bool) -> int:
        return self.rng.randrange(n)

    def on_spawn(self, task) -> None:
        """A task was created (PCT gives it a priority)."""

    def end_execution(self, steps: int) -> None:
        """The execution finished after ``steps`` steps."""

    def describe(self) -> str:
        return self.name


class RandomWalk(Strategy):
    """Uniform random choice at every scheduling point (a random walk)."""

    name = "random"

    def next_task(self, runnable, current, yielding):
        if yielding and len(runnable) > 1 and current in runnable:
            others = [t for t in runnable if t is not current]
            return others[self.rng.randrange(len(others))]
        return runnable[self.rng.randrange(len(runnable))]


class PCT(Strategy):
    """Probabilistic Concurrency Testing (Burckhardt, Kothari, Musuvathi, Nagarakatte,
    "A Randomized Scheduler with Probabilistic Guarantees of Finding Bugs", ASPLOS 2010).

    Each task gets a random distinct priority (all above ``depth``); ``depth - 1``
    priority-change points are drawn uniformly from the steps ``1..k``; at change
    point ``i`` the task that ran the previous step drops to priority ``depth - i``.
    The highest-priority runnable task always runs.  A bug of depth ``d`` among ``n``
    tasks and ``k`` steps is found with probability at least ``1 / (n * k^(d-1))``.

    Deviates: ``k`` is not known in advance; it starts at ``initial_k`` and grows to the
    longest execution seen so far (as shuttle and Coyote do).  Change points that fall
    on a forced step (one runnable task) take effect at the next real decision.  A
    yielding task (cond_resched, cpu_relax) drops below every other priority so that
    spin loops make progress (Coyote's treatment of yields).  Tasks spawned during an
    execution get a random priority among the existing ones.
    """

    name = "pct"

    def __init__(self, seed: int = 0, depth: int = 3, initial_k: int = 100):
        super().__init__(seed)
        if depth < 1:
            raise UsageError("PCT depth must be at least 1")
        self.depth = depth
        self.k = initial_k
        self.prio: dict[int, float] = {}
        self.change_points: list[int] = []
        self.changes_done = 0
        self.floor = 0.0
        self.step = 0

    def describe(self) -> str:
        return f"pct(d={self.depth})"

    def new_execution(self) -> bool:
        self.prio = {}
        n_changes = self.depth - 1
        span = max(self.k, n_changes)
        self.change_points = sorted(self.rng.sample(range(1, span + 1), n_changes))
        self.changes_done = 0
        self.floor = 0.0
        self.step = 0
        return True

    def on_spawn(self, task) -> None:
        # Invariant: initial priorities are distinct and all greater than depth.
        self.prio[task.id] = self.depth + self.rng.random()

    def next_task(self, runnable, current, yielding):
        # Steps are counted by the execution; we see only decisions, so count here
        # all steps since the last decision via the current task's progress.
        self.step += 1
        prio = self.prio
        while (self.changes_done < len(self.change_points)
               and self.change_points[self.changes_done] <= self._now()):
            self.changes_done += 1
            if current.id >= 0:
                prio[current.id] = self.depth - self.changes_done
        if yielding and current.id >= 0:
            self.floor -= 1.0
            prio[current.id] = self.floor
        best = runnable[0]
        bp = prio[best.id]
        for t in runnable:
            p = prio[t.id]
            if p > bp:
                best, bp = t, p
        return best

    def _now(self) -> int:
        return traps._EX.step

    def end_execution(self, steps: int) -> None:
        if steps > self.k:
            self.k = steps


class Timeslice(Strategy):
    """What a plain threaded stress test effectively does: run one task for a random
    quantum of many steps, then switch to another at random.

    Used as the baseline that the other strategies must beat.  Quanta are drawn
    uniformly from ``[min_quantum, max_quantum]`` steps; blocking, finishing or
    yielding ends a quantum early.
    """

    name = "timeslice"

    def __init__(self, seed: int = 0, min_quantum: int = 50, max_quantum: int = 500):
        super().__init__(seed)
        self.min_quantum = min_quantum
        self.max_quantum = max_quantum
        self.left = 0

    def new_execution(self) -> bool:
        self.left = 0
        return True

    def next_task(self, runnable, current, yielding):
        if self.left > 0 and not yielding and current.state == "runnable" and current.id >= 0:
            self.left -= 1
            return current
        self.left = self.rng.randint(self.min_quantum, self.max_quantum)
        others = [t for t in runnable if t is not current] or runnable
        return others[self.rng.randrange(len(others))]

    def next_value(self, n: int, label: str, preemptive: bool) -> int:
        # need_resched() is true only when the quantum is over
        if preemptive:
            return 0 if self.left > 0 else 1 % n
        return self.rng.randrange(n)


class DFS(Strategy):
    """Bounded exhaustive depth-first search over schedules (CHESS-style).

    Musuvathi and Qadeer, "Iterative Context Bounding for Systematic Testing of
    Multithreaded Programs", PLDI 2007: with a preemption bound ``k`` it enumerates
    every schedule with at most ``k`` preemptions; with ``None`` every schedule.  The
    search is stateless: each execution replays the prefix stored on the stack and then
    continues with the default choice (keep running the current task; after a yield,
    the next task in id order), pushing a frame at every real decision.  A yielding
    task is not re-chosen while another task can run (CHESS's fairness rule), so spin
    loops cannot make the search infinite; passing over the next task at a yield (an
    unfair choice) costs one unit of the bound like a preemption, so two spinners cannot
    starve the task they wait for within the bound.

    :attr:`exhausted` becomes true when every schedule within the bound has been run:
    only then may a caller claim "all schedules within bound k explored".  Data
    choices are enumerated too (non-zero answers to preemptive choices cost one
    preemption).
    """

    name = "dfs"

    def __init__(self, seed: int = 0, preemption_bound: int | None = 2):
        super().__init__(seed)
        self.bound = preemption_bound
        # frame: [options, costs, index, preemptions_before, is_task]
        self.stack: list[list] = []
        self.pos = 0
        self.preemptions = 0
        self.started = False
        self.exhausted = False

    def describe(self) -> str:
        return "dfs(unbounded)" if self.bound is None else f"dfs(k={self.bound})"

    def _allowed(self, pre: int, cost: int) -> bool:
        return self.bound is None or pre + cost <= self.bound

    def new_execution(self) -> bool:
        self.pos = 0
        self.preemptions = 0
        if not self.started:
            self.started = True
            return True
        stack = self.stack
        while stack:
            options, costs, idx, pre, _ = frame = stack[-1]
            for j in range(idx + 1, len(options)):
                if self._allowed(pre, costs[j]):
                    frame[2] = j
                    return True
            stack.pop()
        self.exhausted = True
        return False

    def _frame(self, options, costs, is_task):
        stack = self.stack
        pos = self.pos
        self.pos = pos + 1
        if pos < len(stack):
            frame = stack[pos]
            if frame[0] != options or frame[4] != is_task:
                from .errors import ModelInternalError
                raise ModelInternalError(
                    f"nondeterministic scenario: decision {pos} offered {options}, "
                    f"previously {frame[0]}")
        else:
            idx = 0
            while not self._allowed(self.preemptions, costs[idx]):
                idx += 1
            frame = [options, costs, idx, self.preemptions, is_task]
            stack.append(frame)
        j = frame[2]
        self.preemptions += costs[j]
        return options[j]

    def next_task(self, runnable, current, yielding):
        ids = [t.id for t in runnable]
        cur_runnable = current.id >= 0 and current in runnable
        if cur_runnable and yielding and len(ids) > 1:
            # Fairness (CHESS): a yielding task lets the others run; re-running a
            # spinning task at once cannot change anything and would never end.
            ids = [i for i in ids if i != current.id]
            later = [i for i in ids if i > current.id]
            default = later[0] if later else ids[0]
        elif cur_runnable and not yielding:
            default = current.id
        else:
            default = ids[0]
        options = tuple([default] + [i for i in ids if i != default])
        # a deviation from the default costs one unit of the bound: a preemption, or at a
        # yield an unfair choice (passing over the next task in order) -- free unfair
        # choices let two spinners hand the CPU to each other forever and starve the task
        # they wait for (CHESS's fairness; a bounded search must not report that livelock)
        costs = tuple(0 if (o == default or not cur_runnable) else 1 for o in options)
        chosen = self._frame(options, costs, True)
        for t in runnable:
            if t.id == chosen:
                return t
        raise AssertionError("unreachable")

    def next_value(self, n: int, label: str, preemptive: bool) -> int:
        options = tuple(range(n))
        costs = tuple(1 if (preemptive and v) else 0 for v in options)
        return self._frame(options, costs, False)


class FreeRun(Strategy):
    """Never preempt: keep running the current task until it blocks, yields or finishes,
    then take the lowest-numbered runnable task (after a yield, the next one in id order).

    This is a plain sequential run, not an exploration.  Because it never switches at a
    scheduling point, model code may collapse a range of per-entry steps into one
    vectorised step while it runs (``traps.free_run()``); that is how the model's
    performance figures are measured.
    """

    name = "freerun"
    free_run = True

    def next_task(self, runnable, current, yielding):
        if current in runnable and not yielding:
            return current
        if yielding:
            later = [t for t in runnable if t.id > current.id]
            if later:
                return later[0]
        return runnable[0]

    def next_value(self, n: int, label: str, preemptive: bool) -> int:
        return 0


class Replay(Strategy):
    """Replay a recorded schedule, checking every step.

    Strict mode refuses any mismatch with a precise message ("step 12 expected vcpu1,
    runnable were vcpu0, zap").  Lenient mode (used by the shrinker) follows the
    schedule where it can and otherwise takes the default choice (keep the current
    task, else the lowest id; data choice 0), then continues that way once the
    schedule runs out.
    """

    name = "replay"
    consult_forced = True

    def __init__(self, choices, strict: bool = True):
        super().__init__(0)
        self.choices = list(choices)
        self.strict = strict
        self.i = 0
        self.step = 0

    def new_execution(self) -> bool:
        self.i = 0
        self.step = 0
        return True

    def _next(self):
        if self.i < len(self.choices):
            c = self.choices[self.i]
            self.i += 1
            return c
        return None

    def next_task(self, runnable, current, yielding):
        self.step += 1
        c = self._next()
        for t in runnable:
            if t.id == c:
                return t
        if self.strict:
            names = ", ".join(t.name for t in runnable)
            if c is None:
                raise ScheduleMismatch(
                    f"step {self.step}: the schedule ended but the execution goes on "
                    f"(runnable were {names})")
            if c < 0:
                raise ScheduleMismatch(
                    f"step {self.step}: the schedule has a data choice ({~c}) where the "
                    f"execution chooses a task (runnable were {names})")
            raise ScheduleMismatch(
                f"step {self.step} expected {self._name(c)}, runnable were {names}")
        if current in runnable and not yielding:
            return current
        return runnable[0]

    def next_value(self, n: int, label: str, preemptive: bool) -> int:
        c = self._next()
        if c is not None and c < 0 and ~c < n:
            return ~c
        if self.strict:
            what = "ended" if c is None else (
                f"has task {self._name(c)}" if c >= 0 else f"has value {~c}")
            raise ScheduleMismatch(
                f"after step {self.step}: the execution chooses {label} among {n} values "
                f"but the schedule {what}")
        return 0

    def leftover(self) -> int:
        return len(self.choices) - self.i

    def _name(self, tid: int) -> str:
        ex = traps._EX
        if ex is not None and 0 <= tid < len(ex.tasks):
            return ex.tasks[tid].name
        return f"task {tid} (which does not exist)"


STRATEGIES = {
    "random": RandomWalk,
    "pct": PCT,
    "dfs": DFS,
    "timeslice": Timeslice,
    "freerun": FreeRun,
}


def make_strategy(name: str, seed: int = 0, **options) -> Strategy:
    """Build a strategy by name; unknown names and options are usage errors."""
    cls = STRATEGIES.get(name)
    if cls is None:
        raise UsageError(f"unknown strategy {name!r} (choose from {', '.join(STRATEGIES)})")
    try:
        return cls(seed=seed, **options)
    except TypeError as e:
        raise UsageError(f"bad option for strategy {name}: {e}") from None
