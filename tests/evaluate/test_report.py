"""The report: one self-contained HTML file with every table and figure, rebuilt from the files alone, checked in a
real browser (headless Chromium) when one is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from biscale.results.report import build_report

FIGURES = {
    "energy",
    "savings-vs-load",
    "oracle-gap",
    "energy-latency",
    "itl-cdf",
    "per-window",
    "placement",
    "clocks",
    "power",
    "latency-cdf",
    "windows",
}
#: Writes every image's natural size and every table's rendered size into the DOM once the page has loaded.
PROBE_JS = """
<script>
window.addEventListener('load', function () {
  var out = {images: [], tables: []};
  document.querySelectorAll('img').forEach(function (im) {
    out.images.push({id: im.closest('figure').id, w: im.naturalWidth, h: im.naturalHeight,
                     shown_w: im.getBoundingClientRect().width, shown_h: im.getBoundingClientRect().height});
  });
  document.querySelectorAll('table').forEach(function (t) {
    out.tables.push({id: t.id, w: t.getBoundingClientRect().width, h: t.getBoundingClientRect().height,
                     rows: t.rows.length});
  });
  var pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium not installed (Debian: apt-get install -y chromium; .ci/run installs it)")


def browse(page: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=10000",
        "--window-size=1280,2000",
    ]
    return subprocess.run([chromium(), *flags, *extra, page.as_uri()], capture_output=True, text=True, timeout=180)


def test_report_has_every_figure_and_table_and_needs_no_network(tiny_eval: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = tiny_eval
    path, summary = build_report(out, tmp_path / "report.html")
    assert summary["figures_missing"] == {}
    drawn = {f"tiny/{f}" for f in FIGURES} | {"tiny/sweep-switch_latency_ms"}
    assert summary["figures"] == len(drawn)
    page = path.read_text()
    for fig in drawn:
        assert f'id="fig-{fig.replace("/", "-")}"' in page
    assert page.count('src="data:image/png;base64,') == len(drawn)
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from the network
    for table in ("runs-tiny", "sweep-tiny", "facts-tiny"):
        assert f'id="{table}"' in page
    assert "Headline: BiScale vs distserve" in page


def test_the_report_renders_in_a_browser(tiny_eval: tuple[Path, dict], tmp_path: Path) -> None:
    out, results = tiny_eval
    path, summary = build_report(out, tmp_path / "report.html")
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(path.read_text().replace("</body>", PROBE_JS + "</body>"))
    res = browse(probe_page, tmp_path, "--dump-dom")
    m = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, re.S)
    assert m, f"no probe output from chromium: {res.stderr[-2000:]}"
    probe = json.loads(m.group(1).replace("&quot;", '"'))
    assert len(probe["images"]) == summary["figures"]
    for im in probe["images"]:
        assert im["w"] > 100 and im["h"] > 100 and im["shown_w"] > 100 and im["shown_h"] > 50, im
    tables = {t["id"]: t for t in probe["tables"]}
    main_runs = [r for r in results["runs"] if not r["sweep"]]
    assert tables["runs-tiny"]["rows"] == len(main_runs) + 1 and tables["runs-tiny"]["h"] > 100
    assert tables["sweep-tiny"]["rows"] == len(results["runs"]) - len(main_runs) + 1
    assert all(t["w"] > 0 and t["h"] > 0 for t in probe["tables"])
    shot = tmp_path / "shot.png"
    browse(path, tmp_path, f"--screenshot={shot}")
    assert shot.exists() and shot.stat().st_size > 10_000


def test_a_single_run_directory_gets_the_figures_its_files_support(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "sim"
    r = run_cli(
        "simulate", "--trace", "azure-conv", "--rate", "8", "--duration", "60", "--lengths", "sharegpt-v3",
        "--placement", "prefill:1xTP4,decode:1xTP4", "--controller", "prefill=mpc,decode=slack", "--out", str(out),
    )  # fmt: skip
    assert r.code == 0, r.err
    r = run_cli("report", str(out), "--json")
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    assert summary["runs"] == 1 and Path(summary["report"]) == out / "report.html"
    missing = {k.split("/", 1)[1] for k in summary["figures_missing"]}
    assert missing == {"savings-vs-load", "oracle-gap"}  # one system: nothing to compare with
    assert summary["figures"] == len(FIGURES) - 2
    page = (out / "report.html").read_text()
    assert "not drawn: needs a distserve run" in page
    # an empty timeline (a run that recorded no samples) leaves the figures over time out, with the reason
    import pandas as pd

    tl = pd.read_parquet(out / "timeline.parquet")
    tl.iloc[0:0].to_parquet(out / "timeline.parquet", index=False)
    r = run_cli("report", str(out), "--json")
    assert r.code == 0, r.err
    missing = {k.split("/", 1)[1]: v for k, v in json.loads(r.out)["figures_missing"].items()}
    assert {k for k, v in missing.items() if v == "no timeline samples"} == {
        "placement",
        "clocks",
        "power",
        "per-window",
    }


def test_report_errors_are_one_line(tmp_path: Path, run_cli) -> None:
    r = run_cli("report", str(tmp_path))
    assert r.code == 2 and "no results.json" in r.err and r.err.count("\n") == 1
    r = run_cli("report", str(tmp_path / "nope"))
    assert r.code == 2 and "not a directory" in r.err
