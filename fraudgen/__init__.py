"""fraudgen: synthetic financial transactions and labelled fraud scenarios, at scale, on Ray."""

__version__ = "0.1.0"
