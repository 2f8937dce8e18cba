"""Predicted-vs-measured plots of the calibration checks (``biscale calibrate`` writes one PNG per check)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from biscale.hardware.calibration.checks import Check


def plot_checks(checks: list[Check], out_dir: Path) -> list[Path]:
    """One predicted-vs-measured PNG per check (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for chk in checks:
        fig, ax = plt.subplots(figsize=(5, 5))
        x = np.array(chk.measured)
        y = np.array(chk.predicted)
        ax.scatter(x, y, s=10)
        lo = float(min(x.min(), y.min()))
        hi = float(max(x.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"measured ({chk.unit})" if chk.unit else "measured")
        ax.set_ylabel(f"predicted ({chk.unit})" if chk.unit else "predicted")
        ax.set_title(f"{chk.name} ({chk.role}): MAPE {chk.error_pct:.1f}% (tol {chk.tolerance_pct:.0f}%)", fontsize=9)
        if hi / max(lo, 1e-12) > 20:
            ax.set_xscale("log")
            ax.set_yscale("log")
        fig.tight_layout()
        path = out_dir / f"{chk.name}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths
