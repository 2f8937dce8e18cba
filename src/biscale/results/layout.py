"""The results layout shared by ``biscale evaluate``, live load generators and ``biscale report`` (versioned).

An evaluation directory holds ``results.json`` (format ``biscale-results``, :data:`RESULTS_VERSION`) and one run
directory per run under ``runs/<scenario>/<load>/<system>/`` (sweep points under
``runs/<scenario>/sweep/<param>=<value>/<load>/<system>/``). A run directory is what ``SimResult.write`` writes:
``requests.parquet``, ``timeline.parquet``, ``instances.parquet``, ``summary.json``, ``config.json``. A live run
writes the same files and a one-run ``results.json`` beside them (:func:`one_run_results`), so ``biscale report``
reads both. The schema of every key is in docs/results.md; readers accept unknown keys (newer writers may add some)
and refuse another format or a newer major version.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from biscale.control.state import Slo
from biscale.errors import InputError
from biscale.filecheck import CONFIG_KEYS, SUMMARY_KEYS, check_keys, check_list_of_objects, check_table
from biscale.jsonio import read_json_object, write_json
from biscale.sim.config import SimConfig

RESULTS_FORMAT = "biscale-results"
RESULTS_VERSION = 1
RESULTS_FILE = "results.json"
RUN_FILES = ("requests.parquet", "timeline.parquet", "instances.parquet", "summary.json", "config.json")

#: The headline's baseline, and the bar the paper sets against DistServe (Azure conv, 67 % load).
HEADLINE_BASELINE = "distserve"
PAPER_BAR = {"prefill_savings_pct": 39.0, "decode_savings_pct": 48.0, "oracle_gap_pct": 5.0}
PHASE_KEYS = {"prefill": "prefill_j_per_token", "decode": "decode_j_per_token", "cluster": "cluster_j_per_token"}


class RunRow(BaseModel):
    """The keys every run object has (more are allowed; docs/results.md lists them all)."""

    model_config = ConfigDict(extra="allow")

    scenario: str
    load: float | None
    system: str
    prefill_j_per_token: float | None
    decode_j_per_token: float | None
    cluster_j_per_token: float | None
    p99_ttft_ms: float | None
    p99_tpot_ms: float | None
    slo_met: bool
    run_dir: str | None = None


class ResultsFile(BaseModel):
    """Top level of ``results.json``."""

    model_config = ConfigDict(extra="allow")

    format: str
    version: int
    runs: list[RunRow]


# ------------------------------------------------------------------------------------------------ derived tables
def _pct_saving(system: float | None, base: float | None) -> float | None:
    if system is None or base is None or not (math.isfinite(system) and math.isfinite(base)) or base <= 0:
        return None
    return 100.0 * (1.0 - system / base)


def _pct_above(system: float | None, reference: float | None) -> float | None:
    """How much more ``system`` uses than ``reference``, % (the gap to the oracle; negative: it uses less)."""
    s = _pct_saving(system, reference)
    return None if s is None else -s


def _groups(runs: Iterable[Mapping[str, Any]]) -> dict[tuple[Any, ...], dict[str, Mapping[str, Any]]]:
    """Runs grouped by (scenario, load label, sweep point), system -> run."""
    out: dict[tuple[Any, ...], dict[str, Mapping[str, Any]]] = {}
    for r in runs:
        sweep = r.get("sweep")
        key = (r["scenario"], r.get("load_label", r.get("load")), json.dumps(sweep, sort_keys=True) if sweep else None)
        out.setdefault(key, {})[r["system"]] = r
    return out


def meets_every_window(run: Mapping[str, Any]) -> bool:
    """Whether a run met the joint SLOs over the run and in every window."""
    return bool(run.get("slo_met")) and bool(run.get("slo_met_every_window"))


def least_energy_system(by_system: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The system of least cluster J/token among those meeting the joint SLOs in every window (the ``oracle``
    heuristic aside); None when none does."""
    ok = [
        (float(r["cluster_j_per_token"]), name)
        for name, r in by_system.items()
        if name != "oracle" and meets_every_window(r) and r.get("cluster_j_per_token") is not None
    ]
    return min(ok)[1] if ok else None


