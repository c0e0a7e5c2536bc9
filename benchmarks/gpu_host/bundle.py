#!/usr/bin/env python3
"""Pack a directory into compressed, checksummed parts; stage them one at a time; install them.

Made for the GPU host, which has no package index and takes at most 64 MiB per device call
(the git working tree included), so a large offline bundle travels as ~40 MiB parts, one per
call, and is put together there. Standard library only (runs on any CPython >= 3.8).

    python bundle.py pack SRC_DIR OUT_DIR [--part-mib 40] [--compressor xz|zstd|none] [--name NAME]
    python bundle.py stage PART_OR_DIR... --stage-dir DIR      # verify each part, copy it; parts already staged are skipped
    python bundle.py status --stage-dir DIR                    # which parts are staged / missing
    python bundle.py install --stage-dir DIR --dest DEST       # all parts present + verified -> unpack to DEST
    python bundle.py resplit OUT_DIR --part-mib 44               # cut the parts again at another size (no recompression)

``pack`` writes ``part-000``, ``part-001``, ... and ``MANIFEST.json`` (every part's size and
sha256, and the whole archive's) into OUT_DIR. ``stage`` reads the manifest beside the part
(or ``--manifest``), so a part is checked the moment it arrives; parts may arrive in any
order and a call may be repeated (resumable). ``install`` re-checks every part, streams their
concatenation through the whole-archive sha256 and the decompressor into a temporary folder
next to DEST, and renames it into place only when everything matched.

Exit codes: 0 ok, 2 usage / missing parts, 3 a corrupt part or archive.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import BinaryIO, Iterable

FORMAT = 1
MANIFEST = "MANIFEST.json"
CHUNK = 1 << 20


class BundleError(Exception):
    """A problem with the bundle itself; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def part_name(index: int) -> str:
    return f"part-{index:03d}"


