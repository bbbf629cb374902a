"""The pure core: state machines and data structures with no I/O, no clock, no randomness."""
