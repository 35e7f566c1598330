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
import csv
import html
import json
import os
from pathlib import Path
from typing import Any

from segkit.fileio import atomic_write_text

__all__ = ["build_report", "write_report", "REPORT_NAME"]

REPORT_NAME = "report.html"
FIGURES = (("curves.png", "Learning curves"),
           ("predictions.png", "Validation predictions (true positives yellow, false positives red, missed blue)"),
           ("cases.png", "Best and worst validation patients"))

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


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _table(path: Path, highlight: str | None) -> str:
    """A per-case CSV as a sortable HTML table; rows whose ``highlight`` score is below 0.5 are marked."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return "<p>(no cases)</p>"
    columns = list(rows[0])
    head = "".join(f'<th data-column="{html.escape(c)}">{html.escape(c)}</th>' for c in columns)
    body = []
    for row in rows:
        score = _number(row.get(highlight or "", "") or "")
        marked = ' class="low"' if score is not None and score < 0.5 else ""
        cells = []
        for column in columns:
            text = row[column]
            value = _number(text)
            shown = f"{value:.4f}" if value is not None and not float(value).is_integer() else text
            kind = ' class="number"' if value is not None else ""
            cells.append(f'<td{kind} data-value="{html.escape(text)}">{html.escape(shown)}</td>')
        body.append(f"<tr{marked}>{''.join(cells)}</tr>")
    return (f'<table class="sortable" data-source="{html.escape(path.name)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def build_report(run_dir: str | os.PathLike[str]) -> str:
    """The report of ``run_dir`` as one HTML document (nothing is written)."""
    root = Path(run_dir)
    summary: dict[str, Any] = json.loads((root / "summary.json").read_text()) if (root / "summary.json").is_file() \
        else {}
    config_text = (root / "config.toml").read_text() if (root / "config.toml").is_file() else ""
    headline = summary.get("headline") or {}
    metric = str(headline.get("name", "val_dice")).removeprefix("val_").removesuffix("_case").removesuffix("_global")
    parts = [f"<h1>segkit run {html.escape(str(root.resolve()))}</h1>"]
    if headline:
        missed = summary.get("lesion_slices_empty_prediction")
        lesions = summary.get("lesion_slices")
        note = f"; {missed} of {lesions} validation lesion slices got an empty prediction" if lesions else ""
        parts.append(f'<p class="headline">best {html.escape(str(headline.get("name")))} '
                     f'<b>{float(headline.get("value", float("nan"))):.4f}</b> at epoch {headline.get("epoch")}'
                     f"{html.escape(note)}</p>")
    facts = [("epochs run", summary.get("epochs_run")), ("stopped", summary.get("stopped")),
             ("device", summary.get("device")), ("training images/s", summary.get("images_per_second")),
             ("training seconds", summary.get("train_seconds")),
             ("per-image (best epoch)", json.dumps(summary.get("best"))),
             ("pooled (best epoch)", json.dumps(summary.get("best_global")))]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts
                   if v is not None)
    if rows:
        parts.append(f"<h2>Summary</h2><table>{rows}</table>")
    for name, caption in FIGURES:
        if (root / name).is_file():
            parts.append(f"<h2>{html.escape(caption)}</h2>{_figure(root / name)}")
    tables = sorted((root / "evaluation").glob("*-per-case.csv")) if (root / "evaluation").is_dir() else []
    for path in tables:
        title = ("Validation patients at the end of training (best checkpoint, at the training size)"
                 if path.name == "training-val-per-case.csv"
                 else f"Evaluation {path.stem.removesuffix('-per-case')}")
        parts.append(f"<h2>{html.escape(title)}</h2><p>Click a column to sort; patients under 0.5 {metric} are "
                     f"marked.</p>{_table(path, metric)}")
    if config_text:
        parts.append(f"<h2>Configuration</h2><pre>{html.escape(config_text)}</pre>")
    body = "\n".join(parts)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>segkit report: '
            f"{html.escape(root.name)}</title><style>{_STYLE}</style></head><body>{body}"
            f"<script>{_SCRIPT}</script></body></html>\n")


def write_report(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``RUN_DIR/report.html`` atomically and return its path."""
    path = Path(run_dir) / REPORT_NAME
    atomic_write_text(path, build_report(run_dir))
    return path
