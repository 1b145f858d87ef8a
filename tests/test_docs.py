"""The documentation site (docs/, `make docs`): it builds with warnings as
errors (a missing page, heading anchor or image is a warning), its examples
and the docstrings' run with their outputs compared (Sphinx's doctest
builder), every public name is in the API reference with a docstring that
names its arguments, shapes and errors, the README's links resolve, and the
application pages' numbers come from their stored runs."""

from __future__ import annotations

import dataclasses
import html
import importlib
import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gumbelrs
import gumbelrs.apps
from gumbelrs.apps._common import field_docs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
if not (DOCS / "conf.py").is_file():
    pytest.skip("the documentation's sources are not here (an sdist leaves them out)",
                allow_module_level=True)
pytest.importorskip("sphinx", reason="needs the docs extra (make build installs it)")
pytest.importorskip("myst_parser", reason="needs the docs extra (make build installs it)")

SUBMODULES = ("distributions", "estimators", "schedules", "nn", "structured", "cuda")


def sphinx(builder: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-q", "-W", "--keep-going", "-b", builder,
         "-d", str(out / "doctrees"), str(DOCS), str(out / builder)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The HTML site, built from scratch with warnings as errors."""
    out = tmp_path_factory.mktemp("docs")
    r = sphinx("html", out)
    assert r.returncode == 0 and r.stderr == "", r.stderr[-5000:]
    return out


def test_the_examples_of_the_guides_and_docstrings_give_their_outputs(site):
    """The doctest builder on the parsed pages the HTML build left."""
    r = sphinx("doctest", site)
    report = (site / "doctest" / "output.txt").read_text()
    assert r.returncode == 0, report[-5000:] + r.stderr[-3000:]
    total = int(re.search(r"^\s*(\d+) tests$", report, re.M).group(1))
    assert total >= 80, report[-2000:]  # the guides' examples and the docstrings'
    assert re.search(r"^\s*0 failures in tests$", report, re.M), report[-3000:]


def public_names() -> dict[str, object]:
    """Every public name, by its full name: ``gumbelrs.__all__`` (modules
    aside), the ``__all__`` of each public submodule (``cuda``: the names it
    defines), and ``gumbelrs.apps``' names with each application's ``Config``
    and ``run``."""
    names: dict[str, object] = {}
    for n in gumbelrs.__all__:
        obj = getattr(gumbelrs, n)
        if not inspect.ismodule(obj):
            names[f"gumbelrs.{n}"] = obj
    for m in SUBMODULES:
        mod = importlib.import_module(f"gumbelrs.{m}")
        exported = getattr(mod, "__all__", None) or [
            n for n, v in vars(mod).items() if not n.startswith("_") and not inspect.ismodule(v)
            and getattr(v, "__module__", mod.__name__) == mod.__name__
            and n not in ("annotations",)]
        for n in exported:
            names[f"gumbelrs.{m}.{n}"] = getattr(mod, n)
    for n in gumbelrs.apps.__all__:
        names[f"gumbelrs.apps.{n}"] = getattr(gumbelrs.apps, n)
    for app in gumbelrs.apps.APPS:
        mod = importlib.import_module(f"gumbelrs.apps.{app}")
        names[f"gumbelrs.apps.{app}.Config"] = mod.Config
        names[f"gumbelrs.apps.{app}.run"] = mod.run
    return names


def test_every_public_name_is_in_the_api_reference(site):
    from sphinx.util.inventory import InventoryFile

    with open(site / "html" / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", lambda *a: "")
    documented = {name for kind in inventory.values() for name in kind}
    missing = sorted(set(public_names()) - documented)
    assert missing == [], missing


def _doc(name: str, obj: object) -> str:
    """What documents ``obj``: its docstring (a class: with its ``__init__``'s);
    an application's ``run``: with the package's, which documents the
    arguments every ``run`` shares; an application's ``Config``: with the
    description of each field (:func:`field_docs`, its ``#:`` comments); a
    constant: its ``#:`` comment."""
    if not callable(obj):
        module, attr = name.rsplit(".", 1)
        source = inspect.getsource(importlib.import_module(module))
        comment = re.search(rf"((?:^#:.*\n)+)^{attr}\b", source, re.M)
        return comment.group(1) if comment else ""
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj) and obj.__init__ is not object.__init__ and obj.__init__.__doc__:
        doc += "\n" + inspect.getdoc(obj.__init__)
    if re.fullmatch(r"gumbelrs\.apps\.\w+\.run", name):
        doc += "\n" + inspect.getdoc(gumbelrs.apps)
    if re.fullmatch(r"gumbelrs\.apps\.\w+\.Config", name):
        doc += "".join(f"\n{field}: {text}" for field, text in field_docs(obj).items() if text)
    return doc


def _parameters(obj: object) -> list[inspect.Parameter]:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    return [p for p in sig.parameters.values() if p.name not in ("self", "cls")
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _takes_tensors(obj: object) -> bool:
    """A callable with a tensor among its annotated arguments or result."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return False
    notes = [str(p.annotation) for p in sig.parameters.values()]
    return any("Tensor" in a for a in [*notes, str(sig.return_annotation)])


SHAPES = re.compile(r"shape|0-d|\(\*batch|\(\*|\(n[,)]|\(batch|same size|scalar|per element"
                    r"|one per|per row|elementwise|broadcast", re.I)
ERRORS = re.compile(r"\braise|\berror|ValueError|TypeError|IndexError|RuntimeError", re.I)


def test_every_public_name_has_a_docstring_with_arguments_shapes_and_errors():
    """A docstring of at least a sentence; every argument named in it; and for
    what takes or returns tensors, the shapes and the errors."""
    problems = []
    for name, obj in public_names().items():
        doc = _doc(name, obj)
        if len(doc) < 40:
            problems.append(f"{name}: no docstring (or under a sentence)")
            continue
        missing = [p.name for p in _parameters(obj)
                   if not re.search(rf"(?<![\w.]){re.escape(p.name)}\b", doc)]
        if missing:
            problems.append(f"{name}: does not name its arguments {missing}")
        if callable(obj) and _takes_tensors(obj):
            if not SHAPES.search(doc):
                problems.append(f"{name}: says nothing of shapes")
            record = inspect.isclass(obj) and issubclass(obj, tuple)  # a result, not a call
            if not record and not ERRORS.search(doc):
                problems.append(f"{name}: says nothing of its errors")
    assert problems == [], "\n".join(problems)


def _text(fragment: str) -> str:
    """An HTML fragment's text as the source wrote it: no tags, entities
    decoded, Sphinx's smart quotes straight, one space between words."""
    text = html.unescape(re.sub(r"<[^>]+>", "", fragment))
    for curly, plain in (("\u2018", "'"), ("\u2019", "'"), ("\u201c", '"'), ("\u201d", '"'),
                         ("\u2013", "--"), ("\u2014", "---"), ("\u2026", "...")):
        text = text.replace(curly, plain)
    return " ".join(text.split())


def test_every_config_field_is_described_in_the_api_reference(site):
    """Each field of every application's ``Config`` has a description of a
    sentence or more, and the API reference shows exactly that text under the
    field (napoleon would take a first line's ``word:`` for a type, hence no
    colon)."""
    page = (site / "html" / "api" / "apps.html").read_text()
    problems = []
    for app in gumbelrs.apps.APPS:
        config = importlib.import_module(f"gumbelrs.apps.{app}").Config
        for field, text in field_docs(config).items():
            anchor = f"gumbelrs.apps.{app}.Config.{field}"
            shown = re.search(rf'id="{re.escape(anchor)}">.*?</dt>\s*<dd>(.*?)</dd>', page, re.S)
            if len(text) < 20:
                problems.append(f"{anchor}: no description (a #: comment above the field)")
            elif ":" in text:
                problems.append(f"{anchor}: a colon in {text!r}")
            elif shown is None or _text(shown.group(1)) != text:
                problems.append(f"{anchor}: the reference shows "
                                f"{_text(shown.group(1)) if shown else None!r}, not {text!r}")
    assert problems == [], "\n".join(problems)


#: How a description states each kind of range that ``check_config`` enforces.
RANGES = {"counts": r">= \d|Ints in \[\d+, \d+\]|One of \d", "maybe_zero": r">= 0|in \[0, ",
          "positive": r"> 0", "non_negative": r">= 0", "fractions": r"in \(0, 1\)"}


@pytest.mark.parametrize("app", gumbelrs.apps.APPS)
def test_config_descriptions_state_the_checked_ranges(app, monkeypatch):
    """The range each field's description states is the one ``__post_init__``
    checks (its ``check_config`` call, recorded here): counts ``>= 1`` (or
    more), ``maybe_zero`` ``>= 0``, ``positive`` ``> 0``, fractions ``(0,
    1)``, and every allowed value of a choice named."""
    mod = importlib.import_module(f"gumbelrs.apps.{app}")
    calls = []
    monkeypatch.setattr(mod, "check_config", lambda *args, **kinds: calls.append(kinds))
    mod.Config()
    (kinds,) = calls
    docs = field_docs(mod.Config)
    problems = []
    for kind, names in kinds.items():
        if kind == "choices":
            problems += [f"{name}: does not name {value!r}" for name, allowed in names.items()
                         for value in allowed if not re.search(rf"\b{value}\b", docs[name])]
        else:
            problems += [f"{name}: says nothing like {RANGES[kind]!r} ({kind})" for name in names
                         if not re.search(RANGES[kind], docs[name])]
    assert problems == [], "\n".join(problems)


LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_readme_links_resolve():
    """Every relative link of the README names a file of the repository (the
    docs' own links are checked by the build: a missing one is a warning)."""
    text = (ROOT / "README.md").read_text()
    targets = [t for t in LINK.findall(text) if "://" not in t]
    assert len(targets) >= 20  # every page of the documentation
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).is_file()]
    assert missing == [], missing


def test_metrics_fields_are_filled_from_the_run_or_stop_the_build():
    """docs/_ext/metrics.py: dotted paths (list indices, keys holding dots),
    Python formats, and an error naming the path for anything else."""
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        metrics = importlib.import_module("metrics")
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    run = {"iris": {"ari": 0.72214, "p": [0.1, 0.25], "coverage": {"0.9": 0.945}},
           "3/softsort": {"tau": 0.5}, "GAN, no reheating": {"q": 0.25}}
    assert metrics.fill(run, "| {iris.ari:.3f} | {iris.p.1:.2f} | {iris.coverage.0.9} |") == \
        "| 0.722 | 0.25 | 0.945 |"
    assert metrics.fill(run, "{3/softsort.tau:.2f} {GAN, no reheating.q}") == "0.50 0.25"
    assert metrics.results_file("docs", "textgan") == Path("docs/results/textgan/metrics.json")
    assert metrics.results_file("docs", "textgan/lr") == Path("docs/results/textgan/lr.json")
    for path, message in [("iris.nmi", "no key 'nmi' under iris; keys: ['ari', 'coverage', 'p']"),
                          ("iris.p.2", "iris.p is a list of 2; got index '2'"),
                          ("iris.ari.x", "iris.ari is the value 0.72214; cannot take 'x'"),
                          ("iris", "iris is a dict, not a number or text"),
                          ("iris+ari", "{iris+ari} is not a field: a PATH of letters, digits, "
                                       "spaces and the marks _./-,' then an optional "
                                       "':FORMAT'")]:
        with pytest.raises(metrics.MetricError) as e:
            metrics.fill(run, "{" + path + "}")
        assert str(e.value) == message


@pytest.mark.parametrize("app", gumbelrs.apps.APPS)
def test_application_pages_show_their_stored_run(app):
    """Every application has a stored run, docs/results/APP/metrics.json; the
    page's tables are filled from it (no Markdown table outside a
    metrics-table block), and the run is the documented one: its
    configuration is the code's default ``Config()``, so `gumbelrs run APP`
    reproduces the page."""
    page = (DOCS / "apps" / f"{app}.md").read_text()
    assert (DOCS / "results" / app / "metrics.json").is_file(), f"{app} has no stored run"
    outside = re.sub(r"^```\{metrics-table\}.*?^```", "", page, flags=re.S | re.M)
    hand_tables = [line for line in outside.splitlines() if line.startswith("|")]
    assert hand_tables == [], hand_tables
    assert "{metrics-table}" in page or "{metric}`" in page
    stored = json.loads((DOCS / "results" / app / "metrics.json").read_text())[app]["config"]
    mod = importlib.import_module(f"gumbelrs.apps.{app}")
    assert stored == json.loads(json.dumps(dataclasses.asdict(mod.Config())))


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt install chromium; "
                    ".ci/run installs it)")
