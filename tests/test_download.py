"""Downloader and extractor tests against a local HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import stat
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import skullrecon.download as dl
from skullrecon.download import (
    MARKER_NAME,
    ArchiveError,
    DownloadError,
    download_file,
    extract_archive,
    fetch_dataset,
    file_checksum,
    load_sources,
    validate_sources,
)

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB, not a multiple of the read chunk


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _State:
    """What the server serves and how; shared with the handler threads."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, str] = {}  # normal | drop_once | wrong | ignore_range | missing
        self.log: list[tuple[str, str | None]] = []
        self.dropped: set[str] = set()
        self.lock = threading.Lock()


def _make_handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            path = self.path.split("?", 1)[0]
            rng = self.headers.get("Range")
            with state.lock:
                state.log.append((path, rng))
            mode = state.modes.get(path, "normal")
            data = state.files.get(path)
            if data is None or mode == "missing":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if mode == "wrong":
                data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
            start = 0
            if rng and mode != "ignore_range" and rng.startswith("bytes="):
                start = int(rng[6:].split("-", 1)[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if mode == "drop_once" and path not in state.dropped:
                state.dropped.add(path)
                # Announce the whole body, send half of it, then hang up.
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture()
def server():
    state = _State()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"  # type: ignore[attr-defined]
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_BACKOFF_S", 0.0)


def _closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there any more: connection refused
    return f"http://127.0.0.1:{port}/skullfix.zip"


# --------------------------------------------------------------------------- download


def test_download_normal_and_no_second_download(server, tmp_path):
    server.files["/a.zip"] = PAYLOAD
    dest = tmp_path / "a.zip"
    out = download_file(server.base + "/a.zip", dest, sha256(PAYLOAD), progress=False, timeout=5)
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "a.zip.part").exists()
    n = len(server.log)
    download_file(server.base + "/a.zip", dest, sha256(PAYLOAD), progress=False, timeout=5)
    assert len(server.log) == n  # already there and verified: no request


def test_download_md5_checksum(server, tmp_path):
    server.files["/m.zip"] = PAYLOAD
    dest = download_file(server.base + "/m.zip", tmp_path / "m.zip", hashlib.md5(PAYLOAD).hexdigest(),
                         algorithm="md5", progress=False, timeout=5)
    assert dest.read_bytes() == PAYLOAD


def test_dropped_connection_resumes_with_range(server, tmp_path):
    server.files["/big.zip"] = PAYLOAD
    server.modes["/big.zip"] = "drop_once"
    dest = tmp_path / "big.zip"
    download_file(server.base + "/big.zip", dest, sha256(PAYLOAD), progress=False, timeout=5, retries=2)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.log) == 2
    assert server.log[0][1] is None
    assert server.log[1][1] == f"bytes={len(PAYLOAD) // 2}-"  # resumed where the drop left off


def test_dropped_connection_without_retries_keeps_part(server, tmp_path):
    server.files["/big.zip"] = PAYLOAD
    server.modes["/big.zip"] = "drop_once"
    dest = tmp_path / "big.zip"
    with pytest.raises(DownloadError) as err:
        download_file(server.base + "/big.zip", dest, sha256(PAYLOAD), progress=False, timeout=5, retries=0)
    assert "after 1 attempt" in str(err.value) and "by hand" in str(err.value)
    assert not dest.exists()
    assert (tmp_path / "big.zip.part").stat().st_size == len(PAYLOAD) // 2
    # The next run resumes the partial file.
    download_file(server.base + "/big.zip", dest, sha256(PAYLOAD), progress=False, timeout=5, retries=0)
    assert dest.read_bytes() == PAYLOAD and server.log[-1][1] == f"bytes={len(PAYLOAD) // 2}-"


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.files["/r.zip"] = PAYLOAD
    server.modes["/r.zip"] = "ignore_range"
    dest = tmp_path / "r.zip"
    (tmp_path / "r.zip.part").write_bytes(b"stale bytes from an older attempt")
    download_file(server.base + "/r.zip", dest, sha256(PAYLOAD), progress=False, timeout=5)
    assert dest.read_bytes() == PAYLOAD  # 200 answer overwrote the .part instead of appending
    assert server.log[0][1] == "bytes=33-"


