"""The page of the HTML report: its template, stylesheet and table sorter (`genprof.reports.html` fills it).

The sorter is the page's only script; the report's Content-Security-Policy
allows it by its hash, computed where the page is rendered.
"""

from __future__ import annotations

import jinja2

SORTER_JS = """(function () {
  function key(td) {
    var v = td.getAttribute('data-sort');
    if (v !== null && v !== '' && !isNaN(Number(v))) { return {n: Number(v)}; }
    return {s: td.textContent.trim().toLowerCase()};
  }
  function cmp(a, b) {
    if ('n' in a && 'n' in b) { return a.n - b.n; }
    if ('n' in a) { return -1; }
    if ('n' in b) { return 1; }
    return a.s < b.s ? -1 : (a.s > b.s ? 1 : 0);
  }
  function sortBy(table, th, i) {
    var dir = th.getAttribute('aria-sort') === 'ascending' ? 'descending' : 'ascending';
    var heads = table.tHead.rows[0].cells;
    for (var h = 0; h < heads.length; h++) { heads[h].removeAttribute('aria-sort'); }
    th.setAttribute('aria-sort', dir);
    var body = table.tBodies[0], sign = dir === 'ascending' ? 1 : -1, rows = [];
    for (var k = 0; k < body.rows.length; k++) {
      rows.push({r: body.rows[k], key: key(body.rows[k].cells[i]), idx: k});
    }
    rows.sort(function (a, b) { return sign * cmp(a.key, b.key) || a.idx - b.idx; });
    for (var j = 0; j < rows.length; j++) { body.appendChild(rows[j].r); }
  }
  var tables = document.querySelectorAll('table.sortable');
  for (var t = 0; t < tables.length; t++) {
    (function (table) {
      var heads = table.tHead.rows[0].cells;
      for (var i = 0; i < heads.length; i++) {
        (function (th, i) {
          th.tabIndex = 0;
          th.addEventListener('click', function () { sortBy(table, th, i); });
          th.addEventListener('keydown', function (e) {
            if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sortBy(table, th, i); }
          });
        })(heads[i], i);
      }
    })(tables[t]);
  }
  document.documentElement.setAttribute('data-sorter', 'ready');
})();
"""

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1400px;
       padding: 0 24px 48px; color: #222; line-height: 1.4; }
h1 { margin-top: 24px; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 36px; }
nav a { margin-right: 12px; } .muted { color: #666; font-size: 0.9em; }
table.sortable { border-collapse: collapse; font-size: 0.85em; margin: 8px 0 16px; }
table.sortable th, table.sortable td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top;
                                      white-space: nowrap; }
