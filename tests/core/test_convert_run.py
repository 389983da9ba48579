"""``convert_run``: a whole run (every checkpoint, their metrics, the state file) copied between stores and formats.

Each test saves a run with a real ``CheckpointManager`` (metrics ranked by ``best_fn``, and a checkpoint preserved
by ``keep_checkpoint_every_n_hours``), copies it, and opens a manager on the copy to check that it resumes as on
the source: same checkpoints kept, same latest, same best, same retention on the next save.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.convert import CopiedCheckpoint, convert_run
from trackpoint.errors import CheckpointExistsError, CheckpointNotFoundError, StorageError
from trackpoint.plugins import open_backend
from trackpoint.storage import CheckpointOptions

LOSSES = (0.5, 0.9, 0.7, 0.8)
ZARR = CheckpointOptions(backend="zarr")


class Clock:
    """An hour passes at every call: keep_checkpoint_every_n_hours=1.5 preserves every other checkpoint."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        self.now += 3600.0
        return self.now


def _manager(directory: str, clock: Clock, options: CheckpointOptions | None = None) -> tp.CheckpointManager:
    ckpt = tp.Checkpoint(w=tp.Variable(np.full(4, -1.0, np.float32)))
    return tp.CheckpointManager(
        ckpt,
        directory,
        max_to_keep=2,
        keep_checkpoint_every_n_hours=1.5,
        clock=clock,
        best_fn=lambda m: -m["loss"],
        options=options,
    )


def _run(directory: str, options: CheckpointOptions | None = None) -> tuple[tp.CheckpointManager, Clock]:
    """Four saves: ckpt-1 kept as the best, ckpt-2 preserved (unlisted), ckpt-3 and ckpt-4 the newest."""
    clock = Clock()
    manager = _manager(directory, clock, options)
    for step, loss in enumerate(LOSSES):
        manager.checkpoint.w.assign(np.full(4, step, np.float32))  # type: ignore[attr-defined]
        manager.save(metrics={"loss": loss})
    return manager, clock


def _names(paths: list[str]) -> list[str]:
    return [p.rstrip("/").rsplit("/", 1)[-1] for p in paths]


def _assert_resumes_as_source(src: tp.CheckpointManager, dst_dir: str, clock: Clock, options: Any = None) -> None:
    # A clock of its own, as far along as the source's: both managers see the same times.
    twin = Clock()
    twin.now = clock.now
    copy = _manager(dst_dir, twin, options)
    assert _names(copy.checkpoints) == _names(src.checkpoints) == ["ckpt-1", "ckpt-3", "ckpt-4"]
    assert copy.latest_checkpoint is not None and src.latest_checkpoint is not None
    assert _names([copy.latest_checkpoint]) == ["ckpt-4"]
    assert copy.best_checkpoint is not None and _names([copy.best_checkpoint]) == ["ckpt-1"]
    assert [copy.metrics(p) for p in copy.checkpoints] == [src.metrics(p) for p in src.checkpoints]
    copy.restore_or_initialize()
    assert copy.checkpoint.w.numpy().tolist() == [3.0] * 4  # type: ignore[attr-defined]
    # The preserved checkpoint came along, still unlisted: the manager never retires it.
    assert open_backend(dst_dir, options).exists(f"{dst_dir}/ckpt-2")
    # Retention ranks the copies as the source's: the same save keeps the same checkpoints on both sides.
    for manager in (src, copy):
        manager.save(metrics={"loss": 0.6})
    assert _names(copy.checkpoints) == _names(src.checkpoints) == ["ckpt-1", "ckpt-5"]


def _state(directory: str, options: CheckpointOptions | None = None) -> tuple[Any, ...]:
    st = tp.read_checkpoint_state(directory, options)
    assert st is not None
    return (
        _names([st.model_checkpoint_path]),
        _names(list(st.all_model_checkpoint_paths)),
        list(st.all_model_checkpoint_timestamps),
        st.last_preserved_timestamp,
    )


