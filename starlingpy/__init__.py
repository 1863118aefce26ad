"""starlingpy: a Starling-compatible durable message queue server on trio."""

__version__ = "0.1.0"

DEFAULT_PORT = 22122
# Where servers listen and clients look when told nothing else.
DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORT}"
