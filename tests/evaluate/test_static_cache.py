"""The static baseline's offline search is cached on disk and reused only for identical inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from biscale.control.placement import Placement
from biscale.evaluate import systems
from biscale.predict import default_predictor
from biscale.sim import SimConfig
from biscale.workload import load_lengths, load_trace, rescale_rate, with_lengths


def test_the_search_is_cached_and_keyed_on_its_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trace = with_lengths(rescale_rate(load_trace("azure-conv"), 3.0, seed=0), load_lengths("sharegpt-v3"), seed=0)
    placement = Placement.parse("prefill:1xTP4,decode:1xTP4")
    pred = default_predictor()
    sim = SimConfig(duration_s=30.0, nodes=1, gpus_per_node=8)
    first = systems.static_search(trace, placement, pred, sim, cache_dir=tmp_path)
    assert first.runs > 1 and first.meets_slo
    assert len(list((tmp_path / "evaluate" / "static").glob("*.json"))) == 1

    def no_search(*args: object, **kwargs: object) -> None:
        raise AssertionError("searched again")

    monkeypatch.setattr(systems, "search_static_clocks", no_search)
    again = systems.static_search(trace, placement, pred, sim, cache_dir=tmp_path)
    assert (again.prefill_mhz, again.decode_mhz, again.meets_slo, again.runs) == (
        first.prefill_mhz,
        first.decode_mhz,
        first.meets_slo,
        first.runs,
    )
    with pytest.raises(AssertionError, match="searched again"):  # another simulator setting: another key
        systems.static_search(trace, placement, pred, sim.model_copy(update={"duration_s": 20.0}), cache_dir=tmp_path)
    with pytest.raises(AssertionError, match="searched again"):  # --no-cache never reads
        systems.static_search(trace, placement, pred, sim, cache_dir=tmp_path, use_cache=False)
