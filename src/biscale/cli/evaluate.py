"""``biscale evaluate``: the paper's evaluation end to end (docs/evaluate.md).

A scenario (bundled name or TOML/JSON file; ``--list`` shows the bundled ones) is loaded and every flag that is given
overrides its field; the defaults live in the scenario files and :class:`biscale.evaluate.Scenario`, not here.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

import typer

from biscale.cli.common import check_cache_dir, check_output_dir, console, err_console, print_json, print_table
from biscale.errors import InputError
from biscale.limits import check_workers


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` to the root app."""
    app.command("evaluate")(evaluate_cmd)


def _list_scenarios(json_out: bool) -> None:
    from biscale.evaluate import bundled_scenarios, load_scenario

    items = []
    for name in bundled_scenarios():
        sc = load_scenario(name)
        loads = (
            ", ".join(f"{r:g} req/s" for r in sc.rates_rps)
            if sc.rates_rps
            else ", ".join(f"{100 * f:g} %" for f in sc.loads)
        )
        items.append(
            {
                "name": name,
                "description": sc.description,
                "workload": sc.workload.describe(),
                "cluster": f"{sc.gpus} x {sc.gpu}, {sc.model}",
                "loads": loads,
                "systems": list(sc.systems),
                "sweep": None if sc.sweep is None else {k: list(v) for k, v in sc.sweep.params.items()},
            }
        )
    if json_out:
        print_json({"scenarios": items})
        return
    print_table(
        "bundled scenarios (biscale evaluate --config NAME; the first is the default)",
        ["name", "workload", "cluster", "loads", "sweep"],
        [
            [
                i["name"],
                i["workload"],
                i["cluster"],
                i["loads"],
                "-" if i["sweep"] is None else ", ".join(i["sweep"]),
            ]
            for i in sorted(items, key=lambda i: i["name"] != "azure-conv")
        ],
    )


def _overrides(
    trace: str | None,
    lengths: str | None,
    gpus: int | None,
    loads: str | None,
    systems: str | None,
    seed: int | None,
    slo_ttft_ms: float | None = None,
    slo_tpot_ms: float | None = None,
) -> dict[str, Any]:
    from biscale.evaluate.scenario import ALL_SYSTEMS, parse_float_list

    out: dict[str, Any] = {}
    if trace is not None:
        out.update({"workload.arrivals": "trace", "workload.trace": trace})
    if lengths is not None:
        out["workload.lengths"] = lengths
    if gpus is not None:
        out["gpus"] = gpus
    if loads is not None:
        out.update({"loads": list(parse_float_list(loads, "--loads")), "rates_rps": None})
    if systems is not None:
        names = [s.strip() for s in systems.split(",") if s.strip()]
        unknown = [s for s in names if s not in ALL_SYSTEMS]
        if unknown or not names:
            raise InputError(
                f"unknown system(s) {', '.join(unknown) or '(none given)'} (known: {', '.join(ALL_SYSTEMS)})",
                field="--systems",
            )
        out["systems"] = names
    if seed is not None:
        out["seed"] = seed
    if slo_ttft_ms is not None:
        out["sim.slo.ttft_s"] = slo_ttft_ms / 1e3
    if slo_tpot_ms is not None:
        out["sim.slo.tpot_s"] = slo_tpot_ms / 1e3
    return out


