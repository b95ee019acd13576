"""The files of an LLM evaluation run besides its JSON: samples, GIFs and one static HTML page.

Written by rank 0 into the run folder (``data.run_folder``), every file atomically and recorded:

* ``samples.jsonl``: one line per sample (replication 0 of the protocol): the caption, and per
  generate call (``steps``) the round, the prompt kind, the prompt, the completion text and the
  parsed codes, plus the codes of every table row (``motions``);
* ``renders/sample_<k>.gif``: the first ``n`` samples, every row's motion side by side (titled
  ``round k``), decoded with the VQ-VAE and drawn with ``eval.render``;
* ``index.html``: the results table(s), then per rendered sample its caption, its reasoning text
  (motion spans shortened to ``<Motion ×N>``) and its animation, embedded by relative path, so the
  folder can be copied or opened from disk with no server.
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from data.run_folder import OutputFolder
from data.specs import DatasetSpec
from eval.llm_runner import MotionLLMRunner
from eval.render import render_motions

logger = logging.getLogger(__name__)

_SPAN_RE = re.compile(r"<Motion>((?:<Motion_\d+>)*)</Motion>")


def write_samples(out: OutputFolder, samples: Sequence[dict[str, Any]], name: str = "samples.jsonl") -> None:
    """One JSON object per line."""
    out.write_text(name, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))


def render_samples(
    out: OutputFolder,
    runner: MotionLLMRunner,
    samples: Sequence[dict[str, Any]],
    spec: DatasetSpec,
    *,
    n: int,
    titles: Sequence[str] | None = None,
) -> list[str]:
    """GIFs of the first ``n`` samples (``motions``: codes per row), rows side by side.

    Returns the written paths relative to the run folder (``renders/sample_<k>.gif``).
    """
    written = []
    for k, sample in enumerate(samples[:n]):
        feats = [runner.vq_norm.denormalise(m) for m in runner.motions(sample["motions"])]
        heads = list(titles) if titles else [f"round {r}" for r in range(len(feats))]
        rel = f"renders/sample_{k}.gif"
        path = out.path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        render_motions([np.asarray(f) for f in feats], path, spec=spec, titles=heads, mp4="no")
        out.record(rel)
        written.append(rel)
    return written


def shorten_motions(text: str) -> str:
    """``<Motion><Motion_1>...</Motion>`` -> ``<Motion ×N>`` (for reading)."""
    return _SPAN_RE.sub(lambda m: f"<Motion ×{m.group(1).count('<Motion_')}>", text)


def markdown_table_html(md: str) -> str:
    """Pipe tables of ``md`` as HTML tables; other lines as paragraphs."""
    parts, rows = [], []

    def flush() -> None:
        if not rows:
            return
        head, body = rows[0], rows[2:] if len(rows) > 1 and set(rows[1]) <= set("|-: ") else rows[1:]
        cells = lambda r: [c.strip() for c in r.strip().strip("|").split("|")]  # noqa: E731
        th = "".join(f"<th>{html.escape(c)}</th>" for c in cells(head))
        trs = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(r)) + "</tr>" for r in body
        )
        parts.append(f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>")
        rows.clear()

    for line in md.splitlines():
        if line.strip().startswith("|"):
            rows.append(line)
            continue
        flush()
        if line.strip():
            parts.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(parts)


_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1400px; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
pre { white-space: pre-wrap; background: #f6f6f6; padding: 8px; font-size: 12px; }
.sample { border-top: 2px solid #ddd; margin-top: 1.5em; }
img { max-width: 100%; }
"""


def write_html(
    out: OutputFolder,
    *,
    title: str,
    tables_md: Sequence[str],
    samples: Sequence[dict[str, Any]],
    gifs: Sequence[str],
    extra: dict[str, Any] | None = None,
    name: str = "index.html",
) -> None:
    """The static page: tables, then each rendered sample's caption, steps and animation."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    body += [markdown_table_html(md) for md in tables_md]
    if extra:
        body.append("<h2>Details</h2><pre>" + html.escape(json.dumps(extra, indent=1)) + "</pre>")
    for k, sample in enumerate(samples[: len(gifs)] if gifs else samples[:8]):
        body.append('<div class="sample">')
        body.append(f"<h3>Sample {k}: {html.escape(str(sample.get('caption', '')))}</h3>")
        if sample.get("references"):
            refs = "".join(f"<li>{html.escape(r)}</li>" for r in sample["references"])
            body.append(f"<p>References:</p><ul>{refs}</ul>")
        for step in sample.get("steps", []):
            body.append(f"<p><b>round {step['round']}, {html.escape(step['kind'])}</b></p>")
            body.append(f"<pre>{html.escape(shorten_motions(step['completion']))}</pre>")
        if k < len(gifs):
            body.append(f'<img src="{html.escape(gifs[k])}" alt="sample {k}">')
        body.append("</div>")
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    out.write_text(name, page)
