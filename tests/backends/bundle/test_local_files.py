"""LocalFiles: error translation, sinks, vectored reads and cross-process versioned writes."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.stores import FileSink, local
from trackpoint.backends.stores.local import LocalFiles, _not_writable, _raise
from trackpoint.errors import (
    CheckpointExistsError,
    CheckpointNotFoundError,
    ConcurrentModificationError,
    DataLossError,
    StorageError,
    StoragePermissionError,
)
from trackpoint.storage import MUST_NOT_EXIST, WriteItem


def test_sink_is_invisible_until_close(tmp_path: Path) -> None:
    files = LocalFiles()
    target = tmp_path / "f.bin"
    sink = files.open_sink(str(target))
    sink.write(b"abc")
    sink.write(memoryview(b"defg")[1:])
    assert not target.exists()
    sink.close()
    assert target.read_bytes() == b"abcefg"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_sink_abort_leaves_nothing(tmp_path: Path) -> None:
    sink = LocalFiles().open_sink(str(tmp_path / "f.bin"))
    sink.write(b"x" * 10)
    sink.abort()
    sink.abort()
    assert list(tmp_path.iterdir()) == []


def test_write_many_writes_every_buffer_in_order(tmp_path: Path) -> None:
    # More buffers than one writev call takes, empty ones among them, of every buffer type.
    buffers: list[bytes | bytearray | memoryview] = []
    for i in range(2500):
        kind = i % 4
        if kind == 0:
            buffers.append(bytes([i % 251]) * (i % 7))
        elif kind == 1:
            buffers.append(bytearray(b"%d," % i))
        elif kind == 2:
            buffers.append(memoryview(np.full(3, i, dtype=np.float32)).cast("B"))
        else:
            buffers.append(memoryview(np.full((2, 2), i, dtype=np.int16)))  # not a byte format
    target = tmp_path / "f.bin"
    sink = LocalFiles().open_sink(str(target))
    sink.write(b"head:")
    sink.write_many(buffers)
    sink.write_many([])
    sink.close()
    assert target.read_bytes() == b"head:" + b"".join(bytes(b) for b in buffers)


def test_write_many_continues_after_a_short_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # writev may write fewer bytes than asked (a signal, a 2 GiB cap): the rest must follow, in order,
    # whether the call stopped between two buffers or inside one.
    real = os.writev
    calls: list[int] = []

    def short(fd: int, buffers: Sequence[memoryview]) -> int:
        wanted = sum(len(b) for b in buffers)
        n = real(fd, [memoryview(b"".join(buffers))[: max(1, wanted // 3)]])
        calls.append(n)
        return n

    monkeypatch.setattr(local.os, "writev", short)
    buffers = [bytes([65 + i]) * (i + 1) for i in range(20)]
    target = tmp_path / "f.bin"
    sink = LocalFiles().open_sink(str(target))
    sink.write_many(buffers)
    sink.close()
    assert len(calls) > 3
    assert target.read_bytes() == b"".join(buffers)


def test_the_default_write_many_writes_the_buffers_in_one_call(tmp_path: Path) -> None:
    # A store's sink that only implements write() gets write_many from the base class: one write call
    # (an object store's sink does work per call), the buffers' bytes in order.
    written: list[bytes] = []

    class Recording(FileSink):
        def write(self, data: bytes | bytearray | memoryview) -> None:
            written.append(bytes(data))

        def close(self) -> None:
            pass

        def abort(self) -> None:
            pass

    sink = Recording()
    sink.write_many([b"a", bytearray(b"bc"), memoryview(np.array([1], dtype=np.int16)), memoryview(b"xdef")[1:]])
    sink.write_many([b"alone"])
    sink.write_many([])
    assert written == [b"abc\x01\x00def", b"alone"]


def test_create_only(tmp_path: Path) -> None:
    files = LocalFiles()
    files.put(str(tmp_path / "f"), b"first", create_only=True)
    with pytest.raises(CheckpointExistsError, match="exists already and was written create-only"):
        files.put(str(tmp_path / "f"), b"second", create_only=True)
    assert (tmp_path / "f").read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_read_ranges_coalesces_and_detects_truncation(tmp_path: Path) -> None:
    files = LocalFiles()
    path = tmp_path / "d"
    path.write_bytes(bytes(range(100)))
    bufs = [bytearray(10), bytearray(5), bytearray(3)]
    files.read_ranges(str(path), [(20, memoryview(bufs[1])), (10, memoryview(bufs[0])), (90, memoryview(bufs[2]))])
    assert bytes(bufs[0]) == bytes(range(10, 20)) and bytes(bufs[1]) == bytes(range(20, 25))
    assert bytes(bufs[2]) == bytes(range(90, 93))
    with pytest.raises(DataLossError, match="ends at byte 100.*truncated"):
        files.read_into(str(path), 95, memoryview(bytearray(10)))


def test_read_ranges_fills_thousands_of_adjacent_views_of_any_format(tmp_path: Path) -> None:
    # More adjacent ranges than one preadv call takes (1024), as float32, 0-d and empty views.
    files = LocalFiles()
    path = tmp_path / "d"
    data = np.arange(3000, dtype=np.float32)
    path.write_bytes(data.tobytes())
    outs = [np.zeros((), np.float32) if i % 3 else np.zeros(2, np.float32) for i in range(1500)]
    offsets = np.cumsum([0] + [a.nbytes for a in outs])
    ranges = [(int(o), memoryview(a)) for o, a in zip(offsets, outs, strict=False)] + [(40, memoryview(np.zeros(0)))]
    files.read_ranges(str(path), ranges[::-1])
    np.testing.assert_array_equal(np.concatenate([a.reshape(-1) for a in outs]), data[: offsets[-1] // 4])


def test_read_ranges_reports_what_a_short_file_still_owes(tmp_path: Path) -> None:
    files = LocalFiles()
    path = tmp_path / "d"
    path.write_bytes(bytes(range(15)))
    first, second = bytearray(10), bytearray(10)
    with pytest.raises(DataLossError, match="ends at byte 15, before the 5 bytes still expected there"):
        files.read_ranges(str(path), [(0, memoryview(first)), (10, memoryview(second))])
    assert bytes(first) == bytes(range(10)) and bytes(second[:5]) == bytes(range(10, 15))


def test_a_sink_has_the_kernel_start_writing_its_file_out_as_it_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Written data would otherwise wait in the page cache for close()'s fsync while the disk idles.
    real = local._sync_file_range()
    if real is None:
        pytest.skip("this platform has no sync_file_range")
    calls: list[tuple[int, int, int, int]] = []

    def recording(fd: int, offset: int, length: int, flags: int) -> int:
        result = real(fd, offset, length, flags)
        calls.append((offset, length, flags, result))
        return result

    monkeypatch.setattr(local, "_sync_file_range", lambda: recording)
    block = np.arange(1 << 18, dtype=np.float32)  # 1 MiB
    path = tmp_path / "d"
    sink = LocalFiles().open_sink(str(path))
    for i in range(40):
        sink.write((block + i).tobytes())
    mib = 1 << 20
    # Every 16 MiB, the 16 MiB written since; 0 is the real call's success on this file system.
    assert calls == [(0, 16 * mib, 2, 0), (16 * mib, 16 * mib, 2, 0)]
    assert not path.exists()  # still published only by close
    sink.close()
    assert path.read_bytes() == b"".join((block + i).tobytes() for i in range(40))
    # Without the call (other systems), a sink writes the same file.
    monkeypatch.setattr(local, "_sync_file_range", lambda: None)
    sink = LocalFiles().open_sink(str(tmp_path / "e"))
    for i in range(40):
        sink.write((block + i).tobytes())
    sink.close()
    assert (tmp_path / "e").read_bytes() == path.read_bytes()


def test_a_large_read_from_a_files_start_asks_for_its_first_128_kib_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Linux fills a file's first readahead window with single pages when the first read is large,
    # and a virtio disk then reads it in small requests; a small first read keeps later windows large.
    files = LocalFiles()
    path = tmp_path / "d"
    data = np.arange(300_000, dtype=np.float32)  # 1.2 MB
    path.write_bytes(data.tobytes())
    calls: list[tuple[int, int]] = []
    real = os.preadv

    def recording(fd: int, bufs: list[memoryview], offset: int) -> int:
        calls.append((offset, sum(memoryview(b).nbytes for b in bufs)))
        return real(fd, bufs, offset)

    monkeypatch.setattr(os, "preadv", recording)
    # A 2-d float32 destination from the start, one adjacent to it, and one further on.
    first, second, later = np.zeros((1000, 100), np.float32), np.zeros(500, np.float32), np.zeros(7, np.float32)
    files.read_ranges(str(path), [(400_000, memoryview(second)), (0, memoryview(first)), (800_000, memoryview(later))])
    assert calls == [(0, 128 << 10), (128 << 10, 400_000 + 2000 - (128 << 10)), (800_000, 28)]
    np.testing.assert_array_equal(first.reshape(-1), data[:100_000])
    np.testing.assert_array_equal(second, data[100_000:100_500])
    np.testing.assert_array_equal(later, data[200_000:200_007])
    # Many small ranges from the start (a restore of small tensors): the first call still stops at 128 KiB,
    # inside the range that crosses it.
    calls.clear()
    small = [np.zeros(1000, np.float32) for _ in range(40)]  # 4,000 bytes each
    files.read_ranges(str(path), [(4000 * k, memoryview(a)) for k, a in enumerate(small)])
    assert calls == [(0, 128 << 10), (128 << 10, 160_000 - (128 << 10))]
    np.testing.assert_array_equal(np.concatenate(small), data[:40_000])
    # Ranges too many for one call (tiny tensors): the first call takes as many as it can, then the rest.
    calls.clear()
    tiny = [np.zeros(10, np.float32) for _ in range(3000)]  # 40 bytes each
    files.read_ranges(str(path), [(40 * k, memoryview(a)) for k, a in enumerate(tiny)])
    assert calls[0] == (0, 40 * 1024) and sum(n for _, n in calls) == 120_000
    np.testing.assert_array_equal(np.concatenate(tiny), data[:30_000])
    # Reads that do not start at byte 0, or are small, go as one call.
    calls.clear()
    files.read_into(str(path), 4, memoryview(np.zeros(200_000, np.float32)))
    files.read_into(str(path), 0, memoryview(bytearray(128 << 10)))
    assert calls == [(4, 800_000), (0, 128 << 10)]


def test_a_short_file_read_from_its_start_in_two_calls_still_says_what_it_owes(tmp_path: Path) -> None:
    files = LocalFiles()
    path = tmp_path / "d"
    path.write_bytes(bytes(200_000))
    with pytest.raises(DataLossError, match="ends at byte 200000, before the 100000 bytes still expected there"):
        files.read_into(str(path), 0, memoryview(bytearray(300_000)))
    path.write_bytes(bytes(100_000))  # shorter than the first call
    with pytest.raises(DataLossError, match="ends at byte 100000, before the 200000 bytes still expected there"):
        files.read_into(str(path), 0, memoryview(bytearray(300_000)))


def test_a_source_keeps_reading_the_file_it_opened(tmp_path: Path) -> None:
    # One descriptor for all its reads: the file replaced under the source's path is not what it reads.
    files = LocalFiles()
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(200)))
    with closing(files.open_source(str(path))) as source:
        (tmp_path / "g.bin").write_bytes(bytes(200))
        os.replace(tmp_path / "g.bin", path)
        head, tail = bytearray(10), bytearray(5)
        source.read_ranges([(190, memoryview(tail)), (0, memoryview(head))])
        assert (bytes(head), bytes(tail)) == (bytes(range(10)), bytes(range(190, 195)))
        with pytest.raises(DataLossError, match="truncated"):
            source.read_ranges([(195, memoryview(bytearray(10)))])
    source.close()  # closing twice is harmless
    fresh = bytearray(10)
    files.read_ranges(str(path), [(0, memoryview(fresh))])
    assert bytes(fresh) == bytes(10)


def test_a_source_of_a_missing_file_fails_when_opened(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="missing.bin"):
        LocalFiles().open_source(str(tmp_path / "missing.bin"))


def test_a_subclass_reading_its_own_way_sees_every_read_of_a_source(tmp_path: Path) -> None:
    # A store that transforms or counts what it reads must not be bypassed by the descriptor-holding source.
    class Inverting(LocalFiles):
        def read_ranges(self, path: str, ranges: Sequence[tuple[int, memoryview]]) -> None:
            super().read_ranges(path, ranges)
            for _, out in ranges:
                out[:] = bytes(255 - b for b in out)

    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(8)))
    out = bytearray(8)
    with closing(Inverting().open_source(str(path))) as source:
        source.read_ranges([(0, memoryview(out))])
    assert bytes(out) == bytes(255 - b for b in range(8))


def test_error_translation(tmp_path: Path) -> None:
    files = LocalFiles()
    with pytest.raises(CheckpointNotFoundError, match="cannot open .*missing"):
        files.read_into(str(tmp_path / "missing"), 0, memoryview(bytearray(1)))
    assert files.size(str(tmp_path / "missing")) is None
    assert files.listdir(str(tmp_path / "nodir")) == []
    files.delete([str(tmp_path / "missing")])
    with pytest.raises(StorageError, match="not a local path"):
        files.size("s3://bucket/key")
    (tmp_path / "dir").mkdir()
    with pytest.raises(StorageError, match="cannot read .*dir.*Is a directory"):
        files.read_into(str(tmp_path / "dir"), 0, memoryview(bytearray(1)))


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_permission_error(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StoragePermissionError, match="check file permissions"):
            LocalFiles().put(str(locked / "f"), b"x")
    finally:
        locked.chmod(0o700)


def test_save_below_a_regular_file_says_not_writable(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("a file, not a directory")
    backend = BundleBackend(LocalFiles())
    for prefix in (tmp_path / "afile" / "ckpt", tmp_path / "afile" / "deeper" / "ckpt"):
        with pytest.raises(StorageError, match=r"not writable, because '.*afile' is a file, not a directory") as info:
            backend.save(str(prefix), [WriteItem("x", np.zeros(2))])
        assert not isinstance(info.value, CheckpointNotFoundError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs a mounted /proc")
def test_save_where_the_file_system_refuses_new_entries_says_not_writable() -> None:
    # procfs answers mkdir with ENOENT although /proc exists: not "missing", not writable.
    refused = r"'/proc/tp-ckpt_temp': the location is not writable \(the file system refused .* under '/proc'"
    with pytest.raises(StorageError, match=refused) as info:
        tp.Checkpoint(v=tp.Variable(np.ones(2))).write("/proc/tp-ckpt")
    assert not isinstance(info.value, CheckpointNotFoundError)


@pytest.mark.parametrize("err", [errno.EACCES, errno.EPERM, errno.EROFS])
def test_refused_directory_is_a_permission_error_saying_not_writable(tmp_path: Path, err: int) -> None:
    # Root ignores permissions, so the refusal is synthetic here; the diagnosis looks at the real path.
    refused = r"directory '/d': the location is not writable \(creating the directory failed: .*check its permissions"
    with pytest.raises(StoragePermissionError, match=refused):
        _not_writable(OSError(err, os.strerror(err)), "/d", str(tmp_path / "new"))


@pytest.mark.parametrize(
    ("err", "cls"),
    [
        (errno.EACCES, StoragePermissionError),
        (errno.EROFS, StoragePermissionError),
        (errno.ENOENT, CheckpointNotFoundError),
        (errno.EEXIST, CheckpointExistsError),
        (errno.EIO, StorageError),
    ],
)
def test_errno_mapping(err: int, cls: type[Exception]) -> None:
    # Root ignores permissions, so the mapping is also checked on synthetic errors.
    cause = OSError(err, os.strerror(err))
    with pytest.raises(cls, match="local: cannot write '/x/y'") as info:
        _raise(cause, "write", "/x/y")
    assert info.value.__cause__ is cause


_WORKER = r"""
import sys
import numpy as np

