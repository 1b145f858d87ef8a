"""The gumbelrs command: its subcommands run, bad arguments fail clearly."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args):
    return subprocess.run([sys.executable, "-m", "gumbelrs", *args], capture_output=True,
                          text=True, timeout=300)


def test_info_reports_simd_and_threads():
    r = run("info")
    assert r.returncode == 0, r.stderr
    assert "SIMD: " in r.stdout and "threads: gumbelrs " in r.stdout and "CUDA: " in r.stdout


def test_version_is_the_cargo_version():
    """One version source: Cargo.toml, read by maturin into the metadata."""
    cargo = (Path(__file__).resolve().parents[1] / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', cargo, flags=re.M).group(1)
    r = run("--version")
    assert (r.returncode, r.stdout) == (0, f"gumbelrs {version}\n"), r.stderr
    import gumbelrs

    assert gumbelrs.__version__ == version


def test_bench_runs_a_tiny_table(tmp_path):
    r = run("bench", "--shapes", "8x16", "--threads", "1", "--repeats", "2", "--only",
            "Categorical.sample", "topk", "--markdown", "--bfloat16", "--json",
            str(tmp_path / "b.json"))
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("| Categorical.sample")]
    assert [row.split("|")[2:4] for row in rows] == [[" 8x16 ", " float32 "],
                                                      [" 8x16 ", " bfloat16 "]]
    table = json.loads((tmp_path / "b.json").read_text())
    assert [(t["op"], t["dtype"]) for t in table["rows"]] == [
        ("Categorical.sample", "float32"), ("topk(x + gumbel), k=8", "float32"),
        ("Categorical.sample", "bfloat16"), ("topk(x + gumbel), k=8", "bfloat16")]
    assert float(table["rows"][0]["gumbelrs ms"]) > 0


def test_bad_arguments_exit_nonzero_with_a_message():
    r = run("bogus")
    assert r.returncode == 2 and "invalid choice: 'bogus'" in r.stderr
    r = run("info", "--verbose")
    assert r.returncode == 2 and "unrecognized arguments: --verbose" in r.stderr


@pytest.fixture
def no_work(monkeypatch):
    """Makes every command fail the test if it starts its work."""
    from gumbelrs import _estimators_cli, bench, demo
    from gumbelrs.apps import _report

    def work(*args, **kwargs):
        raise AssertionError("the command started its work")

    for module, name in ((bench, "cases"), (_estimators_cli, "toy_table"), (demo, "_demo"),
                         (_report, "staged")):
        monkeypatch.setattr(module, name, work)


def cli_error(capsys, *args):
    """The exit status and the last line of stderr of `gumbelrs ARGS`, run in this process."""
    from gumbelrs.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(list(args))
    return e.value.code, capsys.readouterr().err.splitlines()[-1]


def test_bad_numbers_and_shapes_exit_2_naming_the_option(no_work, capsys):
    cases = [
        (("estimators", "--n", "-5"), "estimators: error: argument --n: expected an int in "
                                      "[2, 1000000000], got '-5'"),
        (("estimators", "--n", "0"), "argument --n: expected an int in [2, 1000000000], got '0'"),
        (("estimators", "--n", "1"), "argument --n: expected an int in [2, 1000000000], got '1'"),
        (("estimators", "--n", "1e5"), "argument --n: expected an int in [2, 1000000000], got "
                                       "'1e5'"),
        (("estimators", "--seed", "-1"), "argument --seed: expected an int in [0, 2**64), got "
                                         "'-1'"),
        (("estimators", "--seed", str(2**64)), "argument --seed: expected an int in [0, 2**64), "
                                               f"got '{2**64}'"),
        (("bench", "--threads", "0"), "bench: error: argument --threads: expected an int in "
                                      "[1, 1024], got '0'"),
        (("bench", "--threads", "1", "2147483647"), "argument --threads: expected an int in "
                                                    "[1, 1024], got '2147483647'"),
        (("bench", "--repeats", "-1"), "bench: error: argument --repeats: expected an int >= 1, "
                                       "got '-1'"),
        (("bench", "--repeats", "0"), "argument --repeats: expected an int >= 1, got '0'"),
        (("bench", "--shapes", "12xx"), "bench: error: argument --shapes: expected "
                                        "comma-separated shapes of sizes >= 1 such as "
                                        "4096x1024,8x16, got '12xx' ('12xx' is not a shape)"),
        (("bench", "--shapes", "8x16,0x4"), "argument --shapes: expected comma-separated shapes "
                                            "of sizes >= 1 such as 4096x1024,8x16, got "
                                            "'8x16,0x4' ('0x4' is not a shape)"),
        (("bench", "--shapes", "8x16,"), "('' is not a shape)"),
        (("bench", "--shapes", "8x-16"), "('8x-16' is not a shape)"),
        (("run", "kmeans", "--seed", "2147483648"), "run: error: kmeans: seed must be an int in "
                                                    "[0, 2**31), got 2147483648"),
    ]
    for args, message in cases:
        status, line = cli_error(capsys, *args)
        assert status == 2 and line.endswith(message), (args, line)


def test_unusable_out_and_config_exit_2_naming_the_option(no_work, capsys, tmp_path,
                                                          monkeypatch):
    file = tmp_path / "file"
    file.write_text("not a folder")
    mine = tmp_path / "mine"
    (mine / "report").mkdir(parents=True)
    (mine / "report" / "thesis.tex").write_text("the user's own report folder")
    cases = [
        (("run", "kmeans", "--out", f"{file}/x"),
         f"run: error: argument --out: expected a folder, got '{file}/x' ({file} is not a "
         f"folder)"),
        (("run", "kmeans", "--out", str(file)),
         f"run: error: argument --out: expected a folder, got '{file}' ({file} is not a folder)"),
        (("demo", "--out", str(file)),
         f"demo: error: argument --out: expected a folder, got '{file}' ({file} is not a folder)"),
        (("demo", "--out", f"{file}/x/y"),
         f"argument --out: expected a folder, got '{file}/x/y' ({file} is not a folder)"),
        # The report replaces its folder whole: a folder of other files is not one to replace.
        (("demo", "--out", str(tmp_path)),
         f"demo: error: argument --out: expected a new folder, an empty one or a previous report, "
         f"got '{tmp_path}' ({tmp_path} holds other files and no report.md, and the report "
         f"replaces its folder whole)"),
        (("run", "kmeans", "--out", str(mine)),
         f"argument --out: expected a new folder, an empty one or a previous report, got "
         f"'{mine}' ({mine / 'report'} holds other files and no report.md"),
    ]
    if os.path.isdir("/proc/self"):  # Linux: folders cannot be made in /proc or /sys
        cases += [
            (("run", "kmeans", "--out", "/proc/x"), "run: error: argument --out: expected a "
             "folder that can be written, got '/proc/x' (no folder can be made in /proc: "),
            (("run", "kmeans", "--out", "/sys/x"), "run: error: argument --out: expected a "
             "folder that can be written, got '/sys/x' (no folder can be made in /sys: "),
            (("demo", "--out", "/proc/x"), "demo: error: argument --out: expected a folder that "
             "can be written, got '/proc/x' (no folder can be made in /proc: "),
        ]
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('{"datasets": "é"}'.encode("latin-1"))
    cases += [
        (("run", "kmeans", "--config", str(latin1)),
         f"run: error: argument --config: expected a UTF-8 JSON file, got '{latin1}' (byte 0xe9 "
         f"at offset 14 is not UTF-8)"),
        (("run", "kmeans", "--config", str(tmp_path / "absent.json")),
         f"run: error: argument --config: expected a readable JSON file, got "
         f"'{tmp_path / 'absent.json'}' ("),
        (("run", "kmeans", "--config", str(file)),
         f"run: error: argument --config: expected a JSON file, got '{file}' (Expecting value: "),
    ]
    for args, message in cases:
        status, line = cli_error(capsys, *args)
        assert status == 2 and message in line, (args, line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "latin1.json", "mine"]
    if os.path.isdir("/proc/self"):  # the default folders, in a working folder that takes none
        monkeypatch.chdir("/proc")
        for args, value in ((("run", "kmeans"), "gumbelrs-runs/kmeans"),
                            (("demo",), "gumbelrs-report")):
            status, line = cli_error(capsys, *args)
            assert status == 2 and line.endswith(
                f"error: argument --out: expected a folder that can be written, got '{value}' "
                f"(no folder can be made in /proc: No such file or directory)"), (args, line)


def test_staging_never_replaces_a_folder_of_other_files(tmp_path):
    from gumbelrs.apps import _report

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"holds other files and no report\.md"), \
            _report.staged(tmp_path):
        raise AssertionError("staged a folder of other files")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_estimators_take_the_smallest_sample_and_the_largest_seed(capsys):
    from gumbelrs.__main__ import main

    assert main(["estimators", "--n", "2", "--seed", str(2**64 - 1)]) == 0
    table = capsys.readouterr().out
    assert "2 estimates each, seed 18446744073709551615" in table and "nan" not in table


def _html_problems(page: str, folder) -> list[str]:
    """Images that do not decode to PNG, links to anchors or files that do not exist."""
    import base64
    from html.parser import HTMLParser

    problems, ids, links, images = [], set(), [], []

    class Page(HTMLParser):
        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if "id" in a:
                ids.add(a["id"])
            if tag == "a" and "href" in a:
                links.append(a["href"])
            if tag == "img":
                images.append(a.get("src", ""))

    Page().feed(page)
    for src in images:
        head = "data:image/png;base64,"
        if not src.startswith(head) or not base64.b64decode(src[len(head):]).startswith(
                b"\x89PNG\r\n\x1a\n"):
            problems.append(f"image {src[:40]!r}")
    for href in links:
        if href.startswith("#") and href[1:] not in ids:
            problems.append(f"anchor {href}")
        elif not href.startswith(("#", "http://", "https://")) and not (folder / href).exists():
            problems.append(f"link {href}")
    return problems if images else ["no images"]


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    """The folder of a `gumbelrs demo --size tiny` run (made once for the module)."""
    out = tmp_path_factory.mktemp("demo") / "report"
    r = run("demo", "--size", "tiny", "--no-progress", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


def test_demo_writes_a_complete_report(tiny_report):
    import json

    out = tiny_report
    assert sorted(p.name for p in out.iterdir()) == [
        "dna_generator.png", "dna_rna_design.png", "dna_vae_positions.png",
        "dropout_calibration.png", "kmeans_embedding.png", "metrics.json", "nas_entropy.png",
        "paths_maps.png", "report.html", "report.md", "sorting_jigsaw.png",
        "sorting_mnist.png", "sorting_numbers.png", "temperatures.png", "textgan_curves.png",
        "textgan_temperature.png", "trees_learning.png", "trees_recovered.png",
        "vae_digits_soft.png", "vae_digits_st.png"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"meta", "core", "vae", "dna", "textgan", "kmeans", "dropout",
                            "feature_selection", "nas", "sorting", "trees", "paths"}
    assert set(metrics["sorting"]) == {"config", "numbers", "mnist", "jigsaw", "seconds"}
    assert set(metrics["trees"]) == {"config", "seconds", *(f"8/100/{m}" for m in (
        "chow_liu", "model_mle", "tree", "concrete", "topk"))}
    assert set(metrics["paths"]) == {"config", "6", "seconds"}
    assert set(metrics["paths"]["6"]) == {"uniform", "perturbed", "blackbox", "two_stage"}
    assert set(metrics["textgan"]) >= {"MLE only", "GAN, no reheating", "GAN with reheating"}
    assert set(metrics["vae"]["digits"]) == {"soft", "st"}
    assert set(metrics["dna"]["generator"]["examples"][0]) <= set("acgt")
    assert set(metrics["feature_selection"]["madelon"]["50"]) == {
        "selector", "cae", "gates", "mutual_info", "anova_f", "all_features"}
    assert metrics["meta"]["size"] == "tiny"
    assert metrics["kmeans"]["iris"]["soft_ari"] > 0.5  # 0.73 in the tiny run when written
    assert set(metrics["dropout"]["diabetes"]) == {"concrete", "mc", "none", "learned_p"}
    assert set(metrics["core"]["speed"]) == {"soft forward", "hard forward",
                                             "soft forward+backward"}
    page = (out / "report.html").read_text()
    assert _html_problems(page, out) == []
    md = (out / "report.md").read_text()
    for name in ("temperatures.png", "kmeans_embedding.png", "dropout_calibration.png",
                 "nas_entropy.png", "vae_digits_soft.png", "dna_generator.png",
                 "dna_vae_positions.png", "dna_rna_design.png",
                 "textgan_temperature.png", "textgan_curves.png", "sorting_numbers.png",
                 "sorting_mnist.png", "sorting_jigsaw.png", "trees_recovered.png",
                 "trees_learning.png", "paths_maps.png"):
        assert f"]({name})" in md
    assert list(out.parent.iterdir()) == [out]  # no staging folder left behind


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt install chromium; "
                    ".ci/run installs it)")
def test_report_renders_in_headless_chromium(tiny_report, tmp_path):
    """What a person would see: the browser lays the page out (title, a body
    taller than a screen), loads every image, finds every in-page link's
    target, and logs nothing to the console (no script or load error)."""
    probe = tmp_path / "probe.html"
    probe.write_text(
        "<!DOCTYPE html><html><body>"
        f"<iframe id='f' src='{(tiny_report / 'report.html').as_uri()}'></iframe><script>"
        "document.getElementById('f').onload = () => {"
        " const d = document.getElementById('f').contentDocument;"
        " const imgs = [...d.images];"
        " const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;"
        " const links = [...d.querySelectorAll('a[href^=\"#\"]')];"
        " const broken = links.filter(a => !d.getElementById(a.getAttribute('href').slice(1)));"
        " const tall = d.body.scrollHeight > 2000;"
        " document.body.setAttribute('data-result',"
        "  `images=${imgs.length} bad=${bad} links=${links.length} broken=${broken.length}"
        " tall=${tall} h1=${d.querySelector('h1').textContent}`);"
        "};</script></body></html>")
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                        "--allow-file-access-from-files", "--virtual-time-budget=5000",
                        "--enable-logging=stderr", "--v=0", "--dump-dom", probe.as_uri()],
                       capture_output=True, text=True, timeout=120)
    figures = len(list(tiny_report.glob("*.png")))  # each shown once
    assert (f'data-result="images={figures} bad=0 links=11 broken=0 tall=true '
            f'h1=gumbelrs demonstration"' in r.stdout), r.stdout[-2000:]
    console = [line for line in r.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console


def test_run_resumes_from_its_checkpoint_and_rejects_another_config(tmp_path):
    args = ("run", "kmeans", "--datasets", "iris", "--seeds", "2", "--steps", "30",
            "--deep", "false", "--no-progress", "--out", str(tmp_path))
    first = run(*args)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "checkpoint.pt").exists()
    before = (tmp_path / "report" / "metrics.json").read_text()
    again = run(*args)
    assert again.returncode == 0 and "resuming from" in again.stderr
    assert (tmp_path / "report" / "metrics.json").read_text().split('"seconds"')[0] == \
        before.split('"seconds"')[0]
    kept = (tmp_path / "report" / "metrics.json").read_text()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    broken = run(*args[:-2], "--out", str(tmp_path / "broken"))
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    assert f"checkpoint {tmp_path / 'broken' / 'checkpoint.pt'} cannot be read" in broken.stderr
    other = run(*args[:-2], "--steps", "31", "--out", str(tmp_path))
    assert other.returncode == 2
    assert "was written by a run with another configuration" in other.stderr
    assert "--fresh" in other.stderr
    assert (tmp_path / "report" / "metrics.json").read_text() == kept


def test_run_bad_options_exit_2_with_a_message(tmp_path):
    cases = [
        (("--steps", "abc"), "gumbelrs run: error: kmeans: steps expects int, got 'abc'"),
        (("--bogus", "1"), "gumbelrs run: error: kmeans: unknown option 'bogus'; options: "),
        (("--datasets", "iris,mnist"), "gumbelrs run: error: kmeans: datasets must be some of "
                                       "('iris', 'wine', 'digits', 'breast_cancer'), got "
                                       "('iris', 'mnist')"),
        (("--seeds", "0"), "gumbelrs run: error: kmeans: seeds must be an int >= 1, got 0"),
        (("--steps",), "gumbelrs run: error: kmeans: --steps needs a value"),
    ]
    for extra, message in cases:
        r = run("run", "kmeans", "--out", str(tmp_path), *extra)
        assert r.returncode == 2 and message in r.stderr, (extra, r.stderr)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    r = run("run", "dropout", "--config", str(bad))
    assert r.returncode == 2
    assert (f"gumbelrs run: error: argument --config: expected a JSON object, got '{bad}', "
            f"which holds a list") in r.stderr
    good = tmp_path / "good.json"
    good.write_text('{"hidden": [8, 4], "splits": 3}')
    r = run("run", "dropout", "--config", str(good), "--splits", "5", "--show-config")
    assert r.returncode == 0, r.stderr
    assert '"splits": 5' in r.stdout and '"hidden": [\n    8,\n    4\n  ]' in r.stdout
    assert not list(tmp_path.glob("report*"))


def test_run_help_describes_each_field(capsys):
    """``APP --help`` lists the fields of ``APP``'s ``Config`` as the options
    that set them, with the descriptions of the API reference (``Config``'s
    ``#:`` comments) and their defaults."""
    from gumbelrs.apps import _cli

    with pytest.raises(SystemExit) as e:
        _cli.main(["trees", "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "usage: gumbelrs run" in out and "--show-config" in out
    assert ("trees options: The fields of gumbelrs.apps.trees.Config (the defaults are the "
            "documented run).") in out
    assert ("--states INT Values of each variable. An int >= 2. (default: 3) --flip_min FLOAT "
            "Lower end of the uniform range") in out
    assert "--samples INT,... m, the samples of each instance's tree model" in out
    from gumbelrs.apps import trees

    assert all(f"--{name} " in out for name in trees.Config.__dataclass_fields__)
    with pytest.raises(SystemExit):
        _cli.main(["--help"])  # before the app's name: the options only
    out = capsys.readouterr().out
    assert "gumbelrs run APP --help lists them" in out and "options:" in out
    assert "The fields of" not in out


def test_ctrl_c_leaves_no_half_written_report(tmp_path, monkeypatch):
    from gumbelrs import __main__ as cli
    from gumbelrs.apps import vae

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("the previous report")
    monkeypatch.setattr(vae, "run", interrupted)  # the first application
    assert cli.main(["demo", "--size", "tiny", "--no-progress", "--out", str(out)]) == 130
    assert [p.name for p in tmp_path.iterdir()] == ["report"]
    assert [p.name for p in out.iterdir()] == ["report.md"]
    assert (out / "report.md").read_text() == "the previous report"


def test_staging_removes_the_leftovers_of_killed_runs_only(tmp_path):
    from gumbelrs.apps import _report

    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "report"
        out.mkdir()
        (out / "report.md").write_text("the previous report")
        names = [f".report.{kind}-{pid}" for kind in ("partial", "old")
                 for pid in (exited.pid, running.pid)]
        names += [f".other.partial-{exited.pid}", ".report.partial-12x", "unrelated"]
        for name in names:
            (tmp_path / name).mkdir()
            (tmp_path / name / "figure.png").write_bytes(b"half written")
        with _report.staged(out) as folder:
            assert not (tmp_path / f".report.partial-{exited.pid}").exists()
            (folder / "report.md").write_text("the new report")
        assert (out / "report.md").read_text() == "the new report"
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            ["report", f".report.partial-{running.pid}", f".report.old-{running.pid}",
             f".other.partial-{exited.pid}", ".report.partial-12x", "unrelated"])
    finally:
        running.kill()
        running.wait()


def test_staging_keeps_the_folder_of_a_process_of_another_user(tmp_path, monkeypatch):
    import os

    from gumbelrs.apps import _report

    def not_permitted(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    (tmp_path / ".report.partial-4242").mkdir()
    monkeypatch.setattr(os, "kill", not_permitted)  # 4242 runs, under another user
    with _report.staged(tmp_path / "report"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [".report.partial-4242", "report"]
