"""The HTML report in a real browser: headless Chromium renders it with no console error,
every figure and table in the DOM, the table sorter works, a hostile workload name stays text.

How: Chromium's own command line. `--dump-dom` prints the DOM after the load event (scripts
have run), `--enable-logging=stderr --v=0` prints every console message (errors, CSP
violations, failed loads) as a `CONSOLE` line, `--screenshot` writes a PNG. No DevTools
client, no extra Python package; `--host-resolver-rules` makes any network access fail
loudly (a console error) instead of silently reaching out.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from genprof.reports.html import write_report
from reportdata import EVIL, EVIL_WORKLOAD, FIGURES, TABLES, mixed_root

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0"]


def chromium_exe() -> str:
    exe = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if exe is None:
        pytest.fail("Chromium is not installed; the report's browser test needs it: apt-get install chromium",
                    pytrace=False)
    return exe


def chromium(url: str, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="genprof-chromium-") as profile:
        return subprocess.run([chromium_exe(), *FLAGS, f"--user-data-dir={profile}", *args, url],
                              capture_output=True, text=True, timeout=180)


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if re.search(r":CONSOLE[(:]", line)]


class DOM(HTMLParser):
    """Elements by id, script elements, the figure images, text, and the cells of each table."""

    def __init__(self, html: str):
        super().__init__()
        self.ids: dict[str, str] = {}
        self.scripts = 0
        self.images: list[dict[str, str]] = []
        self.text: list[str] = []
        self.cells: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self.html_attrs: dict[str, str] = {}
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "html":
            self.html_attrs = a
        if "id" in a:
            self.ids[a["id"]] = tag
        if tag == "script":
            self.scripts += 1
        if tag == "img":
            self.images.append(a)
        if tag == "table":
            self._table = a.get("id")
            self.cells[self._table] = []
        if tag == "tr" and self._table:
            self.cells[self._table].append([])
        if tag == "td" and self._table:
            self.cells[self._table][-1].append(a.get("data-sort", ""))

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def report(tmp_path_factory, sd_run, llm_run) -> Path:
    tmp = tmp_path_factory.mktemp("browser")
    root = mixed_root(tmp / "runs", sd_run, llm_run, evil=True)
    return write_report([root], tmp / "report.html", title="genprof browser test")


_LOADED: dict[Path, tuple[str, str]] = {}


def load(report: Path) -> tuple[str, str]:
    """(DOM after load, Chromium's stderr) of the report; one browser run per module.
    Called from the tests, not a fixture: without Chromium they FAIL (not error, not skip)."""
    if report not in _LOADED:
        res = chromium(report.as_uri(), "--dump-dom")
        assert res.returncode == 0, res.stderr[-3000:]
        _LOADED[report] = (res.stdout, res.stderr)
    return _LOADED[report]


def test_chromium_is_installed():
    assert Path(chromium_exe()).exists()


def test_renders_without_console_errors(report):
    dom, stderr = load(report)
    assert "<html" in dom, stderr[-3000:]
    assert console_messages(stderr) == []


def test_every_figure_and_table_is_in_the_dom(report):
    d = DOM(load(report)[0])
    assert d.html_attrs.get("data-sorter") == "ready"  # the sorter ran to the end
    for fid in FIGURES:
        assert d.ids.get(fid) == "figure", fid
    figs = [i for i in d.images if "figure" in i.get("class", "")]
    assert len(figs) == len(FIGURES) and all(i["src"].startswith("data:image/png;base64,") for i in figs)
    for tid in TABLES:
        assert d.ids.get(tid) == "table", tid
        assert d.cells[tid][1:], f"{tid} has no rows"


def test_hostile_workload_name_renders_as_text(report):
    dom = load(report)[0]
    d = DOM(dom)
    assert d.scripts == 1  # the sorter, nothing injected
    assert EVIL_WORKLOAD in "".join(d.text)
    assert EVIL not in dom and "&lt;script&gt;alert(1)&lt;/script&gt;" in dom


def test_clicking_a_header_sorts_the_table(report, tmp_path):
    # A copy of the report with a test script (allowed by its hash) that clicks a header twice.
    click = ("(function () { var t = document.getElementById('table-top-ops');"
             " var th = t.tHead.rows[0].cells[4]; th.click(); th.click();"
             " document.documentElement.setAttribute('data-test-sort', th.getAttribute('aria-sort')); })();")
    digest = base64.b64encode(hashlib.sha256(click.encode()).digest()).decode()
    html = report.read_text()
    original = [row[4] for row in DOM(html).cells["table-top-ops"][1:]]
    html = html.replace("script-src '", f"script-src 'sha256-{digest}' '", 1)
    html = html.replace("</body>", f"<script>{click}</script>\n</body>")
    copy = tmp_path / "sort.html"
    copy.write_text(html)
    res = chromium(copy.as_uri(), "--dump-dom")
    assert console_messages(res.stderr) == []
    d = DOM(res.stdout)
    assert d.html_attrs.get("data-test-sort") == "descending"
    times = [float(row[4]) for row in d.cells["table-top-ops"][1:]]
    assert sorted(times, reverse=True) == times and sorted(times) == sorted(float(x) for x in original)
    assert times != [float(x) for x in original]  # it was not sorted before


def test_screenshot(report):
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    shutil.copy(report, ARTIFACTS / "report.html")
    res = chromium(report.as_uri(), f"--screenshot={shot}", "--window-size=1280,4000", "--hide-scrollbars")
    assert res.returncode == 0, res.stderr[-3000:]
    assert shot.exists() and shot.stat().st_size > 50_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_an_imported_gpu_trace_shows_gpu_time_by_family_and_kernel(imported_runs, tmp_path):
    """`genprof import` then `genprof report` on the A100 DDP step (real entry point both), in Chromium."""
    from conftest import run_cli

    page = tmp_path / "gpu.html"
    r = run_cli("report", str(imported_runs["ddp"]), "--out", str(page))
    assert r.returncode == 0, r.stderr
    res = chromium(page.as_uri(), "--dump-dom")
    assert res.returncode == 0 and console_messages(res.stderr) == [], res.stderr[-3000:]
    d = DOM(res.stdout)
    assert d.html_attrs.get("data-sorter") == "ready"
    assert d.ids.get("gpu-time") == "section" and d.ids.get("fig-gpu-families") == "figure"
    for tid in ("table-gpu-family", "table-gpu-kernels", "table-gpu-streams"):
        assert d.ids.get(tid) == "table" and d.cells[tid][1:], tid
    text = "".join(d.text)
    for needle in ("Communication", "ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t", "aten::mm", "genprof import"):
        assert needle in text, needle
    shares = [float(row[3]) for row in d.cells["table-gpu-family"][1:]]  # the family shares of one run add up
    assert sum(shares) == pytest.approx(1.0)

def test_roofline_section_shows_the_host_verdicts(tmp_path, llm_run):
    """`genprof paper`'s roofline section with the host verdict table renders, rows and all, with no error."""
    from genprof.roofline import PROFILES, load_host, project
    from genprof.study.paper import host_verdicts

    counted = {"llm": {"ops": llm_run.ops, "meta": llm_run.meta, "counts": {"decode": 4}}}
    hosts = host_verdicts(counted, load_host())
    section = {"projection": project(llm_run.ops, PROFILES["h100"]), "hw": "h100", "hosts": hosts}
    html = write_report([llm_run.path.parent], tmp_path / "paper.html", roofline=section)
    res = chromium(html.as_uri(), "--dump-dom")
    assert res.returncode == 0 and console_messages(res.stderr) == [], res.stderr[-3000:]
    d = DOM(res.stdout)
    assert d.ids.get("table-host-verdicts") == "table" and len(d.cells["table-host-verdicts"][1:]) == len(hosts) == 2
    assert "host-bound" in "".join(d.text)
