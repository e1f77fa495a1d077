"""gpu-install: make Linux hosts run GPU containers."""

__version__ = "0.1.0"
