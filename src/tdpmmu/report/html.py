"""A self-contained HTML page showing a failing interleaving as a timeline.

One lane per task; one box per step, at its step number; lock holdings and RCU
read-side sections as bars under the steps that opened and closed them; preemptions
marked; the violating step highlighted; hovering a step shows its operation, effect and
source line.  The page embeds the failure as JSON and draws itself with a little inline
JavaScript (no network, no external files), so it can be mailed or attached to a bug.

Structure the tests rely on (stable): ``#timeline`` holds one ``.lane`` per task
(``data-task``), each step is a ``.step`` (``data-step``, ``data-task``) with ``.violation``
on the violating one and ``.preempted`` where the strategy preempted; bars are ``.bar``
with ``data-kind`` ``lock`` or ``rcu`` and ``data-label``.
"""

from __future__ import annotations

import html
import json

from ..explore.failure import Failure
from .text import context_lines

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.2em; color: #a00; margin-bottom: .2em; }
.msg { font-size: 1em; margin-bottom: 1em; }
table.ctx td { padding: 0 1em 0 0; vertical-align: top; }
table.ctx td.k { color: #666; }
#timeline { margin: 1em 0; border-top: 1px solid #ddd; overflow-x: auto; }
.lane { display: flex; align-items: flex-start; border-bottom: 1px solid #ddd; min-height: 46px; }
.lane-name { width: 9em; flex: none; font-weight: 600; padding: 4px; font-size: .9em; }
.lane-body { position: relative; flex: none; height: 46px; }
.step { position: absolute; top: 4px; width: 10px; height: 14px; background: #4a78c2;
        border-radius: 2px; cursor: default; }
.step.preempted { background: #e08a00; }
.step.violation { background: #d00; outline: 3px solid #f66; z-index: 2; }
.bar { position: absolute; height: 5px; border-radius: 2px; opacity: .8; }
.bar[data-kind=lock] { background: #6a3; }
.bar[data-kind=rcu] { background: #a5c; }
#tip { position: fixed; background: #ffe; border: 1px solid #999; padding: 4px 6px;
       font: 12px monospace; display: none; pointer-events: none; max-width: 60em; z-index: 9; }
.legend span { display: inline-block; margin-right: 1.2em; font-size: .85em; }
.legend i { display: inline-block; width: 12px; height: 10px; margin-right: 4px; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; }
"""

_JS = r"""
(function () {
  const f = JSON.parse(document.getElementById('failure-data').textContent);
  const trace = f.trace;
  const W = 14;                                   // pixels per step
  const last = trace.length ? trace[trace.length - 1].step : 0;
  const tasks = [];
  for (const s of trace) if (!tasks.includes(s.task)) tasks.push(s.task);
  const tl = document.getElementById('timeline');
  const tip = document.getElementById('tip');
  const lanes = {};
  for (const t of tasks) {
    const lane = document.createElement('div');
    lane.className = 'lane'; lane.dataset.task = t;
    const name = document.createElement('div');
    name.className = 'lane-name'; name.textContent = t;
    const body = document.createElement('div');
    body.className = 'lane-body'; body.style.width = (last + 2) * W + 'px';
    lane.append(name, body); tl.append(lane); lanes[t] = body;
  }
  function hover(el, text) {
    el.addEventListener('mousemove', e => {
      tip.textContent = text; tip.style.display = 'block';
      tip.style.left = (e.clientX + 12) + 'px'; tip.style.top = (e.clientY + 12) + 'px';
    });
    el.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
    el.title = text;
  }
  const open = {};                                // task -> label -> [start step, depth]
  const rcuDepth = {};
  function bar(task, kind, label, from, to, row) {
    const b = document.createElement('div');
    b.className = 'bar'; b.dataset.kind = kind; b.dataset.label = label;
    b.style.left = (from * W) + 'px'; b.style.width = Math.max(W, (to - from + 1) * W) + 'px';
    b.style.top = (22 + 7 * row) + 'px';
    hover(b, kind === 'rcu' ? 'RCU read-side section, steps ' + from + '-' + to
                            : label + ' held, steps ' + from + '-' + to);
    lanes[task].append(b);
  }
  for (const s of trace) {
    const el = document.createElement('div');
    el.className = 'step' + (s.preempted ? ' preempted' : '') + (s.step === last ? ' violation' : '');
    el.dataset.step = s.step; el.dataset.task = s.task;
    el.style.left = (s.step * W) + 'px';
    hover(el, 'step ' + s.step + '  ' + s.task + '  ' + s.op + (s.effect ? '  -> ' + s.effect : '')
              + '\n' + s.site + (s.step === last ? '\n*** violation: ' + f.category + ' ***' : ''));
    lanes[s.task].append(el);
    const o = open[s.task] = open[s.task] || {};
    if (s.kind === 'acquire' && s.object) o[s.object] = [s.step, Object.keys(o).length];
    if (s.kind === 'release' && s.object && o[s.object]) {
      bar(s.task, 'lock', s.object, o[s.object][0], s.step, o[s.object][1]); delete o[s.object];
    }
    if (s.op.startsWith('rcu_read_lock')) {
      rcuDepth[s.task] = (rcuDepth[s.task] || 0) + 1;
      if (rcuDepth[s.task] === 1) o['\u0000rcu'] = [s.step, 3];
    }
    if (s.op.startsWith('rcu_read_unlock') && rcuDepth[s.task]) {
      rcuDepth[s.task] -= 1;
      if (rcuDepth[s.task] === 0 && o['\u0000rcu']) {
        bar(s.task, 'rcu', 'rcu', o['\u0000rcu'][0], s.step, 3); delete o['\u0000rcu'];
      }
    }
  }
  for (const t of tasks)                          // still held at the violation
    for (const [k, v] of Object.entries(open[t] || {}))
      bar(t, k === '\u0000rcu' ? 'rcu' : 'lock', k === '\u0000rcu' ? 'rcu' : k, v[0], last, v[1]);
  document.body.dataset.rendered = 'yes';
})();
"""


def render_html(f: Failure) -> str:
    """The page for one failure (a complete HTML document)."""
    data = json.dumps(f.to_dict()).replace("</", "<\\/")
    rows = "".join(f"<tr><td class=k>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                   for k, v in context_lines(f))
    ev = "".join(f"<tr><td class=k>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                 for k, v in f.evidence)
    tb = html.escape("\n".join(f.traceback))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>tdpmmu: {html.escape(f.category)} in {html.escape(f.scenario)}</title>
<style>{_CSS}</style></head>
<body>
<h1>{html.escape(f.category)}</h1>
<div class="msg">{html.escape(f.message)}</div>
<table class="ctx">{rows}</table>
<h2>Interleaving</h2>
<div class="legend"><span><i style="background:#4a78c2"></i>step</span>
<span><i style="background:#e08a00"></i>preemption</span>
<span><i style="background:#d00"></i>violation</span>
<span><i style="background:#6a3"></i>lock held</span>
<span><i style="background:#a5c"></i>RCU read-side section</span>
(hover a box for the operation and its source line)</div>
<div id="timeline"></div>
<div id="tip"></div>
<h2>Evidence</h2>
<table class="ctx">{ev or '<tr><td>-</td></tr>'}</table>
<h2>Traceback</h2>
<pre>{tb}</pre>
<h2>Replay</h2>
<pre id="replay">{html.escape(f.replay_command())}</pre>
<script type="application/json" id="failure-data">{data}</script>
<script>{_JS}</script>
</body></html>
"""
