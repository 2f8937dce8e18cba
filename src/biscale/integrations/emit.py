"""Launch commands for a plan: every prefill and decode instance on vLLM or SGLang, the router in front, and the
Prometheus scrape configuration of the whole deployment (``biscale plan --emit vllm|sglang``).

GPU assignment: instances go on the node the planner chose (``InstanceSpec.nodes``), else are packed largest TP first
(best fit, as the simulator packs them); inside a node a TP group gets the lowest free contiguous GPU indices, in
NVML (PCI bus) order, which ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` makes the CUDA order too.

Engines and what is emitted (flags as documented by each engine's pinned version, checked against their source by
``tests/integrations/test_engine_args.py``):

* **vLLM** (:data:`biscale.integrations.vllm.SUPPORTED_VLLM`): ``vllm serve`` with ``--kv-transfer-config`` for the
  NIXL connector (``kv_producer`` on prefill, ``kv_consumer`` on decode; ``VLLM_NIXL_SIDE_CHANNEL_PORT`` unique per
  GPU on a node), BiScale's scheduler (``--scheduler-cls``) and its configuration file (``BISCALE_CONFIG``); the
  router is ``vllm-router --vllm-pd-disaggregation`` (package ``vllm-router``).
* **SGLang** (0.5.x): ``python -m sglang.launch_server --disaggregation-mode prefill|decode`` (Mooncake transfer,
  one bootstrap port per prefill instance), router ``python -m sglang_router.launch_router --pd-disaggregation``.
  SGLang has no scheduler plug-in, so per-iteration control is not available: each instance's GPUs are held at tier
  1's baseline clock by ``biscale gpu lock --guard`` and exported by ``biscale gpu export``.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from biscale.control.placement import Placement
from biscale.control.state import Slo
from biscale.errors import InputError
from biscale.integrations.prometheus import JOB_CONTROL, JOB_ENGINE, ScrapeTarget, scrape_config

Engine = Literal["vllm", "sglang"]
ENGINES: tuple[str, ...] = ("vllm", "sglang")

DEFAULT_SERVE_MODEL = "meta-llama/Llama-3.3-70B-Instruct"
ENGINE_BASE_PORT = 8100
"""First serving port on a node (one per instance)."""
METRICS_BASE_PORT = 9400
"""First BiScale exporter port on a node (one per instance)."""
ROUTER_PORT = 8000
NIXL_BASE_PORT = 5600
"""vLLM NIXL side-channel base port; each GPU worker on a node uses base + its rank (vLLM's NixlConnector guide)."""
SGLANG_BOOTSTRAP_BASE_PORT = 8998
"""SGLang's default disaggregation bootstrap port; one per prefill instance on a node."""
DEPLOY_DIR = "biscale-deploy"
"""Folder (relative to where the script runs) for the hook configurations, logs and ``prometheus.yml``."""


@dataclass(frozen=True)
class InstanceLaunch:
    """One engine instance: where it runs and how to start it."""

    name: str
    """``prefill-0``, ``decode-1``: phase and index in placement order."""
    phase: str
    tp: int
    node: int
    host: str
    gpus: tuple[int, ...]
    """GPU indices on its node (NVML / PCI order)."""
    port: int
    """Serving port (OpenAI API and the engine's ``/metrics``)."""
    metrics_port: int
    """BiScale exporter port (clock hook or ``biscale gpu export``)."""
    env: dict[str, str]
    argv: list[str]
    sidecars: list[list[str]] = field(default_factory=list)
    """Extra processes of the instance (SGLang: clock lock and exporter)."""
    hook_config: dict[str, Any] | None = None
    """The clock hook's configuration file content (vLLM), written to ``DEPLOY_DIR/<name>.json``."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class DeploymentPlan:
    """Everything ``--emit`` prints."""

    engine: str
    placement: str
    hosts: tuple[str, ...]
    instances: tuple[InstanceLaunch, ...]
    router: list[str]
    prometheus_yml: str


#: Where emitted servers listen unless the operator passes another address (nothing beyond the node).
LOOPBACK = "127.0.0.1"


def assign_gpus(placement: Placement, nodes: int, gpus_per_node: int) -> list[tuple[int, tuple[int, ...]]]:
    """(node, GPU indices on it) for every instance of ``placement.expand()``, in that order."""
    specs = list(placement.expand())
    if any(s.tp > gpus_per_node for s in specs):
        raise InputError(f"a TP group does not fit a node of {gpus_per_node} GPUs", field="placement")
    free = [list(range(gpus_per_node)) for _ in range(nodes)]
    out: list[tuple[int, tuple[int, ...]] | None] = [None] * len(specs)
    order = sorted(range(len(specs)), key=lambda i: -specs[i].tp)  # largest TP first keeps groups aligned
    for i in order:
        spec = specs[i]
        wanted = spec.nodes[0] if spec.nodes else None
        if wanted is not None and wanted >= nodes:
            raise InputError(f"instance on node {wanted} but the cluster has {nodes} nodes", field="placement")
        candidates = [wanted] if wanted is not None else sorted(range(nodes), key=lambda n: (len(free[n]), n))
        for n in candidates:
            if len(free[n]) >= spec.tp:
                out[i] = (n, tuple(free[n][: spec.tp]))
                free[n] = free[n][spec.tp :]
                break
        else:
            raise InputError(
                f"the placement's TP groups do not fit {nodes} node(s) of {gpus_per_node} GPUs", field="placement"
            )
    return [o for o in out if o is not None]


def _baseline_mhz(clock: int | str | None, top_mhz: int) -> int | None:
    if clock is None:
        return None
    if clock == "max":
        return top_mhz
    if clock == "default":
        return 0
    return int(clock)


def build_plan(
    placement: Placement,
    engine: str,
    *,
    gpus_per_node: int,
    nodes: int,
    hosts: Sequence[str] | None = None,
    serve_model: str = DEFAULT_SERVE_MODEL,
    slo: Slo | None = None,
    gpu: str = "h100-sxm",
    model: str = "llama-3.3-70b",
    predictors: str | None = None,
    top_clock_mhz: int = 1980,
    bind_addr: str = LOOPBACK,
) -> DeploymentPlan:
    """Launch commands for every instance of ``placement`` on ``engine`` (see the module docstring).

    ``bind_addr``: the address every emitted server (engines, exporters, router) listens on. The default, loopback,
    exposes nothing beyond the node; a plan over several nodes needs an address the router and Prometheus can reach
    (the operator's choice, e.g. the cluster network's), so it is refused without one.
    """
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r} (expected vllm or sglang)", field="emit")
    host_list = tuple(hosts) if hosts else tuple(f"node{n}" for n in range(nodes))
    if len(host_list) < nodes:
        raise InputError(f"{len(host_list)} host(s) given for {nodes} nodes", field="hosts")
    if nodes > 1 and bind_addr in (LOOPBACK, "localhost", "::1"):
        raise InputError(
            f"a plan over {nodes} nodes needs --bind-addr: the router and Prometheus on node 0 must reach the other "
            f"nodes' engines and exporters (by default everything binds {LOOPBACK}, this node only)",
            field="bind-addr",
        )
    slo = slo or Slo()
    placed = assign_gpus(placement, nodes, gpus_per_node)
    per_node: dict[int, int] = {}
    gpu_rank: dict[int, int] = {}
    counters = {"prefill": 0, "decode": 0}
    launches: list[InstanceLaunch] = []
    for spec, (node, gpus) in zip(placement.expand(), placed, strict=True):
        k = per_node.get(node, 0)
        per_node[node] = k + 1
        name = f"{spec.phase}-{counters[spec.phase]}"
        counters[spec.phase] += 1
        port, metrics_port = ENGINE_BASE_PORT + k, METRICS_BASE_PORT + k
        env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}
        baseline = _baseline_mhz(spec.clock, top_clock_mhz)
        sidecars: list[list[str]] = []
        hook_config: dict[str, Any] | None = None
        if engine == "vllm":
            first = gpu_rank.get(node, 0)
            gpu_rank[node] = first + spec.tp
            hook: dict[str, Any] = {
                "role": spec.phase,
                "instance": name,
                "slo_ttft_ms": slo.ttft_s * 1e3,
                "slo_tpot_ms": slo.tpot_s * 1e3,
                "gpu": gpu,
                "model": model,
                "baseline_clock_mhz": baseline,
                "metrics_port": metrics_port,
                "metrics_addr": bind_addr,
            }
            if predictors:
                hook["predictors"] = predictors
            env |= {
                "VLLM_NIXL_SIDE_CHANNEL_PORT": str(NIXL_BASE_PORT + first),
                "UCX_NET_DEVICES": "all",
                "BISCALE_CONFIG": f"{DEPLOY_DIR}/{name}.json",
            }
            role = "kv_producer" if spec.phase == "prefill" else "kv_consumer"
            argv = [
                "vllm", "serve", serve_model,
                "--host", bind_addr,
                "--port", str(port),
                "--tensor-parallel-size", str(spec.tp),
                "--kv-transfer-config", json.dumps({"kv_connector": "NixlConnector", "kv_role": role}),
                "--scheduler-cls", "biscale.integrations.vllm.BiScaleScheduler",
            ]  # fmt: skip
            hook_config = {k2: v for k2, v in hook.items() if v is not None}
        else:
            argv = [
                "python", "-m", "sglang.launch_server",
                "--model-path", serve_model,
                "--host", bind_addr,
                "--port", str(port),
                "--tp-size", str(spec.tp),
                "--disaggregation-mode", spec.phase,
                "--disaggregation-transfer-backend", "mooncake",
                "--enable-metrics",
            ]  # fmt: skip
            if spec.phase == "prefill":
                argv += ["--disaggregation-bootstrap-port", str(SGLANG_BOOTSTRAP_BASE_PORT + k)]
            selection = ",".join(map(str, gpus))
            sidecars = [["biscale", "gpu", "export", "--port", str(metrics_port), "--addr", bind_addr,
                         "--gpus", selection]]  # fmt: skip
            if baseline:
                sidecars.insert(0, ["biscale", "gpu", "lock", "--clock", str(baseline), "--gpus", selection, "--guard"])
        launches.append(
            InstanceLaunch(
                name=name,
                phase=spec.phase,
                tp=spec.tp,
                node=node,
                host=host_list[node],
                gpus=gpus,
                port=port,
                metrics_port=metrics_port,
                env=env,
                argv=argv,
                sidecars=sidecars,
                hook_config=hook_config,
            )
        )
    router = _router(engine, launches, bind_addr)
    jobs = {
        JOB_CONTROL: [ScrapeTarget(f"{i.host}:{i.metrics_port}", i.phase, i.name) for i in launches],
        JOB_ENGINE: [ScrapeTarget(f"{i.host}:{i.port}", i.phase, i.name) for i in launches],
    }
    return DeploymentPlan(engine, placement.spec(), host_list[:nodes], tuple(launches), router, scrape_config(jobs))


def _router(engine: str, launches: Sequence[InstanceLaunch], bind_addr: str) -> list[str]:
    prefill = [i for i in launches if i.phase == "prefill"]
    decode = [i for i in launches if i.phase == "decode"]
    if engine == "vllm":
        argv = ["vllm-router", "--vllm-pd-disaggregation", "--kv-connector", "nixl", "--policy", "round_robin"]
        for i in prefill:
            argv += ["--prefill", i.url]
    else:
        argv = ["python", "-m", "sglang_router.launch_router", "--pd-disaggregation", "--policy", "round_robin"]
        for i in prefill:
            bootstrap = int(i.argv[i.argv.index("--disaggregation-bootstrap-port") + 1])
            argv += ["--prefill", i.url, str(bootstrap)]
    for i in decode:
        argv += ["--decode", i.url]
    return [*argv, "--host", bind_addr, "--port", str(ROUTER_PORT)]


def _line(env: dict[str, str], argv: list[str], log: str) -> str:
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    cmd = " ".join(shlex.quote(a) for a in argv)
    return f"{prefix + ' ' if prefix else ''}{cmd} > {DEPLOY_DIR}/{log}.log 2>&1 &"


def render_script(plan: DeploymentPlan) -> str:
    """A bash script: ``bash deploy.sh NODE`` starts that node's processes (node 0 also starts the router)."""
    out = [
        "#!/usr/bin/env bash",
        f"# biscale plan --emit {plan.engine}: {plan.placement}",
        "# Run 'bash THIS_SCRIPT N' on node N (hosts: "
        + ", ".join(f"{n}={h}" for n, h in enumerate(plan.hosts))
        + "); node 0 also starts the router.",
        "# Each process logs to " + DEPLOY_DIR + "/<name>.log; Prometheus: " + DEPLOY_DIR + "/prometheus.yml.",
        "set -euo pipefail",
        f"mkdir -p {DEPLOY_DIR}",
        f"cat > {DEPLOY_DIR}/prometheus.yml <<'BISCALE_EOF'",
        plan.prometheus_yml.rstrip("\n"),
        "BISCALE_EOF",
        'case "${1:?usage: bash deploy.sh NODE_INDEX}" in',
    ]
    for node, host in enumerate(plan.hosts):
        out.append(f"{node})  # {host}")
        for inst in (i for i in plan.instances if i.node == node):
            out.append(f"  # {inst.name}: TP{inst.tp} on GPUs {','.join(map(str, inst.gpus))}, port {inst.port}")
            if inst.hook_config is not None:
                out += [
                    f"  cat > {DEPLOY_DIR}/{inst.name}.json <<'BISCALE_EOF'",
                    json.dumps(inst.hook_config, indent=2),
                    "BISCALE_EOF",
                ]
            for j, side in enumerate(inst.sidecars):
                out.append("  " + _line({}, side, f"{inst.name}-sidecar{j}"))
            out.append("  " + _line(inst.env, inst.argv, inst.name))
        if node == 0:
            out.append("  # router (OpenAI-compatible endpoint in front of every instance)")
            out.append("  " + _line({}, plan.router, "router"))
        out.append("  ;;")
    out += ['*) echo "unknown node index $1" >&2; exit 2 ;;', "esac", "wait"]
    return "\n".join(out) + "\n"
