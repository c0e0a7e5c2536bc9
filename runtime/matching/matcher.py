"""Matching track: candidate pairs from a global faiss search -> temporal alignment -> copied segments."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from runtime.io.descriptors import VideoDescriptors
from runtime.matching.localization import LocalizationConfig, localize
from runtime.postprocess.score_normalization import (
    ScoreNormalization,
    normalize_queries,
    normalize_references,
)
from runtime.records import Match

# Localisation node thresholds measured on the full mini-VSC (benchmarks/RESULTS.md): on
# score-normalised similarities 0.15 (segment AP 0.474 vs 0.415 at 0); raw cosines need more.
SCORE_NORMALIZED_MIN_SIMILARITY = 0.15
RAW_MIN_SIMILARITY = 0.3


@dataclass(frozen=True)
class MatchingConfig:
    """Settings of the matching stage.

    Attributes:
        score_normalization: applied to raw descriptors when a noise set is given (None = off).
        localization: temporal alignment parameters.
    """

    score_normalization: ScoreNormalization | None = ScoreNormalization()
    localization: LocalizationConfig = field(default_factory=lambda: LocalizationConfig(min_similarity=SCORE_NORMALIZED_MIN_SIMILARITY))

    @classmethod
    def for_descriptors(cls, normalization: ScoreNormalization | None) -> MatchingConfig:
        """The measured defaults for score-normalised (or, with None, raw) descriptors."""
        threshold = SCORE_NORMALIZED_MIN_SIMILARITY if normalization is not None else RAW_MIN_SIMILARITY
        return cls(normalization, LocalizationConfig(min_similarity=threshold))


def prepare_for_search(
    queries: Sequence[VideoDescriptors],
    refs: Sequence[VideoDescriptors],
    noise: np.ndarray | None,
    normalization: ScoreNormalization | None,
) -> tuple[list[VideoDescriptors], list[VideoDescriptors]]:
    """Score-normalise queries and references when a noise set and settings are given."""
    if noise is None or normalization is None:
        return list(queries), list(refs)
    return normalize_queries(queries, noise, normalization), normalize_references(refs, normalization)


def find_matches(
    queries: Sequence[VideoDescriptors],
    refs: Sequence[VideoDescriptors],
    noise: np.ndarray | None = None,
    config: MatchingConfig = MatchingConfig(),
    already_normalized: bool = False,
) -> list[Match]:
    """Copied segments between queries and references, best first within each pair.

    Args:
        queries, refs: per-video descriptors (raw, or already score-normalised).
        noise: noise set of training references for score normalisation (None = off).
        config: matching settings.
        already_normalized: the descriptors already carry the score-normalisation dimension.

    Returns:
        Matches with query/reference intervals in seconds and a score.
    """
    from runtime.evaluation.descriptor_track import descriptor_track_candidates

    if not already_normalized:
        queries, refs = prepare_for_search(queries, refs, noise, config.score_normalization)
    queries = [q for q in queries if len(q)]
    refs = [r for r in refs if len(r)]
    if not queries or not refs:
        return []
    candidates = descriptor_track_candidates(queries, refs)
    return localize(queries, refs, [(c.query_id, c.ref_id, c.score) for c in candidates], config.localization)
