"""Serving-engine integrations: the per-iteration clock hook inside a live engine, and deployment plans.

* :mod:`biscale.integrations.config`: the hook's configuration (role, SLOs, predictors, candidate clocks), read from
  a file or ``BISCALE_*`` environment variables.
* :mod:`biscale.integrations.hook`: :class:`~biscale.integrations.hook.ClockHook`, the engine-neutral step hook
  (snapshot, controller, non-blocking actuator, metrics, fallback) and the live :class:`InstanceState` builder.
* :mod:`biscale.integrations.vllm`: the vLLM V1 scheduler subclass (``--scheduler-cls``).
* :mod:`biscale.integrations.emit`: launch commands for a plan on vLLM or SGLang.

Nothing here imports an engine at module level: vLLM is imported only when its scheduler class is asked for.
"""
