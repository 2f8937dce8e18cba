"""Live runs without and with GPUs: an emulated serving engine, a trace-replay load generator, run directories.

* :mod:`biscale.live.emulator`: ``biscale emulate-engine``, an OpenAI-compatible streaming server whose tokens are
  timed by the hardware model at the clock the BiScale controller chose (through the real actuator on a fake NVML).
* :mod:`biscale.live.loadgen`: ``biscale loadgen``, replays a trace against any OpenAI-compatible endpoint.
* :mod:`biscale.live.energy`: GPU energy of a run from the local NVML energy meter or a Prometheus server.
* :mod:`biscale.live.rundir`: the run directory and one-run ``results.json`` a live run writes (RESULTS_FORMAT).
"""
