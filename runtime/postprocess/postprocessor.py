"""Postprocessing of model embeddings: projection (PCA/whitening), L2 norm, descriptor budget.

Everything here is per video and depends on that video alone (plus fixed, shipped
parameters), as the challenge requires of descriptors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.io.descriptors import MAX_DESCRIPTOR_DIM, VideoDescriptors
from runtime.postprocess.budget import BudgetConfig, select_samples
from runtime.postprocess.projection import Projection, l2_normalize
from runtime.records import VideoEmbeddings


@dataclass
class Postprocessor:
    """Embeddings of one video -> its final descriptors.

    Args:
        projection: optional PCA/whitening; required when the model's dim exceeds 512.
        budget: per-video selection rules.
    """

    projection: Projection | None = None
    budget: BudgetConfig = BudgetConfig()

    def output_dim(self, model_dim: int) -> int:
        dim = self.projection.output_dim if self.projection is not None else model_dim
        if dim > MAX_DESCRIPTOR_DIM:
            raise ValueError(f"descriptors would have {dim} dims (> {MAX_DESCRIPTOR_DIM}); ship a projection in model_assets/")
        return dim

    def __call__(self, video: VideoEmbeddings, duration: float | None = None) -> VideoDescriptors:
        """Project, normalise and apply the budget.

        Args:
            video: model output of one video.
            duration: duration from the metadata (the budget's basis); the decoded duration when None.
        """
        features = video.embeddings
        self.output_dim(features.shape[1])
        features = self.projection.apply(features) if self.projection is not None else l2_normalize(features)
        if duration is None:
            duration = video.info.duration if video.info.duration > 0 else float(video.intervals[-1, 1]) if len(video.intervals) else 0.0
        keep = select_samples(features, duration, self.budget)
        return VideoDescriptors(
            video_id=video.video_id,
            timestamps=video.intervals[keep].astype(np.float32),
            features=np.ascontiguousarray(features[keep], dtype=np.float32),
        )

