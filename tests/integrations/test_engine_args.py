"""``biscale plan --emit``: the commands parse with each program's argument names, GPUs and ports are assigned
without overlap, and (where the engines' downloaded sources are present) every name exists in those sources and the
routers' own argument parsers accept the router commands; the vLLM adapter reads only names the pinned vLLM has."""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from biscale.control.placement import Placement
from biscale.integrations.emit import build_plan, render_script
from biscale.integrations.vllm import VLLM_READS

FLAGS = json.loads((Path(__file__).parent / "engine_flags.json").read_text())
PLACEMENT = Placement.parse("prefill:2xTP2@1200,decode:1xTP4@max,decode:1xTP8")


def program_of(argv: list[str]) -> tuple[str, list[str]]:
    """(program key in engine_flags.json, its arguments)."""
    for key in FLAGS:
        words = key.split()
        if argv[: len(words)] == words:
            return key, argv[len(words) :]
    raise AssertionError(f"unknown program: {argv[:3]}")


def parser_for(key: str) -> argparse.ArgumentParser:
    spec = FLAGS[key]
    p = argparse.ArgumentParser(prog=key, exit_on_error=False, allow_abbrev=False)
    for _ in range(spec["positional"]):
        p.add_argument("positional")
    for flag, nargs in spec["flags"].items():
        if nargs == 0:
            p.add_argument(flag, action="store_true")
        elif nargs == "+" or flag == "--decode":
            p.add_argument(flag, nargs=nargs, action="append")
        else:
            p.add_argument(flag)
    return p


def parse(argv: list[str]) -> tuple[str, argparse.Namespace]:
    key, args = program_of(argv)
    with_error: Any = parser_for(key)
    return key, with_error.parse_args(args)


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_every_emitted_command_parses_with_the_engines_argument_names(engine: str) -> None:
    plan = build_plan(PLACEMENT, engine, gpus_per_node=8, nodes=3, bind_addr="0.0.0.0", hosts=["a", "b", "c"])
    assert len(plan.instances) == 4
    for inst in plan.instances:
        _, ns = parse(inst.argv)
        tp = ns.tensor_parallel_size if engine == "vllm" else ns.tp_size
        assert int(tp) == inst.tp == len(inst.gpus)
        assert int(ns.port) == inst.port
        if engine == "vllm":
            cfg = json.loads(ns.kv_transfer_config)
            assert cfg == {
                "kv_connector": "NixlConnector",
                "kv_role": f"kv_{'producer' if inst.phase == 'prefill' else 'consumer'}",
            }
            assert ns.scheduler_cls == "biscale.integrations.vllm.BiScaleScheduler"
            assert inst.hook_config is not None and inst.hook_config["role"] == inst.phase
            assert inst.env["BISCALE_CONFIG"].endswith(f"{inst.name}.json")
        else:
            assert ns.disaggregation_mode == inst.phase and ns.enable_metrics
            assert (ns.disaggregation_bootstrap_port is not None) == (inst.phase == "prefill")
        assert inst.env["CUDA_VISIBLE_DEVICES"] == ",".join(map(str, inst.gpus))
    _, ns = parse(plan.router)
    prefill_urls = [p[0] for p in ns.prefill]
    decode_urls = [d[0] for d in ns.decode]
    assert prefill_urls == [i.url for i in plan.instances if i.phase == "prefill"]
    assert decode_urls == [i.url for i in plan.instances if i.phase == "decode"]


def test_gpus_and_ports_never_overlap_on_a_node_and_groups_stay_on_one_node() -> None:
    plan = build_plan(PLACEMENT, "vllm", gpus_per_node=8, nodes=2, bind_addr="0.0.0.0")
    seen: dict[int, set[int]] = {}
    for inst in plan.instances:
        used = seen.setdefault(inst.node, set())
        assert not used & set(inst.gpus)
        used |= set(inst.gpus)
    # NIXL side-channel ports: base + rank of each GPU worker, unique per node
    for node in seen:
        ports = []
        for inst in (i for i in plan.instances if i.node == node):
            base = int(inst.env["VLLM_NIXL_SIDE_CHANNEL_PORT"])
            ports += range(base, base + inst.tp)
        assert len(ports) == len(set(ports))
    assert sum(len(g) for g in seen.values()) == PLACEMENT.total_gpus == 16