#table-failed td:nth-child(6) { white-space: normal; min-width: 30em; }
table.sortable th { background: #f3f3f3; cursor: pointer; user-select: none; position: sticky; top: 0; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; }
table.sortable td[data-sort]:not([data-sort=""]) { text-align: right; font-variant-numeric: tabular-nums; }
table.sortable tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 16px 0 28px; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 0.8em; }
code { background: #f3f3f3; padding: 0 3px; }
.note { background: #fff6e0; border-left: 4px solid #e0a000; padding: 6px 10px; margin: 6px 0; }
.wrap { overflow-x: auto; }
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src '{{ script_hash }}'; base-uri 'none'; form-action 'none'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>{{ css }}</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="muted">Generated {{ generated }} by genprof {{ version }} from {{ n_runs }} run(s) in
{% for r in roots %}<code>{{ r }}</code>{% if not loop.last %}, {% endif %}{% endfor %}.
Click a table header to sort.</p>
<nav>{% for sid, name in toc %}<a href="#{{ sid }}">{{ name }}</a>{% endfor %}</nav>
{% if notes %}<div id="notes">{% for n in notes %}<p class="note">{{ n }}</p>{% endfor %}</div>{% endif %}

{% macro render(t) -%}
{% if t.caption %}<p class="muted">{{ t.caption }}</p>{% endif %}
{% if t.rows %}
<div class="wrap"><table class="sortable" id="{{ t.id }}">
<thead><tr>{% for c in t.columns %}<th scope="col">{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in t.rows %}
<tr>{% for c in row %}<td data-sort="{{ c.sort }}">{{ c.text }}</td>{% endfor %}</tr>{% endfor %}
</tbody></table></div>
{% else %}<p class="empty" id="{{ t.id }}-empty">{{ t.empty }}</p>{% endif %}
{%- endmacro %}

<section id="summary"><h2>Summary</h2>{{ render(summary) }}</section>

<section id="environment"><h2>Environment and provenance</h2>
{{ render(environment) }}
{% for p in provenance %}
<details><summary><strong>{{ p.label }}</strong> — <code>{{ p.command }}</code></summary>
<p class="muted">run id {{ p.run_id }} · {{ p.path }}{% if p.kind %} · {{ p.kind }}{% endif %}{% if p.stand_in %} · {{ p.stand_in }}{% endif %}</p>
{% if p.note %}<p class="note">{{ p.note }}</p>{% endif %}
<p>spec</p><pre>{{ p.spec }}</pre><p>model info</p><pre>{{ p.info }}</pre>
</details>
{% endfor %}
</section>

<section id="figures"><h2>Figures</h2>
{% for f in figures %}
<figure id="{{ f.id }}"><h3>{{ f.title }}</h3>
<img class="figure" src="data:image/png;base64,{{ f.png }}" alt="{{ f.title }}">
<figcaption>{{ f.caption }}</figcaption></figure>
{% endfor %}
{% for s in skipped_figures %}<p class="muted figure-skipped">{{ s }}</p>{% endfor %}
</section>

<section id="family-breakdown"><h2>Family breakdown</h2>{{ render(family) }}</section>
{% if gpu %}<section id="gpu-time"><h2>GPU time</h2>
{% for f in gpu.figures %}
<figure id="{{ f.id }}"><h3>{{ f.title }}</h3>
<img class="figure" src="data:image/png;base64,{{ f.png }}" alt="{{ f.title }}">
<figcaption>{{ f.caption }}</figcaption></figure>
{% endfor %}
<h3>By operator family</h3>{{ render(gpu.family) }}
<h3>By kernel</h3>{{ render(gpu.kernels) }}
<h3>Streams: summed and busy time</h3>{{ render(gpu.streams) }}
</section>{% endif %}
<section id="phase-statistics"><h2>Phase statistics</h2>{{ render(phase_stats) }}
<h3>Derived metrics</h3>{{ render(derived) }}</section>
<section id="top-ops"><h2>Top ops</h2>{{ render(top_ops) }}</section>
<section id="sequence-lengths"><h2>Sequence-length profile</h2>{{ render(seq) }}</section>
<section id="optimizations"><h2>Optimizations</h2>{{ render(optimizations) }}</section>
<section id="counted-runs"><h2>Counted runs (meta device, not timed)</h2>{{ render(counted) }}</section>
{% if roofline %}<section id="roofline"><h2>Roofline projection</h2>
{% if roofline.headline %}<h3>The study's headline claims</h3>{{ render(roofline.headline) }}{% endif %}
{% for f in roofline.figures %}
<figure id="{{ f.id }}"><h3>{{ f.title }}</h3>
<img class="figure" src="data:image/png;base64,{{ f.png }}" alt="{{ f.title }}">
<figcaption>{{ f.caption }}</figcaption></figure>
{% endfor %}
{% for t in roofline.tables %}<h3>{{ t.title }}</h3>{{ render(t) }}{% endfor %}
{% for s in roofline.skipped %}<p class="muted figure-skipped">{{ s }}</p>{% endfor %}
</section>{% endif %}
<section id="failed-runs"><h2>Failed runs</h2>{{ render(failed) }}
{% for t in tracebacks %}<details><summary>traceback of {{ t.label }}</summary><pre>{{ t.traceback }}</pre></details>{% endfor %}
</section>
<script>{{ script }}</script>
</body>
</html>
"""

SECTIONS = [("summary", "Summary"), ("environment", "Environment"), ("figures", "Figures"),
            ("family-breakdown", "Families"), ("phase-statistics", "Phases"), ("top-ops", "Top ops"),
            ("sequence-lengths", "Sequence lengths"), ("optimizations", "Optimizations"),
            ("counted-runs", "Counted runs"), ("failed-runs", "Failed runs")]


def env() -> jinja2.Environment:
    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False)