def decomposition_rows(ident: Mapping[str, Any], by_system: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The decomposition's steps present in this group (:data:`biscale.results.catalog.DECOMPOSITION`), each with
    its J/token per phase and the change against the previous step present, %."""
    from biscale.results.catalog import DECOMPOSITION

    rows: list[dict[str, Any]] = []
    prev: Mapping[str, Any] | None = None
    for step, (label, system) in enumerate(DECOMPOSITION):
        run = by_system.get(system)
        if run is None:
            continue
        row: dict[str, Any] = {**ident, "step": step, "label": label, "system": system}
        for phase, key in PHASE_KEYS.items():
            row[key] = run.get(key)
            row[f"{phase}_change_pct"] = None if prev is None else _pct_above(run.get(key), prev.get(key))
        row["slo_met_every_window"] = meets_every_window(run)
        rows.append(row)
        prev = run
    return rows if len(rows) > 1 else []


def derive(runs: Sequence[Mapping[str, Any]], bounds: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Savings of every system against every other run on the same requests, each system's gap to the oracle, the
    decomposition and the headline (BiScale vs DistServe, with the paper's bar).

    ``bounds``: lower bounds of cluster J/token per (``scenario``, ``load_label``) where known (``cluster_j_per_token``
    each); every run of that group (sweeps aside) gets ``gap_to_bound_pct``, its J/token above the bound, % (the
    runs are annotated in place)."""
    savings: list[dict[str, Any]] = []
    gaps: list[dict[str, Any]] = []
    headline: list[dict[str, Any]] = []
    decomposition: list[dict[str, Any]] = []
    bound_of = {(b["scenario"], b.get("load_label")): b.get("cluster_j_per_token") for b in bounds or []}
    for (scenario, label, sweep_key), by_system in _groups(runs).items():
        sweep = json.loads(sweep_key) if sweep_key else None
        any_run = next(iter(by_system.values()))
        ident = {"scenario": scenario, "load": any_run.get("load"), "load_label": label, "sweep": sweep}
        if sweep is None:
            decomposition.extend(decomposition_rows(ident, by_system))
            bound = bound_of.get((scenario, label))
            if bound is not None:
                for run in by_system.values():
                    run["gap_to_bound_pct"] = _pct_above(run.get("cluster_j_per_token"), bound)  # type: ignore[index]
        for name, run in by_system.items():
            for base_name, base in by_system.items():
                if base_name == name:
                    continue
                row = {**ident, "system": name, "baseline": base_name}
                for phase, key in PHASE_KEYS.items():
                    row[f"{phase}_savings_pct"] = _pct_saving(run.get(key), base.get(key))
                row["energy_savings_pct"] = _pct_saving(run.get("energy_cluster_j"), base.get("energy_cluster_j"))
                savings.append(row)
        oracle = by_system.get("oracle")
        if oracle is not None:
            for name, run in by_system.items():
                if name == "oracle":
                    continue
                row = {**ident, "system": name}
                for phase, key in PHASE_KEYS.items():
                    row[f"{phase}_gap_pct"] = _pct_above(run.get(key), oracle.get(key))
                gaps.append(row)
        bis, ref = by_system.get("biscale"), by_system.get(HEADLINE_BASELINE)
        if bis is not None and ref is not None and sweep is None:
            h = {**ident}
            for phase in ("prefill", "decode", "cluster"):
                h[f"{phase}_savings_pct"] = _pct_saving(bis.get(PHASE_KEYS[phase]), ref.get(PHASE_KEYS[phase]))
            h["slo_met"] = bool(bis.get("slo_met"))
            h["slo_met_every_window"] = bool(bis.get("slo_met_every_window"))
            gap = None
            if oracle is not None:
                worse = [_pct_above(bis.get(PHASE_KEYS[p]), oracle.get(PHASE_KEYS[p])) for p in ("prefill", "decode")]
                gap = max((g for g in worse if g is not None), default=None)
            h["oracle_gap_pct"] = gap
            h["least_energy_meeting_slos"] = least_energy_system(by_system)
            h["bar"] = PAPER_BAR
            h["bar_met"] = bool(
                h["prefill_savings_pct"] is not None
                and h["decode_savings_pct"] is not None
                and h["prefill_savings_pct"] >= PAPER_BAR["prefill_savings_pct"]
                and h["decode_savings_pct"] >= PAPER_BAR["decode_savings_pct"]
                and h["slo_met"]
                and h["slo_met_every_window"]
                and gap is not None
                and gap <= PAPER_BAR["oracle_gap_pct"]
            )
            headline.append(h)
    return {"savings": savings, "oracle_gap": gaps, "headline": headline, "decomposition": decomposition}


# ------------------------------------------------------------------------------------------------ writing
def write_run_dir(
    run_dir: str | Path,
    *,
    tables: Mapping[str, pd.DataFrame | bytes],
    summary: Mapping[str, Any],
    config: Mapping[str, Any],
) -> Path:
    """Write one run directory: each table (``name.parquet`` -> a DataFrame, or its Parquet bytes as a worker
    returned them), ``summary.json`` (the summary with its ``meta``) and ``config.json``."""
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        if isinstance(table, bytes):
            (d / name).write_bytes(table)
        else:
            table.to_parquet(d / name, index=False)
    write_json(d / "summary.json", summary)
    write_json(d / "config.json", config, indent=2)
    return d


def write_results(out: str | Path, results: Mapping[str, Any]) -> Path:
    """Write ``out/results.json`` (indented)."""
    p = Path(out)
    p.mkdir(parents=True, exist_ok=True)
    return write_json(p / RESULTS_FILE, results, indent=1)


# ------------------------------------------------------------------------------------------------ reading
def read_results(directory: str | Path) -> dict[str, Any]:
    """The results of an evaluation or run directory: its ``results.json``, or, for a run directory without one,
    a one-run results object built from its files (:func:`one_run_results`). Validated; an :class:`InputError`
    names the file and the problem."""
    d = Path(directory)
    if not d.is_dir():
        raise InputError("not a directory", path=d)
    path = d / RESULTS_FILE
    if not path.exists():
        if (d / "summary.json").exists():
            return one_run_results(d)
        raise InputError(f"no {RESULTS_FILE} (an evaluation directory) and no summary.json (a run directory)", path=d)
    data = read_json_object(path, "results file")
    if data.get("format") != RESULTS_FORMAT:
        raise InputError(f"not a {RESULTS_FORMAT} file (format {data.get('format')!r})", path=path)
    if not isinstance(data.get("version"), int) or isinstance(data["version"], bool):
        raise InputError(f"expected a whole number, got {data.get('version')!r}", path=path, field="version")
    if data["version"] > RESULTS_VERSION:
        raise InputError(
            f"results version {data.get('version')!r} is newer than this biscale reads ({RESULTS_VERSION})", path=path
        )
    try:
        ResultsFile.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise InputError(str(first["msg"]), path=path, field=loc) from err
    for key in ("savings", "oracle_gap", "headline", "decomposition", "bounds", "scenarios"):
        data.setdefault(key, [])
        check_list_of_objects(data[key], key, path)
    return data


def read_table(run_dir: str | Path, name: str) -> pd.DataFrame | None:
    """A run directory's Parquet table, or None when the run has none (a live run may lack some)."""
    p = Path(run_dir) / name
    if not p.exists():
        return None
    try:
        df = pd.read_parquet(p)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read Parquet table: {err}", path=p) from err
    return check_table(df, name, p)  # the columns the readers use, of their kinds (biscale.filecheck)


def one_run_results(
    run_dir: str | Path,
    *,
    root: str | Path | None = None,
    scenario: str = "live",
    system: str | None = None,
    load: float | None = None,
    description: str = "one run",
) -> dict[str, Any]:
    """A one-run results object for a run directory (``summary.json`` + ``requests.parquet`` [+ ``instances.parquet``,
    ``config.json``] in the shared layout): what a live load generator writes as ``results.json`` beside its run, and
    what ``biscale report`` builds for a run directory that has none. The run's ``run_dir`` is relative to ``root``
    (the directory ``results.json`` goes to; default the run directory itself, ``.``). Identity (scenario, load,
    load label, system) comes from the summary's ``meta`` when it has it, else from the arguments."""
    from biscale import __version__
    from biscale.results.record import run_record

    d = Path(run_dir)
    summary = read_json_object(d / "summary.json")
    check_keys(summary, SUMMARY_KEYS, d / "summary.json")
    requests = read_table(d, "requests.parquet")
    instances = read_table(d, "instances.parquet")
    if requests is None:
        raise InputError("a run directory needs requests.parquet", path=d)
    if instances is None:
        instances = pd.DataFrame(
            columns=["instance_id", "phase", "tp", "start_s", "stop_s", "busy_energy_j", "idle_energy_j", "energy_j"]
        )
    config = read_json_object(d / "config.json") if (d / "config.json").exists() else {}
    check_keys(config, CONFIG_KEYS, d / "config.json")
    sim = config.get("sim") or {}
    given = {  # a summary without them: the model's defaults (one source)
        "ttft_s": None if summary.get("slo_ttft_ms") is None else float(summary["slo_ttft_ms"]) / 1e3,
        "tpot_s": None if summary.get("slo_tpot_ms") is None else float(summary["slo_tpot_ms"]) / 1e3,
        "percentile": summary.get("slo_percentile_pct"),
    }
    slo = Slo(**{k: v for k, v in given.items() if v is not None})
    window_s = float(sim.get("window_s", SimConfig.model_fields["window_s"].default))
    meta = summary.get("meta") or {}
    gpus = sim.get("nodes", 0) * sim.get("gpus_per_node", 0) or None
    rec = run_record(summary, requests, instances, slo, window_s, total_gpus=gpus, unassigned_power_w=None)
    name = system or meta.get("system") or meta.get("controllers", {}).get("prefill") or "run"
    rel = "." if root is None else Path(d).resolve().relative_to(Path(root).resolve()).as_posix()
    rec.update(
        {
            "scenario": meta.get("scenario", scenario),
            "load": meta.get("load", load),
            "load_label": meta.get("load_label", "run"),
            "system": name,
            "run_dir": rel,
        }
    )
    results = {
        "format": RESULTS_FORMAT,
        "version": RESULTS_VERSION,
        "biscale_version": meta.get("biscale_version", __version__),
        "config": config,
        "scenarios": [{"name": rec["scenario"], "description": description, "capacity_rps": None}],
        "runs": [rec],
    }
    results.update(derive([rec]))
    return results
