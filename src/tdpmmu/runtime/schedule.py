"""A schedule is data: the record of every choice of one execution, as compact text.

Format (version 1)::

    v1:<hash>:<body>

* ``hash`` -- 8 hex digits of SHA-256 over the scenario name, its parameters and the
  active defects (canonical JSON).  Replay refuses a schedule whose hash differs from
  the scenario it is given, so a schedule cannot silently be replayed against the
  wrong program.
* ``body`` -- comma-separated tokens, in execution order:
  ``<task>`` or ``<task>x<count>`` for a run of steps by one task (task ids are spawn
  order, 0-based), ``d<value>`` for a data choice.  Example:
  ``v1:0c9a51f2:0x12,1x3,d1,0x5``.

The text uses only characters that are safe to paste in a shell unquoted.
"""

from __future__ import annotations

import hashlib
import json
import re

from .errors import UsageError

VERSION = "v1"
_TOKEN = re.compile(r"^(?:(\d+)(?:x(\d+))?|d(\d+))$")


def params_hash(scenario: str, params: dict, defects=()) -> str:
    blob = json.dumps({"scenario": scenario, "params": params, "defects": sorted(defects)},
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def encode(choices, phash: str) -> str:
    parts: list[str] = []
    i, n = 0, len(choices)
    while i < n:
        c = choices[i]
        if c < 0:
            parts.append(f"d{~c}")
            i += 1
            continue
        j = i + 1
        while j < n and choices[j] == c:
            j += 1
        run = j - i
        parts.append(str(c) if run == 1 else f"{c}x{run}")
        i = j
    return f"{VERSION}:{phash}:{','.join(parts)}"


def decode(text: str) -> tuple[str, list[int]]:
    """Parse a schedule string into (hash, choices).  Malformed input is a UsageError."""
    text = text.strip()
    pieces = text.split(":")
    if len(pieces) != 3:
        raise UsageError(f"malformed schedule {_short(text)!r}: expected 'v1:<hash>:<steps>'")
    version, phash, body = pieces
    if version != VERSION:
        raise UsageError(f"unsupported schedule version {version!r} (this tdpmmu reads {VERSION})")
    if not re.fullmatch(r"[0-9a-f]{8}", phash):
        raise UsageError(f"malformed schedule hash {phash!r}: expected 8 hex digits")
    choices: list[int] = []
    if body:
        for k, tok in enumerate(body.split(",")):
            m = _TOKEN.match(tok)
            if m is None:
                raise UsageError(f"malformed schedule token {tok!r} at position {k}")
            if m.group(3) is not None:
                choices.append(~int(m.group(3)))
            else:
                count = int(m.group(2) or 1)
                if count < 1:
                    raise UsageError(f"malformed schedule token {tok!r}: count must be >= 1")
                choices.extend([int(m.group(1))] * count)
    return phash, choices


def runs(choices) -> list[tuple[int, int]]:
    """Run-length view: [(choice, count)], data choices kept as single entries."""
    out: list[tuple[int, int]] = []
    for c in choices:
        if out and c >= 0 and out[-1][0] == c:
            out[-1] = (c, out[-1][1] + 1)
        else:
            out.append((c, 1))
    return out


def unruns(rs) -> list[int]:
    out: list[int] = []
    for c, k in rs:
        out.extend([c] * k)
    return out


def _short(s: str) -> str:
    return s if len(s) <= 40 else s[:37] + "..."
