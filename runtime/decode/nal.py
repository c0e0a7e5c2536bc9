"""H.264 / HEVC NAL headers read in the demux pass: whether a packet holds a reference picture.

``PyAVDecoder``'s demux pass (``runtime/decode/pyav.py``, Note [Decode modes]) predicts which
frames ``skip_frame=NONREF`` outputs from these flags without decoding anything.
"""

from __future__ import annotations


def nal_length_size(codec: str, extradata: bytes | None) -> int:
    """NAL length-prefix size from avcC (H.264) / hvcC (HEVC) extradata; 0 = Annex B start codes."""
    if not extradata or extradata[0] != 1:
        return 0
    if codec == "hevc":
        return (extradata[21] & 3) + 1 if len(extradata) > 21 else 4
    return (extradata[4] & 3) + 1 if len(extradata) > 4 else 4


def nal_headers(data: bytes, length_size: int) -> list[int]:
    """First header byte(s) offsets of each NAL unit in a packet (length-prefixed or Annex B)."""
    offsets = []
    if length_size:
        pos = 0
        while pos + length_size < len(data):
            size = int.from_bytes(data[pos : pos + length_size], "big")
            offsets.append(pos + length_size)
            pos += length_size + size
        return offsets
    pos = data.find(b"\x00\x00\x01")
    while pos >= 0 and pos + 3 < len(data):
        offsets.append(pos + 3)
        pos = data.find(b"\x00\x00\x01", pos + 3)
    return offsets


def h264_is_reference(data: bytes, length_size: int) -> bool:
    """Whether a packet holds a reference picture (a VCL NAL with nal_ref_idc != 0); unknown -> True."""
    vcl = [data[o] for o in nal_headers(data, length_size) if data[o] & 0x1F in (1, 5)]
    return not vcl or any(header & 0x60 for header in vcl)


def hevc_is_reference(data: bytes, length_size: int) -> bool:
    """HEVC: sub-layer non-reference VCL types (TRAIL_N, TSA_N, ... RSV_VCL_N14) are the even types < 16."""
    types = [(data[o] >> 1) & 0x3F for o in nal_headers(data, length_size)]
    vcl = [t for t in types if t < 32]
    return not vcl or any(not (t < 16 and t % 2 == 0) for t in vcl)


NAL_PARSERS = {"h264": h264_is_reference, "hevc": hevc_is_reference}
