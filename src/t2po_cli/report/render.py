"""Write a report folder: ``report.html`` (self-contained), ``report.md``, ``summary.json`` and PNGs.

The report is first built as a small document model (sections of paragraphs, tables, images and
lists), then rendered twice from the same model, so markdown and HTML can never disagree. The HTML
embeds every PNG as a base64 data URI and uses inline CSS only: it opens offline, from an e-mail
attachment or a CI artifact, with no external request.

Report folders are never overwritten: an existing target gets a new name (``report-1``, ...), and the
folder is written under a temporary name and renamed into place, so a failed report leaves nothing.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HTML_FILE = "report.html"
MD_FILE = "report.md"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Image:
    """A PNG in the report folder, or the reason it was skipped (``file`` None)."""

    title: str
    file: str | None
    skipped: str | None = None


@dataclass
class Section:
    title: str
    blocks: list[str | Table | Image | list[str]] = field(default_factory=list)

    def p(self, text: str) -> Section:
        self.blocks.append(text)
        return self


def out_dir_for(requested: Path | None, default_parent: Path) -> Path:
    """Target folder: ``requested`` or ``<default_parent>/report``; a non-empty existing one gets a new name.

    Raises:
        UserError: the chosen location exists as a file.
    """
    from t2po_cli.errors import UserError
    from t2po_cli.run_folder import unique_path

    target = Path(requested) if requested is not None else Path(default_parent) / "report"
    if target.exists() and target.is_dir() and not any(target.iterdir()):
        return target
    if target.exists() and not target.is_dir():
        raise UserError(f"--out {target} is a file; pass a folder path")
    return unique_path(target.parent, target.name)


def write_report(
    out: Path, title: str, sections: list[Section], summary: dict[str, Any], pngs: dict[str, Path]
) -> Path:
    """Write HTML, markdown, JSON and PNGs into ``out`` atomically. Returns the final folder.

    Args:
        out: target folder (from ``out_dir_for``; must not exist or be empty).
        title: report title.
        sections: the document.
        summary: the machine-readable summary.
        pngs: file name → rendered PNG in a scratch folder; copied next to the reports.
    """
    tmp = out.with_name(f".{out.name}.writing")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        for name, src in pngs.items():
            shutil.copyfile(src, tmp / name)
        (tmp / MD_FILE).write_text(to_markdown(title, sections), encoding="utf-8")
        (tmp / HTML_FILE).write_text(to_html(title, sections, tmp), encoding="utf-8")
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
        if out.exists():  # an empty folder the user asked for explicitly
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# --- markdown ----------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(title: str, sections: list[Section]) -> str:
    """The document as GitHub-flavoured markdown (images linked as sibling PNG files)."""
    out = [f"# {title}", ""]
    for sec in sections:
        out += [f"## {sec.title}", ""]
        for b in sec.blocks:
            if isinstance(b, Table):
                out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
                out.append("|" + "---|" * len(b.headers))
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            elif isinstance(b, Image):
                out.append(f"![{b.title}]({b.file})" if b.file else f"*{b.title}: skipped — {b.skipped}.*")
            elif isinstance(b, list):
                out += [f"- {item}" for item in b]
            else:
                out.append(b)
            out.append("")
    return "\n".join(out)


# --- HTML --------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.25rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.85rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;height:auto;border:1px solid #eee}figure{margin:1rem 0}
figure img{width:100%}
figcaption{font-size:.85rem;color:#555}.skipped{color:#8a6d3b;background:#fcf8e3;padding:.4rem .6rem}
code{background:#f3f3f3;padding:0 .2rem}
"""


def _img_tag(img: Image, folder: Path) -> str:
    if img.file is None:
        return f'<p class="skipped">{html.escape(img.title)}: skipped — {html.escape(img.skipped or "")}.</p>'
    data = base64.b64encode((folder / img.file).read_bytes()).decode("ascii")
    alt = html.escape(img.title)
    return (f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
            f"<figcaption>{alt} ({html.escape(img.file)})</figcaption></figure>")


_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_EM = re.compile(r"(?<![*\w])\*([^*\s](?:[^*]*[^*\s])?)\*(?![*\w])")
"""``*emphasis*``: single asterisks around text that neither starts nor ends with a space (so ``a * b`` and
``2*3*4`` stay literal)."""


def _inline(text: str) -> str:
    """Escape, then turn `code` spans, **bold** and *emphasis* into tags (the markup the sections use).

    Code spans are set aside first, so asterisks inside them stay literal.
    """
    spans: list[str] = []

    def keep(m: re.Match[str]) -> str:
        spans.append(f"<code>{m.group(1)}</code>")
        return f"\x00{len(spans) - 1}\x00"

    t = _CODE.sub(keep, html.escape(text))
    t = _BOLD.sub(r"<b>\1</b>", t)
    t = _EM.sub(r"<em>\1</em>", t)
    return re.sub("\x00(\\d+)\x00", lambda m: spans[int(m.group(1))], t)


def to_html(title: str, sections: list[Section], folder: Path) -> str:
    """The document as one HTML file with inline CSS and base64 images from ``folder``."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for sec in sections:
        parts.append(f"<section><h2>{html.escape(sec.title)}</h2>")
        for b in sec.blocks:
            if isinstance(b, Table):
                head = "".join(f"<th>{html.escape(h)}</th>" for h in b.headers)
                body = "".join(
                    "<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in row) + "</tr>" for row in b.rows
                )
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif isinstance(b, Image):
                parts.append(_img_tag(b, folder))
            elif isinstance(b, list):
                parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b) + "</ul>")
            else:
                parts.append(f"<p>{_inline(b)}</p>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
