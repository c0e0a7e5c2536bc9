"""PyAV decode modes (Note [Decode modes] in runtime/decode/pyav.py) on real encoded clips, raw
``.h264`` without timestamps, and the decodable-frame selection against a few-line reference."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest

from runtime.decode.base import DecodeError
from runtime.decode.pyav import DECODE_MODES, PyAVDecoder
from runtime.preprocess.config import PreprocessConfig
from runtime.sampling import SamplingPolicy, select_decodable_frames, timing_tolerance

REPO = Path(__file__).resolve().parent.parent
DEMO_QUERY = REPO / "runtime" / "demo_data" / "query" / "Q200000.mp4"
FPS, FRAMES, KEYINT, BFRAMES = 30, 150, 60, 3
PRE = PreprocessConfig(height=64, width=64, interpolation="area", crop="squash")
POLICY = SamplingPolicy(fps=2.0)


def _textured(index: int, height: int = 240, width: int = 320) -> np.ndarray:
    """Moving noise texture: blocky at low bitrate, so the deblocking filter has work to do."""
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
    return np.ascontiguousarray(np.roll(base, shift=(index * 3, index * 5), axis=(0, 1)))


def _encode(path: Path, container_format: str | None = None) -> Path:
    """H.264 with B-frames (fixed pattern IBBBP..., non-reference B), keyframe every KEYINT frames, deblocking on."""
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "38", "threads": "1",
                          "x264-params": f"keyint={KEYINT}:min-keyint={KEYINT}:scenecut=0:bframes={BFRAMES}:b-adapt=0:b-pyramid=none"}
        for i in range(FRAMES):
            for packet in stream.encode(av.VideoFrame.from_ndarray(_textured(i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def bframe_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _encode(tmp_path_factory.mktemp("modes") / "bframes.mp4")


@pytest.fixture(scope="module")
def raw_h264(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _encode(tmp_path_factory.mktemp("modes") / "raw.h264", container_format="h264")


def _frame_times(path: Path, skip: str | None = None) -> list[float]:
    """Presentation times of the frames FFmpeg outputs (independent of the decoder under test)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if skip:
            stream.codec_context.skip_frame = skip
        return sorted(float(frame.pts * stream.time_base) for frame in container.decode(stream))


def _check_rows(decoded, duration: float) -> None:
    starts, ends = decoded.intervals[:, 0], decoded.intervals[:, 1]
    assert np.all(np.diff(starts) > 0), "timestamps must increase"
    assert np.all(ends > starts) and np.allclose(ends[:-1], starts[1:]), "rows must be contiguous"
    assert starts[0] == 0.0 and ends[-1] == pytest.approx(duration, abs=1e-6)
    assert decoded.images.shape[0] == decoded.intervals.shape[0]


@pytest.mark.parametrize("mode", [m for m in DECODE_MODES if m != "keyframes"])
def test_modes_keep_the_requested_count_within_tolerance(bframe_clip: Path, mode: str) -> None:
    decoded = PyAVDecoder(mode=mode).decode(bframe_clip, POLICY, PRE)
    duration = FRAMES / FPS
    _check_rows(decoded, duration)
    assert decoded.images.shape[0] == math.ceil(duration * POLICY.fps)  # 10 requested samples
    worst = BFRAMES / FPS if "nonref" in decoded.decode_mode else 1 / FPS
    assert decoded.max_time_error <= worst + 1e-6
    assert decoded.max_time_error <= timing_tolerance(POLICY)


def test_nonref_rows_start_at_real_frame_times(bframe_clip: Path) -> None:
    decoded = PyAVDecoder(mode="nonref").decode(bframe_clip, POLICY, PRE)
    shown = np.asarray(_frame_times(bframe_clip, "NONREF"))
    assert len(shown) < FRAMES  # B-frames really were skipped
    requested = np.arange(10) / POLICY.fps
    moved = decoded.intervals[:, 0] < requested - 1e-9
    assert moved.any(), "with B-frames skipped some samples must come from an earlier frame"
    for start in decoded.intervals[moved, 0]:
        assert np.min(np.abs(shown - start)) < 1e-6, f"row start {start} is not the time of a decoded frame"


def test_keyframes_mode_uses_only_keyframes(bframe_clip: Path) -> None:
    decoded = PyAVDecoder(mode="keyframes").decode(bframe_clip, POLICY, PRE)
    _check_rows(decoded, FRAMES / FPS)
    keyframe_times = np.arange(0, FRAMES, KEYINT) / FPS
    assert decoded.decode_mode == "keyframes"
    np.testing.assert_allclose(decoded.intervals[:, 0], keyframe_times, atol=1e-6)
    last_request = 9 / POLICY.fps
    assert decoded.max_time_error == pytest.approx(max(KEYINT / FPS - 1 / POLICY.fps, last_request - keyframe_times[-1]), abs=1e-6)


