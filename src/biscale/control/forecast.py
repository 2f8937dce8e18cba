"""The registry tier-1 load forecasters register into (empty until the planner package adds them).

A forecaster predicts the next window's load (arrival rate, length mix) from what planners observed; the planner
package defines their interface and registers each implementation here with
``@FORECASTERS.register("name", "help line")``, so configurations and the CLI select them by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from biscale.registry import Registry

#: Registry: name -> forecaster factory.
FORECASTERS: Registry[Callable[..., Any]] = Registry("forecaster", field="forecaster")
