"""``report.html``: one self-contained page (figures embedded as PNG data URIs, no network) built from an evaluation
or run directory's files alone (``results.json`` and the run directories' Parquet tables).

Per scenario: the headline (BiScale vs DistServe and the paper's bar), a table of every run in the paper's shape,
energy per phase per system, savings against load, the gap to the oracle, placement per window, clocks per
instance, cluster power, TTFT and TPOT CDFs with the SLO lines, per-window P99s, and each sweep's savings against
its parameter. A figure that the files cannot support (one run: no baseline to save against) is left out with the
reason shown in its place.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, StrictUndefined
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from biscale.control.state import Slo
from biscale.results.catalog import ALL_SYSTEMS
from biscale.results.layout import HEADLINE_BASELINE, PAPER_BAR, read_results, read_table
from biscale.sim.config import SimConfig

REPORT_FILE = "report.html"
_COLORS = {
    "distserve": "#4c72b0",
    "distserve-static": "#8172b3",
    "distserve-governor": "#937860",
    "distserve-idlelow": "#64b5cd",
    "distserve-lock": "#1f3b73",
    "placement-top": "#f2c14e",
    "placeonly": "#dd8452",
    "placeonly-idlelow": "#a0522d",
    "static": "#8c8c8c",
    "voltana": "#17becf",
    "voltana-route": "#0e7c86",
    "voltana-on-biscale": "#9edae5",
    "hindsight-lock": "#da8bc3",
    "biscale": "#55a868",
    "biscale-route": "#98df8a",
    "oracle": "#c44e52",
}
_LOAD_MARKERS = ("o", "s", "^", "D", "v", "P")
_PHASE_COLORS = {"prefill": "#4c72b0", "decode": "#dd8452"}


def _color(system: str) -> str:
    return _COLORS.get(system, "#333333")


def _order(systems: Sequence[str]) -> list[str]:
    known = [s for s in ALL_SYSTEMS if s in systems]
    return known + sorted(s for s in systems if s not in ALL_SYSTEMS)


@dataclass
class FigureItem:
    """One figure of the report: a PNG data URI, or the reason it is missing."""

    id: str
    title: str
    caption: str
    uri: str | None = None
    missing: str | None = None


@dataclass
class Section:
    """One scenario's part of the report."""

    name: str
    description: str
    facts: list[tuple[str, str]]
    headline: list[dict[str, Any]]
    table_columns: list[str]
    table_rows: list[list[str]]
    figures: list[FigureItem] = field(default_factory=list)
    sweep_columns: list[str] = field(default_factory=list)
    sweep_rows: list[list[str]] = field(default_factory=list)
    decomposition_columns: list[str] = field(default_factory=list)
    decomposition_rows: list[list[str]] = field(default_factory=list)


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _num(v: Any, fmt: str = "{:.3f}") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return html.escape(str(v))
    return "-" if not math.isfinite(f) else fmt.format(f)


def _pct(v: Any) -> str:
    return _num(v, "{:+.1f} %")