def test_noloop_decodes_every_frame_without_deblocking(bframe_clip: Path) -> None:
    full = PyAVDecoder(mode="full").decode(bframe_clip, POLICY, PRE)
    noloop = PyAVDecoder(mode="noloop").decode(bframe_clip, POLICY, PRE)
    np.testing.assert_array_equal(full.intervals, noloop.intervals)
    diff = np.abs(full.images.astype(np.int16) - noloop.images).mean()
    assert 0 < diff < 10, f"skip_loop_filter (crf 38, with drift along the P chain) must change pixels a little, mean |diff| = {diff}"


def test_auto_picks_by_tolerance_duration_and_budget(bframe_clip: Path) -> None:
    assert PyAVDecoder(mode="auto").decode(bframe_clip, POLICY, PRE).decode_mode == "nonref-noloop"
    assert PyAVDecoder(mode="auto", max_time_error=0.01).decode(bframe_clip, POLICY, PRE).decode_mode == "noloop"
    assert PyAVDecoder(mode="auto", max_time_error=2.0).decode(bframe_clip, POLICY, PRE).decode_mode == "keyframes"
    assert PyAVDecoder(mode="auto", long_video_seconds=4.0).decode(bframe_clip, POLICY, PRE).decode_mode == "keyframes"
    assert PyAVDecoder(mode="auto", time_budget_seconds=1e-6).decode(bframe_clip, POLICY, PRE).decode_mode == "keyframes"


def test_all_reference_stream_decodes_identically_in_nonref() -> None:
    # The demo (and mini-VSC) clips are x264 ultrafast: no B-frames, no deblocking.
    full = PyAVDecoder(mode="full").decode(DEMO_QUERY, POLICY, PRE)
    for mode in ("nonref", "nonref-noloop", "noloop"):
        other = PyAVDecoder(mode=mode).decode(DEMO_QUERY, POLICY, PRE)
        np.testing.assert_array_equal(full.intervals, other.intervals)
        np.testing.assert_array_equal(full.images, other.images)
        assert other.max_time_error == full.max_time_error < 1 / 25


@pytest.mark.parametrize("mode", DECODE_MODES)
def test_raw_h264_without_timestamps_decodes(raw_h264: Path, mode: str) -> None:
    with av.open(str(raw_h264)) as container:
        stream = container.streams.video[0]
        assert all(p.pts is None for p in container.demux(stream) if p.size)  # the case under test
    rate = FPS  # the encoder's rate (in the SPS), not the raw demuxer's default of 25
    decoded = PyAVDecoder(mode=mode).decode(raw_h264, POLICY, PRE)
    assert decoded.decode_mode in ("full", "noloop")  # index keys: every frame must be decoded
    starts = decoded.intervals[:, 0]
    assert np.all(np.diff(starts) > 0)
    assert decoded.images.shape[0] == math.ceil(FRAMES / rate * POLICY.fps - 1e-6)
    assert decoded.max_time_error < 1 / rate + 1e-6


@pytest.mark.parametrize("which", ["mp4", "raw"])
def test_timeout_is_checked_in_the_timestamp_pass(bframe_clip: Path, raw_h264: Path, which: str) -> None:
    path = bframe_clip if which == "mp4" else raw_h264
    with pytest.raises(DecodeError, match="exceeded the timeout of 0.0 s"):
        PyAVDecoder(timeout_seconds=0.0).decode(path, POLICY, PRE)


def test_bad_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="decode mode must be one of"):
        PyAVDecoder(mode="fast")


def _reference_selection(pts: np.ndarray, mask: np.ndarray, fps: float, end: float) -> tuple[list[int], float]:
    """Latest decodable frame at or before each requested time (the first decodable before it)."""
    t0 = pts.min()
    decodable = [i for i in range(len(pts)) if mask[i]]
    first = min(decodable, key=lambda i: (pts[i], i))
    chosen, worst = [], 0.0
    for k in range(math.ceil(end * fps - 1e-6)):
        t = k / fps
        before = [i for i in decodable if pts[i] - t0 <= t + 1e-6]
        best = max(before, key=lambda i: (pts[i], -i)) if before else first
        worst = max(worst, abs(t - (pts[best] - t0)))
        if not chosen or chosen[-1] != best:
            chosen.append(best)
    return chosen, worst


@pytest.mark.parametrize("seed", range(20))
def test_select_decodable_frames_matches_a_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    count = int(rng.integers(2, 80))
    pts = np.sort(rng.uniform(0, 10, count)) + rng.uniform(0, 3)
    pts = pts[rng.permutation(count)]  # decode order differs from presentation order
    mask = rng.random(count) < rng.uniform(0.1, 1.0)
    mask[rng.integers(count)] = True
    end = float(pts.max() - pts.min()) + 0.1
    selection, error = select_decodable_frames(pts, SamplingPolicy(fps=2.0), end, mask)
    expected, worst = _reference_selection(pts, mask, 2.0, end)
    assert selection.indices.tolist() == expected
    assert error == pytest.approx(worst, abs=1e-9)
    assert np.all(np.diff(selection.intervals[:, 0]) > 0)
    assert np.all(mask[selection.indices])