def test_the_application_pages_render_in_headless_chromium(site, tmp_path):
    """What a reader sees: each application page and the index load in the
    browser with every image decoded and every in-page link's target there."""
    pages = [site / "html" / "index.html", *sorted((site / "html" / "apps").glob("*.html"))]
    probe = tmp_path / "probe.html"
    frames = "".join(f"<iframe src='{p.as_uri()}'></iframe>" for p in pages)
    probe.write_text(
        f"<!DOCTYPE html><html><body>{frames}<script>"
        "window.onload = () => { const out = [];"
        " for (const f of document.querySelectorAll('iframe')) {"
        "  const d = f.contentDocument;"
        "  const bad = [...d.images].filter(i => !(i.complete && i.naturalWidth > 0)).length;"
        "  const broken = [...d.querySelectorAll('a[href^=\"#\"]')].filter(a => a.hash.length > 1"
        "   && !d.getElementById(decodeURIComponent(a.hash.slice(1)))).length;"
        "  out.push(`${f.src.split('/').slice(-2).join('/')}:images=${d.images.length},bad=${bad},"
        "broken=${broken}`); }"
        " document.body.setAttribute('data-result', out.join(' ')); };"
        "</script></body></html>")
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                        "--allow-file-access-from-files", "--virtual-time-budget=10000",
                        "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                       timeout=120)
    result = re.search(r'data-result="([^"]*)"', r.stdout)
    assert result, r.stdout[-2000:] + r.stderr[-2000:]
    rows = dict(item.split(":", 1) for item in result.group(1).split())
    assert len(rows) == len(pages), rows
    for page, row in rows.items():
        counts = dict(kv.split("=") for kv in row.split(","))
        assert counts["bad"] == "0" and counts["broken"] == "0", (page, row)
    figures = sum(int(dict(kv.split("=") for kv in row.split(","))["images"])
                  for row in rows.values())
    referenced = sum(p.read_text().count("![") for p in (DOCS / "apps").glob("*.md"))
    assert figures == referenced > 0, rows  # every figure the pages show
