"""The embedded demo set: a few small real videos (see ``runtime/demo_data/ATTRIBUTION.md``)."""

from __future__ import annotations

from pathlib import Path

DEMO_DATA_DIR = Path(__file__).resolve().parent.parent / "demo_data"


def demo_data_dir() -> Path:
    """The demo set's directory, laid out like the challenge's ``/data``.

    Raises:
        FileNotFoundError: if the package was installed without its demo data.
    """
    if not (DEMO_DATA_DIR / "query_metadata.csv").is_file():
        raise FileNotFoundError(f"embedded demo set not found at {DEMO_DATA_DIR}; reinstall vcd-runtime")
    return DEMO_DATA_DIR
