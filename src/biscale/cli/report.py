"""``biscale report DIR``: rebuild the self-contained HTML report of an evaluation (or of one run directory) from
its files alone (docs/results.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from biscale.cli.common import check_output_file, console, print_json


def register(app: typer.Typer) -> None:
    """Add ``report`` to the root app."""
    app.command("report")(report_cmd)


def report_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Evaluation directory or run directory."),
    out: Path | None = typer.Option(None, "--out", help="Report file (default DIR/report.html)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Rebuild the self-contained HTML report from an evaluation's (or one run's) files alone."""
    from biscale.results.report import build_report

    if out is not None:
        check_output_file(out, "--out")
    path, summary = build_report(directory, out)
    if json_out:
        print_json(summary)
        return
    missing = summary["figures_missing"]
    console.print(
        f"wrote {path} ({summary['figures']} figures, {summary['runs']} runs, {summary['size_bytes'] / 1e6:.1f} MB)"
        + (f"; not drawn: {', '.join(f'{k} ({v})' for k, v in missing.items())}" if missing else ""),
        highlight=False,
    )