import trackpoint as tp
from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.stores.local import LocalFiles, _not_writable, _raise
from trackpoint.errors import ConcurrentModificationError
files = LocalFiles()
path, n = sys.argv[1], int(sys.argv[2])
done = 0
while done < n:
    got = files.read_versioned(path)
    try:
        files.write_versioned(path, str(int(got.data) + 1).encode(), if_version=got.version)
        done += 1
    except ConcurrentModificationError:
        pass
"""


def test_versioned_writes_lose_no_update_across_processes(tmp_path: Path) -> None:
    files = LocalFiles()
    path = str(tmp_path / "counter")
    files.write_versioned(path, b"0", if_version=MUST_NOT_EXIST)
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, path, "40"]) for _ in range(3)]
    for p in procs:
        assert p.wait(timeout=120) == 0
    got = files.read_versioned(path)
    assert got is not None and got.data == b"120"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter"]
    with pytest.raises(ConcurrentModificationError, match="changed since version"):
        files.write_versioned(path, b"x", if_version="1:2:3")


def test_find_and_rmtree(tmp_path: Path) -> None:
    files = LocalFiles()
    root = tmp_path / "tree"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    for rel in ("a", "sub/b", "sub/deeper/c"):
        (root / rel).write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"k")
    (root / "link").symlink_to(outside, target_is_directory=True)
    assert files.find(str(root)) == [str(root / "a"), str(root / "sub" / "b"), str(root / "sub" / "deeper" / "c")]
    files.rmtree(str(root))
    assert not root.exists()
    assert (outside / "keep").read_bytes() == b"k"  # a symlinked directory is unlinked, never emptied
    files.rmtree(str(root))  # a missing tree is not an error
    assert files.find(str(root)) == []


@pytest.mark.parametrize("how", ["renameat2", "link", "check"])
def test_rename_new_never_replaces_what_is_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    # A commit without overwrite publishes with it: os.replace took another writer's index committed meanwhile.
    files = LocalFiles()
    if how != "renameat2":
        monkeypatch.setattr(local, "_rename_noreplace", lambda src, dst: False)
    if how == "check":
        real_link = os.link

        def no_links(src: str, dst: str) -> None:
            raise OSError(errno.EPERM, "no hard links here", dst)

        monkeypatch.setattr(os, "link", no_links)
        assert real_link is not os.link
    (tmp_path / "src").write_bytes(b"mine")
    (tmp_path / "dst").write_bytes(b"theirs")
    with pytest.raises(tp.CheckpointExistsError, match="exists; .* was not moved there"):
        files.rename_new(str(tmp_path / "src"), str(tmp_path / "dst"))
    assert (tmp_path / "dst").read_bytes() == b"theirs" and (tmp_path / "src").read_bytes() == b"mine"
    files.rename_new(str(tmp_path / "src"), str(tmp_path / "new"))
    assert (tmp_path / "new").read_bytes() == b"mine" and not (tmp_path / "src").exists()