class _Progress:
    """Rich progress on a TTY, otherwise one line per finished run (stderr, so ``--json`` keeps stdout clean)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.total = 0
        self.done = 0
        self.t0 = time.perf_counter()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("preparing", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def _line(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def __call__(self, kind: str, payload: Any) -> None:
        t = time.perf_counter() - self.t0
        if kind == "stage":
            if self._progress is not None:
                self._progress.update(self._task, description=str(payload))
            else:
                self._line(f"[{t:6.1f} s] {payload}")
        elif kind == "probe":
            p = payload
            self._line(
                f"[{t:6.1f} s]   capacity probe {p['rate_rps']:.2f} req/s: "
                f"{'meets' if p['slo_met'] else 'misses'} the SLOs (P99 TTFT {p['p99_ttft_ms']:.0f} ms, "
                f"TPOT {p['p99_tpot_ms']:.0f} ms)"
            )
        elif kind == "planned":
            self.total = int(payload)
            if self._progress is not None:
                self._progress.update(self._task, total=self.total, completed=0, description="runs")
        elif kind == "run":
            self.done += 1
            r = payload
            if self._progress is not None:
                self._progress.update(self._task, completed=self.done)
            rd = str(r.get("run_dir", ""))
            point = f" (sweep {rd.split('/sweep/', 1)[1].split('/')[0]})" if "/sweep/" in rd else ""
            self._line(
                f"[{t:6.1f} s] run {self.done}/{self.total} {r['scenario']} {r['load_label']} {r['system']}{point}: "
                f"prefill {r['prefill_j_per_token']:.3f} J/tok, decode {r['decode_j_per_token']:.3f} J/tok, "
                f"SLOs {'met' if r['slo_met'] else 'missed'} ({r['windows_slo_met']}/{r['windows']} windows), "
                f"{r['wall_s']:.1f} s"
            )


def evaluate_cmd(
    config: list[str] | None = typer.Option(
        None,
        "--config",
        metavar="FILE|NAME",
        help="Scenario file (.toml/.json) or bundled scenario name; repeat for several (default: azure-conv).",
    ),
    list_: bool = typer.Option(False, "--list", help="List the bundled scenarios and exit."),
    trace: str | None = typer.Option(None, "--trace", metavar="NAME|PATH", help="Trace whose arrivals are used."),
    lengths: str | None = typer.Option(
        None, "--lengths", metavar="NAME|PATH|native", help="Length table to draw from, or 'native'."
    ),
    gpus: int | None = typer.Option(None, "--gpus", help="GPUs in the cluster."),
    loads: str | None = typer.Option(
        None, "--loads", metavar="F,F,...", help="Loads as fractions of the searched capacity, e.g. 0.67,0.85."
    ),
    systems: str | None = typer.Option(None, "--systems", metavar="NAME,...", help="Systems to run."),
    slo_ttft_ms: float | None = typer.Option(None, "--slo-ttft-ms", help="P99 TTFT target, ms (scenario's: default)."),
    slo_tpot_ms: float | None = typer.Option(None, "--slo-tpot-ms", help="P99 TPOT target, ms (scenario's: default)."),
    out: Path = typer.Option(Path("evaluation"), "--out", help="Output directory."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of rescaling, lengths and synthetic arrivals."),
    quick: bool = typer.Option(False, "--quick", help="Simulate a 10-minute slice (smoke tests)."),
    sweep: str | None = typer.Option(
        None,
        "--sweep",
        metavar="PARAM=V1,V2,...",
        help="Sensitivity sweep replacing the scenario's (e.g. switch_latency_ms=1,10,50,200; several: ';').",
    ),
    no_sweep: bool = typer.Option(False, "--no-sweep", help="Skip the scenario's sweep."),
    backend: str = typer.Option("pool", "--backend", help="Where runs execute: pool (local processes) or ray."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (with --backend ray)."),
    workers: int | None = typer.Option(None, "--workers", help="Worker processes (default: CPU count)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write cached capacity results."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not write report.html."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object on stdout (the results)."),
) -> None:
    """Run the paper's evaluation: every system on identical requests at each load; table, files and report."""
    from biscale.evaluate import QUICK_DURATION_S, load_scenario, make_backend, run_evaluation, write_results
    from biscale.evaluate.scenario import SweepSpec, scenario_with
    from biscale.results.report import build_report
    from biscale.results.summary_table import COLUMNS, decomposition_lines, headline_lines, scenario_rows

    if list_:
        _list_scenarios(json_out)
        return
    if sweep is not None and no_sweep:
        raise InputError("--sweep and --no-sweep exclude each other", field="--sweep")
    check_output_dir(out, "--out")
    check_workers(workers)
    if not no_cache:
        check_cache_dir(None)
    overrides = _overrides(trace, lengths, gpus, loads, systems, seed, slo_ttft_ms, slo_tpot_ms)
    scenarios = []
    sources: list[str | None] = list(config) if config else [None]
    for source in sources:
        sc = load_scenario(source, overrides)
        if quick:
            d = sc.workload.duration_s
            sc = scenario_with(sc, {"workload.duration_s": QUICK_DURATION_S if d is None else min(d, QUICK_DURATION_S)})
        if sweep is not None:
            from biscale.evaluate.scenario import parse_sweep_option

            params = parse_sweep_option(sweep)
            base = sc.sweep.model_dump() if sc.sweep is not None else {}
            spec = SweepSpec.model_validate({**base, "params": params})
            sc = scenario_with(sc, {"sweep": spec.model_dump(mode="json")}, what="--sweep")
        scenarios.append(sc)
    if len({sc.name for sc in scenarios}) != len(scenarios):
        raise InputError("two scenarios share a name", field="--config")
    command = "biscale " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "biscale evaluate"
    with make_backend(backend, workers=workers, address=address) as be, _Progress() as progress:
        results = run_evaluation(
            scenarios, out, be, use_cache=not no_cache, sweep=not no_sweep, on_event=progress, command=command
        )
    write_results(out, results)
    report = None
    if not no_report:
        report, _ = build_report(out)
    if json_out:
        print_json({**results, "out": str(out), "report": None if report is None else str(report)})
        return
    for info in results["scenarios"]:
        cap = info["capacity"]
        title = (
            f"{info['name']}: {info['workload']}; capacity {info['capacity_rps']:.2f} req/s "
            f"({'searched' if cap.get('searched') else 'given'}, distserve-static {cap['placement']})"
        )
        print_table(title, COLUMNS, scenario_rows(results, info["name"]), min_width=170)
    for line in decomposition_lines(results) + headline_lines(results):
        console.print(line, highlight=False)
    console.print(
        f"wrote {out}/results.json, {len(results['runs'])} runs under {out}/runs"
        + ("" if report is None else f", {report}")
        + f" in {results['timings']['total_s']:.0f} s",
        highlight=False,
    )
