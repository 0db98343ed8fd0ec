"""Resumable, verified downloads and safe extraction of the SkullBreak / SkullFix archives.

The archives are several GB each and users fetch them over unreliable links, so:

* :func:`download_file` writes to ``<dest>.part``, resumes it with HTTP ``Range`` requests after a
  dropped connection, and renames it onto ``dest`` only after the checksum matches. Where no
  checksum is published it never skips verification silently: it records the SHA-256 it computed
  in ``<dest>.sha256`` (checked on every later call) and prints a warning saying so.
* :func:`extract_archive` refuses path traversal, absolute paths, links, device files and
  archives that expand beyond a size / file-count limit, extracts into a temporary folder beside
  the target and renames it into place only when complete, with a ``.complete`` marker inside.
* :func:`fetch_dataset` does both for every archive of a dataset listed in ``data/sources.json``.

Only the standard library (``urllib``/``http``) is used for the network; tqdm draws progress.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import IO, Any, Iterator

from skullrecon.io import atomic_path

__all__ = [
    "DownloadError",
    "ArchiveError",
    "MARKER_NAME",
    "download_file",
    "extract_archive",
    "fetch_dataset",
    "file_checksum",
    "load_sources",
    "validate_sources",
]

MARKER_NAME = ".complete"
_CHUNK = 1 << 20
# Seconds to wait before retry n (times n); a module constant so tests can set it to zero.
RETRY_BACKOFF_S = 2.0
_USER_AGENT = "skullrecon-downloader/0.1 (+python urllib)"
_KNOWN_ALGORITHMS = ("sha256", "md5", "sha1", "sha512")


class DownloadError(RuntimeError):
    """A download that failed or did not verify; the message names the URL, the file and a way out."""


class ArchiveError(ValueError):
    """An archive that is unsafe or unreadable; the message names the archive and the entry."""


# --------------------------------------------------------------------------- checksums


def file_checksum(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = _hasher(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _hasher(algorithm: str) -> Any:
    try:
        return hashlib.new(algorithm.lower())
    except (ValueError, TypeError) as err:
        raise ValueError(f"unknown checksum algorithm {algorithm!r}") from err


def _manual_hint(dest: Path) -> str:
    return (
        f"To continue without this download, place a copy of the archive by hand at {dest} "
        "(it is verified against the published checksum before use), or set `data_dir` in the "
        "config to an already extracted copy of the dataset."
    )


def _record_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _read_record(dest: Path) -> str | None:
    rec = _record_path(dest)
    if not rec.is_file():
        return None
    text = rec.read_text().split()
    return text[0].lower() if text else None


def _write_record(dest: Path, digest: str) -> None:
    with atomic_path(_record_path(dest)) as tmp:
        tmp.write_text(f"{digest}  {dest.name}\n")


def _warn(message: str) -> None:
    # Printed, not only logged: a missing published checksum must be visible to the user.
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


def _verify_existing(path: Path, url: str, dest: Path, checksum: str | None, algorithm: str) -> bool:
    """Check ``path`` (a finished download or a copy placed by hand) against the expected digest.

    With no published checksum the SHA-256 recorded beside ``dest`` is used (trust on first use);
    with no record either, the digest is computed, recorded and a warning printed. Returns True
    when verified; raises :class:`DownloadError` on a mismatch.
    """
    if checksum is not None:
        actual = file_checksum(path, algorithm)
        if actual.lower() != checksum.lower():
            raise DownloadError(
                f"checksum mismatch for {dest} (from {url}): expected {algorithm} {checksum.lower()}, "
                f"got {actual}. The file is corrupt or not the published archive. {_manual_hint(dest)}"
            )
        return True
    recorded = _read_record(dest)
    actual = file_checksum(path, "sha256")
    if recorded is not None:
        if actual != recorded:
            raise DownloadError(
                f"checksum mismatch for {dest} (from {url}): expected sha256 {recorded} (recorded in "
                f"{_record_path(dest).name} when it was first downloaded; no published checksum exists), "
                f"got {actual}. {_manual_hint(dest)}"
            )
        return True
    _write_record(dest, actual)
    _warn(
        f"no published checksum exists for {dest.name} ({url}); verification is reduced to the "
        f"SHA-256 computed now, {actual}, recorded in {_record_path(dest)} and checked from now on. "
        "Compare it with a copy from another source if you can."
    )
    return True


# --------------------------------------------------------------------------- download


def download_file(
    url: str,
    dest: str | os.PathLike,
    checksum: str | None = None,
    algorithm: str = "sha256",
    progress: bool = True,
    timeout: float = 60,
    retries: int = 3,
) -> Path:
    """Download ``url`` to ``dest``, resumably, and verify it before it appears under its name.

    Args:
        url: http(s) URL.
        dest: final file path. Bytes go to ``<dest>.part`` first; a later call resumes that file
            with a ``Range`` request (a server answering 200 instead of 206 restarts it cleanly).
        checksum: expected hex digest, or None where none is published (then the computed SHA-256
            is recorded in ``<dest>.sha256`` with a warning and enforced on later calls).
        algorithm: hashlib name of ``checksum`` (sha256, md5, ...).
        progress: draw a tqdm progress bar.
        timeout: socket timeout in seconds for connecting and for each read.
        retries: further attempts after a dropped connection, a timeout or a 5xx answer; each
            resumes from the bytes already in the ``.part`` file.

    Returns:
        ``dest``. If it already exists and verifies, nothing is downloaded.

    Raises:
        DownloadError: unreachable host, HTTP error, connection lost more than ``retries`` times,
            or a checksum mismatch (the ``.part`` file is then removed). The message names the
            URL and the file and says how to place a copy by hand.
    """
    dest = Path(dest)
    _hasher(algorithm)  # fail early on a typo, before any network traffic
    if dest.is_dir():
        raise DownloadError(f"{dest}: the download destination is a folder, not a file; nothing was downloaded")
    if dest.exists():
        _verify_existing(dest, url, dest, checksum, algorithm)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    last_error: BaseException | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(RETRY_BACKOFF_S * attempt)
        try:
            if _fetch_into(url, part, timeout, progress):
                break
            last_error = ConnectionError("connection closed before the announced Content-Length was received")
        except _Fatal as err:
            raise DownloadError(f"cannot download {url} to {dest}: {err}. {_manual_hint(dest)}") from err
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            last_error = err
    else:
        raise DownloadError(
            f"cannot download {url} to {dest} after {retries + 1} attempt(s): {_describe(last_error)}. "
            f"{part.name} keeps the {_size(part)} bytes received so far and the next run resumes it. "
            f"{_manual_hint(dest)}"
        ) from last_error

    try:
        _verify_existing(part, url, dest, checksum, algorithm)
    except DownloadError:
        part.unlink(missing_ok=True)  # a corrupt partial file must not be resumed
        raise
    os.replace(part, dest)
    return dest


class _Fatal(Exception):
    """An answer that retrying will not change (e.g. 404)."""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _describe(err: BaseException | None) -> str:
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        reason = err.reason
        if isinstance(reason, socket.gaierror):
            return f"host name could not be resolved ({reason}); are you offline?"
        if isinstance(reason, ConnectionRefusedError):
            return f"connection refused ({reason})"
        return f"network error ({reason})"
    if isinstance(err, (TimeoutError, socket.timeout)):
        return f"timed out ({err})"
    return f"{type(err).__name__}: {err}" if err else "unknown error"


def _fetch_into(url: str, part: Path, timeout: float, progress: bool) -> bool:
    """One attempt: append to ``part`` (resuming) or rewrite it. True when the body arrived whole."""
    offset = _size(part)
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            # The .part is as long as (or longer than) the file: start over rather than guess.
            part.unlink(missing_ok=True)
            return False
        if err.code >= 500 or err.code in (408, 429):
            raise
        raise _Fatal(f"HTTP {err.code} {err.reason}") from err

    with response:
        status = response.status
        if status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)  # server resumed from elsewhere: distrust, restart
                return False
            mode = "ab"
        else:
            # 200: the server ignored Range (or there was none) and sends the whole file.
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None and length.isdigit() else None
        total = offset + expected if expected is not None else None
        received = 0
        with open(part, mode) as fh, _progress(total, offset, part.name[: -len(".part")], progress) as bar:
            while True:
                block = response.read(_CHUNK)
                if not block:
                    break
                fh.write(block)
                received += len(block)
                bar.update(len(block))
        # urllib's read(n) returns short data rather than raising when the peer closes early.
        return expected is None or received >= expected


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/200"
    if not value or not value.startswith("bytes "):
        return None
    try:
        return int(value[6:].split("-", 1)[0])
    except ValueError:
        return None


def _progress(total: int | None, initial: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
        disable=not enabled, leave=False,
    )


# --------------------------------------------------------------------------- extraction


def _safe_parts(name: str, archive: Path) -> tuple[str, ...]:
    """Relative path components of an archive entry, or ArchiveError if it could escape."""
    raw = name.replace("\\", "/")  # Windows-made zips; a backslash must not hide a '..'
    if raw.startswith("/") or (len(raw) >= 2 and raw[1] == ":"):
        raise ArchiveError(f"{archive}: entry {name!r} has an absolute path; refusing to extract")
    parts = tuple(p for p in PurePosixPath(raw).parts if p not in ("", "."))
    if ".." in parts:
        raise ArchiveError(f"{archive}: entry {name!r} contains a '..' component; refusing to extract")
    return parts


class _Entry:
    __slots__ = ("name", "parts", "is_dir", "size", "source")

    def __init__(self, name: str, parts: tuple[str, ...], is_dir: bool, size: int, source: Any):
        self.name, self.parts, self.is_dir, self.size, self.source = name, parts, is_dir, size, source


def _zip_entries(zf: zipfile.ZipFile, archive: Path) -> list[_Entry]:
    entries = []
    for info in zf.infolist():
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            what = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file or folder"
            raise ArchiveError(f"{archive}: entry {info.filename!r} is {what}; refusing to extract")
        parts = _safe_parts(info.filename, archive)
        entries.append(_Entry(info.filename, parts, info.is_dir(), info.file_size, info))
    return entries


def _tar_entries(tf: tarfile.TarFile, archive: Path) -> list[_Entry]:
    entries = []
    for member in tf:  # iterating reads headers only
        if member.issym() or member.islnk():
            raise ArchiveError(
                f"{archive}: entry {member.name!r} is a {'symbolic' if member.issym() else 'hard'} link "
                f"(to {member.linkname!r}); refusing to extract"
            )
        if not (member.isfile() or member.isdir()):
            raise ArchiveError(
                f"{archive}: entry {member.name!r} is a device, FIFO or other special file; refusing to extract"
            )
        parts = _safe_parts(member.name, archive)
        entries.append(_Entry(member.name, parts, member.isdir(), member.size, member))
    return entries


def _check_tree(entries: list[_Entry], archive: Path) -> None:
    """Refuse entries that would need a path to be both a file and a folder, or a file twice."""
    files: set[tuple[str, ...]] = set()
    dirs: set[tuple[str, ...]] = set()
    for e in entries:
        if not e.parts:
            continue
        for i in range(1, len(e.parts)):
            if e.parts[:i] in files:
                raise ArchiveError(f"{archive}: entry {e.name!r} lies under {'/'.join(e.parts[:i])!r}, which the "
                                   "archive also holds as a file; refusing to extract")
            dirs.add(e.parts[:i])
        if e.is_dir:
            if e.parts in files:
                raise ArchiveError(f"{archive}: entry {e.name!r} is a folder and also a file; refusing to extract")
            dirs.add(e.parts)
        elif e.parts in dirs or e.parts in files:
            what = "a folder" if e.parts in dirs else "another file"
            raise ArchiveError(f"{archive}: entry {e.name!r} has the same path as {what}; refusing to extract")
        else:
            files.add(e.parts)


def _copy_limited(src: IO[bytes], dst: IO[bytes], budget: int, archive: Path, name: str, limit: int) -> int:
    """Copy, counting bytes actually produced: a zip's declared sizes can lie (zip bombs)."""
    written = 0
    for block in iter(lambda: src.read(_CHUNK), b""):
        written += len(block)
        if written > budget:
            raise ArchiveError(
                f"{archive}: entry {name!r} expands past the limit of {limit} bytes in total "
                "(max_total_bytes); refusing to extract (possible zip bomb)"
            )
        dst.write(block)
    return written


