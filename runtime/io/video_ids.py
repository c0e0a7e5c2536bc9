"""Video ids as the challenge writes them: ``Q000007`` / ``R000007`` for integer ids."""

from __future__ import annotations

from typing import Any, Literal

VideoPairId = tuple[str, str]


def format_video_id(video_id: Any, prefix: Literal["Q", "R"]) -> str:
    """Canonical video id: integer ids (``7`` or ``"7"``) become ``Q000007`` / ``R000007``
    as in the official code; other ids are returned unchanged.

    Args:
        video_id: the id as read from a file.
        prefix: ``"Q"`` for queries, ``"R"`` for references.

    Returns:
        The id as a string.
    """
    if prefix not in ("Q", "R"):
        raise ValueError(f"prefix must be 'Q' or 'R', got {prefix!r}")
    if isinstance(video_id, bool):
        raise ValueError(f"video id must be a str or int, got {video_id!r}")
    if isinstance(video_id, int) or (hasattr(video_id, "dtype") and getattr(video_id.dtype, "kind", "") in "iu"):
        return f"{prefix}{int(video_id):06d}"
    video_id = str(video_id)
    if video_id.isdigit():
        return f"{prefix}{int(video_id):06d}"
    return video_id
