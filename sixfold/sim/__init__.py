"""The deterministic simulator that runs the pure core under faults (python -m sixfold.sim)."""