@pytest.mark.s3
def test_a_run_copied_to_s3_resumes_there(tmp_path: Path, s3_bucket: str, s3_storage_options: dict[str, Any]) -> None:
    source, clock = _run(str(tmp_path / "run"))
    remote = CheckpointOptions(storage_options=s3_storage_options)
    dst = f"{s3_bucket}/runs/a"
    seen: list[CopiedCheckpoint] = []

    done = convert_run(tmp_path / "run", dst, dst_options=remote, on_checkpoint=seen.append)

    assert [(e.action, _names([e.dst])) for e in seen] == [("copied", [f"ckpt-{n}"]) for n in range(1, 5)]
    assert list(done.checkpoints) == seen and all(e.bytes > 0 for e in seen)
    assert done.state_file == f"{dst}/checkpoint"
    # Relative paths, timestamps and last_preserved_timestamp as the source's state file has them.
    raw = open_backend(dst, remote).read_file(f"{dst}/checkpoint")
    assert raw is not None and b"s3://" not in raw.data and str(tmp_path).encode() not in raw.data
    assert _state(dst, remote) == _state(str(tmp_path / "run"))
    _assert_resumes_as_source(source, dst, clock, remote)


def test_bundle_to_zarr_and_back(tmp_path: Path) -> None:
    source, clock = _run(str(tmp_path / "run"))
    zarr_dir, back = str(tmp_path / "zarr"), str(tmp_path / "back")

    convert_run(str(tmp_path / "run"), zarr_dir, dst_options=ZARR)
    assert sorted(os.listdir(zarr_dir)) == ["checkpoint", *(f"ckpt-{n}.zarr" for n in range(1, 5))]
    convert_run(zarr_dir, back)

    assert _state(back) == _state(zarr_dir) == _state(str(tmp_path / "run"))
    for n in range(1, 5):
        assert tp.diff(f"{tmp_path}/run/ckpt-{n}", f"{back}/ckpt-{n}").equal
    # A manager without options reads the Zarr copy as it reads the bundles.
    twin = Clock()
    twin.now = clock.now
    assert _names(_manager(zarr_dir, twin).checkpoints) == ["ckpt-1", "ckpt-3", "ckpt-4"]
    _assert_resumes_as_source(source, back, clock)


@pytest.mark.s3
def test_an_interrupted_copy_leaves_whole_checkpoints_and_no_state_file(
    tmp_path: Path, s3_endpoint: str, s3_bucket: str, s3_storage_options: dict[str, Any]
) -> None:
    from faultproxy import FaultProxy, Rule

    source, clock = _run(str(tmp_path / "run"))
    dst = f"{s3_bucket}/runs/a"
    remote = CheckpointOptions(storage_options=s3_storage_options)
    with FaultProxy(s3_endpoint) as proxy:
        through = CheckpointOptions(
            storage_options={**s3_storage_options, "endpoint_url": proxy.url}, backend_options={"retries": 0}
        )
        # The store refuses every write of ckpt-3: the copy fails after ckpt-1 and ckpt-2 are committed.
        proxy.add(Rule("PUT", r"ckpt-3", status=503, times=1000))
        seen: list[CopiedCheckpoint] = []
        with pytest.raises(StorageError):
            convert_run(tmp_path / "run", dst, dst_options=through, on_checkpoint=seen.append)
        assert [e.action for e in seen] == ["copied", "copied"]
        backend = open_backend(dst, remote)
        assert _names(backend.list_checkpoints(dst)) == ["ckpt-1", "ckpt-2"]
        assert backend.read_file(f"{dst}/checkpoint") is None
        assert backend.cleanup(dst, min_age=0) == []  # nothing of ckpt-3 was left behind

        # Run again: the checkpoints copied whole are compared and skipped, the others copied, the state written.
        proxy.clear()
        again = convert_run(tmp_path / "run", dst, dst_options=through)
    assert [e.action for e in again.checkpoints] == ["skipped", "skipped", "copied", "copied"]
    assert _state(dst, remote) == _state(str(tmp_path / "run"))
    _assert_resumes_as_source(source, dst, clock, remote)


def test_a_destination_holding_the_series_is_refused_without_overwrite(tmp_path: Path) -> None:
    _run(str(tmp_path / "run"))
    other = _manager(str(tmp_path / "dst"), Clock())
    other.save(metrics={"loss": 0.1})  # another run's ckpt-1, and its state file
    before = {name: (tmp_path / "dst" / name).read_bytes() for name in os.listdir(tmp_path / "dst")}

    with pytest.raises(CheckpointExistsError, match=r"differ from the source's: ckpt-1.*pass overwrite=True"):
        convert_run(tmp_path / "run", tmp_path / "dst")
    after = {name: (tmp_path / "dst" / name).read_bytes() for name in os.listdir(tmp_path / "dst")}
    assert after == before  # nothing written

    done = convert_run(tmp_path / "run", tmp_path / "dst", overwrite=True)
    assert [e.action for e in done.checkpoints] == ["replaced", "copied", "copied", "copied"]
    assert _state(str(tmp_path / "dst")) == _state(str(tmp_path / "run"))
    assert tp.diff(f"{tmp_path}/run/ckpt-1", f"{tmp_path}/dst/ckpt-1").equal


