"""vcd-runtime: a high-throughput inference runtime for video copy detection (VSC 2022)."""

__version__ = "0.1.0"
