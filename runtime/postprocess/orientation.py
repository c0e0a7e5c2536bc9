"""Is a window of samples turned by a quarter? A linear orientation probe on the model's embeddings.

A copy turned by 90 degrees and resized back to the frame's size (the VSC ``rotate90`` edit) has
no padding or aspect to give it away, but the model input is square: the turned copy's model
input is the original's model input turned by a quarter, so the input turned back embeds like
the original. ``OrientationProbe`` says when to do it: a logistic regression fitted on the
training pack's images and their turned inputs (``onnx_export/fit_orientation.py``) scores how
upright an input looks from its L2-normalised embedding.

Note [Orientation decision]: a window is decided from its own samples only (the rule: a video's
descriptors depend on that video alone), in two steps. The *screen* looks at the window as it is:
a mean upright logit at or above ``screen_logit`` keeps it upright with no extra work. A window
that fails the screen has ``PROBE_SAMPLES`` of its inputs turned by one, three and two quarters
and embedded; it is called turned by ``k`` (1 or 3) quarters when the mean logit of those inputs
turned by ``k`` beats both their mean logit as they are and turned by a half (a vertical flip
looks more upright turned by a quarter than as it is) by ``margin``. Comparing the same frames
with themselves is what makes this reliable where an absolute threshold is not (dark, flat or
textured footage looks "not upright" either way). With ``flip_margin`` the half turn is a candidate
too: a window whose inputs turned by a half beat as they are and both quarter turns by that margin
is upside down, and its inputs are flipped vertically. On the mini-VSC test build no window without
a turned or flipped copy under it was called turned or upside down (``benchmarks/orientation_eval.py``,
``benchmarks/RESULTS.md``, issue 18).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.postprocess.projection import l2_normalize

PROBE_FILE = "orientation_probe.npz"
QUARTER_TURNS = (1, 3, 2)  # counter-clockwise quarter turns embedded for a window that fails the screen
CANDIDATE_TURNS = (1, 3)  # a half turn is only a veto: a vertically flipped picture looks more upright turned by a quarter
PROBE_SAMPLES = 4  # samples of a window embedded turned to decide it (spread evenly); the rest only once it is called turned


def probe_indices(count: int, samples: int = PROBE_SAMPLES) -> np.ndarray:
    """Which of a window's ``count`` samples are embedded turned to decide it: ``samples`` spread evenly (all when fewer)."""
    if count <= samples:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, samples).round().astype(np.int64))


@dataclass(frozen=True)
class OrientationProbe:
    """Upright logit of L2-normalised embeddings: ``x @ weights + bias`` (> 0: looks upright).

    Attributes:
        weights: float32 (D,).
        bias: the intercept.
        screen_logit: a window whose mean logit as it is reaches this stays upright unprobed.
        margin: a turned window's mean logit must beat the window's as it is by this much.
        model_sha256: the ``onnx_sha256`` values of the models the probe was fitted for.
        flip_margin: a half turn is a candidate too: a window that looks more upright turned by a half than as
            it is and turned by a quarter either way, by more than this, is upside down (its inputs are flipped
            vertically); None: the half turn is only a veto.
    """

    weights: np.ndarray
    bias: float
    screen_logit: float
    margin: float
    model_sha256: tuple[str, ...] = ()
    flip_margin: float | None = None

    def __post_init__(self) -> None:
        if self.weights.ndim != 1 or self.weights.dtype != np.float32:
            raise ValueError(f"weights must be a float32 (D,) array, got {self.weights.dtype} {self.weights.shape}")
        if not (np.isfinite(self.weights).all() and np.isfinite([self.bias, self.screen_logit, self.margin]).all()):
            raise ValueError("the orientation probe has non-finite parameters")
        if self.margin < 0 or (self.flip_margin is not None and not self.flip_margin >= 0):
            raise ValueError(f"margin and flip_margin must be >= 0, got {self.margin} and {self.flip_margin}")

    @property
    def dim(self) -> int:
        return int(self.weights.shape[0])

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """(N,) upright logits of (N, D) embeddings (L2-normalised here)."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(f"embeddings must be (N, {self.dim}), got {embeddings.shape}")
        return l2_normalize(embeddings) @ self.weights + np.float32(self.bias)

    def passes_screen(self, upright_logits: np.ndarray) -> bool:
        """Whether a window whose inputs as they are have these logits stays upright unprobed."""
        return len(upright_logits) == 0 or float(np.mean(upright_logits)) >= self.screen_logit

    def decide(self, upright_logits: np.ndarray, turned_logits: dict[int, np.ndarray]) -> tuple[int, float]:
        """(quarter turns to apply, gain) for one window (Note [Orientation decision]).

        Args:
            upright_logits: (N,) logits of the probed inputs as they are.
            turned_logits: quarter turns (``QUARTER_TURNS``) -> (N,) logits of the same inputs turned by that many quarters.

        Returns:
            (turns, gain) with turns 1 or 3 when that gain is above ``margin``, or 2 (upside down) when the
            half turn's gain is above ``flip_margin``, else (0, best gain).
        """
        if len(upright_logits) == 0:
            return 0, 0.0
        means = {0: float(np.mean(upright_logits))} | {k: float(np.mean(v)) for k, v in turned_logits.items() if len(v)}
        candidates = CANDIDATE_TURNS + ((2,) if self.flip_margin is not None else ())
        gains, needed = {}, {}
        for k in candidates:
            if k in means:  # a quarter turn must beat as it is and the half turn; the half turn every other
                rivals = (0, 2) if k in CANDIDATE_TURNS else (0, 1, 3)
                gains[k] = means[k] - max(means[j] for j in rivals if j in means)
                needed[k] = self.margin if k in CANDIDATE_TURNS else self.flip_margin
        if not gains:
            return 0, 0.0
        best = max(gains, key=lambda k: (gains[k], -k))
        return (best, gains[best]) if gains[best] > needed[best] else (0, gains[best])

    def save(self, path: str | Path) -> None:
        np.savez(path, weights=self.weights, bias=np.float64(self.bias), screen_logit=np.float64(self.screen_logit),
                 margin=np.float64(self.margin), model_sha256=np.array(self.model_sha256, dtype=str),
                 flip_margin=np.float64(np.nan if self.flip_margin is None else self.flip_margin))

    @classmethod
    def load(cls, path: str | Path) -> OrientationProbe:
        with np.load(path, allow_pickle=False) as data:
            missing = {"weights", "bias", "screen_logit", "margin", "model_sha256"} - set(data.files)
            if missing:
                raise ValueError(f"{path}: not an orientation probe (missing {sorted(missing)})")
            return cls(data["weights"].astype(np.float32), float(data["bias"]), float(data["screen_logit"]), float(data["margin"]),
                       tuple(str(s) for s in data["model_sha256"]), _optional(data, "flip_margin"))


def _optional(data, name: str) -> float | None:
    """An optional number of a probe file (absent or NaN: None)."""
    if name not in data.files or np.isnan(float(data[name])):
        return None
    return float(data[name])
