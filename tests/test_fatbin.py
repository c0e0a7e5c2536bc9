"""The built kernel fatbin holds SASS for sm_70 (the challenge's V100), sm_80 and sm_90, plus PTX.

The fatbin container is parsed here from its header (a format of CUDA's fatbinary tool:
a 16-byte header with magic 0xBA55ED50, then one entry per image with its kind, header
size, payload size and SM version), each ELF image's own e_flags are checked against the
SM its entry claims, and, where cuobjdump is installed, its listing must agree. Skips when
no fatbin was built (no CUDA toolchain at build time).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from runtime.preprocess.cuda import find_fatbin

FATBIN_MAGIC = 0xBA55ED50
KIND_PTX, KIND_ELF = 1, 2
REQUIRED_SASS = (70, 80, 90)


@dataclass(frozen=True)
class FatbinImage:
    kind: int  # KIND_PTX or KIND_ELF
    sm: int
    payload: bytes


def parse_fatbin(data: bytes) -> list[FatbinImage]:
    """The images of a fatbin file (one container, as `fatbinary --create` writes it)."""
    magic, version, header_size, body_size = struct.unpack_from("<IHHQ", data, 0)
    if magic != FATBIN_MAGIC:
        raise ValueError(f"not a fatbin: magic {magic:#x}")
    if version != 1 or header_size + body_size > len(data):
        raise ValueError(f"unexpected fatbin header: version {version}, {header_size} + {body_size} > {len(data)} bytes")
    images, offset, end = [], header_size, header_size + body_size
    while offset < end:
        kind, _, entry_header, payload_size = struct.unpack_from("<HHIQ", data, offset)
        (sm,) = struct.unpack_from("<I", data, offset + 28)
        if kind not in (KIND_PTX, KIND_ELF) or entry_header < 32:
            raise ValueError(f"bad fatbin entry at byte {offset}: kind {kind}, header {entry_header}")
        start = offset + entry_header
        images.append(FatbinImage(kind, sm, data[start : start + payload_size]))
        offset = start + payload_size
    return images


def elf_sm(cubin: bytes) -> int | None:
    """The SM a CUDA ELF was compiled for, from e_flags (ELF ABI version 7); None if not that ABI."""
    if cubin[:4] != b"\x7fELF" or cubin[4] != 2 or cubin[8] != 7:
        return None
    (e_flags,) = struct.unpack_from("<I", cubin, 48)
    return e_flags & 0xFF


@pytest.fixture(scope="module")
def fatbin() -> Path:
    path = find_fatbin()
    if path is None:
        pytest.skip("no preprocess_kernels.fatbin was built (no CUDA toolkit at build time; see cmake/cuda.cmake)")
    return path


def test_fatbin_has_sass_for_sm70_sm80_sm90_and_ptx(fatbin: Path) -> None:
    images = parse_fatbin(fatbin.read_bytes())
    sass = sorted(image.sm for image in images if image.kind == KIND_ELF)
    ptx = sorted(image.sm for image in images if image.kind == KIND_PTX)
    missing = [sm for sm in REQUIRED_SASS if sm not in sass]
    assert not missing, (
        f"{fatbin} has SASS for sm {sass} but lacks sm {missing}; sm_70 needs NVRTC 12 at build time when nvcc is 13+ "
        "(Note [Which compiler builds the fatbin] in cmake/cuda.cmake)"
    )
    assert ptx, f"{fatbin} has no PTX image (SASS for sm {sass})"
    assert max(ptx) >= max(sass), "the PTX must be for the newest architecture, so newer GPUs can JIT it"


def test_each_image_is_what_its_entry_says(fatbin: Path) -> None:
    for image in parse_fatbin(fatbin.read_bytes()):
        if image.kind == KIND_ELF:
            sm = elf_sm(image.payload)
            assert sm is None or sm == image.sm, f"ELF for sm_{sm} in an entry for sm_{image.sm}"
        else:
            text = image.payload.decode("ascii", errors="replace")
            match = re.search(r"^\.target\s+sm_(\d+)", text, re.MULTILINE)
            assert match, "the PTX image is compressed or not PTX (the build writes it uncompressed)"
            assert int(match.group(1)) == image.sm
            assert "vcd_nv12_to_rgb_planar_u8" in text and "vcd_u8_to_f32" in text


def test_cuobjdump_lists_the_same_architectures(fatbin: Path) -> None:
    # On PATH, in the system toolkit, or from PyPI's nvidia-cuda-cuobjdump (nvidia/cu13/bin).
    spec = importlib.util.find_spec("nvidia")
    wheels = [Path(root) for root in (spec.submodule_search_locations or [])] if spec else []
    candidates = [Path("/usr/local/cuda/bin/cuobjdump"), *(p for root in wheels for p in root.glob("*/bin/cuobjdump"))]
    cuobjdump = shutil.which("cuobjdump") or next((str(p) for p in candidates if p.is_file()), None)
    if cuobjdump is None:
        pytest.skip("cuobjdump is not installed (the header parse above still ran)")
    listing = subprocess.run(
        [cuobjdump, "--list-elf", "--list-ptx", str(fatbin)], capture_output=True, text=True, check=True
    ).stdout
    images = parse_fatbin(fatbin.read_bytes())
    assert sorted(int(sm) for sm in re.findall(r"ELF file.*sm_(\d+)", listing)) == sorted(
        i.sm for i in images if i.kind == KIND_ELF
    )
    assert sorted(int(sm) for sm in re.findall(r"PTX file.*sm_(\d+)", listing)) == sorted(
        i.sm for i in images if i.kind == KIND_PTX
    )


def test_parser_rejects_what_is_not_a_fatbin() -> None:
    with pytest.raises(ValueError, match="not a fatbin"):
        parse_fatbin(b"\x7fELF" + bytes(60))