def test_wrong_bytes_raise_and_leave_nothing(server, tmp_path):
    server.files["/w.zip"] = PAYLOAD
    server.modes["/w.zip"] = "wrong"
    dest = tmp_path / "w.zip"
    url = server.base + "/w.zip"
    with pytest.raises(DownloadError) as err:
        download_file(url, dest, sha256(PAYLOAD), progress=False, timeout=5)
    msg = str(err.value)
    wrong = bytes(b ^ 0xFF for b in PAYLOAD[:64]) + PAYLOAD[64:]
    assert url in msg and str(dest) in msg
    assert sha256(PAYLOAD) in msg and sha256(wrong) in msg
    assert "by hand" in msg and "data_dir" in msg
    assert not dest.exists() and not (tmp_path / "w.zip.part").exists()


def test_connection_refused_says_how_to_place_by_hand(tmp_path):
    url = _closed_port_url()
    dest = tmp_path / "skullfix.zip"
    with pytest.raises(DownloadError) as err:
        download_file(url, dest, "0" * 64, progress=False, timeout=5, retries=1)
    msg = str(err.value)
    assert url in msg and str(dest) in msg
    assert "refused" in msg
    assert f"place a copy of the archive by hand at {dest}" in msg and "data_dir" in msg


def test_http_404_is_not_retried(server, tmp_path):
    with pytest.raises(DownloadError) as err:
        download_file(server.base + "/nope.zip", tmp_path / "n.zip", None, progress=False, timeout=5, retries=3)
    assert "HTTP 404" in str(err.value) and len(server.log) == 1


def test_no_published_checksum_records_and_warns(server, tmp_path, capsys):
    server.files["/u.zip"] = PAYLOAD
    dest = tmp_path / "u.zip"
    download_file(server.base + "/u.zip", dest, None, progress=False, timeout=5)
    record = tmp_path / "u.zip.sha256"
    assert record.read_text().split()[0] == sha256(PAYLOAD)
    assert "no published checksum" in capsys.readouterr().err
    # From now on the recorded digest is enforced: a changed file is refused.
    dest.write_bytes(PAYLOAD[:-1] + b"X")
    with pytest.raises(DownloadError) as err:
        download_file(server.base + "/u.zip", dest, None, progress=False, timeout=5)
    assert sha256(PAYLOAD) in str(err.value) and "recorded" in str(err.value)


def test_existing_wrong_file_is_reported_not_overwritten(server, tmp_path):
    server.files["/e.zip"] = PAYLOAD
    dest = tmp_path / "e.zip"
    dest.write_bytes(b"placed by hand, but wrong")
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_file(server.base + "/e.zip", dest, sha256(PAYLOAD), progress=False, timeout=5)
    assert dest.read_bytes() == b"placed by hand, but wrong" and server.log == []


# --------------------------------------------------------------------------- extraction


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


SKULLFIX_LAYOUT = {
    f"training_set/{kind}/{i:03d}.nrrd": f"{kind}{i}".encode() * 10
    for kind in ("complete_skull", "defective_skull", "implant")
    for i in range(3)
}


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".extracting-" in p.name]


def test_valid_skullfix_zip_extracts_with_marker(tmp_path):
    archive = _zip(tmp_path / "training_set.zip", SKULLFIX_LAYOUT)
    target = tmp_path / "out" / "training"
    files = extract_archive(archive, target)
    assert sorted(f.relative_to(target).as_posix() for f in files) == sorted(SKULLFIX_LAYOUT)
    assert (target / "training_set/implant/002.nrrd").read_bytes() == SKULLFIX_LAYOUT["training_set/implant/002.nrrd"]
    marker = json.loads((target / MARKER_NAME).read_text())
    assert marker["sha256"] == file_checksum(archive) and marker["archive"] == "training_set.zip"
    assert marker["files"] == len(SKULLFIX_LAYOUT)
    before = (target / MARKER_NAME).stat().st_mtime_ns
    assert extract_archive(archive, target) == files  # complete already: not redone
    assert (target / MARKER_NAME).stat().st_mtime_ns == before
    assert _leftovers(target.parent) == []


