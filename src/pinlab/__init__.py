"""pinlab: an executable model of Linux page pinning and its hazards."""

__version__ = "0.1.0"
