"""The report of a run: one Markdown page, the same page as self-contained HTML
(figures embedded), the PNG figures and ``metrics.json``. A report folder is
built beside its destination and moved into place only when complete, so an
interrupted run leaves the previous report (or none), never half of one."""

from __future__ import annotations

import base64
import contextlib
import errno
import html
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ._common import AppResult

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5rem 0 1.2rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 0.5rem 0 1.5rem; }
img { max-width: 100%; }
figcaption, .meta { color: #555; font-size: 0.9rem; }
nav li { margin: 0.1rem 0; }
"""


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 is checked, never sent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _remove_dead(out: Path, kind: str) -> None:
    """Removes the ``.{out.name}.{kind}-PID`` folders of processes that no longer
    run: a run killed outright (kill -9, power loss) cannot remove its own."""
    if os.name != "posix":  # on Windows os.kill(pid, 0) would terminate the process
        return
    prefix = f".{out.name}.{kind}-"
    for path in out.parent.iterdir():
        if not path.name.startswith(prefix):
            continue
        pid = path.name[len(prefix):]
        # A pid_t is a signed 32-bit int: a larger number is no PID of ours (os.kill overflows).
        if pid.isascii() and pid.isdigit() and int(pid) < 2**31 and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def replaceable(out: Path) -> bool:
    """Whether a report may replace ``out``: it does not exist, or is an empty
    folder or a report folder (one with ``report.md``), never a folder of other
    files (``--out .`` would otherwise delete the working folder)."""
    if not os.path.lexists(out):
        return True
    return out.is_dir() and ((out / "report.md").is_file() or not any(out.iterdir()))


@contextlib.contextmanager
def staged(out: Path) -> Iterator[Path]:
    """Yields an empty folder beside ``out``; on success it replaces ``out``,
    on any exception (Ctrl-C included) it is deleted and ``out`` is untouched.

    The staging folders of killed runs are removed on the way; those of runs
    still going are left to them."""
    if not replaceable(out):
        raise FileExistsError(errno.EEXIST, "holds other files and no report.md, and the report "
                              "would replace it whole", str(out))
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead(out, "partial")
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)  # left by a killed process that had this PID
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    # A run killed after moving the previous report aside left it in its `.old` folder
    # (whole, or half deleted); with a newer report in place, that copy is stale.
    _remove_dead(out, "old")


def _anchor(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower())


def _markdown(title: str, intro: str, results: Sequence[AppResult], meta: dict) -> str:
    lines = [f"# {title}", "", intro, ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    for r in results:
        lines += ["", f"## {r.heading or r.name}", ""]
        if r.text:
            lines += [r.text, ""]
        for caption, table in r.tables.items():
            lines += [f"**{caption}**", "", table.markdown(), ""]
        for caption, path in r.figures.items():
            lines += [f"![{caption}]({path.name})", "", f"*{caption}*", ""]
    lines += ["", "All numbers are in `metrics.json`.", ""]
    return "\n".join(lines)


def _html(title: str, intro: str, results: Sequence[AppResult], meta: dict) -> str:
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p><ul class='meta'>"]
    parts += [f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in meta.items()]
    parts.append("</ul><nav><ul>")
    parts += [f"<li><a href='#{_anchor(r.name)}'>{html.escape(r.heading or r.name)}</a></li>"
              for r in results]
    parts.append("</ul></nav>")
    for r in results:
        parts.append(f"<section id='{_anchor(r.name)}'><h2>{html.escape(r.heading or r.name)}"
                     f"</h2>")
        if r.text:
            parts.append(f"<p>{html.escape(r.text)}</p>")
        for caption, table in r.tables.items():
            parts.append(f"<h3>{html.escape(caption)}</h3>{table.html()}")
        for caption, path in r.figures.items():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(caption, quote=True)}' "
                         f"src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _json_ready(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _json_ready(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_ready(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def write(folder: Path, title: str, intro: str, results: Sequence[AppResult],
          meta: dict) -> None:
    """Writes ``report.md``, ``report.html`` and ``metrics.json`` into ``folder``
    (where the results' figures already are)."""
    for r in results:
        for path in r.figures.values():
            if path.parent.resolve() != folder.resolve():
                raise ValueError(f"report: figure {path} is not in the report folder {folder}")
    (folder / "report.md").write_text(_markdown(title, intro, results, meta), encoding="utf-8")
    (folder / "report.html").write_text(_html(title, intro, results, meta), encoding="utf-8")
    metrics = {"meta": meta, **{r.name: r.metrics for r in results}}
    (folder / "metrics.json").write_text(json.dumps(_json_ready(metrics), indent=2) + "\n",
                                         encoding="utf-8")