class RunFiles:
    """Lazy access to the tables of the runs in a results directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[tuple[str, str], pd.DataFrame | None] = {}

    def table(self, run: Mapping[str, Any], name: str) -> pd.DataFrame | None:
        rd = run.get("run_dir")
        if rd is None:
            return None
        key = (str(rd), name)
        if key not in self._cache:
            self._cache[key] = read_table(self.root / str(rd), name)
        return self._cache[key]

    def has_rows(self, run: Mapping[str, Any], name: str) -> bool:
        """Whether the run has table ``name`` with at least one row (a live run may write empty tables)."""
        t = self.table(run, name)
        return t is not None and len(t) > 0


# ------------------------------------------------------------------------------------------------ figures
def _figure(
    item: FigureItem, draw: Callable[[Figure], None], size: tuple[float, float], needs: str | None = None
) -> FigureItem:
    if needs is not None:
        item.missing = needs
        return item
    fig = Figure(figsize=size)
    draw(fig)
    item.uri = _png(fig)
    return item


def _loads(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, float] = {}
    for r in runs:
        label = str(r.get("load_label", r.get("load")))
        seen.setdefault(label, float(r.get("rate_rps") or r.get("load") or 0.0))
    return sorted(seen, key=lambda k: seen[k])


def _energy_bars(runs: Sequence[Mapping[str, Any]], loads: list[str], fig: Figure) -> None:
    axes = fig.subplots(1, 2, squeeze=False)[0]
    systems = _order(sorted({r["system"] for r in runs}))
    width = 0.8 / max(1, len(systems))
    for ax, (phase, key) in zip(
        axes, (("prefill", "prefill_j_per_token"), ("decode", "decode_j_per_token")), strict=True
    ):
        for j, s in enumerate(systems):
            vals = []
            for label in loads:
                run = next((r for r in runs if r["system"] == s and str(r.get("load_label")) == label), None)
                v = run.get(key) if run else None
                vals.append(float(v) if v is not None else np.nan)
            ax.bar(np.arange(len(loads)) + (j - (len(systems) - 1) / 2) * width, vals, width, label=s, color=_color(s))
        ax.set_xticks(np.arange(len(loads)), loads)
        ax.set_xlabel("load")
        ax.set_ylabel(f"{phase} energy per {'prompt' if phase == 'prefill' else 'output'} token (J)")
        ax.set_title(phase)
        ax.grid(axis="y", alpha=0.3)
    _legend_right(axes[1])


def _legend_right(ax: Any, *handles_labels: Any) -> None:
    """The legend beside the axes, never over the data (the figure is saved with a tight bounding box)."""
    ax.legend(*handles_labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)


def _savings_vs_load(savings: Sequence[Mapping[str, Any]], runs: Sequence[Mapping[str, Any]], fig: Figure) -> None:
    axes = fig.subplots(1, 2, squeeze=False)[0]
    x_of = {str(r.get("load_label")): float(r.get("load") or r.get("rate_rps") or 0.0) for r in runs}
    xlabel = "load (fraction of capacity)" if all(r.get("load") is not None for r in runs) else "rate (req/s)"
    systems = _order(sorted({s["system"] for s in savings}))
    for ax, phase in zip(axes, ("prefill", "decode"), strict=True):
        for s in systems:
            rows = sorted((x_of[str(r["load_label"])], r[f"{phase}_savings_pct"]) for r in savings if r["system"] == s)
            if rows:
                xs, ys = zip(*rows, strict=True)
                ax.plot(xs, [np.nan if y is None else y for y in ys], "o-", label=s, color=_color(s))
        bar = PAPER_BAR[f"{phase}_savings_pct"]
        ax.axhline(bar, color="k", ls="--", lw=0.8, label=f"paper: BiScale -{bar:g} % (67 % load)")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{phase} J/token saved vs {HEADLINE_BASELINE} (%)")
        ax.set_title(phase)
        ax.grid(alpha=0.3)
    _legend_right(axes[1])


def _oracle_gap(gaps: Sequence[Mapping[str, Any]], loads: list[str], fig: Figure) -> None:
    ax = fig.subplots()
    systems = _order(sorted({g["system"] for g in gaps}))
    cols = [(s, label) for s in systems for label in loads]
    x = np.arange(len(cols))
    for k, phase in enumerate(("prefill", "decode")):
        vals = []
        for s, label in cols:
            g = next((g for g in gaps if g["system"] == s and str(g["load_label"]) == label), None)
            v = g.get(f"{phase}_gap_pct") if g else None
            vals.append(np.nan if v is None else float(v))
        ax.bar(x + (k - 0.5) * 0.4, vals, 0.4, label=phase, color=_PHASE_COLORS[phase])
    ax.axhline(
        PAPER_BAR["oracle_gap_pct"], color="k", ls="--", lw=0.8, label=f"goal: within {PAPER_BAR['oracle_gap_pct']:g} %"
    )
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(x, [f"{s}\n{label}" for s, label in cols], fontsize=7)
    ax.set_ylabel("J/token above the oracle (%)")
    ax.grid(axis="y", alpha=0.3)
    _legend_right(ax)


def _gpus_by_phase(tl: pd.DataFrame) -> pd.DataFrame:
    live = tl[tl["status"] != "stopped"]
    g = live.groupby(["time_s", "phase"])["tp"].sum().unstack(fill_value=0)
    for ph in ("prefill", "decode"):
        if ph not in g:
            g[ph] = 0
    return g.sort_index()


def _placement(files: RunFiles, runs: Sequence[Mapping[str, Any]], fig: Figure, window_s: float) -> None:
    axes = fig.subplots(len(runs), 1, squeeze=False, sharex=True)[:, 0]
    for ax, run in zip(axes, runs, strict=True):
        tl = files.table(run, "timeline.parquet")
        assert tl is not None
        g = _gpus_by_phase(tl)
        t = g.index.to_numpy() / 60.0
        ax.stackplot(
            t,
            g["prefill"],
            g["decode"],
            labels=["prefill GPUs", "decode GPUs"],
            colors=[_PHASE_COLORS["prefill"], _PHASE_COLORS["decode"]],
            alpha=0.8,
            step="post",
        )
        for w in np.arange(window_s, (float(t.max()) if t.size else 0.0) * 60.0 + 1e-9, window_s):
            ax.axvline(w / 60.0, color="k", lw=0.3, alpha=0.4)
        ax.set_ylabel("GPUs")
        ax.set_title(
            f"{run['system']} ({run.get('load_label')}): {run.get('placement_changes', 0)} placement changes",
            fontsize=9,
        )
    _legend_right(axes[0])
    axes[-1].set_xlabel("time (min); vertical lines: planning windows")


def _clocks(files: RunFiles, runs: Sequence[Mapping[str, Any]], fig: Figure) -> None:
    axes = fig.subplots(len(runs), 1, squeeze=False, sharex=True)[:, 0]
    for ax, run in zip(axes, runs, strict=True):
        tl = files.table(run, "timeline.parquet")
        assert tl is not None
        live = tl[tl["status"] != "stopped"]
        for (_, phase), g in live.groupby(["instance_id", "phase"]):
            ax.plot(g["time_s"] / 60.0, g["clock_mhz"], lw=0.6, color=_PHASE_COLORS.get(str(phase), "k"), alpha=0.7)
        ax.set_ylabel("SM clock (MHz)")
        ax.set_title(
            f"{run['system']} ({run.get('load_label')}): one line per instance, sampled; 0 = governor", fontsize=9
        )
        for ph, c in _PHASE_COLORS.items():
            ax.plot([], [], color=c, label=ph)
        _legend_right(ax)
    axes[-1].set_xlabel("time (min)")


def _power(files: RunFiles, runs: Sequence[Mapping[str, Any]], fig: Figure) -> None:
    ax = fig.subplots()
    for run in runs:
        tl = files.table(run, "timeline.parquet")
        assert tl is not None
        p = tl.groupby("time_s")["power_w"].sum().sort_index()
        smooth = p.rolling(30, min_periods=1).mean()
        ax.plot(smooth.index / 60.0, smooth.to_numpy() / 1e3, label=run["system"], color=_color(run["system"]), lw=1)
    ax.set_xlabel("time (min)")
    ax.set_ylabel("power of the instances' GPUs (kW, 30 s mean)")
    ax.grid(alpha=0.3)
    _legend_right(ax)


def _cdfs(files: RunFiles, runs: Sequence[Mapping[str, Any]], slo: Mapping[str, float], fig: Figure) -> None:
    axes = fig.subplots(1, 2, squeeze=False)[0]
    for run in runs:
        req = files.table(run, "requests.parquet")
        assert req is not None
        done = req[req["status"] == "completed"]
        for ax, col in zip(axes, ("ttft_s", "tpot_s"), strict=True):
            v = np.sort(done[col].to_numpy(dtype=np.float64))
            v = v[np.isfinite(v)] * 1e3
            if v.size:
                ax.plot(v, np.arange(1, v.size + 1) / v.size, label=run["system"], color=_color(run["system"]), lw=1)
    for ax, key, name in zip(axes, ("ttft_ms", "tpot_ms"), ("TTFT", "TPOT"), strict=True):
        target = slo.get(key)
        if target:
            ax.axvline(target, color="k", ls="--", lw=0.8, label=f"SLO {target:g} ms")
        ax.axhline(slo.get("percentile", Slo().percentile) / 100.0, color="k", ls=":", lw=0.6)
        ax.set_xscale("log")
        ax.set_xlabel(f"{name} (ms, log scale)")
        ax.set_ylabel("share of completed requests")
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
    _legend_right(axes[1])


def _windows(runs: Sequence[Mapping[str, Any]], slo: Mapping[str, float], fig: Figure) -> None:
    axes = fig.subplots(1, 2, squeeze=False)[0]
    for run in runs:
        w = run.get("window_slo") or []
        if not w:
            continue
        t = [x["start_s"] / 60.0 for x in w]
        for ax, key in zip(axes, ("p99_ttft_ms", "p99_tpot_ms"), strict=True):
            ax.plot(
                t,
                [np.nan if x[key] is None else x[key] for x in w],
                "o-",
                ms=3,
                label=run["system"],
                color=_color(run["system"]),
                lw=1,
            )
    for ax, key, name in zip(axes, ("ttft_ms", "tpot_ms"), ("TTFT", "TPOT"), strict=True):
        if slo.get(key):
            ax.axhline(slo[key], color="k", ls="--", lw=0.8, label="SLO")
        ax.set_yscale("log")
        ax.set_xlabel("window start (min)")
        ax.set_ylabel(f"P99 {name} in the window (ms)")
        ax.grid(alpha=0.3)
    _legend_right(axes[1])


def _energy_latency(runs: Sequence[Mapping[str, Any]], loads: list[str], slo: Mapping[str, float], fig: Figure) -> None:
    """Cluster J/token against P99 TTFT and P99 ITL, one point per system and load (colour: system, marker: load);
    hollow points missed the joint SLOs in some window. Legends sit outside the axes (no label over data)."""
    axes = fig.subplots(1, 2, squeeze=False)[0]
    fig.subplots_adjust(right=0.78, wspace=0.3)
    systems = _order(sorted({r["system"] for r in runs}))
    for ax, key, name, target in zip(
        axes,
        ("p99_ttft_ms", "p99_itl_ms"),
        ("P99 TTFT", "P99 ITL"),
        (slo.get("ttft_ms"), slo.get("itl_ms")),
        strict=True,
    ):
        for r in runs:
            x, y = r.get(key), r.get("cluster_j_per_token")
            if x is None or y is None or not (math.isfinite(float(x)) and math.isfinite(float(y))):
                continue
            label = str(r.get("load_label"))
            marker = _LOAD_MARKERS[loads.index(label) % len(_LOAD_MARKERS)] if label in loads else "o"
            ok = bool(r.get("slo_met")) and bool(r.get("slo_met_every_window"))
            c = _color(r["system"])
            ax.plot([float(x)], [float(y)], marker=marker, ms=7, color=c, mfc=c if ok else "none", ls="none")
        if target:
            ax.axvline(target, color="k", ls="--", lw=0.8)
        ax.set_xlabel(f"{name} (ms); dashed: target")
        ax.set_ylabel("cluster energy per token (J)")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=_color(s), marker="o", ls="none", label=s) for s in systems]
    handles += [
        Line2D([], [], color="k", marker=_LOAD_MARKERS[i % len(_LOAD_MARKERS)], ls="none", mfc="none", label=lab)
        for i, lab in enumerate(loads)
    ]
    handles.append(Line2D([], [], color="k", marker="o", ls="none", mfc="none", label="hollow: missed a window"))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(0.79, 0.5), fontsize=7, frameon=False)


def _itl_cdf(runs: Sequence[Mapping[str, Any]], slo: Mapping[str, float], fig: Figure) -> None:
    """CDF of the gaps between consecutive tokens over all tokens (from each run's ITL histogram)."""
    ax = fig.subplots()
    fig.subplots_adjust(right=0.78)
    for r in runs:
        h = r.get("itl_histogram")
        if not h:
            continue
        edges = np.asarray(h["edges_ms"], dtype=np.float64)
        counts = np.asarray(h["tokens"], dtype=np.float64)
        if counts.sum() <= 0:
            continue
        cdf = np.cumsum(counts) / counts.sum()
        ax.step(edges[1:], cdf, where="post", color=_color(r["system"]), lw=1, label=r["system"])
    if slo.get("itl_ms"):
        ax.axvline(slo["itl_ms"], color="k", ls="--", lw=0.8, label=f"ITL target {slo['itl_ms']:g} ms")
    ax.axhline(slo.get("percentile", Slo().percentile) / 100.0, color="k", ls=":", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlim(5, 2000)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("gap between consecutive tokens (ms, log scale)")
    ax.set_ylabel("share of tokens")
    ax.grid(alpha=0.3)
    fig.legend(
        *ax.get_legend_handles_labels(), loc="center left", bbox_to_anchor=(0.79, 0.5), fontsize=7, frameon=False
    )


def _per_window(files: RunFiles, runs: Sequence[Mapping[str, Any]], window_s: float, fig: Figure) -> None:
    """Per planning window: each phase's mean locked clock (GPU-weighted, over the window's samples) and the
    instances' mean power, for BiScale and the strongest baseline."""
    axes = fig.subplots(1, 3, squeeze=False)[0]
    fig.subplots_adjust(right=0.82, wspace=0.35)
    styles = {"prefill": "-", "decode": "--"}
    for r in runs:
        tl = files.table(r, "timeline.parquet")
        if tl is None or not len(tl):
            continue
        live = tl[tl["status"] != "stopped"].copy()
        live["window"] = np.floor((live["time_s"].to_numpy(dtype=np.float64) - 1e-9) / window_s).astype(int)
        c = _color(r["system"])
        for k, phase in enumerate(("prefill", "decode")):
            m = live[live["phase"] == phase]
            if not len(m):
                continue
            wclk = (m["clock_mhz"] * m["tp"]).groupby(m["window"]).sum() / m["tp"].groupby(m["window"]).sum()
            axes[k].plot(wclk.index * window_s / 60.0, wclk.to_numpy(), "o" + styles[phase], ms=3, color=c)
        power = live.groupby(["window", "time_s"])["power_w"].sum().groupby("window").mean()
        axes[2].plot(power.index * window_s / 60.0, power.to_numpy() / 1e3, "o-", ms=3, color=c)
    for ax, title in zip(
        axes, ("prefill: mean clock (MHz)", "decode: mean clock (MHz)", "instances' power (kW)"), strict=True
    ):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("window start (min)")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=_color(r["system"]), marker="o", label=r["system"]) for r in runs]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(0.83, 0.5), fontsize=7, frameon=False)


