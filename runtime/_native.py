"""Import of the compiled ``vcd_core`` extension with an actionable error when it is missing."""

from __future__ import annotations

try:
    import vcd_core
except ImportError as error:  # pragma: no cover - exercised only in broken installs
    raise ImportError(
        "vcd-runtime's C++ extension 'vcd_core' is not importable "
        f"({error}). Build and install it from the repository root with `pip install .` "
        "(or `pip install --no-build-isolation -v .` in a prepared environment)."
    ) from error

__all__ = ["vcd_core"]