def _read_marker(target: Path) -> dict | None:
    marker = target / MARKER_NAME
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return None


def _listing(target: Path) -> list[Path]:
    return sorted(p for p in target.rglob("*") if p.is_file() and p.name != MARKER_NAME)


def extract_archive(
    archive: str | os.PathLike,
    target_dir: str | os.PathLike,
    max_total_bytes: int = 64 * 2**30,
    max_files: int = 200_000,
    archive_sha256: str | None = None,
    extra_checksums: dict[str, str] | None = None,
) -> list[Path]:
    """Safely extract a zip or tar(.gz/.bz2/.xz) archive into ``target_dir``.

    Every entry is checked before anything is written: absolute paths, ``..`` components,
    symbolic/hard links, devices and FIFOs are refused, as are archives whose total uncompressed
    size exceeds ``max_total_bytes`` or that hold more than ``max_files`` entries (the size is
    enforced again on the bytes actually written). Extraction goes to a temporary folder beside
    the target, gets a ``.complete`` marker (JSON with the archive's SHA-256) and is then renamed
    onto ``target_dir``, so a killed extraction never leaves a complete-looking folder. A target
    whose marker already names this archive's SHA-256 is left as it is.

    Args:
        archive: the archive file.
        target_dir: folder that will hold the archive's contents.
        max_total_bytes: limit on the total uncompressed size.
        max_files: limit on the number of entries.
        archive_sha256: the archive's SHA-256 if already known (saves hashing a multi-GB file).
        extra_checksums: further verified digests of the archive (e.g. the published MD5) to
            record in the marker, so a later run can recognise the extraction without the archive.

    Returns:
        The extracted files (the marker excluded), sorted.

    Raises:
        ArchiveError: unsafe or unreadable archive; the message names the archive and the entry.
    """
    archive, target = Path(archive), Path(target_dir)
    if not archive.is_file():
        raise ArchiveError(f"{archive}: archive not found")
    digest = (archive_sha256 or file_checksum(archive, "sha256")).lower()
    marker = _read_marker(target)
    if marker is not None and marker.get("sha256") == digest:
        return _listing(target)

    if target.exists():
        _check_replaceable(target)  # before any work: never delete what we did not extract
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.extracting-", dir=target.parent))
    try:
        n_files = _extract_into(archive, tmp, max_total_bytes, max_files)
        checksums = {k.lower(): v.lower() for k, v in (extra_checksums or {}).items()}
        checksums["sha256"] = digest
        info = {"archive": archive.name, "sha256": digest, "checksums": checksums, "files": n_files,
                "extracted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        info["listing"] = [p.relative_to(tmp).as_posix() for p in _listing(tmp)]
        (tmp / MARKER_NAME).write_text(json.dumps(info, indent=1) + "\n")
        old = None
        if target.exists():  # an earlier extraction of ours (checked above), moved aside, then removed
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.replaced-", dir=target.parent))
            os.rename(target, old / target.name)
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _listing(target)


def _check_replaceable(target: Path) -> None:
    """Refuse to replace ``target`` unless it is empty or exactly an extraction of ours.

    Ours means a ``.complete`` marker whose recorded listing (or, for older markers, file count)
    matches the folder: a folder holding anything else may hold the user's own files.
    """
    if not target.is_dir():
        raise ArchiveError(f"{target}: the extraction target exists and is not a folder; refusing to replace it")
    present = _listing(target)
    if not present:
        return
    marker = _read_marker(target) or {}
    rel = [p.relative_to(target).as_posix() for p in present]
    listing = marker.get("listing")
    ours = sorted(rel) == sorted(listing) if isinstance(listing, list) else (marker and marker.get("files") == len(rel))
    if not ours:
        foreign = sorted(set(rel) - set(listing)) if isinstance(listing, list) else rel
        raise ArchiveError(
            f"{target}: the extraction target already holds files that are not a complete extraction of ours "
            f"(e.g. {(foreign or rel)[0]}); refusing to delete them - move them away or extract elsewhere"
        )


def _open_archive(archive: Path) -> tuple[str, Any]:
    if zipfile.is_zipfile(archive):
        try:
            return "zip", zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError) as err:
            raise ArchiveError(f"{archive}: unreadable zip archive ({err})") from err
    try:
        return "tar", tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as err:
        raise ArchiveError(f"{archive}: not a zip or tar archive, or a corrupt one ({err})") from err


