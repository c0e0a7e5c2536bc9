"""Build-time helper for cmake/cuda.cmake: compile the CUDA kernels with NVRTC 12 into one fatbin.

CUDA 13's nvcc cannot target sm_70 (the V100), and PyPI's ``nvidia-cuda-nvcc-cu12`` wheels
ship no ``nvcc`` driver (only ptxas and libnvvm), so this uses the CUDA 12 runtime compiler
from ``nvidia-cuda-nvrtc-cu12`` (a build requirement) for every architecture, and the
system toolkit's ``fatbinary`` to pack the images (Note [Which compiler builds the fatbin]
in cmake/cuda.cmake).

    python cmake/nvrtc_fatbin.py find
        prints "<libnvrtc path>;<major.minor>;<supported sm list>" or exits 1 with a reason.
    python cmake/nvrtc_fatbin.py build --nvrtc LIB --fatbinary EXE --source K.cu
            --sm 70 80 90 --ptx 90 --output K.fatbin [--option=--fmad=false ...]
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

_LIBRARY_NAMES = ("libnvrtc.so.12", "libnvrtc.so")


def _candidates() -> list[Path]:
    override = os.environ.get("VCD_NVRTC_LIBRARY")
    if override:
        return [Path(override)]
    found = []
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        found += [Path(root) / "cuda_nvrtc" / "lib" / name for name in _LIBRARY_NAMES]
    for home in (os.environ.get("CUDA12_HOME"), "/usr/local/cuda-12"):
        if home:
            found += [Path(home) / "lib64" / name for name in _LIBRARY_NAMES]
    return found


class Nvrtc:
    """The few NVRTC calls we need, through ctypes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lib = ctypes.CDLL(str(path))
        self._lib.nvrtcGetErrorString.restype = ctypes.c_char_p

    def _check(self, result: int, what: str) -> None:
        if result != 0:
            raise RuntimeError(f"{what}: {self._lib.nvrtcGetErrorString(result).decode()}")

    def version(self) -> tuple[int, int]:
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(self._lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        return major.value, minor.value

    def supported_archs(self) -> list[int]:
        count = ctypes.c_int()
        self._check(self._lib.nvrtcGetNumSupportedArchs(ctypes.byref(count)), "nvrtcGetNumSupportedArchs")
        archs = (ctypes.c_int * count.value)()
        self._check(self._lib.nvrtcGetSupportedArchs(archs), "nvrtcGetSupportedArchs")
        return list(archs)

    def compile(self, source: bytes, name: str, arch: str, options: list[str]) -> bytes:
        """PTX (arch ``compute_XX``) or a cubin (arch ``sm_XX``) of ``source``."""
        program = ctypes.c_void_p()
        self._check(
            self._lib.nvrtcCreateProgram(ctypes.byref(program), source, name.encode(), 0, None, None),
            "nvrtcCreateProgram",
        )
        try:
            argv = [f"--gpu-architecture={arch}", *options]
            array = (ctypes.c_char_p * len(argv))(*[a.encode() for a in argv])
            result = self._lib.nvrtcCompileProgram(program, len(argv), array)
            size = ctypes.c_size_t()
            self._lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            self._lib.nvrtcGetProgramLog(program, log)
            text = log.value.decode(errors="replace").strip()
            # NVRTC 12 warns that sm_70 is deprecated; nothing else is expected here.
            if result != 0:
                raise RuntimeError(f"NVRTC failed for {arch}:\n{text}")
            if text and "deprecated" not in text:
                print(text, file=sys.stderr)
            get_size, get = (
                (self._lib.nvrtcGetCUBINSize, self._lib.nvrtcGetCUBIN)
                if arch.startswith("sm_")
                else (self._lib.nvrtcGetPTXSize, self._lib.nvrtcGetPTX)
            )
            self._check(get_size(program, ctypes.byref(size)), f"size of the {arch} output")
            output = ctypes.create_string_buffer(size.value)
            self._check(get(program, output), f"the {arch} output")
            # PTX comes NUL-terminated; fatbinary wants the text only.
            return output.raw if arch.startswith("sm_") else output.raw.rstrip(b"\0")
        finally:
            self._lib.nvrtcDestroyProgram(ctypes.byref(program))


def find() -> int:
    reasons = []
    for path in _candidates():
        if not path.is_file():
            continue
        try:
            nvrtc = Nvrtc(path)
            major, minor = nvrtc.version()
            archs = nvrtc.supported_archs()
        except (OSError, RuntimeError, AttributeError) as exc:
            reasons.append(f"{path}: {exc}")
            continue
        print(f"{path};{major}.{minor};{','.join(str(a) for a in archs)}", end="")
        return 0
    looked = ", ".join(str(p) for p in _candidates()) or "nothing"
    print(f"no usable NVRTC 12 (looked at {looked}){'; ' + '; '.join(reasons) if reasons else ''}", file=sys.stderr)
    return 1


def build(args: argparse.Namespace) -> int:
    nvrtc = Nvrtc(Path(args.nvrtc))
    source = Path(args.source).read_bytes()
    images = []
    with tempfile.TemporaryDirectory(prefix="vcd-nvrtc-") as tmp:
        for sm in args.sm:
            cubin = Path(tmp) / f"sm_{sm}.cubin"
            cubin.write_bytes(nvrtc.compile(source, Path(args.source).name, f"sm_{sm}", args.option))
            images.append(f"--image3=kind=elf,sm={sm},file={cubin}")
        for ptx_arch in args.ptx:
            ptx = Path(tmp) / f"compute_{ptx_arch}.ptx"
            ptx.write_bytes(nvrtc.compile(source, Path(args.source).name, f"compute_{ptx_arch}", args.option))
            images.append(f"--image3=kind=ptx,sm={ptx_arch},file={ptx}")
        # Uncompressed: CUDA 13's fatbinary compresses PTX with zstd by default, which older
        # drivers (the V100 hosts') may not read.
        subprocess.run([args.fatbinary, "--64", "--compress=false", f"--create={args.output}", *images], check=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("find", help="locate NVRTC 12")
    b = sub.add_parser("build", help="compile the kernels into a fatbin")
    b.add_argument("--nvrtc", required=True)
    b.add_argument("--fatbinary", required=True)
    b.add_argument("--source", required=True)
    b.add_argument("--sm", nargs="+", type=int, required=True, help="SASS architectures")
    b.add_argument("--ptx", nargs="*", type=int, default=[], help="PTX architectures")
    b.add_argument("--output", required=True)
    b.add_argument("--option", action="append", default=[], help="an NVRTC option, e.g. --option=--fmad=false")
    args = parser.parse_args(argv)
    try:
        return find() if args.command == "find" else build(args)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"nvrtc_fatbin: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
