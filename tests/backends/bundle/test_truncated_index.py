"""An index cut short is damage (DataLossError, truncated); a file that is no index is foreign (InvalidCheckpointError).

Every bundle index begins with its header entry (the empty key, a ``BundleHeaderProto`` with its
version) and ends with the table footer's magic number. A file cut short keeps its beginning and loses
its end, so the beginning is the evidence once the magic is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp
from fixtures.tf import tfcases
from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.bundle._codec import encode_header
from trackpoint.backends.bundle._index import BundleIndex, header_count
from trackpoint.backends.bundle._sstable import FOOTER_SIZE, build_table, leading_entry, read_table
from trackpoint.backends.stores import LocalFiles
from trackpoint.errors import DataLossError, InvalidCheckpointError
from trackpoint.storage import CheckpointOptions, WriteItem

TRUNCATED = r"ckpt-1\.index is truncated"
FOREIGN = r"ckpt-1\.index is not a TensorFlow bundle index"


def _lengths(n: int) -> list[int]:
    """Cut lengths: every one up to 600 bytes and over the last 64, and a spread between."""
    return sorted({*range(min(n, 600)), *range(max(0, n - 64), n), *range(600, n, max(1, n // 200))})


def _saved_index(tmp_path: Path) -> bytes:
    """A trackpoint index over two data files: plain tensors, strings, and a partitioned tensor."""
    prefix = str(tmp_path / "saved" / "ckpt-1")
    items = [WriteItem(f"layer_{i:03d}/kernel", np.full((3, 4), i, np.float32)) for i in range(60)]
    items += [WriteItem("names", np.array([b"a", b"bc"], dtype=object)), WriteItem("big", np.zeros((64, 8)))]
    BundleBackend(LocalFiles()).save(prefix, items, CheckpointOptions(max_shard_bytes=2048, num_writers=2))
    return Path(prefix + ".index").read_bytes()


def _indexes(tmp_path: Path) -> dict[str, bytes]:
    """Real indexes: one trackpoint saved, and the last checkpoint of every TensorFlow fixture."""
    found = {"trackpoint": _saved_index(tmp_path)}
    for case in tfcases.CASES:
        found[f"tf/{case}"] = Path(tfcases.prefix(case) + ".index").read_bytes()
    return found


def test_every_cut_of_a_real_index_is_data_loss_saying_truncated(tmp_path: Path) -> None:
    where = str(tmp_path / "ckpt-1.index")
    for name, index in _indexes(tmp_path).items():
        BundleIndex(index, where)  # whole, it reads
        for k in _lengths(len(index)):
            with pytest.raises(DataLossError, match=TRUNCATED) as caught:
                BundleIndex(index[:k], where)
            assert f"{k} bytes" in str(caught.value), (name, k)
            if k >= FOOTER_SIZE:
                assert "begin with a bundle header" in str(caught.value), (name, k)
            # Cleanup asks the header of a damaged index without failing: it does not know the count.
            assert header_count(index[:k], where) is None, (name, k)


@pytest.mark.parametrize("keep", [48, 49, 100, 200, -1], ids=lambda n: f"first{n}bytes" if n > 0 else "all_but_1")
def test_a_cut_index_is_data_loss_through_the_readers(tmp_path: Path, keep: int) -> None:
    d = tfcases.copy_case("nested", tmp_path)
    index = d / "ckpt-1.index"
    index.write_bytes(index.read_bytes()[:keep])
    prefix = str(d / "ckpt-1")
    with pytest.raises(DataLossError, match=TRUNCATED):
        BundleBackend(LocalFiles()).open_reader(prefix)
    with pytest.raises(DataLossError, match=TRUNCATED):
        tp.load_checkpoint(prefix)
    with pytest.raises(DataLossError, match=TRUNCATED):
        tp.Checkpoint(v=tp.Variable(np.zeros(3, np.float32))).restore(prefix)


def _foreign(size: int) -> dict[str, bytes]:
    """Files of an index's size that are no index at all."""
    text = b'model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n'
    return {
        "text": (text * (size // len(text) + 1))[:size],
        "random": os.urandom(size),
        "zeros": bytes(size),  # begins like an entry of the empty key, holding nothing: no header
        # Tables cut short, but no bundle index: their first key is not the header's, or holds no header.
        "table": build_table([(b"key%04d" % i, b"value") for i in range(size // 10)])[:size],
        "header_value_under_a_key": build_table([(b"a", encode_header(1)), (b"b", b"y")])[:-1],
        "empty_key_without_header": build_table([(b"", b"not a header"), (b"b", b"y")])[:-1],
    }


@pytest.mark.parametrize("kind", sorted(_foreign(300)))
def test_a_file_that_is_no_index_stays_invalid_not_data_loss(tmp_path: Path, kind: str) -> None:
    size = len(_saved_index(tmp_path))
    data = _foreign(size)[kind]
    if kind == "random" and leading_entry(data) is not None:
        data = b"\xff" + data[1:]  # 1 in 65536: random bytes beginning with an entry of the empty key
    where = str(tmp_path / "ckpt-1.index")
    with pytest.raises(InvalidCheckpointError, match=FOREIGN) as caught:
        BundleIndex(data, where)
    assert not isinstance(caught.value, DataLossError)
    assert "missing the table magic number" in str(caught.value)
    prefix = str(tmp_path / "ckpt-1")
    Path(where).write_bytes(data)
    with pytest.raises(InvalidCheckpointError, match=FOREIGN) as caught:
        tp.load_checkpoint(prefix)
    assert not isinstance(caught.value, DataLossError)


def test_leading_entry_reads_the_first_entry_without_the_footer() -> None:
    table = build_table([(b"", encode_header(3)), (b"k", b"v")])
    assert leading_entry(table) == (b"", encode_header(3))
    assert leading_entry(table[:5]) is None  # the entry is not complete
    assert leading_entry(b"") is None
    assert leading_entry(b"\x01\x00\x00") is None  # a block's first entry shares no key bytes
    assert leading_entry(b"\xff" * 12) is None  # no varint
    assert read_table(table, "t")[0] == leading_entry(table)


def test_a_whole_index_whose_magic_number_is_damaged_is_data_loss(tmp_path: Path) -> None:
    index = bytearray(_saved_index(tmp_path))
    index[-1] ^= 0x01
    with pytest.raises(DataLossError, match=TRUNCATED + r".*or damaged at its end"):
        BundleIndex(bytes(index), str(tmp_path / "ckpt-1.index"))
