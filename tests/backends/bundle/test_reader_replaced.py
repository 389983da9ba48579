"""A reader kept open while its checkpoint is overwritten: its failed reads say so, and say to re-open it.

An overwrite with the committed checkpoint's shard count names its data files for one more shard, so
the names come back every second overwrite (``-of-00001``, ``-of-00002``, ``-of-00001``) and hold the new
checkpoint's bytes, which fail the old index's checksums. That is a replaced checkpoint, not damage.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.stores import LocalFiles
from trackpoint.errors import DataLossError
from trackpoint.storage import Capabilities, CheckpointOptions, CheckpointReader, WriteItem

OBJECT_STORE_CAPS = Capabilities(atomic_rename=False, conditional_create=True)
REPLACED = r"checkpoint at '.*ckpt-1' was replaced while this reader had it open.*Re-open the checkpoint"

#: The ways a reader reads a whole tensor, each checked against the tensor's CRC-32C.
READS: dict[str, Callable[[CheckpointReader, str], Any]] = {
    "read": lambda r, key: r.read(key),
    "read_into": lambda r, key: r.read(key, np.empty(r.info(key).shape, r.info(key).dtype)),
    "read_slice": lambda r, key: r.read_slice(key, (0,), r.info(key).shape),
    "read_many": lambda r, key: r.read_many([(key, None)]),
    "read_many_two": lambda r, key: r.read_many([("w", None), (key, None)]),
}


def _items(value: float) -> list[WriteItem]:
    return [
        WriteItem("w", np.full(64, value, np.float32)),
        WriteItem("s", np.array([b"value %d" % value, b"x"], dtype=object)),
    ]


def _data_files(prefix: str) -> list[str]:
    return sorted(p.name for p in Path(prefix).parent.glob("*.data-*"))


@pytest.mark.parametrize("how", sorted(READS))
@pytest.mark.parametrize("key", ["w", "s"])
def test_two_overwrites_under_an_open_reader_say_it_was_replaced(
    backend: BundleBackend, prefix: str, how: str, key: str
) -> None:
    backend.save(prefix, _items(1.0))
    with backend.open_reader(prefix) as reader:
        backend.save(prefix, _items(2.0))
        backend.save(prefix, _items(3.0))
        # The data file name the reader's index names is back, holding the third checkpoint's bytes.
        assert _data_files(prefix) == ["ckpt-1.data-00000-of-00001"]
        with pytest.raises(DataLossError, match=REPLACED) as caught:
            READS[how](reader, key)
        assert "corrupted" not in str(caught.value)
        # The failed read is chained, for whoever wants its details.
        assert isinstance(caught.value.__cause__, DataLossError)
    with backend.open_reader(prefix) as again:
        assert float(again.read("w")[0]) == 3.0


def test_one_overwrite_under_an_open_reader_says_it_was_replaced(backend: BundleBackend, prefix: str) -> None:
    backend.save(prefix, _items(1.0))
    with backend.open_reader(prefix) as reader:
        backend.save(prefix, _items(2.0))  # the reader's data file is deleted
        with pytest.raises(DataLossError, match=REPLACED) as caught:
            reader.read("w")
        assert "so tensor 'w' can no longer be read" in str(caught.value)
        with pytest.raises(DataLossError, match=REPLACED):
            reader.read_many([("w", None), ("s", None)])


def test_a_partitioned_tensor_under_an_open_reader(backend: BundleBackend, prefix: str) -> None:
    # Tensors above max_shard_bytes are stored as slices, each checked against its own CRC-32C.
    options = CheckpointOptions(max_shard_bytes=1000, num_writers=1)

    def save(value: float) -> None:
        backend.save(prefix, [WriteItem("big", np.full((40, 10), value, np.float32))], options)

    save(1.0)
    with backend.open_reader(prefix) as reader:
        save(2.0)
        for read in (lambda: reader.read("big"), lambda: reader.read_slice("big", (0, 0), (40, 10))):
            with pytest.raises(DataLossError, match=REPLACED):
                read()
        save(3.0)
        with pytest.raises(DataLossError, match=REPLACED):
            reader.read("big")


def test_a_deleted_checkpoint_under_an_open_reader_says_so(backend: BundleBackend, prefix: str) -> None:
    backend.save(prefix, _items(1.0))
    with backend.open_reader(prefix) as reader:
        backend.delete(prefix)
        with pytest.raises(DataLossError, match=r"checkpoint at '.*ckpt-1' was deleted .*ckpt-1\.index' is gone"):
            reader.read("w")


def test_the_public_reader_across_two_overwrites(tmp_path: Path) -> None:
    prefix = str(tmp_path / "ckpt-1")
    v = tp.Variable(np.zeros(8, np.float32))
    checkpoint = tp.Checkpoint(v=v)
    checkpoint.write(prefix)
    with tp.load_checkpoint(prefix) as reader:
        key = "v/.ATTRIBUTES/VARIABLE_VALUE"
        for value in (1.0, 2.0):
            v.assign(np.full(8, value, np.float32))
            checkpoint.write(prefix)
        with pytest.raises(DataLossError, match=REPLACED):
            reader.get_tensor(key)
    with tp.load_checkpoint(prefix) as reader:
        np.testing.assert_array_equal(reader.get_tensor(key), np.full(8, 2.0, np.float32))


def test_damage_under_an_unchanged_index_is_still_reported_as_damage(backend: BundleBackend, prefix: str) -> None:
    backend.save(prefix, _items(1.0))
    data = Path(prefix + ".data-00000-of-00001")
    with backend.open_reader(prefix) as reader:
        raw = bytearray(data.read_bytes())
        raw[3] ^= 0x10
        data.write_bytes(bytes(raw))
        with pytest.raises(DataLossError, match=r"CRC-32C mismatch for tensor 'w' .*the data is corrupted") as caught:
            reader.read("w")
        assert "replaced" not in str(caught.value)
        with pytest.raises(DataLossError, match="CRC-32C mismatch for tensor 'w'"):
            reader.read_many([("w", None)])
        data.write_bytes(bytes(raw[:100]))
        with pytest.raises(DataLossError, match="truncated") as caught:
            reader.read("s")
        assert "replaced" not in str(caught.value)


def test_an_overwrite_with_the_same_bytes_reads_on(backend: BundleBackend, prefix: str) -> None:
    # The index is compared by content: a third save of the first one's values writes the first one's
    # files again, so the reader's entries describe them and reading goes on.
    backend.save(prefix, _items(1.0))
    with backend.open_reader(prefix) as reader:
        backend.save(prefix, _items(2.0))
        backend.save(prefix, _items(1.0))
        assert float(reader.read("w")[0]) == 1.0
        assert reader.read("s").tolist() == [b"value 1", b"x"]


class _CountingFiles(LocalFiles):
    """LocalFiles counting the reads of whole files (how the index is read)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.whole_reads: list[str] = []

    def read(self, path: str) -> bytes:
        self.whole_reads.append(path)
        return super().read(path)


@pytest.mark.parametrize("caps", [None, OBJECT_STORE_CAPS], ids=["rename", "create"])
def test_reads_that_succeed_never_read_the_index_again(tmp_path: Path, caps: Any) -> None:
    files = _CountingFiles(capabilities=caps)
    backend = BundleBackend(files, options=CheckpointOptions(num_writers=1))
    prefix = str(tmp_path / "ckpt-1")
    backend.save(prefix, _items(1.0))
    files.whole_reads.clear()
    with backend.open_reader(prefix) as reader:
        for how in READS:
            READS[how](reader, "w")
        reader.read("s")
        reader.read_slice("w", (10,), (5,))
        reader.read_many([("s", None), ("w", None)])
        assert files.whole_reads == [prefix + ".index"], "only the open reads the index"
        backend.save(prefix, _items(2.0))
        backend.save(prefix, _items(3.0))
        files.whole_reads.clear()
        with pytest.raises(DataLossError, match=REPLACED):
            reader.read_many([("s", None), ("w", None)])
        assert files.whole_reads == [prefix + ".index"], "a failed read reads the index once"
