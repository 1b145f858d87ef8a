"""Numbers of the application pages, read from the documented full runs.

Each application page states the results of one run of ``gumbelrs run APP``
whose ``metrics.json`` is stored at ``docs/results/APP/metrics.json``. The
page never copies a number: it names where the number is in that file.

- The role ``{metric}`APP:PATH:FORMAT``` renders one value: ``PATH`` is a
  dotted path into the application's entry of the JSON (``metrics[APP]``,
  what its ``run`` returned; list items by index), ``FORMAT`` a Python format
  spec (``.3f``); ``{metric}`kmeans:iris.soft_ari:.3f```.
- The directive ``metrics-table`` takes the application as its argument and a
  Markdown table as its content whose cells may hold ``{PATH:FORMAT}`` fields
  (several per cell, with text around them); the fields are filled from the
  file and the table is parsed as Markdown.

A path that is not in the file, or a value the format does not take, stops the
build with the page, the path and what the file holds there.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective, SphinxRole

FIELD = re.compile(r"\{([A-Za-z0-9_./\-,' ]+)(?::([^{}]*))?\}")
LEFT = re.compile(r"\{[^{}]*\}")


class MetricError(Exception):
    pass


@cache
def _load(path: Path) -> dict:
    """The application's entry of a report's metrics (``metrics[APP]``)."""
    app = path.parent.name
    data = json.loads(path.read_text(encoding="utf-8"))
    if app not in data:
        raise MetricError(f"{path} has no entry {app!r}; keys: {sorted(data)}")
    return data[app]


def results_file(srcdir: str | Path, app: str) -> Path:
    """Where the documented full run of ``app`` keeps its metrics; ``APP/NAME``
    names another run of APP, stored as ``results/APP/NAME.json``."""
    app, _, name = app.partition("/")
    return Path(srcdir) / "results" / app / f"{name or 'metrics'}.json"


def lookup(data: Any, path: str) -> Any:
    """The value at a dotted ``path`` (list items by their index; a key that
    holds dots, such as ``"0.9"``, is matched whole)."""
    value, parts, i = data, path.split("."), 0
    while i < len(parts):
        done = ".".join(parts[:i]) or "(top)"
        if isinstance(value, dict):
            for j in range(len(parts), i, -1):  # the longest key that matches
                key = ".".join(parts[i:j])
                if key in value:
                    value, i = value[key], j
                    break
            else:
                raise MetricError(f"no key {parts[i]!r} under {done}; keys: {sorted(value)}")
        elif isinstance(value, list):
            key = parts[i]
            if not key.isdigit() or int(key) >= len(value):
                raise MetricError(f"{done} is a list of {len(value)}; got index {key!r}")
            value, i = value[int(key)], i + 1
        else:
            raise MetricError(f"{done} is the value {value!r}; cannot take {parts[i]!r}")
    return value


def render(data: Any, path: str, spec: str | None) -> str:
    """The value at ``path`` formatted by ``spec`` (``str`` without one)."""
    value = lookup(data, path)
    if isinstance(value, (dict, list)):
        raise MetricError(f"{path} is a {type(value).__name__}, not a number or text")
    try:
        return format(value, spec or "")
    except (TypeError, ValueError) as e:
        raise MetricError(f"{path} = {value!r} does not take the format {spec!r}: {e}") from e


def fill(data: Any, text: str) -> str:
    """``text`` with every ``{PATH:FORMAT}`` field replaced by its value; a
    braced word left over is a field the pattern did not read, an error."""
    filled = FIELD.sub(lambda m: render(data, m.group(1), m.group(2)), text)
    left = LEFT.search(filled)
    if left:
        raise MetricError(f"{left.group(0)} is not a field: a PATH of letters, digits, spaces "
                          f"and the marks _./-,' then an optional ':FORMAT'")
    return filled


class MetricRole(SphinxRole):
    """``{metric}`APP:PATH:FORMAT```: one number of a documented run."""

    def run(self) -> tuple[list[nodes.Node], list[nodes.system_message]]:
        app, _, rest = self.text.partition(":")
        path, _, spec = rest.partition(":")
        try:
            data = self._data(app)
            text = render(data, path, spec or None)
        except MetricError as e:
            msg = self.inliner.reporter.error(f"metric {self.text!r}: {e}", line=self.lineno)
            return [], [msg]
        return [nodes.Text(text)], []

    def _data(self, app: str) -> dict:
        path = results_file(self.env.srcdir, app)
        if not path.is_file():
            raise MetricError(f"{path} does not exist")
        self.env.note_dependency(str(path))
        return _load(path)


class MetricsTable(SphinxDirective):
    """A Markdown table whose ``{PATH:FORMAT}`` cells come from APP's metrics."""

    required_arguments = 1
    has_content = True
    option_spec = {"caption": directives.unchanged}  # noqa: RUF012

    def run(self) -> list[nodes.Node]:
        app = self.arguments[0]
        path = results_file(self.env.srcdir, app)
        if not path.is_file():
            raise self.error(f"metrics-table: {path} does not exist")
        self.env.note_dependency(str(path))
        try:
            data = _load(path)
            lines = [fill(data, line) for line in self.content]
        except MetricError as e:
            raise self.error(f"metrics-table {app}: {e}") from e
        container = nodes.container(classes=["metrics-table"])
        self.state.nested_parse(StringList(lines, source=self.content.source(0)),
                                self.content_offset, container)
        return [container]


def setup(app: Sphinx) -> dict:
    app.add_role("metric", MetricRole())
    app.add_directive("metrics-table", MetricsTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