def _extract_into(archive: Path, tmp: Path, max_total_bytes: int, max_files: int) -> int:
    kind, handle = _open_archive(archive)
    with handle:
        try:
            entries = _zip_entries(handle, archive) if kind == "zip" else _tar_entries(handle, archive)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
            raise ArchiveError(f"{archive}: corrupt archive ({err})") from err
        if len(entries) > max_files:
            raise ArchiveError(
                f"{archive}: {len(entries)} entries exceed the limit of {max_files} (max_files); "
                f"refusing to extract (first entry over the limit: {entries[max_files].name!r})"
            )
        _check_tree(entries, archive)
        declared = 0
        for e in entries:
            declared += e.size
            if declared > max_total_bytes:
                raise ArchiveError(
                    f"{archive}: entry {e.name!r} brings the uncompressed size to {declared} bytes, over the "
                    f"limit of {max_total_bytes} (max_total_bytes); refusing to extract (possible zip bomb)"
                )

        root = tmp.resolve()
        budget, n_files = max_total_bytes, 0
        for e in entries:
            if not e.parts:
                continue
            out = tmp.joinpath(*e.parts)
            if not out.resolve().is_relative_to(root):  # belt and braces after _safe_parts
                raise ArchiveError(f"{archive}: entry {e.name!r} resolves outside the target; refusing to extract")
            if e.is_dir:
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                src = handle.open(e.source) if kind == "zip" else handle.extractfile(e.source)
                if src is None:
                    raise ArchiveError(f"{archive}: entry {e.name!r} has no data")
                with src, open(out, "wb") as dst:
                    budget -= _copy_limited(src, dst, budget, archive, e.name, max_total_bytes)
            except ArchiveError:
                raise
            except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, RuntimeError) as err:
                raise ArchiveError(f"{archive}: entry {e.name!r} cannot be read ({type(err).__name__}: {err})") from err
            n_files += 1
        return n_files


