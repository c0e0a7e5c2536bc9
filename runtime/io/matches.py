"""Matching-track CSV files (``query_id, ref_id, query_start, query_end, ref_start, ref_end, score``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict

from runtime.records import Match

MATCH_COLUMNS = ("query_id", "ref_id", "query_start", "query_end", "ref_start", "ref_end", "score")
GROUND_TRUTH_COLUMNS = MATCH_COLUMNS[:-1]


def read_matches_csv(path: str | os.PathLike, *, is_ground_truth: bool = False) -> list[Match]:
    """Read matches from a CSV with a header (columns in any order, extra columns ignored).

    Args:
        path: CSV path (or a text buffer).
        is_ground_truth: if true the ``score`` column is optional and ignored (scores 1.0).

    Returns:
        The matches in file order. Integer ids become ``Q%06d`` / ``R%06d`` as in the
        official reader.

    Raises:
        ValueError: on missing columns or empty cells.
    """
    import pandas as pd

    from runtime.io.video_ids import format_video_id

    df = pd.read_csv(path, dtype={"query_id": str, "ref_id": str})
    required = GROUND_TRUTH_COLUMNS if is_ground_truth else MATCH_COLUMNS
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; required {list(required)}, found {list(df.columns)}")
    df = df[list(required)]
    if df.isna().any().any():
        bad = df.columns[df.isna().any()].tolist()
        raise ValueError(f"{path}: empty cells in columns {bad}")
    numbers = df[list(required[2:])].astype(float).to_numpy()
    matches = []
    for query_id, ref_id, row in zip(df["query_id"], df["ref_id"], numbers.tolist()):
        matches.append(
            Match(format_video_id(query_id, "Q"), format_video_id(ref_id, "R"), *row[:4], *(row[4:] or [1.0]))
        )
    return matches


def write_matches_csv(matches: Iterable[Match], path: str | os.PathLike, *, is_ground_truth: bool = False) -> None:
    """Write matches as CSV with columns ``query_id,ref_id,query_start,query_end,ref_start,ref_end[,score]``.

    Args:
        matches: the matches.
        path: output path (or a text buffer).
        is_ground_truth: omit the score column.
    """
    import pandas as pd

    columns = list(GROUND_TRUTH_COLUMNS if is_ground_truth else MATCH_COLUMNS)
    pd.DataFrame([asdict(m) for m in matches], columns=list(MATCH_COLUMNS))[columns].to_csv(path, index=False)