# -- pack ------------------------------------------------------------------------------------


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # reproducible archives: no owner names, fixed ids; keep modes, mtimes and links
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_tar(src: Path, out: BinaryIO) -> None:
    """Uncompressed tar of src's contents (paths relative to src), sorted, links kept as links."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for root, dirs, files in os.walk(src):
            dirs.sort()
            base = Path(root)
            for name in sorted(dirs + files):
                path = base / name
                arcname = str(path.relative_to(src))
                tar.add(path, arcname=arcname, recursive=False, filter=_tar_filter)


def _compressor_cmd(compressor: str, level: int | None, threads: int) -> list[str] | None:
    if compressor == "xz" and shutil.which("xz"):
        return ["xz", f"-{9 if level is None else level}", f"-T{threads}", "-c"]
    if compressor == "zstd":
        if not shutil.which("zstd"):
            raise BundleError("--compressor zstd needs the zstd program on PATH")
        return ["zstd", f"-{19 if level is None else level}", f"-T{threads}", "--long=27", "-q", "-c"]
    return None


def pack(src: Path, out_dir: Path, part_bytes: int, compressor: str = "xz", level: int | None = None,
         name: str = "bundle", threads: int = 2, nice: bool = True) -> dict:
    """Tar + compress src, split the archive into parts of part_bytes; returns the manifest."""
    if not src.is_dir():
        raise BundleError(f"not a directory: {src}")
    if part_bytes < 1:
        raise BundleError("part size must be positive")
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in list(out_dir.glob("part-*")) + [out_dir / MANIFEST]:
        old.unlink(missing_ok=True)
    ext = {"xz": ".tar.xz", "zstd": ".tar.zst", "none": ".tar"}[compressor]
    archive = out_dir / f"{name}{ext}.tmp"
    start = time.perf_counter()
    cmd = _compressor_cmd(compressor, level, threads)
    with open(archive, "wb") as fh:
        if cmd is not None:
            if nice and shutil.which("nice"):
                cmd = ["nice", "-n", "19", *cmd]
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=fh)
            assert proc.stdin is not None
            try:
                write_tar(src, proc.stdin)
            finally:
                proc.stdin.close()
            if proc.wait() != 0:
                raise BundleError(f"{cmd[0] if cmd[0] != 'nice' else cmd[3]} failed with status {proc.returncode}")
        elif compressor == "xz":  # no xz program: the stdlib's liblzma (single thread)
            with lzma.open(fh, "wb", preset=9 if level is None else level) as zfh:
                write_tar(src, zfh)
        else:
            write_tar(src, fh)
    seconds = time.perf_counter() - start
    parts, digest, total = _split([archive], out_dir, part_bytes)
    archive.unlink()
    manifest = {
        "format": FORMAT,
        "name": name,
        "compressor": compressor,
        "archive": {"size": total, "sha256": digest},
        "part_bytes": part_bytes,
        "parts": parts,
        "pack_seconds": round(seconds, 1),
        "source_bytes": sum(p.stat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink()),
    }
    _write_manifest(out_dir, manifest)
    return manifest


def _split(sources: list[Path], out_dir: Path, part_bytes: int) -> tuple[list[dict], str, int]:
    """Cut the concatenation of sources into out_dir/part-NNN; returns (part entries, whole sha256, size)."""
    parts: list[dict] = []
    whole = hashlib.sha256()
    reader = _HashingReader(sources)
    index = 0
    while True:
        block_digest, size = hashlib.sha256(), 0
        path = out_dir / (part_name(index) + ".new")
        with open(path, "wb") as part:
            while size < part_bytes:
                block = reader.read(min(CHUNK, part_bytes - size))
                if not block:
                    break
                part.write(block)
                block_digest.update(block)
                whole.update(block)
                size += len(block)
        if size == 0:
            path.unlink()
            break
        parts.append({"name": part_name(index), "size": size, "sha256": block_digest.hexdigest()})
        index += 1
    reader.close()
    for entry in parts:
        (out_dir / (entry["name"] + ".new")).replace(out_dir / entry["name"])
    return parts, whole.hexdigest(), reader.count


def _write_manifest(out_dir: Path, manifest: dict) -> None:
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    (out_dir / "SHA256SUMS").write_text("".join(f"{p['sha256']}  {p['name']}\n" for p in manifest["parts"]))


def resplit(out_dir: Path, part_bytes: int) -> dict:
    """Cut an existing bundle's parts again at another size (no recompression); checks the archive first."""
    manifest = load_manifest(out_dir / MANIFEST)
    old = [out_dir / p["name"] for p in manifest["parts"]]
    for path, entry in zip(old, manifest["parts"]):
        if not path.is_file() or _check_part(path, entry) is not None:
            raise BundleError(f"{path.name} is missing or corrupt: cannot resplit", 3)
    tmp = out_dir / ".resplit"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    parts, digest, total = _split(old, tmp, part_bytes)
    if digest != manifest["archive"]["sha256"] or total != manifest["archive"]["size"]:
        shutil.rmtree(tmp)
        raise BundleError("the parts do not add up to the archive of the manifest", 3)
    for path in old:
        path.unlink()
    for entry in parts:
        (tmp / entry["name"]).replace(out_dir / entry["name"])
    tmp.rmdir()
    manifest.update(parts=parts, part_bytes=part_bytes)
    _write_manifest(out_dir, manifest)
    return manifest


# -- stage / status / install --------------------------------------------------------------------


def load_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"no manifest at {path} (carry {MANIFEST} with the parts)") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"unreadable manifest {path}: {exc}", 3) from None
    if manifest.get("format") != FORMAT or not manifest.get("parts"):
        raise BundleError(f"{path} is not a bundle manifest of format {FORMAT}", 3)
    return manifest


def _check_part(path: Path, entry: dict) -> str | None:
    """None when path matches entry, else what is wrong."""
    size = path.stat().st_size
    if size != entry["size"]:
        return f"size {size} bytes, want {entry['size']}"
    got = sha256_file(path)
    if got != entry["sha256"]:
        return f"sha256 {got[:16]}..., want {entry['sha256'][:16]}..."
    return None


def _same_manifest(a: dict, b: dict) -> bool:
    return a["archive"] == b["archive"] and a["parts"] == b["parts"]