def test_a_folder_holding_other_files_is_never_deleted(tmp_path):
    """No marker, or our marker plus a file of the user's: refused, every file kept. Our own
    earlier extraction (of another archive) is replaced; an empty folder is used."""
    archive = _zip(tmp_path / "t.zip", SKULLFIX_LAYOUT)
    target = tmp_path / "training"
    (target / "training_set").mkdir(parents=True)
    (target / "training_set" / "000.nrrd").write_bytes(b"the user's own skull")  # no marker: not ours
    with pytest.raises(ArchiveError, match=r"training: .*not a complete extraction of ours.*000\.nrrd"):
        extract_archive(archive, target)
    assert (target / "training_set" / "000.nrrd").read_bytes() == b"the user's own skull"
    assert _leftovers(tmp_path) == []

    ours = tmp_path / "ours"
    extract_archive(_zip(tmp_path / "old.zip", {"old/a.nrrd": b"old"}), ours)
    extract_archive(archive, ours)  # an extraction of ours, of another archive: replaced
    assert not (ours / "old").exists() and (ours / "training_set" / "implant" / "002.nrrd").is_file()
    assert [p.name for p in tmp_path.iterdir() if ".replaced-" in p.name] == []
    (ours / "training_set" / "notes.txt").write_text("mine")  # the user adds a file: no longer only ours
    with pytest.raises(ArchiveError, match="notes.txt"):
        extract_archive(_zip(tmp_path / "new.zip", {"x.nrrd": b"x"}), ours)
    assert (ours / "training_set" / "notes.txt").read_text() == "mine"

    empty = tmp_path / "empty"
    empty.mkdir()
    extract_archive(archive, empty)
    assert (empty / MARKER_NAME).is_file()


@pytest.mark.parametrize("entries", [
    {"a": b"file", "a/b": b"under a file"},
    {"a/b": b"x", "a": b"a file where a folder is"},
])
def test_a_path_that_is_both_file_and_folder_is_one_clear_error(tmp_path, entries):
    archive = _zip(tmp_path / "clash.zip", entries)
    with pytest.raises(ArchiveError, match=r"clash\.zip: entry 'a.*refusing to extract"):
        extract_archive(archive, tmp_path / "target")
    assert not (tmp_path / "target").exists() and _leftovers(tmp_path) == []


def test_download_destination_that_is_a_folder(tmp_path):
    (tmp_path / "x.zip").mkdir()
    with pytest.raises(DownloadError, match=r"x\.zip: the download destination is a folder"):
        download_file("http://127.0.0.1:9/x.zip", tmp_path / "x.zip")


