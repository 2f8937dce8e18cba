"""Speed of the hardware model's hot path (the simulator prices every iteration with it).

Prints one JSON line: mean microseconds per ``decode_cost`` / ``prefill_cost`` call on H100 / Llama-3.3-70B,
TP4, over a mix of locked clocks and the default governor (including power-throttled prefills).
"""

from __future__ import annotations

import json
import time

import numpy as np

from biscale.costmodel import DecodeShape, PrefillShape
from biscale.hardware import get_hardware


def main() -> None:
    hw = get_hardware("h100-sxm", "llama-3.3-70b")
    rng = np.random.default_rng(0)
    clocks: list[int | None] = [None, *hw.supported_clocks_mhz[::10]]
    dec = [DecodeShape.from_lengths(rng.integers(100, 3000, size=int(b))) for b in rng.integers(1, 256, size=200)]
    pre = [PrefillShape.from_lengths(rng.integers(16, 2048, size=int(b))) for b in rng.integers(1, 8, size=200)]
    calls = 100_000
    t0 = time.perf_counter()
    for i in range(calls):
        hw.decode_cost(dec[i % 200], 4, clocks[i % len(clocks)])
    decode_us = (time.perf_counter() - t0) / calls * 1e6
    t0 = time.perf_counter()
    throttled = 0
    for i in range(calls):
        c = hw.prefill_cost(pre[i % 200], 4, clocks[i % len(clocks)])
        throttled += c.effective_clock_mhz < (clocks[i % len(clocks)] or hw.max_clock_mhz)
    prefill_us = (time.perf_counter() - t0) / calls * 1e6
    print(
        json.dumps(
            {
                "decode_cost_us": round(decode_us, 3),
                "prefill_cost_us": round(prefill_us, 3),
                "prefill_throttled_pct": round(100.0 * throttled / calls, 1),
                "calls": calls,
            }
        )
    )


if __name__ == "__main__":
    main()