def stage(inputs: Iterable[Path], stage_dir: Path, manifest_path: Path | None = None) -> list[str]:
    """Verify each given part (files, or folders holding part-NNN) and copy it into stage_dir.

    Returns one line per part. A part already staged (and still matching) is skipped; a corrupt
    input raises BundleError(code 3) after the parts before it were staged.
    """
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files.extend(sorted(item.glob("part-[0-9][0-9][0-9]")))
            if manifest_path is None and (item / MANIFEST).is_file():
                manifest_path = item / MANIFEST
        elif item.is_file():
            files.append(item)
        else:
            raise BundleError(f"part not found: {item} (was it carried?)")
    if manifest_path is None:
        candidates = [f.parent / MANIFEST for f in files if (f.parent / MANIFEST).is_file()] + [stage_dir / MANIFEST]
        manifest_path = next((c for c in candidates if c.is_file()), None)
        if manifest_path is None:
            raise BundleError(f"no {MANIFEST} beside the parts or in {stage_dir}")
    manifest = load_manifest(manifest_path)
    stage_dir.mkdir(parents=True, exist_ok=True)
    staged_manifest = stage_dir / MANIFEST
    if staged_manifest.is_file():
        try:
            old = load_manifest(staged_manifest)
        except BundleError:
            old = None
        if old is None or not _same_manifest(old, manifest):  # a different bundle: start over
            for stale in stage_dir.glob("part-*"):
                stale.unlink()
    if manifest_path.resolve() != staged_manifest.resolve():
        shutil.copyfile(manifest_path, staged_manifest)
    entries = {p["name"]: p for p in manifest["parts"]}
    count = len(entries)
    lines = []
    for src in files:
        entry = entries.get(src.name)
        if entry is None:
            raise BundleError(f"{src.name} is not a part of this bundle (it has {count}: part-000..{part_name(count - 1)})")
        dest = stage_dir / src.name
        if dest.is_file() and _check_part(dest, entry) is None:
            lines.append(f"{src.name}: already staged, skipped")
            continue
        problem = _check_part(src, entry)
        if problem is not None:
            raise BundleError(f"{src.name} is corrupt ({problem}): copy it again; nothing of it was staged", 3)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dest)
        lines.append(f"{src.name}: staged ({entry['size']} bytes)")
    have = len(staged_parts(stage_dir, manifest))
    lines.append(f"{have}/{count} parts staged in {stage_dir}")
    return lines


def staged_parts(stage_dir: Path, manifest: dict) -> list[str]:
    """Names of the manifest's parts present in stage_dir with the right size (cheap check)."""
    return [p["name"] for p in manifest["parts"] if (stage_dir / p["name"]).is_file() and (stage_dir / p["name"]).stat().st_size == p["size"]]


def status(stage_dir: Path) -> tuple[list[str], list[str]]:
    manifest = load_manifest(stage_dir / MANIFEST)
    have = set(staged_parts(stage_dir, manifest))
    names = [p["name"] for p in manifest["parts"]]
    return [n for n in names if n in have], [n for n in names if n not in have]


