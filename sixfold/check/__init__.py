"""The consistency checkers: histories, linearizability, multi-page invariants."""
