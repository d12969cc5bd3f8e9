"""Shrinking: make a failing schedule simpler while keeping the same failure origin.

"Simpler" is one total order, :func:`sort_key`: fewer preemptions first, then fewer
steps, then the lexicographically smaller choice list.  A candidate is accepted only
if it fails with the *same origin* (violation class + site), is strictly smaller, and
has neither more preemptions nor more steps than the best so far -- so shrinking
never grows a schedule in either measure and never slips to a different bug.

Candidates are edits of the best schedule so far, replayed *leniently*: the
execution follows the edited schedule where it can, takes the default choice where it
cannot (keep the current task, else the lowest id), and continues without
preemptions once the schedule runs out.  The schedule actually executed is what is
kept, so the result is always a schedule that replays strictly.

Passes, in order (each keeps going while it makes progress):

* ``truncate`` -- keep only a prefix of the schedule (the default continuation has no
  preemptions); tries the shortest prefixes first.
* ``drop_run`` -- delete one run of consecutive steps by the same task.
* ``merge_runs`` -- move a run next to the previous run of the same task, removing
  the switches around what lay between.
* ``zero_choice`` -- set a data choice (need_resched) to 0.

Budget: ``max_runs`` executions (a partly shrunk schedule is better than none).
"""

from __future__ import annotations

from ..runtime import schedule as sched

DEFAULT_MAX_RUNS = 400


def sort_key(preemptions: int, choices) -> tuple:
    steps = sum(1 for c in choices if c >= 0)
    return (preemptions, steps, len(choices), tuple(choices))


class Shrinker:
    def __init__(self, attempt, choices, preemptions, max_runs: int = DEFAULT_MAX_RUNS):
        """``attempt(choices, max_steps) -> (executed_choices, preemptions) | None``
        replays leniently and returns what ran if it failed with the same origin, else
        None; ``max_steps`` is the best schedule's step count (a longer run cannot be
        kept, so the replay may give up there)."""
        self.attempt = attempt
        self.best = list(choices)
        self.best_key = sort_key(preemptions, self.best)
        self.best_preemptions = preemptions
        self.runs = 0
        self.max_runs = max_runs

    def _try(self, candidate) -> bool:
        if self.runs >= self.max_runs:
            return False
        self.runs += 1
        got = self.attempt(candidate, self.best_key[1])
        if got is None:
            return False
        executed, pre = got
        key = sort_key(pre, executed)
        # never grow: neither more preemptions nor more steps, and strictly simpler
        if key < self.best_key and pre <= self.best_key[0] and key[1] <= self.best_key[1]:
            self.best, self.best_key, self.best_preemptions = list(executed), key, pre
            return True
        return False

    def shrink(self) -> list[int]:
        progress = True
        while progress and self.runs < self.max_runs:
            progress = False
            for p in (self.truncate, self.drop_run, self.merge_runs, self.zero_choice):
                if p():
                    progress = True
        return self.best

    # -- passes ----------------------------------------------------------------

    def truncate(self) -> bool:
        rs = sched.runs(self.best)
        for k in range(1, len(rs)):
            if self._try(sched.unruns(rs[:k])):
                return True
        return False

    def drop_run(self) -> bool:
        changed = False
        i = len(sched.runs(self.best)) - 1
        while i >= 0 and self.runs < self.max_runs:
            rs = sched.runs(self.best)
            if i < len(rs) and self._try(sched.unruns(rs[:i] + rs[i + 1:])):
                changed = True
            i -= 1
        return changed

    def merge_runs(self) -> bool:
        changed = False
        i = 0
        while self.runs < self.max_runs:
            rs = sched.runs(self.best)
            if i >= len(rs):
                break
            c, _ = rs[i]
            j = next((j for j in range(i + 2, len(rs)) if rs[j][0] == c and c >= 0), None)
            if j is not None:
                cand = rs[:i + 1] + [rs[j]] + rs[i + 1:j] + rs[j + 1:]
                if self._try(sched.unruns(cand)):
                    changed = True
                    continue
            i += 1
        return changed

    def zero_choice(self) -> bool:
        changed = False
        for idx in range(len(self.best)):
            if idx < len(self.best) and self.best[idx] < -1:   # a data choice other than 0
                cand = list(self.best)
                cand[idx] = ~0
                if self._try(cand):
                    changed = True
        return changed
