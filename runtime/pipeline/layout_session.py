"""The host pipeline with layout views, under its earlier name.

Layout views are an option of the one pipeline now: ``PyAVDecoder.decode(..., layout=settings)``
keeps the planes and cuts the views (``runtime/decode/layout_capture.py``), ``VideoPlan`` carries
them, and the scheduler puts them on ``VideoEmbeddings.views`` / ``.layout``. Build it with
``runtime.pipeline.devices.build_layout_host_pipeline`` (re-exported here) or
``build_host_pipeline(..., layout=settings)``; ``pipeline.run(tasks)`` yields the results with
their views, no side channel needed.
"""

from __future__ import annotations

from runtime.pipeline.devices import build_layout_host_pipeline

__all__ = ["build_layout_host_pipeline"]