class _HashingReader:
    """File-like object over the staged parts in order, hashing every byte read."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = list(paths)
        self.digest = hashlib.sha256()
        self.count = 0
        self._fh: BinaryIO | None = None

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while size < 0 or len(out) < size:
            if self._fh is None:
                if not self.paths:
                    break
                self._fh = open(self.paths.pop(0), "rb")
            block = self._fh.read(CHUNK if size < 0 else size - len(out))
            if not block:
                self._fh.close()
                self._fh = None
                continue
            out += block
        data = bytes(out)
        self.digest.update(data)
        self.count += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def _extract(tar: tarfile.TarFile, dest: Path) -> None:
    if hasattr(tarfile, "fully_trusted_filter"):  # 3.12+: say so explicitly (links inside the tree are wanted)
        tar.extractall(dest, filter="fully_trusted")
    else:
        tar.extractall(dest)


def install(stage_dir: Path, dest: Path, verify_parts: bool = True) -> str:
    """Check every part, then unpack the archive into dest (replacing it). Returns a summary line."""
    manifest = load_manifest(stage_dir / MANIFEST)
    marker = dest / ".bundle-manifest.json"
    if marker.is_file():
        try:
            if _same_manifest(json.loads(marker.read_text()), manifest):
                return f"already installed in {dest}"
        except (OSError, json.JSONDecodeError):
            pass
    have, missing = status(stage_dir)
    if missing:
        raise BundleError(f"missing parts {', '.join(missing)} in {stage_dir} ({len(have)}/{len(manifest['parts'])} staged): stage them first")
    paths = [stage_dir / p["name"] for p in manifest["parts"]]
    if verify_parts:
        for path, entry in zip(paths, manifest["parts"]):
            problem = _check_part(path, entry)
            if problem is not None:
                path.unlink()
                raise BundleError(f"staged {path.name} is corrupt ({problem}); removed it: stage it again", 3)
    tmp = dest.with_name(dest.name + ".installing")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    reader = _HashingReader(paths)
    start = time.perf_counter()
    try:
        compressor = manifest["compressor"]
        if compressor == "zstd":
            proc = subprocess.Popen(["zstd", "-d", "-q", "-c", "--long=31"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            import threading

            def feed() -> None:
                assert proc.stdin is not None
                try:
                    for block in iter(lambda: reader.read(CHUNK), b""):
                        proc.stdin.write(block)
                finally:
                    proc.stdin.close()

            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()
            assert proc.stdout is not None
            try:
                with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                    _extract(tar, tmp)
            finally:
                proc.stdout.close()
                feeder.join()
            if proc.wait() != 0:
                raise BundleError("zstd could not decompress the archive", 3)
        else:
            stream = lzma.open(reader, "rb") if compressor == "xz" else reader
            with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[arg-type]
                _extract(tar, tmp)
        reader.drain()
    except (tarfile.TarError, lzma.LZMAError, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BundleError(f"the archive does not unpack ({type(exc).__name__}: {exc})", 3) from None
    finally:
        reader.close()
    if reader.digest.hexdigest() != manifest["archive"]["sha256"] or reader.count != manifest["archive"]["size"]:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BundleError("the whole archive's sha256 does not match its manifest", 3)
    (tmp / marker.name).write_text(json.dumps(manifest, indent=2) + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.replace(dest)
    return f"installed {manifest['name']} ({reader.count} bytes, {len(paths)} parts) in {dest} in {time.perf_counter() - start:.1f} s"


# -- CLI -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--part-mib", type=float, default=40.0)
    p.add_argument("--compressor", choices=("xz", "zstd", "none"), default="xz")
    p.add_argument("--level", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--name", default="bundle")
    s = sub.add_parser("stage")
    s.add_argument("parts", type=Path, nargs="+")
    s.add_argument("--stage-dir", type=Path, required=True)
    s.add_argument("--manifest", type=Path, default=None)
    st = sub.add_parser("status")
    st.add_argument("--stage-dir", type=Path, required=True)
    r = sub.add_parser("resplit")
    r.add_argument("out", type=Path)
    r.add_argument("--part-mib", type=float, required=True)
    i = sub.add_parser("install")
    i.add_argument("--stage-dir", type=Path, required=True)
    i.add_argument("--dest", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "pack":
            m = pack(args.src, args.out, int(args.part_mib * (1 << 20)), args.compressor, args.level, args.name, args.threads)
            print(f"packed {m['source_bytes']} bytes -> {m['archive']['size']} bytes ({m['compressor']}) "
                  f"in {len(m['parts'])} parts of <= {args.part_mib} MiB, {m['pack_seconds']} s, in {args.out}")
        elif args.cmd == "resplit":
            m = resplit(args.out, int(args.part_mib * (1 << 20)))
            print(f"{args.out}: {len(m['parts'])} parts of <= {args.part_mib} MiB ({m['archive']['size']} bytes)")
        elif args.cmd == "stage":
            print("\n".join(stage(args.parts, args.stage_dir, args.manifest)))
        elif args.cmd == "status":
            have, missing = status(args.stage_dir)
            print(f"staged {len(have)}/{len(have) + len(missing)}" + (f"; missing: {' '.join(missing)}" if missing else "; complete"))
            return 0 if not missing else 2
        elif args.cmd == "install":
            print(install(args.stage_dir, args.dest))
    except BundleError as exc:
        print(f"bundle: error: {exc}", file=sys.stderr)
        return exc.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