# --------------------------------------------------------------------------- registry


def load_sources(sources_path: str | os.PathLike | None = None) -> dict:
    """Read and check the registry of published archive locations (default: the packaged one)."""
    if sources_path is None:
        text = resources.files("skullrecon").joinpath("data/sources.json").read_text()
        where = "skullrecon/data/sources.json"
    else:
        where = str(sources_path)
        text = Path(sources_path).read_text()
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{where}: not valid JSON ({err})") from err
    validate_sources(data, where)
    return data


def validate_sources(data: dict, where: str = "sources.json") -> None:
    """Raise ValueError listing every schema problem of a sources registry."""
    problems: list[str] = []
    datasets = data.get("datasets") if isinstance(data, dict) else None
    if not isinstance(datasets, dict) or not datasets:
        raise ValueError(f"{where}: needs a non-empty 'datasets' object")
    for name, ds in datasets.items():
        if isinstance(ds, dict) and "provenance" in ds and not (isinstance(ds["provenance"], str) and ds["provenance"]):
            problems.append(f"{name}: 'provenance' must be a non-empty string")
        archives = ds.get("archives") if isinstance(ds, dict) else None
        if not isinstance(archives, list) or not archives:
            problems.append(f"{name}: needs a non-empty 'archives' list")
            continue
        seen: set[str] = set()
        for i, a in enumerate(archives):
            label = f"{name}.archives[{i}]"
            if not isinstance(a, dict):
                problems.append(f"{label}: not an object")
                continue
            for key in ("url", "filename", "extract_to"):
                if not isinstance(a.get(key), str) or not a.get(key):
                    problems.append(f"{label}: '{key}' must be a non-empty string")
            if isinstance(a.get("url"), str) and not a["url"].startswith(("http://", "https://")):
                problems.append(f"{label}: 'url' must be http(s)")
            mirrors = a.get("mirrors", [])
            if not isinstance(mirrors, list) or not all(
                isinstance(m, str) and m.startswith(("http://", "https://")) for m in mirrors
            ):
                problems.append(f"{label}: 'mirrors' must be a list of http(s) URLs")
            fn = a.get("filename")
            if isinstance(fn, str) and (("/" in fn) or ("\\" in fn) or fn in (".", "..")):
                problems.append(f"{label}: 'filename' must be a bare file name")
            sub = a.get("extract_to")
            if isinstance(sub, str) and (sub.startswith("/") or ".." in PurePosixPath(sub).parts):
                problems.append(f"{label}: 'extract_to' must be a relative folder without '..'")
            if isinstance(sub, str):
                if sub in seen:
                    problems.append(f"{label}: 'extract_to' {sub!r} is used by another archive")
                seen.add(sub)
            if "checksum" not in a:
                problems.append(f"{label}: 'checksum' is required (null where none is published)")
            elif a["checksum"] is None:
                if not isinstance(a.get("checksum_source"), str) or not a["checksum_source"]:
                    problems.append(f"{label}: a null 'checksum' needs a 'checksum_source' explaining why")
            else:
                c = a["checksum"]
                alg = c.get("algorithm") if isinstance(c, dict) else None
                val = c.get("value") if isinstance(c, dict) else None
                if alg not in _KNOWN_ALGORITHMS or not isinstance(val, str):
                    problems.append(f"{label}: 'checksum' must be {{'algorithm': one of {_KNOWN_ALGORITHMS}, 'value': hex}}")
                else:
                    want = hashlib.new(alg).digest_size * 2
                    if len(val) != want or any(ch not in "0123456789abcdefABCDEF" for ch in val):
                        problems.append(f"{label}: {alg} checksum must be {want} hex digits")
                if not isinstance(a.get("checksum_source"), str) or not a["checksum_source"]:
                    problems.append(f"{label}: 'checksum_source' must say where the checksum was published")
            size = a.get("size")
            if size is not None and (not isinstance(size, int) or size <= 0):
                problems.append(f"{label}: 'size' must be a positive integer or null")
    if problems:
        raise ValueError(f"{where}: invalid registry:\n  " + "\n  ".join(problems))