def test_planned_nodes_are_kept_and_a_placement_that_does_not_fit_is_refused() -> None:
    from biscale.errors import InputError

    p = Placement.model_validate(
        {
            "instances": [
                {"phase": "prefill", "tp": 4, "count": 2, "nodes": [1, 1]},
                {"phase": "decode", "tp": 8, "nodes": [0]},
            ]
        }
    )
    plan = build_plan(p, "vllm", gpus_per_node=8, nodes=2, bind_addr="0.0.0.0")
    assert [(i.name, i.node, i.gpus) for i in plan.instances] == [
        ("prefill-0", 1, (0, 1, 2, 3)),
        ("prefill-1", 1, (4, 5, 6, 7)),
        ("decode-0", 0, tuple(range(8))),
    ]
    with pytest.raises(InputError, match="do not fit"):
        build_plan(PLACEMENT, "vllm", gpus_per_node=8, nodes=1)


def test_baseline_clocks_go_to_the_hook_and_to_sglang_s_clock_lock() -> None:
    v = build_plan(PLACEMENT, "vllm", gpus_per_node=8, nodes=2, bind_addr="0.0.0.0", top_clock_mhz=1980)
    assert [i.hook_config.get("baseline_clock_mhz") for i in v.instances if i.hook_config] == [1200, 1200, 1980, None]
    s = build_plan(PLACEMENT, "sglang", gpus_per_node=8, nodes=2, bind_addr="0.0.0.0", top_clock_mhz=1980)
    locks = [[c for c in i.sidecars if c[:3] == ["biscale", "gpu", "lock"]] for i in s.instances]
    assert [lk[0][lk[0].index("--clock") + 1] if lk else None for lk in locks] == ["1200", "1200", "1980", None]
    assert all(any(c[:3] == ["biscale", "gpu", "export"] for c in i.sidecars) for i in s.instances)


def test_the_sidecar_commands_use_biscale_s_own_options() -> None:
    import typer.main

    from biscale.cli.main import app

    gpu = typer.main.get_command(app).commands["gpu"]  # type: ignore[attr-defined]
    s = build_plan(PLACEMENT, "sglang", gpus_per_node=8, nodes=2, bind_addr="0.0.0.0")
    for inst in s.instances:
        for side in inst.sidecars:
            sub = gpu.commands[side[2]]
            names = {o for p in sub.params for o in p.opts}
            assert {a for a in side[3:] if a.startswith("--")} <= names


