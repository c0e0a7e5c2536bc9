"""Ground-truth and candidate CSV helpers shared by the two evaluation tracks.

The official ground truth is a matching-track CSV
(``query_id,ref_id,query_start,query_end,ref_start,ref_end``); the descriptor track uses
its unique (query_id, ref_id) pairs. Candidate files are ``query_id,ref_id,score``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from runtime.io.video_ids import VideoPairId, format_video_id

if TYPE_CHECKING:
    from runtime.records import CandidatePair, Match



def ground_truth_pairs(ground_truth: Any) -> list[VideoPairId]:
    """The unique (query_id, ref_id) pairs of a ground truth, in first-appearance order.

    Args:
        ground_truth: a pandas DataFrame with ``query_id`` and ``ref_id`` columns (rows
            with an empty ``ref_id`` are ignored, as DrivenData's scorer does), an iterable
            of :class:`~runtime.evaluation.matching_track.Match`, or an iterable of
            (query_id, ref_id) tuples.

    Returns:
        Unique pairs.
    """
    if hasattr(ground_truth, "columns"):
        missing = {"query_id", "ref_id"} - set(ground_truth.columns)
        if missing:
            raise ValueError(
                f"ground-truth DataFrame lacks columns {sorted(missing)}; found {list(ground_truth.columns)}"
            )
        rows = ground_truth[["query_id", "ref_id"]].dropna(subset=["ref_id"])
        items: Iterable[Any] = zip(rows["query_id"].tolist(), rows["ref_id"].tolist())
    else:
        items = ground_truth
    pairs: dict[VideoPairId, None] = {}
    for item in items:
        pair = item.pair_id if hasattr(item, "pair_id") else tuple(item)
        if len(pair) != 2:
            raise ValueError(f"ground-truth items must be (query_id, ref_id) pairs or Match objects, got {item!r}")
        pairs[(str(pair[0]), str(pair[1]))] = None
    return list(pairs)


def read_matching_ground_truth(path: str | os.PathLike) -> list[Match]:
    """Read an official ground-truth CSV (``query_id,ref_id,query_start,query_end,ref_start,ref_end``).

    Args:
        path: CSV path.

    Returns:
        Ground-truth matches (score 1.0).
    """
    from runtime.io.matches import read_matches_csv

    return read_matches_csv(path, is_ground_truth=True)


def read_descriptor_ground_truth(path: str | os.PathLike) -> list[VideoPairId]:
    """Read the descriptor-track ground truth: the unique (query_id, ref_id) pairs of a CSV.

    Works on the matching ground-truth CSV as well as on a plain ``query_id,ref_id`` file.

    Args:
        path: CSV path.

    Returns:
        Unique pairs with canonical ids.
    """
    import pandas as pd

    df = pd.read_csv(path, dtype={"query_id": str, "ref_id": str})
    pairs = ground_truth_pairs(df)
    return list(dict.fromkeys((format_video_id(q, "Q"), format_video_id(r, "R")) for q, r in pairs))


def write_candidates_csv(candidates: Iterable[CandidatePair], path: str | os.PathLike) -> None:
    """Write candidate pairs as ``query_id,ref_id,score``.

    Args:
        candidates: the candidates.
        path: output path (or a text buffer).
    """
    import pandas as pd

    pd.DataFrame(
        [(c.query_id, c.ref_id, c.score) for c in candidates], columns=["query_id", "ref_id", "score"]
    ).to_csv(path, index=False)


def read_candidates_csv(path: str | os.PathLike) -> list[CandidatePair]:
    """Read candidate pairs written by :func:`write_candidates_csv` (or the official code).

    Args:
        path: CSV path (or a text buffer).

    Returns:
        The candidates in file order.
    """
    import pandas as pd

    from runtime.records import CandidatePair

    df = pd.read_csv(path, dtype={"query_id": str, "ref_id": str})
    missing = {"query_id", "ref_id", "score"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}; found {list(df.columns)}")
    return [
        CandidatePair(format_video_id(q, "Q"), format_video_id(r, "R"), float(s))
        for q, r, s in zip(df["query_id"], df["ref_id"], df["score"])
    ]


__all__ = [
    "VideoPairId",
    "format_video_id",
    "ground_truth_pairs",
    "read_candidates_csv",
    "read_descriptor_ground_truth",
    "read_matching_ground_truth",
    "write_candidates_csv",
]
