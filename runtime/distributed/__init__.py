"""Extraction beyond one process: videos sharded over Ray workers, per-video results in a store, merged on request."""