def test_the_script_runs_one_node_per_argument_and_writes_the_configs(tmp_path: Path) -> None:
    import subprocess

    plan = build_plan(PLACEMENT, "vllm", gpus_per_node=8, nodes=2, bind_addr="0.0.0.0")
    script = render_script(plan)
    # run it with the engines replaced by a stub that records its command line
    stub = tmp_path / "bin"
    stub.mkdir()
    for prog in ("vllm", "vllm-router"):
        (stub / prog).write_text('#!/bin/sh\necho "$CUDA_VISIBLE_DEVICES $BISCALE_CONFIG $*" >> calls.txt\n')
        (stub / prog).chmod(0o755)
    (tmp_path / "deploy.sh").write_text(script)
    env = {"PATH": f"{stub}:/usr/bin:/bin"}
    r = subprocess.run(["bash", "deploy.sh", "1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    node1 = [i for i in plan.instances if i.node == 1]
    assert len(calls) == len(node1)  # the router starts on node 0 only
    for inst in node1:
        cfg = json.loads((tmp_path / "biscale-deploy" / f"{inst.name}.json").read_text())
        assert cfg["role"] == inst.phase and cfg["instance"] == inst.name
    assert "job_name" in (tmp_path / "biscale-deploy" / "prometheus.yml").read_text()
    bad = subprocess.run(["bash", "deploy.sh", "7"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown node index" in bad.stderr


# ----------------------------------------------------------------------- against the downloaded sources
def vllm_flag_names(src: Any) -> set[str]:
    names: set[str] = set()
    for rel in ("vllm/engine/arg_utils.py", "vllm/entrypoints/common/cli_args.py"):
        text = src.read(rel)
        names |= set(re.findall(r'add_argument\(\s*(?:\*\w+,\s*)?"(--[a-z0-9-]+)"', text))
        names |= set(re.findall(r'"(--[a-z0-9-]+)",\s*"-\w+"', text))
    # FrontendArgs: every annotated field is a --field-name flag (BaseFrontendArgs.add_cli_args)
    tree = ast.parse(src.read("vllm/entrypoints/common/cli_args.py"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name in ("FrontendArgs", "BaseFrontendArgs"):
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    names.add("--" + stmt.target.id.replace("_", "-"))
    return names


def sglang_flag_names(src: Any) -> set[str]:
    """CLI names sglang derives from its server-argument dataclass fields (``--field-name``, ``aliases``)."""
    names: set[str] = set()
    files = src.glob("sglang/srt/arg_groups/fields/")
    assert files, "sglang's argument fields were not found"
    for text in files.values():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add("--" + node.target.id.replace("_", "-"))
                for call in ast.walk(node.annotation):
                    if isinstance(call, ast.Call):
                        for kw in call.keywords:
                            if kw.arg in ("aliases", "cli_name"):
                                names |= {c.value for c in ast.walk(kw.value) if isinstance(c, ast.Constant)}
    return names


def test_vllm_serve_flags_exist_in_the_pinned_vllm(engine_source: Callable[[str], Any]) -> None:
    src = engine_source("vllm")
    names = vllm_flag_names(src)
    assert set(FLAGS["vllm serve"]["flags"]) <= names, set(FLAGS["vllm serve"]["flags"]) - names
    assert '"NixlConnector"' in src.read("vllm/distributed/kv_transfer/kv_connector/factory.py")
    kv = src.read("vllm/config/kv_transfer.py")
    assert '"kv_producer"' in kv and '"kv_consumer"' in kv


def test_sglang_flags_exist_in_the_pinned_sglang(engine_source: Callable[[str], Any]) -> None:
    src = engine_source("sglang")
    names = sglang_flag_names(src)
    wanted = set(FLAGS["python -m sglang.launch_server"]["flags"])
    assert wanted <= names, wanted - names
    assert '"mooncake"' in src.read("sglang/srt/arg_groups/choices.py")
    assert "sglang/launch_server.py" in src.glob("sglang/", "launch_server.py")


def load_router_args(text: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__["__name__"] = name
    sys.modules[name] = module
    try:
        exec(compile(text, name, "exec"), module.__dict__)
    finally:
        sys.modules.pop(name, None)
    return module


def test_vllm_router_accepts_the_router_command(engine_source: Callable[[str], Any]) -> None:
    src = engine_source("vllm-router")
    mod = load_router_args(src.read("vllm_router/router_args.py"), "vllm_router.router_args")
    plan = build_plan(PLACEMENT, "vllm", gpus_per_node=8, nodes=2, bind_addr="0.0.0.0")
    parser = argparse.ArgumentParser(exit_on_error=False)
    mod.RouterArgs.add_cli_args(parser)
    ns = parser.parse_args(plan.router[1:])
    args = mod.RouterArgs.from_cli_args(ns)
    assert args.vllm_pd_disaggregation and args.port == 8000
    assert [u for u, *_ in args.prefill_urls] == [i.url for i in plan.instances if i.phase == "prefill"]
    assert list(args.decode_urls) == [i.url for i in plan.instances if i.phase == "decode"]


def test_sglang_router_accepts_the_router_command(
    engine_source: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = engine_source("sglang-router")
    rust = types.ModuleType("sglang_router.sglang_router_rs")
    rust.get_available_tool_call_parsers = lambda: []  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sglang_router", types.ModuleType("sglang_router"))
    monkeypatch.setitem(sys.modules, "sglang_router.sglang_router_rs", rust)
    mod = load_router_args(src.read("sglang_router/router_args.py"), "sglang_router.router_args")
    assert "def parse_router_args" in src.read("sglang_router/launch_router.py")
    plan = build_plan(PLACEMENT, "sglang", gpus_per_node=8, nodes=2, bind_addr="0.0.0.0")
    parser = argparse.ArgumentParser(exit_on_error=False)
    mod.RouterArgs.add_cli_args(parser)
    ns = parser.parse_args(plan.router[3:])
    args = mod.RouterArgs.from_cli_args(ns)
    assert args.pd_disaggregation
    prefill = [i for i in plan.instances if i.phase == "prefill"]
    assert [(u, int(b)) for u, b in args.prefill_urls] == [
        (i.url, int(i.argv[i.argv.index("--disaggregation-bootstrap-port") + 1])) for i in prefill
    ]


def test_every_name_the_vllm_adapter_reads_exists_in_the_pinned_vllm(engine_source: Callable[[str], Any]) -> None:
    src = engine_source("vllm")
    missing = [(rel, name) for rel, names in VLLM_READS.items() for name in names if name not in src.read(rel)]
    assert missing == []


def test_a_plan_exposes_nothing_beyond_the_node_unless_asked() -> None:
    from biscale.errors import InputError

    one_node = Placement.model_validate({"instances": [{"phase": "prefill", "tp": 2}, {"phase": "decode", "tp": 2}]})
    for engine in ("vllm", "sglang"):
        script = render_script(build_plan(one_node, engine, gpus_per_node=8, nodes=1))
        assert "0.0.0.0" not in script and script.count("127.0.0.1") >= 3
    with pytest.raises(InputError, match="a plan over 2 nodes needs --bind-addr"):
        build_plan(PLACEMENT, "vllm", gpus_per_node=8, nodes=2)
