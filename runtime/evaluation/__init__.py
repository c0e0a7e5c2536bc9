"""Official-equivalent VSC 2022 metrics: descriptor-track uAP and matching-track segment AP."""

from runtime.evaluation.descriptor_track import (
    DescriptorTrackResult,
    descriptor_track_candidates,
    evaluate_descriptor_files,
    evaluate_descriptor_track,
    micro_average_precision,
)
from runtime.evaluation.matching_track import (
    MatchingTrackResult,
    evaluate_matching_track,
)
from runtime.io.ground_truth import (
    ground_truth_pairs,
    read_candidates_csv,
    read_descriptor_ground_truth,
    read_matching_ground_truth,
    write_candidates_csv,
)
from runtime.io.matches import read_matches_csv, write_matches_csv
from runtime.records import Match

__all__ = [
    "DescriptorTrackResult",
    "Match",
    "MatchingTrackResult",
    "descriptor_track_candidates",
    "evaluate_descriptor_files",
    "evaluate_descriptor_track",
    "evaluate_matching_track",
    "ground_truth_pairs",
    "micro_average_precision",
    "read_candidates_csv",
    "read_descriptor_ground_truth",
    "read_matches_csv",
    "read_matching_ground_truth",
    "write_candidates_csv",
    "write_matches_csv",
]
