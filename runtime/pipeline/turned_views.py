"""Turned views: the layout views' answer to copies turned by 90 degrees with no padding (issue 18).

With ``--layout-views`` the pipeline keeps each video's model inputs on its result
(``VideoEmbeddings.inputs``). ``TurnedViews`` decides every window of the video that is not split
(Note [Orientation decision] in ``runtime/postprocess/orientation.py``) from the video's own rows
and, for a window called turned by ``k`` quarters, embeds its whole-picture inputs turned by ``k``
as one more view of the window (kind ``turned``). The budget (``LayoutPostprocessor``) then treats
that view like the parts of a split window: they replace the window's whole frames. The model input
is square, so turning it is exact: no second decode. Windows with parts (cells, a
picture-in-picture window, turned views from padding) are left as they are. The result no longer
carries the inputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from runtime.postprocess.orientation import (
    QUARTER_TURNS,
    OrientationProbe,
    probe_indices,
)
from runtime.preprocess.layout import turn_images, window_bounds
from runtime.records import VideoEmbeddings


def _righted(inputs: np.ndarray, turns: int) -> np.ndarray:
    """The inputs of a window decided ``turns`` (Note [Orientation decision]) made upright: turned back by a
    quarter, or flipped vertically when upside down (undoing a vertical flip exactly, a half turn up to a mirror)."""
    return np.ascontiguousarray(inputs[:, :, ::-1]) if turns == 2 else turn_images(inputs, turns)


@dataclass
class TurnedViews:
    """Adds turned views to the windows of a video its orientation probe calls turned (module docstring).

    Args:
        probe: the orientation probe of the model.
        backend: an activated ``InferenceBackend`` (the pipeline's: ONNX Runtime sessions take concurrent runs).
        window_samples: samples per window of a video without layout windows (``LayoutSettings.window_samples``).
    """

    probe: OrientationProbe
    backend: Any
    window_samples: int

    def __call__(self, video: VideoEmbeddings) -> VideoEmbeddings:
        """The video with its turned views added (unchanged apart from dropping ``inputs`` when none is turned)."""
        inputs = video.inputs
        if inputs is None:  # over the pipeline's cap (its notes say so): not probed
            return replace(video, layout={**video.layout, "orientation": {"skipped": "the model inputs were not kept"}}) if video.layout else video
        video = replace(video, inputs=None)
        count = len(video.embeddings)
        if len(inputs) != count or count == 0:
            return video
        start = time.perf_counter()
        views = np.zeros(count, np.int16) if video.views is None else np.asarray(video.views)
        windows = self._windows(video, count)
        upright = self.probe.logits(video.embeddings)
        added: list[tuple[int, int, np.ndarray, np.ndarray]] = []  # (window, turns, rows, embeddings)
        probed: dict[int, float] = {}
        embedded = 0
        for window in np.unique(windows):
            rows = np.flatnonzero(windows == window)
            if np.any(views[rows] != 0) or self.probe.passes_screen(upright[rows]):
                continue
            picked = rows[probe_indices(len(rows))]
            turned = self.backend.infer(np.concatenate([turn_images(inputs[picked], k) for k in QUARTER_TURNS]))
            by_turns = dict(zip(QUARTER_TURNS, np.split(turned, len(QUARTER_TURNS))))
            embedded += len(turned)
            turns, gain = self.probe.decide(upright[picked], {k: self.probe.logits(e) for k, e in by_turns.items()})
            probed[int(window)] = round(gain, 4)
            if turns in (1, 3):  # the probe's own turned rows serve; the rest of the window is embedded turned
                rest = np.setdiff1d(rows, picked)
                embeddings = np.empty((len(rows), video.embeddings.shape[1]), np.float32)
                embeddings[np.searchsorted(rows, picked)] = by_turns[turns]
                if len(rest):
                    embeddings[np.searchsorted(rows, rest)] = self.backend.infer(_righted(inputs[rest], turns))
                    embedded += len(rest)
                added.append((int(window), turns, rows, embeddings))
            elif turns == 2:
                added.append((int(window), turns, rows, self.backend.infer(_righted(inputs[rows], turns))))
                embedded += len(rows)
        seconds = time.perf_counter() - start
        layout = _record(video.layout, probed, added, embedded, seconds)
        timings = {**video.timings, "orientation": seconds}
        if not added:
            return replace(video, layout=layout, timings=timings)
        source = np.concatenate([np.arange(count)] + [r for _, _, r, _ in added])  # the whole-picture row each row comes from
        new_views = np.concatenate([views] + [np.full(len(r), 1, np.int16) for _, _, r, _ in added])
        new_windows = np.concatenate([windows] + [np.full(len(r), w, windows.dtype) for w, _, r, _ in added])
        embeddings = np.concatenate([video.embeddings] + [e for _, _, _, e in added])
        order = np.lexsort((new_views, source))  # Note [Layout rows]: a sample's rows together, samples in time order
        return replace(video, intervals=video.intervals[source[order]], embeddings=embeddings[order], views=new_views[order],
                       windows=new_windows[order], layout=layout, timings=timings)

    def _windows(self, video: VideoEmbeddings, count: int) -> np.ndarray:
        """Window of each row: the layout's, else ``window_samples`` consecutive samples (one row per sample)."""
        if video.windows is not None:
            return np.asarray(video.windows, np.int32)
        if video.views is not None:  # views decided for the whole video
            return np.zeros(count, np.int32)
        bounds = window_bounds(count, self.window_samples)
        return np.repeat(np.arange(len(bounds), dtype=np.int32), [b - a for a, b in bounds])


def _record(layout: dict | None, probed: dict[int, float], added: list, embedded: int, seconds: float) -> dict:
    """The layout record with the orientation decisions: per probed window its gain, turned windows marked."""
    record = dict(layout or {})
    decisions = [dict(w) for w in record.get("windows", [])]
    for window, turns, _, _ in added:
        if window < len(decisions):
            decision = decisions[window]
            whole = decision.get("views", [{}])[0].get("rect")
            if turns == 2:
                decision["views"] = [*decision.get("views", []), {"kind": "flipped", "rect": whole, "quarter_turns": 0}]
                decision["kind"] = "flipped"
            else:
                decision["views"] = [*decision.get("views", []), {"kind": "turned", "rect": whole, "quarter_turns": turns}]
                decision["kind"] = "turned"
    for window, gain in probed.items():
        if window < len(decisions):
            decisions[window]["orientation_gain"] = gain
    if decisions:
        record["windows"] = decisions
        record["kind"] = "+".join(sorted({d.get("kind", "plain") for d in decisions}))
    elif added:
        record["kind"] = "+".join(sorted({"flipped" if turns == 2 else "turned" for _, turns, _, _ in added}))
    record["orientation"] = {"probed_windows": sorted(probed), "turned_windows": [w for w, *_ in added],
                             "images_embedded": embedded, "seconds": round(seconds, 4)}
    return record
