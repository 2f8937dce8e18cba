"""Configuration of the clock hook inside one serving instance: a file (``BISCALE_CONFIG``) and/or env variables.

Why both: ``vllm serve --scheduler-cls`` offers no way to pass arguments to a scheduler class, so the hook reads its
settings from the process environment; a deployment plan (``biscale plan --emit``) writes one JSON file per instance
and points ``BISCALE_CONFIG`` at it, and single values can be overridden per process with ``BISCALE_<FIELD>``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from biscale.control.state import SLO_TPOT_MS, SLO_TTFT_MS, Slo
from biscale.errors import InputError

#: Environment variable naming the configuration file (``.json`` or ``.toml``).
CONFIG_ENV = "BISCALE_CONFIG"
#: Prefix of the per-field environment overrides (``BISCALE_ROLE=decode``, ``BISCALE_CLOCKS_MHZ=990,1410,1980``).
ENV_PREFIX = "BISCALE_"

DEFAULT_CONTROLLERS = {"prefill": "mpc", "decode": "slack"}

#: The phase a P/D engine's KV-transfer role implies (vLLM ``kv_transfer_config.kv_role``). ``kv_both`` (an
#: instance that sends and receives KV, or an offloading connector on a plain instance) implies none: the role comes
#: from the configuration, as for an engine without a KV connector.
KV_ROLE_PHASE = {"kv_producer": "prefill", "kv_consumer": "decode"}


class HookConfig(BaseModel):
    """What one instance's clock hook needs (every field has an env override ``BISCALE_<FIELD upper>``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    role: Literal["prefill", "decode"]
    """Phase this instance serves (selects the controller and the snapshot's meaning)."""
    instance: str = "0"
    """Instance name (Prometheus label ``instance`` of the controller metrics; the controller's memory key)."""
    controller: str | None = None
    """Controller name (``biscale.control.CONTROLLERS``; a number = a fixed clock in MHz). Default: ``mpc`` for
    prefill, ``slack`` for decode."""
    controller_options: dict[str, Any] = Field(default_factory=dict)
    """The controller's own settings (its constructor's keyword arguments, docs/control.md)."""
    slo_ttft_ms: float = Field(default=SLO_TTFT_MS, gt=0)
    """P99 TTFT target, ms."""
    slo_tpot_ms: float = Field(default=SLO_TPOT_MS, gt=0)
    """P99 TPOT target, ms."""
    predictors: str | None = None
    """Predictor artifact directory (``biscale fit`` output); default: the bundled one of ``gpu`` / ``model``."""
    gpu: str = "h100-sxm"
    """GPU name of the bundled predictor."""
    model: str = "llama-3.3-70b"
    """Model name of the bundled predictor."""
    clocks_mhz: tuple[int, ...] | None = None
    """Candidate clocks, MHz (default: the controller's own choice, docs/control.md)."""
    baseline_clock_mhz: int | None = Field(default=None, ge=0)
    """Tier 1's baseline clock for this instance, MHz (0 = default governor); the controllers' idle rule."""
    gpus: str | None = None
    """GPUs of the TP group as ``biscale gpu`` selects them (indices, UUIDs, ``cuda:N``). Default: the engine's
    visible GPUs of its data-parallel rank."""
    actuate: bool = True
    """False: decide and export, but never touch the clocks (a dry run on a production engine)."""
    guard: bool = True
    """Start a guard process that restores the clocks if the engine is killed outright (SIGKILL, OOM)."""
    min_dwell_s: float = Field(default=0.0, ge=0)
    """Least time between two switches of the group, s (NvmlActuator)."""
    watchdog_s: float | None = Field(default=30.0, gt=0)
    """Restore default clocks when no step reached the hook for this long, s (``None``: no watchdog)."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve the control-plane Prometheus metrics on this port (``None``: not served; 0: any free port)."""
    metrics_addr: str = "127.0.0.1"
    """Address the metrics server binds to (loopback: this node only)."""
    metrics_token: str | None = Field(default=None, min_length=16, repr=False)
    """Serve the metrics only to requests with ``Authorization: Bearer <token>`` (best given as the environment
    variable ``BISCALE_METRICS_TOKEN``, not in a file others can read); at least 16 characters."""
    recent_latencies: int = Field(default=16, ge=1)
    """Step latencies kept for the controller (``InstanceState.recent_latencies_s``)."""

    @property
    def slo(self) -> Slo:
        return Slo(ttft_s=self.slo_ttft_ms / 1e3, tpot_s=self.slo_tpot_ms / 1e3)

    @property
    def controller_name(self) -> str:
        return self.controller or DEFAULT_CONTROLLERS[self.role]


def _env_value(field: str, text: str) -> Any:
    """An environment string as the field's value: JSON for options, comma lists for clocks, else as-is."""
    if field == "controller_options":
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"not valid JSON: {err.msg}", field=ENV_PREFIX + field.upper()) from err
    if field == "clocks_mhz":
        return [t.strip() for t in text.split(",") if t.strip()]
    if text.strip().lower() in ("", "none", "null") and field not in ("role", "instance"):
        return None
    return text


def load_hook_config(
    env: Mapping[str, str] | None = None,
    path: str | Path | None = None,
    *,
    engine_role: str | None = None,
    engine_role_source: str = "engine",
) -> HookConfig:
    """The hook configuration: the file ``path`` (default ``$BISCALE_CONFIG``), then ``BISCALE_<FIELD>`` overrides.

    ``engine_role``: the phase the engine itself says it serves (its KV-transfer role, :data:`KV_ROLE_PHASE`;
    ``engine_role_source`` names it in messages): it fills a missing ``role``, and a configured role that
    contradicts it is refused. A bad value is an :class:`InputError` naming the field and where it came from.
    """
    from biscale.sim.runconfig import read_config_file

    environ = os.environ if env is None else env
    source = path if path is not None else environ.get(CONFIG_ENV) or None
    data: dict[str, Any] = dict(read_config_file(source)) if source is not None else {}
    overridden: set[str] = set()
    for name in HookConfig.model_fields:
        key = ENV_PREFIX + name.upper()
        if key in environ:
            data[name] = _env_value(name, environ[key])
            overridden.add(name)
    if engine_role is not None:
        given = data.get("role")
        if given is None:
            data["role"] = engine_role
        elif given != engine_role:
            raise InputError(
                f"role {given!r} contradicts {engine_role_source} (a {engine_role} instance); "
                f"set role {engine_role!r} or remove it",
                path=None if "role" in overridden else source,
                field=ENV_PREFIX + "ROLE" if "role" in overridden else "role",
            )
    try:
        return HookConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        name = loc.split(".")[0]
        msg = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "missing":
            msg = f"missing (set {ENV_PREFIX}{name.upper()} or give it in the {CONFIG_ENV} file)"
        if name in overridden:
            raise InputError(msg, field=ENV_PREFIX + name.upper()) from err
        raise InputError(msg, path=source, field=loc or None) from err
