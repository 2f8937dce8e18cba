"""Tier 1: placement planning. Capacity table (what one instance of each configuration sustains), the
energy-minimising placement MILP, load forecasters and the planners. See docs/planning.md."""
