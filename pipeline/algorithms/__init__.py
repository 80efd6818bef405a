"""The formulas of docs/algorithms.md: advantages, policy losses, regularisers, corrections, presets."""