def test_zip_with_dotdot_entry_is_rejected(tmp_path):
    archive = _zip(tmp_path / "evil.zip", {"ok/a.txt": b"a", "../evil.txt": b"pwned"})
    target = tmp_path / "sub" / "target"
    with pytest.raises(ArchiveError) as err:
        extract_archive(archive, target)
    assert str(archive) in str(err.value) and "../evil.txt" in str(err.value)
    assert not (tmp_path / "sub" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not target.exists() and _leftovers(tmp_path / "sub") == []


def test_zip_with_absolute_entry_is_rejected(tmp_path):
    victim = tmp_path / "victim.txt"
    archive = _zip(tmp_path / "abs.zip", {str(victim): b"pwned"})
    assert zipfile.ZipFile(archive).namelist()[0].startswith("/")  # the test is meaningful
    with pytest.raises(ArchiveError, match="absolute path"):
        extract_archive(archive, tmp_path / "target")
    assert not victim.exists() and not (tmp_path / "target").exists()


def test_zip_with_backslash_dotdot_is_rejected(tmp_path):
    archive = _zip(tmp_path / "bs.zip", {"a\\..\\..\\evil.txt": b"x"})
    with pytest.raises(ArchiveError, match=r"'\.\.'"):
        extract_archive(archive, tmp_path / "target")


def test_zip_with_symlink_entry_is_rejected(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("training_set/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="symbolic link") as err:
        extract_archive(archive, tmp_path / "target")
    assert "training_set/link" in str(err.value)


def _tar(path: Path, add) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        add(tf)
    return path


def _tar_file(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def test_tar_with_symlink_is_rejected(tmp_path):
    def add(tf):
        _tar_file(tf, "test_set/000.nrrd", b"x")
        link = tarfile.TarInfo("test_set/escape")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../etc"
        tf.addfile(link)

    archive = _tar(tmp_path / "s.tar.gz", add)
    with pytest.raises(ArchiveError) as err:
        extract_archive(archive, tmp_path / "target")
    assert "test_set/escape" in str(err.value) and "symbolic link" in str(err.value)
    assert not (tmp_path / "target").exists() and _leftovers(tmp_path) == []


def test_tar_with_hardlink_and_device_are_rejected(tmp_path):
    def add_hard(tf):
        _tar_file(tf, "a", b"x")
        link = tarfile.TarInfo("b")
        link.type, link.linkname = tarfile.LNKTYPE, "/etc/passwd"
        tf.addfile(link)

    def add_dev(tf):
        dev = tarfile.TarInfo("dev/null2")
        dev.type = tarfile.CHRTYPE
        tf.addfile(dev)

    with pytest.raises(ArchiveError, match="hard link"):
        extract_archive(_tar(tmp_path / "h.tar.gz", add_hard), tmp_path / "t1")
    with pytest.raises(ArchiveError, match="device"):
        extract_archive(_tar(tmp_path / "d.tar.gz", add_dev), tmp_path / "t2")


def test_valid_tar_gz_extracts(tmp_path):
    archive = _tar(tmp_path / "ok.tar.gz", lambda tf: [_tar_file(tf, n, d) for n, d in SKULLFIX_LAYOUT.items()])
    files = extract_archive(archive, tmp_path / "target")
    assert len(files) == len(SKULLFIX_LAYOUT) and (tmp_path / "target" / MARKER_NAME).is_file()


def test_archive_over_size_limit_is_rejected(tmp_path):
    archive = _zip(tmp_path / "bomb.zip", {"a.bin": b"\0" * 600, "b.bin": b"\0" * 600})
    with pytest.raises(ArchiveError) as err:
        extract_archive(archive, tmp_path / "target", max_total_bytes=1000)
    assert "b.bin" in str(err.value) and "max_total_bytes" in str(err.value)
    assert not (tmp_path / "target").exists()


def test_archive_over_file_limit_is_rejected(tmp_path):
    archive = _zip(tmp_path / "many.zip", {f"f{i}": b"" for i in range(5)})
    with pytest.raises(ArchiveError, match="max_files"):
        extract_archive(archive, tmp_path / "target", max_files=4)


def test_corrupt_member_leaves_no_target(tmp_path):
    data = bytes(range(256)) * 200
    archive = _zip(tmp_path / "c.zip", {"training_set/a.nrrd": b"ok", "training_set/b.nrrd": data})
    raw = bytearray(archive.read_bytes())
    info = zipfile.ZipFile(archive).getinfo("training_set/b.nrrd")
    at = info.header_offset + 30 + len(info.filename.encode()) + 5  # inside b's compressed data
    raw[at] ^= 0xFF
    archive.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError) as err:
        extract_archive(archive, tmp_path / "target")
    assert "training_set/b.nrrd" in str(err.value)
    assert not (tmp_path / "target").exists() and _leftovers(tmp_path) == []


def test_not_an_archive(tmp_path):
    bad = tmp_path / "x.zip"
    bad.write_bytes(b"<html>login page</html>")
    with pytest.raises(ArchiveError, match="not a zip or tar"):
        extract_archive(bad, tmp_path / "target")


# --------------------------------------------------------------------------- registry + fetch


def test_packaged_sources_schema():
    data = load_sources()
    assert set(data["datasets"]) == {"skullbreak", "skullfix", "skullfix-figshare"}
    # the SkullBreak record's provenance is said, and its checksum kept
    assert "third-party upload" in data["datasets"]["skullbreak"]["provenance"]
    assert all(a["checksum"] for a in data["datasets"]["skullbreak"]["archives"])
    figshare = data["datasets"]["skullfix-figshare"]["archives"][0]
    assert "14161307" in figshare["url"] and figshare["checksum"] is None
    for ds in data["datasets"].values():
        for a in ds["archives"]:
            assert {"url", "filename", "checksum", "extract_to", "checksum_source"} <= set(a)
            assert a["url"].startswith("https://")
            if a["checksum"] is not None:
                assert a["checksum"]["algorithm"] in ("md5", "sha256")
    names = [a["name"] for a in data["datasets"]["skullfix"]["archives"]]
    assert "training_set" in names


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda a: a.pop("checksum"), "'checksum' is required"),
        (lambda a: a.update(checksum=None, checksum_source=""), "needs a 'checksum_source'"),
        (lambda a: a.update(checksum={"algorithm": "md5", "value": "abc"}), "32 hex digits"),
        (lambda a: a.update(url="ftp://x/y.zip"), "'url' must be http(s)"),
        (lambda a: a.update(filename="../x.zip"), "bare file name"),
        (lambda a: a.update(extract_to="../up"), "'extract_to' must be a relative folder"),
    ],
)
def test_sources_schema_rejects(mutate, needle):
    data = load_sources()
    mutate(data["datasets"]["skullfix"]["archives"][0])
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        validate_sources(data)