def strongest_baseline(runs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The baseline an operator could run (no clairvoyance, not BiScale) of least cluster J/token meeting the joint
    SLOs in every window; else ``distserve``; None when neither ran."""
    from biscale.results.catalog import SYSTEMS

    ok = [
        r
        for r in runs
        if r["system"] in SYSTEMS
        and SYSTEMS[r["system"]].role == "baseline"
        and r.get("slo_met")
        and r.get("slo_met_every_window")
        and r.get("cluster_j_per_token") is not None
    ]
    if ok:
        return min(ok, key=lambda r: float(r["cluster_j_per_token"]))
    return next((r for r in runs if r["system"] == HEADLINE_BASELINE), None)


def _sweep(savings: Sequence[Mapping[str, Any]], param: str, fig: Figure) -> None:
    axes = fig.subplots(1, 3, squeeze=False)[0]
    systems = _order(sorted({s["system"] for s in savings}))
    for ax, phase in zip(axes, ("prefill", "decode", "cluster"), strict=True):
        for s in systems:
            pts = sorted(
                (float(r["sweep"][param]), r[f"{phase}_savings_pct"])
                for r in savings
                if r["system"] == s and isinstance(r["sweep"].get(param), int | float)
            )
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, [np.nan if y is None else y for y in ys], "o-", label=s, color=_color(s))
        ax.set_xscale("log")
        ax.set_xlabel(param)
        ax.set_ylabel(f"{phase} J/token saved vs {HEADLINE_BASELINE} (%)")
        ax.grid(alpha=0.3)
    _legend_right(axes[-1], *axes[0].get_legend_handles_labels())


# ------------------------------------------------------------------------------------------------ sections
def _facts(info: Mapping[str, Any], cfg: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    facts = []
    if info.get("workload"):
        facts.append(("workload", str(info["workload"])))
    if cfg:
        facts.append(
            (
                "cluster",
                f"{cfg.get('gpus')} x {cfg.get('gpu')} ({cfg.get('gpus_per_node')} per node), {cfg.get('model')}",
            )
        )
        slo = (cfg.get("sim") or {}).get("slo") or {}
        if slo:
            default = Slo()  # the model holds the defaults (one source)
            facts.append(
                (
                    "SLOs",
                    f"P{slo.get('percentile', default.percentile):g} "
                    f"TTFT <= {1e3 * slo.get('ttft_s', default.ttft_s):g} ms, "
                    f"TPOT <= {1e3 * slo.get('tpot_s', default.tpot_s):g} ms",
                )
            )
        window_s = (cfg.get("sim") or {}).get("window_s", SimConfig.model_fields["window_s"].default)
        facts.append(("planning window", f"{window_s:g} s"))
    cap = info.get("capacity") or {}
    if info.get("capacity_rps"):
        how = "searched on the truth" if cap.get("searched") else "given"
        facts.append(
            (
                "capacity",
                f"{float(info['capacity_rps']):.2f} req/s ({how}; distserve-static "
                f"{cap.get('placement', '')}, top clock)",
            )
        )
    table = info.get("capacity_table") or {}
    if table.get("key"):
        facts.append(
            ("capacity table", f"{str(table['key'])[:12]} ({'cached' if table.get('from_cache') else 'built'})")
        )
    return facts


_RUN_COLUMNS = [
    "load",
    "system",
    "prefill J/tok",
    "vs distserve",
    "decode J/tok",
    "vs distserve",
    "cluster J/tok",
    "avg power kW",
    "P99 TTFT ms",
    "P99 TPOT ms",
    "P99 ITL ms",
    "P99 max gap ms",
    "joint SLO met",
    "windows met",
    "above bound",
    "clock switches",
    "us / decision",
    "placement changes",
]


def _run_rows(
    runs: Sequence[Mapping[str, Any]], savings: Sequence[Mapping[str, Any]], loads: list[str]
) -> list[list[str]]:
    rows = []
    for label in loads:
        here = {r["system"]: r for r in runs if str(r.get("load_label")) == label}
        for s in _order(list(here)):
            r = here[s]
            sv = next(
                (
                    x
                    for x in savings
                    if x["system"] == s and x["baseline"] == HEADLINE_BASELINE and str(x["load_label"]) == label
                ),
                None,
            )
            rows.append(
                [
                    label,
                    s,
                    _num(r.get("prefill_j_per_token")),
                    _pct(-sv["prefill_savings_pct"]) if sv and sv["prefill_savings_pct"] is not None else "-",
                    _num(r.get("decode_j_per_token")),
                    _pct(-sv["decode_savings_pct"]) if sv and sv["decode_savings_pct"] is not None else "-",
                    _num(r.get("cluster_j_per_token")),
                    _num((r.get("avg_power_w") or math.nan) / 1e3, "{:.2f}"),
                    _num(r.get("p99_ttft_ms"), "{:.0f}"),
                    _num(r.get("p99_tpot_ms"), "{:.0f}"),
                    _num(r.get("p99_itl_ms"), "{:.0f}"),
                    _num(r.get("p99_max_itl_ms"), "{:.0f}"),
                    _num(bool(r.get("slo_met"))),
                    f"{r.get('windows_slo_met', '-')}/{r.get('windows', '-')}",
                    _num(r.get("gap_to_bound_pct"), "{:+.1f} %"),
                    _num(r.get("clock_switches"), "{:.0f}"),
                    _num(r.get("controller_time_per_decision_us"), "{:.0f}"),
                    _num(r.get("placement_changes"), "{:.0f}"),
                ]
            )
    return rows


def _section(
    results: Mapping[str, Any], info: Mapping[str, Any], cfg: Mapping[str, Any] | None, files: RunFiles
) -> Section:
    name = info["name"]
    all_runs = [r for r in results["runs"] if r["scenario"] == name]
    runs = [r for r in all_runs if not r.get("sweep")]
    savings = [s for s in results.get("savings", []) if s["scenario"] == name and not s.get("sweep")]
    gaps = [g for g in results.get("oracle_gap", []) if g["scenario"] == name and not g.get("sweep")]
    loads = _loads(runs)
    sim = (cfg or {}).get("sim") or {}
    slo_cfg = sim.get("slo") or {}
    window_s = float(sim.get("window_s", SimConfig.model_fields["window_s"].default))
    default = Slo()  # the model holds the defaults (one source)
    slo = {
        "ttft_ms": 1e3 * float(slo_cfg.get("ttft_s", default.ttft_s)),
        "tpot_ms": 1e3 * float(slo_cfg.get("tpot_s", default.tpot_s)),
        "itl_ms": 1e3 * float(slo_cfg.get("itl_s") or slo_cfg.get("tpot_s", default.tpot_s)),
        "percentile": float(slo_cfg.get("percentile", default.percentile)),
    }
    sec = Section(
        name=name,
        description=str(info.get("description", "")),
        facts=_facts(info, cfg),
        headline=[h for h in results.get("headline", []) if h["scenario"] == name],
        table_columns=_RUN_COLUMNS,
        table_rows=_run_rows(runs, savings, loads),
    )
    first_load = loads[0] if loads else None
    at_first = [r for r in runs if str(r.get("load_label")) == first_load]
    at_first = sorted(at_first, key=lambda r: _order([x["system"] for x in at_first]).index(r["system"]))
    with_tl = [r for r in at_first if files.has_rows(r, "timeline.parquet")]
    with_req = [r for r in at_first if files.has_rows(r, "requests.parquet")]
    planned = [r for r in with_tl if r["system"] in ("distserve", "placeonly", "biscale")] or with_tl[:1]
    strongest = strongest_baseline(at_first)
    versus = [r for r in with_tl if r["system"] == "biscale" or (strongest is not None and r is strongest)] or with_tl[
        :1
    ]
    clocked = versus
    one_baseline = "needs a distserve run at the same load (only one system here)"
    sec.figures = [
        _figure(
            FigureItem(
                "energy",
                "Energy per phase per system",
                "Prefill J per prompt token and decode J per output token (instances' energy, idle included), "
                "per load.",
            ),
            lambda f: _energy_bars(runs, loads, f),
            (11, 3.8),
            None if runs else "no runs",
        ),
        _figure(
            FigureItem(
                "savings-vs-load",
                "Savings vs load",
                f"J/token saved against {HEADLINE_BASELINE} on the same requests; dashed: the paper's BiScale "
                "figures at 67 % load.",
            ),
            lambda f: _savings_vs_load([s for s in savings if s["baseline"] == HEADLINE_BASELINE], runs, f),
            (11, 3.8),
            None if any(s["baseline"] == HEADLINE_BASELINE for s in savings) else one_baseline,
        ),
        _figure(
            FigureItem(
                "oracle-gap",
                "Gap to the oracle",
                "How much more energy per token each system uses than the clairvoyant oracle on BiScale's "
                "placement (negative: less).",
            ),
            lambda f: _oracle_gap(gaps, loads, f),
            (11, 3.8),
            None if gaps else "needs an oracle run at the same load",
        ),
        _figure(
            FigureItem(
                "energy-latency",
                "Energy against latency",
                "Cluster J/token against P99 TTFT and P99 ITL (gaps between consecutive tokens), one point per "
                "system (colour) and load (marker); hollow: missed the joint SLOs in some window. Lower left is "
                "better.",
            ),
            lambda f: _energy_latency(runs, loads, slo, f),
            (12, 4.0),
            None if runs else "no runs",
        ),
        _figure(
            FigureItem(
                "itl-cdf",
                "Inter-token latency CDF",
                f"Gaps between consecutive tokens over all tokens ({first_load}; vLLM's ITL); dashed: the ITL "
                "target, dotted: the percentile.",
            ),
            lambda f: _itl_cdf(at_first, slo, f),
            (11, 3.6),
            None if any(r.get("itl_histogram") for r in at_first) else "no token gaps recorded",
        ),
        _figure(
            FigureItem(
                "per-window",
                "Per-window clocks and power: BiScale against the strongest baseline",
                f"Mean clock per phase and the instances' mean power per planning window ({first_load}); the "
                "strongest baseline is the one of least cluster J/token meeting the joint SLOs in every window"
                + (f" ({strongest['system']})" if strongest is not None else "")
                + ".",
            ),
            lambda f: _per_window(files, versus, window_s, f),
            (12, 3.4),
            None if versus else "no timeline samples",
        ),
        _figure(
            FigureItem(
                "placement",
                "Placement per window over time",
                f"GPUs in prefill and decode instances ({first_load}); instances that drain still hold their GPUs.",
            ),
            lambda f: _placement(files, planned, f, window_s),
            (11, 2.2 * max(1, len(planned)) + 0.6),
            None if planned else "no timeline samples",
        ),
        _figure(
            FigureItem(
                "clocks",
                "Clocks per instance over time",
                f"SM clock of every instance at each timeline sample ({first_load}).",
            ),
            lambda f: _clocks(files, clocked, f),
            (11, 2.4 * max(1, len(clocked)) + 0.6),
            None if clocked else "no timeline samples",
        ),
        _figure(
            FigureItem("power", "Power over time", f"Sum of the instances' power ({first_load}), 30 s moving mean."),
            lambda f: _power(files, with_tl, f),
            (11, 3.6),
            None if with_tl else "no timeline samples",
        ),
        _figure(
            FigureItem(
                "latency-cdf",
                "TTFT and TPOT CDFs",
                f"Completed requests ({first_load}); dashed: SLO targets, dotted: the percentile.",
            ),
            lambda f: _cdfs(files, with_req, slo, f),
            (11, 3.8),
            None if with_req else "no request table",
        ),
        _figure(
            FigureItem(
                "windows",
                "P99 latency per planning window",
                f"Requests grouped by the window of their arrival ({first_load}); dashed: SLO targets.",
            ),
            lambda f: _windows(at_first, slo, f),
            (11, 3.6),
            None if any(r.get("window_slo") for r in at_first) else "no per-window figures",
        ),
    ]
    steps = [d for d in results.get("decomposition", []) if d["scenario"] == name and not d.get("sweep")]
    if steps:
        sec.decomposition_columns = [
            "load",
            "step",
            "system",
            "prefill J/tok",
            "change",
            "decode J/tok",
            "change",
            "cluster J/tok",
            "change",
            "every window met",
        ]
        for d in steps:
            sec.decomposition_rows.append(
                [
                    str(d["load_label"]),
                    str(d["label"]),
                    str(d["system"]),
                    _num(d.get("prefill_j_per_token")),
                    _pct(d.get("prefill_change_pct")),
                    _num(d.get("decode_j_per_token")),
                    _pct(d.get("decode_change_pct")),
                    _num(d.get("cluster_j_per_token")),
                    _pct(d.get("cluster_change_pct")),
                    _num(bool(d.get("slo_met_every_window"))),
                ]
            )
    sweep_runs = [r for r in all_runs if r.get("sweep")]
    sweep_savings = [
        s
        for s in results.get("savings", [])
        if s["scenario"] == name and s.get("sweep") and s["baseline"] == HEADLINE_BASELINE
    ]
    params = sorted({k for r in sweep_runs for k in (r.get("sweep") or {})})
    for p in params:
        sec.figures.append(
            _figure(
                FigureItem(
                    f"sweep-{p}",
                    f"Sensitivity: {p}",
                    f"Savings against {HEADLINE_BASELINE} at each value of {p} (same requests, same load).",
                ),
                functools.partial(_sweep, sweep_savings, p),
                (12, 3.6),
                None if sweep_savings else "needs a distserve run at every sweep point",
            )
        )
    if sweep_runs:
        sec.sweep_columns = [
            "sweep point",
            "load",
            "system",
            "prefill J/tok",
            "decode J/tok",
            "prefill saved",
            "decode saved",
            "P99 TTFT ms",
            "P99 TPOT ms",
            "SLO met",
            "clock switches",
        ]
        for r in sorted(sweep_runs, key=lambda r: (str(r["sweep"]), str(r.get("load_label")), r["system"])):
            sv = next(
                (
                    s
                    for s in sweep_savings
                    if s["system"] == r["system"]
                    and s["sweep"] == r["sweep"]
                    and str(s["load_label"]) == str(r.get("load_label"))
                ),
                None,
            )
            sec.sweep_rows.append(
                [
                    ", ".join(f"{k}={v}" for k, v in r["sweep"].items()),
                    str(r.get("load_label")),
                    r["system"],
                    _num(r.get("prefill_j_per_token")),
                    _num(r.get("decode_j_per_token")),
                    _num(sv["prefill_savings_pct"] if sv else None, "{:.1f} %"),
                    _num(sv["decode_savings_pct"] if sv else None, "{:.1f} %"),
                    _num(r.get("p99_ttft_ms"), "{:.0f}"),
                    _num(r.get("p99_tpot_ms"), "{:.0f}"),
                    _num(bool(r.get("slo_met"))),
                    _num(r.get("clock_switches"), "{:.0f}"),
                ]
            )
    return sec


def build_report(directory: str | Path, out: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Write the report of an evaluation or run directory (default ``DIR/report.html``); return its path and a
    summary (figures drawn, figures missing with reasons, tables)."""
    d = Path(directory)
    results = read_results(d)
    files = RunFiles(d)
    configs = {c.get("name"): c for c in (results.get("config") or {}).get("scenarios", []) if isinstance(c, dict)}
    infos = results.get("scenarios") or []
    names = [i["name"] for i in infos]
    for r in results["runs"]:
        if r["scenario"] not in names:
            names.append(r["scenario"])
            infos.append({"name": r["scenario"], "description": ""})
    if not configs and len(infos) == 1:
        cfg = (results.get("config") or {}).get("scenario_config")
        if isinstance(cfg, dict):
            configs[infos[0]["name"]] = cfg
    sections = [_section(results, info, configs.get(info["name"]), files) for info in infos]
    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    template = env.from_string((resources.files("biscale.results") / "report.html.j2").read_text())
    page = template.render(
        title="biscale evaluation",
        version=results.get("biscale_version", ""),
        command=(results.get("config") or {}).get("command"),
        timings=results.get("timings") or {},
        sections=sections,
        bar=PAPER_BAR,
        baseline=HEADLINE_BASELINE,
        fmt_pct=lambda v: _num(v, "{:.1f} %"),
        fmt=_num,
    )
    path = Path(out) if out is not None else d / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    figures = [f for s in sections for f in s.figures]
    summary = {
        "report": str(path),
        "sections": len(sections),
        "figures": sum(1 for f in figures if f.uri),
        "figures_missing": {f"{s.name}/{f.id}": f.missing for s in sections for f in s.figures if f.missing},
        "runs": len(results["runs"]),
        "size_bytes": path.stat().st_size,
    }
    return path, summary
