"""sixfold: a quorum storage engine on the design of Amazon Aurora."""

__version__ = "0.1.0"