def _archives(data: dict, name: str) -> Iterator[dict]:
    datasets = data["datasets"]
    if name not in datasets:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(datasets))}")
    yield from datasets[name]["archives"]


def fetch_dataset(
    name: str,
    dest_root: str | os.PathLike,
    sources_path: str | os.PathLike | None = None,
    progress: bool = True,
    timeout: float = 60,
    retries: int = 3,
) -> Path:
    """Download and extract every archive of dataset ``name`` listed in the sources registry.

    Archives go to ``dest_root/archives/<filename>`` (the ``url`` is tried first, then each of
    ``mirrors``) and are extracted into
    ``dest_root/<name>/<extract_to>``; archives already present and verified, and folders already
    carrying a matching ``.complete`` marker, are skipped.

    Args:
        name: ``skullbreak`` or ``skullfix`` (any dataset in the registry).
        dest_root: download / extraction root.
        sources_path: registry file; default the packaged ``skullrecon/data/sources.json``.

    Returns:
        ``dest_root/<name>``, the dataset root.
    """
    data = load_sources(sources_path)
    archives = list(_archives(data, name))
    root = Path(dest_root)
    dataset_root = root / name
    for a in archives:
        target = dataset_root / a["extract_to"]
        if _already_extracted(target, a):
            continue  # the archive itself may have been deleted to save space; not needed
        if target.exists():
            _check_replaceable(target)  # before a multi-GB download that could not be extracted there
        archive = root / "archives" / a["filename"]
        checksum = a["checksum"]
        algorithm = checksum["algorithm"] if checksum else "sha256"
        value = checksum["value"].lower() if checksum else None
        note = data["datasets"][name].get("provenance")
        _download_any([a["url"], *a.get("mirrors", [])], archive, value, algorithm, progress, timeout, retries, note)
        known = value if algorithm == "sha256" else (_read_record(archive) if value is None else None)
        extra = {algorithm: value} if value is not None else None
        extract_archive(archive, target, archive_sha256=known, extra_checksums=extra)
    return dataset_root


