"""``RUN_DIR/report.html``: one self-contained page with everything a run produced.

The page holds the headline, the run's key numbers, its configuration, the learning
curves, the validation predictions, the best and worst validation patients, and one
sortable table per per-case CSV in ``RUN_DIR/evaluation/`` (the run's own validation
scores, and every ``segkit evaluate`` since). Figures are embedded as data URIs and the
sorting is a few lines of inline JavaScript, so the file can be mailed or archived alone.
A table sorts by a click on its header, or on load from a ``#sort=<column>`` (descending
with ``#sort=-<column>``) in the page's address.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import os
import statistics
from pathlib import Path
from typing import Any

from segkit.runs.runfiles import read_case_table, read_summary, read_text, regular_file_inside, trusted_image
from segkit.fileio import atomic_write_text

__all__ = ["build_report", "write_report", "REPORT_NAME"]

REPORT_NAME = "report.html"
FIGURES = (("curves.png", "Learning curves"),
           ("predictions.png", "Validation predictions (true positives yellow, false positives red, missed blue)"),
           ("cases.png", "Best and worst validation patients"))
#: predictions.png's caption where the run has several labels: the colours are the labels', not outcomes.
SEVERAL_LABELS_CAPTION = ("Validation predictions (each label in its colour, named in the figure's legend: "
                          "predicted filled, true outlined)")

_SCRIPT = """
function sortTable(table, column, descending) {
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const index = Array.from(table.tHead.rows[0].cells).findIndex(c => c.dataset.column === column);
  if (index < 0) return;
  const value = row => { const t = row.cells[index].dataset.value; const n = parseFloat(t);
                         return isNaN(n) ? t : n; };
  rows.sort((a, b) => { const x = value(a), y = value(b);
                        const order = (typeof x === "number" && typeof y === "number") ? x - y
                                      : String(x).localeCompare(String(y));
                        return descending ? -order : order; });
  rows.forEach(row => body.appendChild(row));
  table.dataset.sorted = (descending ? "-" : "") + column;
}
document.querySelectorAll("table.sortable").forEach(table => {
  Array.from(table.tHead.rows[0].cells).forEach(cell => cell.addEventListener("click", () => {
    const column = cell.dataset.column;
    sortTable(table, column, table.dataset.sorted === column);
  }));
});
const wanted = new URLSearchParams(location.hash.slice(1)).get("sort");
if (wanted) {
  const descending = wanted.startsWith("-");
  document.querySelectorAll("table.sortable").forEach(t => sortTable(t, descending ? wanted.slice(1) : wanted,
                                                                     descending));
}
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.headline { font-size: 1.2em; background: #f3f7ff; padding: .6em 1em; border-radius: 6px; }
table { border-collapse: collapse; font-size: .9em; } td, th { padding: .25em .7em; border-bottom: 1px solid #eee; }
th { cursor: pointer; background: #fafafa; text-align: left; } td.number { text-align: right; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: .85em; }
img { max-width: 100%; } .low { background: #fde8e8; }
"""


COUNT_COLUMNS = ("n_images", "tp", "fp", "fn", "tn")


def _hash_source(text: str) -> str:
    """The CSP source that allows exactly this inline script or style."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


CONTENT_SECURITY_POLICY = (f"default-src 'none'; img-src data:; style-src {_hash_source(_STYLE)}; "
                           f"script-src {_hash_source(_SCRIPT)}; base-uri 'none'; form-action 'none'")
"""Only the report's own script and style run, and images only from the page itself: text that a
tampered run file smuggles past the escaping still cannot load or run anything."""


def _figure(name: str, data: bytes) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{html.escape(name)}" src="data:image/png;base64,{encoded}">'


def _number(text: Any) -> float | None:
    if isinstance(text, bool):
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _shown(value: Any) -> str:
    """A value for reading: 4 decimals for fractions, whole numbers as they are, mappings as ``key value`` pairs."""
    if isinstance(value, dict):
        return ", ".join(f"{key} {_shown(item)}" for key, item in value.items())
    number = _number(value)
    if number is None or isinstance(value, str) and not value.strip():
        return str(value)
    return f"{number:.4f}" if not number.is_integer() else str(int(number)) if abs(number) < 1e15 else f"{number:g}"


def _score_summary(columns: list[str], rows: list[dict[str, str]]) -> str:
    """Mean and median over the cases of every score column (per label ones included)."""
    lines = []
    for column in columns:
        if column == "case" or column in COUNT_COLUMNS or column.split("_")[0] in COUNT_COLUMNS:
            continue
        values = [v for v in (_number(row[column]) for row in rows) if v is not None]
        if not values:
            continue
        lines.append(f"<tr><th>{html.escape(column)}</th><td class=\"number\">{statistics.fmean(values):.4f}</td>"
                     f"<td class=\"number\">{statistics.median(values):.4f}</td><td class=\"number\">{len(values)}"
                     "</td></tr>")
    if not lines:
        return ""
    return ("<table class=\"summary\"><thead><tr><th>score</th><th>mean</th><th>median</th><th>cases</th></tr>"
            f"</thead><tbody>{''.join(lines)}</tbody></table>")


def _table(path: Path, highlight: str | None) -> str:
    """A per-case CSV as its score summary and a sortable HTML table; cases under 0.5 ``highlight`` are marked."""
    columns, rows = read_case_table(path)
    if not rows:
        return "<p>(no cases)</p>"
    head = "".join(f'<th data-column="{html.escape(c)}">{html.escape(c)}</th>' for c in columns)
    body = []
    for row in rows:
        score = _number(row.get(highlight or "", ""))
        marked = ' class="low"' if score is not None and score < 0.5 else ""
        cells = []
        for column in columns:
            text = row[column]
            kind = ' class="number"' if _number(text) is not None else ""
            cells.append(f'<td{kind} data-value="{html.escape(text)}">{html.escape(_shown(text))}</td>')
        body.append(f"<tr{marked}>{''.join(cells)}</tr>")
    return (_score_summary(columns, rows) +
            f'<table class="sortable" data-source="{html.escape(path.name)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _evaluation_title(name: str) -> str:
    """What a per-case CSV scored, from the name segkit evaluate gives it (``SPLIT-CHECKPOINT[-...]-per-case.csv``)."""
    if name == "training-val-per-case.csv":
        return "Validation patients at the end of training (best checkpoint, at the training size)"
    parts = name.removesuffix("-per-case.csv").split("-")
    what = f"split {parts[0]}" + (f", checkpoint {'-'.join(parts[1:])}" if len(parts) > 1 else "")
    return f"Evaluation: {what}"


def _several_labels(config_text: str) -> bool:
    """Whether the run's config.toml (its text; "" when absent) trains several labels (``task.mode`` not binary)."""
    import tomllib

    try:
        task = tomllib.loads(config_text).get("task")
    except tomllib.TOMLDecodeError:
        return False
    return isinstance(task, dict) and task.get("mode", "binary") != "binary"


def build_report(run_dir: str | os.PathLike[str]) -> str:
    """The report of ``run_dir`` as one HTML document (nothing is written).

    Every file is read as untrusted input (:mod:`segkit.runs.runfiles`): text is escaped
    wherever it lands, figures are embedded only when they are PNG files of the run directory
    itself, and the page's Content-Security-Policy runs nothing but its own script.
    """
    root = Path(run_dir)
    summary: dict[str, Any] = read_summary(root / "summary.json") if regular_file_inside(root, root / "summary.json") else {}
    config_text = read_text(root / "config.toml") if regular_file_inside(root, root / "config.toml") else ""
    headline = summary.get("headline") or {}
    metric = str(headline.get("name", "val_dice")).removeprefix("val_").removesuffix("_case").removesuffix("_global")
    parts = [f"<h1>segkit run {html.escape(root.resolve().name)}</h1>"]
    if headline:
        missed = summary.get("lesion_slices_empty_prediction")
        lesions = summary.get("lesion_slices")
        items = summary.get("validation_items", "slices")
        note = f"; {missed} of {lesions} validation lesion {items} got an empty prediction" if lesions else ""
        parts.append(f'<p class="headline">best {html.escape(str(headline.get("name")))} '
                     f'<b>{float(headline["value"]):.4f}</b> at epoch {html.escape(str(headline.get("epoch")))}'
                     f"{html.escape(note)}</p>")
    facts = [("epochs run", summary.get("epochs_run")), ("stopped", summary.get("stopped")),
             ("device", summary.get("device")), ("training images/s", summary.get("images_per_second")),
             ("training seconds", summary.get("train_seconds")),
             ("per-image (best epoch)", summary.get("best_per_image", summary.get("best"))),
             ("pooled (best epoch)", summary.get("best_global"))]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_shown(v))}</td></tr>" for k, v in facts
                   if v is not None)
    if rows:
        parts.append(f"<h2>Summary</h2><table>{rows}</table>")
    for name, caption in FIGURES:
        if name == "predictions.png" and _several_labels(config_text):
            caption = SEVERAL_LABELS_CAPTION
        data = trusted_image(root, name)
        if data is not None:
            parts.append(f"<h2>{html.escape(caption)}</h2>{_figure(name, data)}")
    evaluation = root / "evaluation"
    tables = sorted(p for p in evaluation.glob("*-per-case.csv") if regular_file_inside(root, p)) \
        if evaluation.is_dir() and not evaluation.is_symlink() else []
    for path in tables:
        parts.append(f"<h2>{html.escape(_evaluation_title(path.name))}</h2><p>Mean and median over the cases, then "
                     f"every case: click a column to sort; cases under 0.5 {html.escape(metric)} are marked.</p>"
                     f"{_table(path, metric)}")
    if config_text:
        parts.append(f"<h2>Configuration</h2><pre>{html.escape(config_text)}</pre>")
    body = "\n".join(parts)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
            f"<title>segkit report: {html.escape(root.resolve().name)}</title><style>{_STYLE}</style></head>"
            f"<body>{body}<script>{_SCRIPT}</script></body></html>\n")


def write_report(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``RUN_DIR/report.html`` atomically and return its path."""
    path = Path(run_dir) / REPORT_NAME
    atomic_write_text(path, build_report(run_dir))
    return path
