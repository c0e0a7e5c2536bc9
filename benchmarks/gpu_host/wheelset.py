#!/usr/bin/env python3
"""Checks of a wheel set meant for the GPU host's interpreter (no package index there).

    python wheelset.py check WHEEL_DIR [--python 3.12] [--budget-mib 46] [--site DIR]

* every wheel's tags fit CPython X.Y on Linux x86_64 (cpXY / abi3 from an older cp3 / py3;
  manylinux*_x86_64, or linux_x86_64 for the wheels built here);
* one version per project;
* the wheels' total size fits the transfer budget;
* with ``--site`` (the wheels installed into a folder): every shared object's DT_NEEDED
  libraries resolve inside the set (the object's folder or its $ORIGIN runpath) or are ones
  the GPU host provides (glibc, libstdc++, the NVIDIA driver's libcuda/libnvcuvid...).

Exit status 1 when anything is wrong, each problem on its own line. Standard library only
(``readelf`` for the library check).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

# what the GPU host's image and driver provide (libcuda & co come from the driver mount)
HOST_LIBRARIES = {
    "libc.so.6", "libm.so.6", "libmvec.so.1", "libresolv.so.2", "libdl.so.2", "libpthread.so.0", "librt.so.1", "libutil.so.1", "ld-linux-x86-64.so.2",
    "libstdc++.so.6", "libgcc_s.so.1", "libz.so.1",
    "libcuda.so.1", "libnvcuvid.so.1", "libnvidia-encode.so.1", "libnvidia-ml.so.1",
}


@dataclass(frozen=True)
class Wheel:
    path: Path
    project: str
    version: str
    python_tags: tuple[str, ...]
    abi_tags: tuple[str, ...]
    platform_tags: tuple[str, ...]


@dataclass
class Report:
    wheels: list[Wheel] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    total_bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_wheel_name(path: Path) -> Wheel:
    parts = path.name[: -len(".whl")].split("-")
    if not path.name.endswith(".whl") or len(parts) not in (5, 6):
        raise ValueError(f"{path.name}: not a wheel file name")
    name, version, py, abi, plat = parts[0], parts[1], parts[-3], parts[-2], parts[-1]
    return Wheel(path, normalize(name), version, tuple(py.split(".")), tuple(abi.split(".")), tuple(plat.split(".")))


def python_ok(wheel: Wheel, python: tuple[int, int]) -> bool:
    major, minor = python
    exact = f"cp{major}{minor}"
    for py in wheel.python_tags:
        for abi in wheel.abi_tags:
            if py == exact and abi in (exact, "abi3", "none"):
                return True
            m = re.fullmatch(r"cp(\d)(\d+)", py)
            if abi == "abi3" and m and int(m.group(1)) == major and int(m.group(2)) <= minor:
                return True
            if abi == "none" and py in (f"py{major}", f"py{major}{minor}"):
                return True
    return False


def platform_ok(wheel: Wheel) -> bool:
    return any(p == "any" or p == "linux_x86_64" or re.fullmatch(r"manylinux(1|2010|2014|_\d+_\d+)_x86_64", p)
               for p in wheel.platform_tags)


def check_wheels(paths: list[Path], python: tuple[int, int] = (3, 12), budget_bytes: int | None = None) -> Report:
    report = Report()
    seen: dict[str, Wheel] = {}
    for path in paths:
        try:
            wheel = parse_wheel_name(path)
        except ValueError as exc:
            report.problems.append(str(exc))
            continue
        report.wheels.append(wheel)
        report.total_bytes += path.stat().st_size
        if not python_ok(wheel, python):
            report.problems.append(f"{path.name}: not for CPython {python[0]}.{python[1]} (tags {'.'.join(wheel.python_tags)}-{'.'.join(wheel.abi_tags)})")
        if not platform_ok(wheel):
            report.problems.append(f"{path.name}: not for Linux x86_64 (platform {'.'.join(wheel.platform_tags)})")
        if wheel.project in seen:
            report.problems.append(f"two versions of {wheel.project}: {seen[wheel.project].path.name} and {path.name} (pip --no-deps would stop)")
        seen[wheel.project] = wheel
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
                if bad is not None:
                    report.problems.append(f"{path.name}: corrupt member {bad}")
                if not any(n.endswith(".dist-info/WHEEL") for n in zf.namelist()):
                    report.problems.append(f"{path.name}: no .dist-info/WHEEL")
        except zipfile.BadZipFile as exc:
            report.problems.append(f"{path.name}: not a zip ({exc})")
    if budget_bytes is not None and report.total_bytes > budget_bytes:
        report.problems.append(f"wheels total {report.total_bytes / 2**20:.1f} MiB, over the {budget_bytes / 2**20:.1f} MiB budget")
    return report


def _dynamic(path: Path) -> tuple[list[str], list[str]]:
    """(NEEDED, RUNPATH/RPATH entries) of an ELF file, via readelf."""
    out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)
    paths: list[str] = []
    for entry in re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[([^\]]+)\]", out):
        paths.extend(entry.split(":"))
    return needed, paths


def unresolved_libraries(site: Path, host: set[str] | frozenset[str] = frozenset(HOST_LIBRARIES)) -> dict[str, list[str]]:
    """{object (relative to site): [needed libraries found neither in the set nor on the host]}."""
    if shutil.which("readelf") is None:
        raise RuntimeError("readelf is needed for the library check")
    missing: dict[str, list[str]] = {}
    for path in sorted(site.rglob("*.so*")):
        if not path.is_file() or path.is_symlink():
            continue
        with open(path, "rb") as fh:
            if fh.read(4) != b"\x7fELF":
                continue
        needed, runpath = _dynamic(path)
        dirs = [path.parent] + [Path(p.replace("$ORIGIN", str(path.parent)).replace("${ORIGIN}", str(path.parent))) for p in runpath]
        lost = [lib for lib in needed if lib not in host and not any((d / lib).exists() for d in dirs)]
        if lost:
            missing[str(path.relative_to(site))] = lost
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("wheels", type=Path)
    c.add_argument("--python", default="3.12")
    c.add_argument("--budget-mib", type=float, default=None)
    c.add_argument("--site", type=Path, default=None)
    args = parser.parse_args(argv)
    python = tuple(int(x) for x in args.python.split("."))
    report = check_wheels(sorted(args.wheels.glob("*.whl")), python, None if args.budget_mib is None else int(args.budget_mib * 2**20))  # type: ignore[arg-type]
    for wheel in report.wheels:
        print(f"  {wheel.path.name}  {wheel.path.stat().st_size / 2**20:.1f} MiB")
    print(f"{len(report.wheels)} wheels, {report.total_bytes / 2**20:.1f} MiB")
    if args.site is not None:
        for obj, libs in unresolved_libraries(args.site).items():
            report.problems.append(f"{obj}: needs {', '.join(libs)}, found neither in the set nor on the host")
    for problem in report.problems:
        print(f"PROBLEM: {problem}")
    print("wheel set ok" if report.ok else f"{len(report.problems)} problem(s)")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