def _download_any(
    urls: list[str], archive: Path, value: str | None, algorithm: str, progress: bool, timeout: float, retries: int,
    note: str | None = None,
) -> None:
    """Try the published URL, then each mirror; a mirror is only tried when the previous one failed.

    ``note`` (the registry's ``provenance`` of the dataset: who published the archive, and where
    else to get it) ends every error message.
    """
    errors: list[str] = []
    tail = f" Where the data come from: {note}" if note else ""
    for url in urls:
        try:
            download_file(url, archive, value, algorithm, progress=progress, timeout=timeout, retries=retries)
            return
        except DownloadError as err:
            if archive.exists() and not archive.is_dir():
                raise DownloadError(f"{err}{tail}") from err  # a copy at the destination that does not verify
            if archive.is_dir():
                raise
            errors.append(str(err))
    if len(errors) == 1:
        raise DownloadError(errors[0] + tail)
    raise DownloadError(f"every location of {archive.name} failed:\n  - " + "\n  - ".join(errors) + ("\n" + tail.strip() if tail else ""))


def _already_extracted(target: Path, entry: dict) -> bool:
    """True when ``target`` holds a complete extraction of exactly this registry entry."""
    marker = _read_marker(target)
    if marker is None or marker.get("archive") != entry["filename"]:
        return False
    checksum = entry["checksum"]
    if checksum is None:
        return True  # nothing published to compare with; the archive was verified when extracted
    recorded = marker.get("checksums", {})
    return recorded.get(checksum["algorithm"]) == checksum["value"].lower()