def test_a_checkpoint_of_the_series_the_source_lacks_is_refused_and_kept(tmp_path: Path) -> None:
    _run(str(tmp_path / "run"))
    convert_run(tmp_path / "run", tmp_path / "dst")
    tp.Checkpoint(w=tp.Variable(np.zeros(2, np.float32))).write(str(tmp_path / "dst" / "ckpt-9"))

    with pytest.raises(CheckpointExistsError, match="the source does not hold: ckpt-9"):
        convert_run(tmp_path / "run", tmp_path / "dst")
    done = convert_run(tmp_path / "run", tmp_path / "dst", overwrite=True)
    assert [e.action for e in done.checkpoints] == ["skipped"] * 4
    assert tp.checkpoint_exists(str(tmp_path / "dst" / "ckpt-9"))


def test_the_source_directory_itself_and_an_empty_source_are_refused(tmp_path: Path) -> None:
    _run(str(tmp_path / "run"))
    with pytest.raises(tp.InvalidArgumentError, match="same directory"):
        convert_run(tmp_path / "run", f"{tmp_path}/run/", overwrite=True)
    with pytest.raises(CheckpointNotFoundError, match="it is a checkpoint prefix, not a directory"):
        convert_run(tmp_path / "run" / "ckpt-4", tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


def test_a_copy_in_another_format_at_the_destination_is_found_before_anything_is_written(tmp_path: Path) -> None:
    _run(str(tmp_path / "run"))
    convert_run(tmp_path / "run", tmp_path / "dst")  # bundles
    (tmp_path / "dst" / "checkpoint").unlink()
    tp.remove_checkpoint(str(tmp_path / "dst" / "ckpt-1"))
    before = sorted(os.listdir(tmp_path / "dst"))

    # Zarr chosen for the copy: the bundles of ckpt-2.. would be shadowed, which is found before ckpt-1 is written.
    with pytest.raises(CheckpointExistsError, match="differ from the source's: ckpt-2, ckpt-3, ckpt-4"):
        convert_run(tmp_path / "run", tmp_path / "dst", dst_options=ZARR)
    assert sorted(os.listdir(tmp_path / "dst")) == before

    done = convert_run(tmp_path / "run", tmp_path / "dst", dst_options=ZARR, overwrite=True)
    assert [e.action for e in done.checkpoints] == ["copied", "replaced", "replaced", "replaced"]
    assert sorted(os.listdir(tmp_path / "dst")) == ["checkpoint", *(f"ckpt-{n}.zarr" for n in range(1, 5))]


def _other_series(directory: str, clock: Clock) -> tp.CheckpointManager:
    """Another job's manager: the series ``other-N``."""
    ckpt = tp.Checkpoint(v=tp.Variable(np.zeros(2, np.float32)))
    return tp.CheckpointManager(ckpt, directory, max_to_keep=None, checkpoint_name="other", clock=clock)


def test_the_destinations_other_series_stay_listed_in_time_order(tmp_path: Path) -> None:
    _run(str(tmp_path / "run"))
    src, dst = str(tmp_path / "run"), str(tmp_path / "dst")
    # Another job saves its own series in the destination, between the source's ckpt-2 and ckpt-3 in time.
    clock = Clock()
    clock.now += 2.5 * 3600.0
    _other_series(dst, clock).save()
    before = tp.read_checkpoint_state(dst)
    assert before is not None

    convert_run(src, dst, overwrite=True)

    latest, paths, stamps, preserved = _state(dst)
    src_latest, src_paths, src_stamps, src_preserved = _state(src)
    assert latest == src_latest == ["ckpt-4"]
    assert paths == ["ckpt-1", "other-1", "ckpt-3", "ckpt-4"] and src_paths == ["ckpt-1", "ckpt-3", "ckpt-4"]
    assert stamps == sorted([*src_stamps, *before.all_model_checkpoint_timestamps])
    assert preserved == max(src_preserved, before.last_preserved_timestamp)
    # The other job's manager still lists (and so retires) its checkpoint.
    assert _names(_other_series(dst, clock).checkpoints) == ["other-1"]
    # Copying the run again changes nothing: the state file with the other series is the run's, so no refusal.
    assert [e.action for e in convert_run(src, dst).checkpoints] == ["skipped"] * 4
    assert _state(dst) == (latest, paths, stamps, preserved)
