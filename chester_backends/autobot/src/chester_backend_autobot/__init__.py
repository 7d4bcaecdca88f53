"""chester backend: a lab's GPU nodes behind one login host (see docs/backends/autobot.md)."""

__version__ = "0.3.0"
