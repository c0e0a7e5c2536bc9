"""Matching track: per-query candidate pairs from a faiss kNN search -> temporal alignment -> copied segments.

Note [Per-query candidates]: the candidates of a query are chosen from that query's own kNN
search over the reference set (``runtime.search.candidates.per_query_candidates``), never
from a global top-K over all queries together, so the segments reported for a query are a
function of that query and the references alone. A production system adds and removes
videos continuously; with a global cut a query's matches would change whenever other
queries were added. (The descriptor track's *metric* keeps the official global search, see
``runtime.evaluation.descriptor_track``; that is the scorer, not the matcher.)
"""

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
from runtime.search.candidates import per_query_candidates
from runtime.search.index import ReferenceIndex

# Localisation node thresholds (benchmarks/RESULTS.md): on score-normalised similarities of the
# shipped pack PCA, 0.1 was best among 0.05-0.25 on the dev build (segment AP 0.448 vs 0.437 at 0.15)
# and on the test build (0.568 vs 0.539); raw cosines need more.
SCORE_NORMALIZED_MIN_SIMILARITY = 0.1
RAW_MIN_SIMILARITY = 0.3
# Per-query search: like the official baseline's kNN with k = 20, and as many references per
# query as the descriptor track keeps pairs per query (25).
NEIGHBORS_PER_DESCRIPTOR = 20
MAX_REFS_PER_QUERY = 25


@dataclass(frozen=True)
class MatchingConfig:
    """Settings of the matching stage.

    Attributes:
        score_normalization: applied to raw descriptors when a noise set is given (None = off).
        localization: temporal alignment parameters.
        neighbors_per_descriptor: reference descriptors retrieved per query descriptor.
        max_refs_per_query: candidate references kept per query (Note [Per-query candidates]).
    """

    score_normalization: ScoreNormalization | None = ScoreNormalization()
    localization: LocalizationConfig = field(default_factory=lambda: LocalizationConfig(min_similarity=SCORE_NORMALIZED_MIN_SIMILARITY))
    neighbors_per_descriptor: int = NEIGHBORS_PER_DESCRIPTOR
    max_refs_per_query: int = MAX_REFS_PER_QUERY

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
        Matches with query/reference intervals in seconds and a score; the matches of a
        query do not depend on the other queries (Note [Per-query candidates]).
    """
    if not already_normalized:
        queries, refs = prepare_for_search(queries, refs, noise, config.score_normalization)
    queries = [q for q in queries if len(q)]
    refs = [r for r in refs if len(r)]
    if not queries or not refs:
        return []
    index = ReferenceIndex(refs)
    candidates = per_query_candidates(queries, index, config.neighbors_per_descriptor, config.max_refs_per_query)
    return localize(queries, refs, [(c.query_id, c.ref_id, c.score) for c in candidates], config.localization)