def test_fetch_dataset_from_local_server(server, tmp_path, capsys):
    train = _zip(tmp_path / "src_train.zip", SKULLFIX_LAYOUT).read_bytes()
    test_tar = _tar(tmp_path / "src_test.tar.gz", lambda tf: _tar_file(tf, "test_set_for_participants/000.nrrd", b"d"))
    server.files["/train.zip"] = train
    server.files["/test.tar.gz"] = test_tar.read_bytes()
    sources = {
        "datasets": {
            "skullfix": {
                "archives": [
                    {"url": server.base + "/train.zip", "filename": "training_set.zip", "extract_to": "training",
                     "checksum": {"algorithm": "sha256", "value": sha256(train)}, "checksum_source": "test"},
                    {"url": _closed_port_url(), "mirrors": [server.base + "/test.tar.gz"],
                     "filename": "test.tar.gz", "extract_to": "test", "checksum": None,
                     "checksum_source": "none published (test)"},
                ]
            }
        }
    }
    sources_path = tmp_path / "sources.json"
    sources_path.write_text(json.dumps(sources))
    root = fetch_dataset("skullfix", tmp_path / "data", sources_path, progress=False, timeout=5, retries=0)
    assert root == tmp_path / "data" / "skullfix"
    assert (root / "training" / "training_set" / "complete_skull" / "000.nrrd").is_file()
    assert (root / "test" / "test_set_for_participants" / "000.nrrd").read_bytes() == b"d"
    assert (root / "training" / MARKER_NAME).is_file() and (root / "test" / MARKER_NAME).is_file()
    assert (tmp_path / "data" / "archives" / "test.tar.gz.sha256").is_file()  # fell back to the mirror
    assert "no published checksum" in capsys.readouterr().err

    n = len(server.log)
    (tmp_path / "data" / "archives" / "training_set.zip").unlink()  # archives may be deleted once extracted
    fetch_dataset("skullfix", tmp_path / "data", sources_path, progress=False, timeout=5, retries=0)
    assert len(server.log) == n  # everything complete: nothing fetched again

    with pytest.raises(ValueError, match="unknown dataset 'skullbreak'"):
        fetch_dataset("skullbreak", tmp_path / "data", sources_path)


def test_download_errors_say_where_the_data_come_from(tmp_path):
    """A failed SkullBreak download names the third-party record and the request route."""
    data = load_sources()
    sb = data["datasets"]["skullbreak"]
    for a in sb["archives"]:
        a["url"], a["mirrors"] = _closed_port_url(), []
    sources_path = tmp_path / "sources.json"
    sources_path.write_text(json.dumps(data))
    with pytest.raises(DownloadError) as err:
        fetch_dataset("skullbreak", tmp_path / "data", sources_path, progress=False, timeout=2, retries=0)
    message = str(err.value)
    assert "third-party upload" in message and "on request" in message and "skullbreak_training.zip" in message
