"""starlingpy: a Starling-compatible durable message queue server on trio."""

__version__ = "0.1.0"
