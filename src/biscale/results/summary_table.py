"""The evaluation's printed table, in the paper's shape: prefill and decode J/token per system and their change
against ``distserve`` (in brackets), with the P99 latencies, whether the SLOs held (over the run and per
window), and how far each run is above the certified lower bound (a row of its own)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from biscale.results.catalog import systems_in_order
from biscale.results.layout import HEADLINE_BASELINE

COLUMNS = [
    "load",
    "system",
    "prefill J/tok",
    "decode J/tok",
    "cluster J/tok",
    "P99 TTFT/TPOT ms",
    "ITL P50/P99, P99 max gap ms",
    "joint SLOs (windows)",
    "above bound",
]


def _f(v: Any, fmt: str) -> str:
    if v is None:
        return "-"
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    return fmt.format(x) if math.isfinite(x) else "-"


def _with_saving(value: Any, saving_pct: Any) -> str:
    """``0.280 (-32.7%)``: J/token and its change against the baseline."""
    text = _f(value, "{:.3f}")
    return text if saving_pct is None else f"{text} ({_f(-float(saving_pct), '{:+.1f}')}%)"


def scenario_rows(results: Mapping[str, Any], scenario: str) -> list[list[str]]:
    """One row per (load, system) of the main grid (sweeps excluded)."""
    runs = [r for r in results["runs"] if r["scenario"] == scenario and not r.get("sweep")]
    savings = {
        (s["load_label"], s["system"]): s
        for s in results.get("savings", [])
        if s["scenario"] == scenario and s["baseline"] == HEADLINE_BASELINE and not s.get("sweep")
    }
    bounds = {b["load_label"]: b for b in results.get("bounds", []) if b.get("scenario") == scenario}
    labels: list[str] = []
    for r in runs:
        if r["load_label"] not in labels:
            labels.append(r["load_label"])
    rows = []
    for label in labels:
        here = {r["system"]: r for r in runs if r["load_label"] == label}
        for system in systems_in_order(list(here)) + sorted(s for s in here if s not in systems_in_order(list(here))):
            r = here[system]
            sv = savings.get((label, system), {})
            rows.append(
                [
                    label,
                    system,
                    _with_saving(r.get("prefill_j_per_token"), sv.get("prefill_savings_pct")),
                    _with_saving(r.get("decode_j_per_token"), sv.get("decode_savings_pct")),
                    _f(r.get("cluster_j_per_token"), "{:.3f}"),
                    f"{_f(r.get('p99_ttft_ms'), '{:.0f}')} / {_f(r.get('p99_tpot_ms'), '{:.0f}')}",
                    f"{_f(r.get('p50_itl_ms'), '{:.0f}')} / {_f(r.get('p99_itl_ms'), '{:.0f}')}, "
                    f"{_f(r.get('p99_max_itl_ms'), '{:.0f}')}",
                    f"{'met' if r.get('slo_met') else 'MISSED'} "
                    f"({r.get('windows_slo_met', '-')}/{r.get('windows', '-')})",
                    _f(r.get("gap_to_bound_pct"), "{:+.1f}%"),
                ]
            )
        bound = bounds.get(label)
        if bound is not None:
            rows.append([label, "lower bound", "-", "-", _f(bound.get("cluster_j_per_token"), "{:.3f}"), *["-"] * 4])
    return rows


def decomposition_lines(results: Mapping[str, Any]) -> list[str]:
    """One line per (scenario, load): the decomposition's steps, cluster J/token and each step's change."""
    out: list[str] = []
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in results.get("decomposition", []):
        groups.setdefault((row["scenario"], row["load_label"]), []).append(row)
    for (scenario, label), rows in groups.items():
        steps = []
        for r in rows:
            change = r.get("cluster_change_pct")
            steps.append(
                f"{r['label']} {_f(r.get('cluster_j_per_token'), '{:.3f}')}"
                + ("" if change is None else f" ({_f(change, '{:+.1f}')}%)")
            )
        out.append(f"{scenario} {label} decomposition (cluster J/tok): " + " -> ".join(steps))
    return out


def headline_lines(results: Mapping[str, Any]) -> list[str]:
    """One line per (scenario, load): BiScale against DistServe, the SLOs, the oracle gap and the paper's bar."""
    out = []
    for h in results.get("headline", []):
        out.append(
            f"{h['scenario']} {h['load_label']}: biscale vs {HEADLINE_BASELINE}: prefill "
            f"{_f(h['prefill_savings_pct'], '{:.1f}')} % saved, "
            f"decode {_f(h['decode_savings_pct'], '{:.1f}')} % saved; "
            f"SLOs {'met' if h['slo_met'] else 'MISSED'} over the run, "
            f"{'in every window' if h['slo_met_every_window'] else 'NOT in every window'}; "
            f"{_f(h['oracle_gap_pct'], '{:+.1f}')} % vs the oracle; "
            f"paper's bar {'met' if h['bar_met'] else 'not met'}; least cluster J/token meeting the joint SLOs "
            f"in every window: {h.get('least_energy_meeting_slos') or 'none'}"
        )
    return out
