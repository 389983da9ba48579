"""trackpoint.diff: added, removed and changed tensors, with tolerances."""

from __future__ import annotations

import collections
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import trackpoint as tp
from stateful_objects import StateHolder

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tf"


def _save(path: Path, **values: np.ndarray) -> str:
    model = tp.AutoTrackable()
    for name, value in values.items():
        setattr(model, name, tp.Variable(value))
    return tp.Checkpoint(m=model).write(str(path))


def test_tensorflow_saves_one_step_apart() -> None:
    report = tp.diff(FIXTURES / "tf1_saver" / "model.ckpt-1", FIXTURES / "tf1_saver" / "model.ckpt-2")
    assert not report.equal and report.same == 1 and report.added == report.removed == ()
    changed = {c.key: c for c in report.changed}
    assert set(changed) == {"dense/bias", "dense/kernel", "global_step"}
    assert changed["global_step"].max_abs == 100.0 and changed["global_step"].max_rel == 0.5
    assert changed["dense/kernel"].max_abs == pytest.approx(1.0) and changed["dense/kernel"].kind == "values"


def test_a_checkpoint_equals_itself() -> None:
    report = tp.diff(FIXTURES / "dtypes" / "ckpt-1", FIXTURES / "dtypes" / "ckpt-1")
    assert report.equal and report.same == len(tp.list_variables(FIXTURES / "dtypes" / "ckpt-1")) - 1


def test_added_removed_dtype_and_shape_changes(tmp_path: Path) -> None:
    a = _save(tmp_path / "a", w=np.zeros(3, np.float32), gone=np.zeros(1), s=np.zeros(2, np.float32))
    b = _save(tmp_path / "b", w=np.zeros(3, np.float64), new=np.zeros(1), s=np.zeros(4, np.float32))
    report = tp.diff(a, b)
    assert report.added == ("m/new/.ATTRIBUTES/VARIABLE_VALUE",)
    assert report.removed == ("m/gone/.ATTRIBUTES/VARIABLE_VALUE",)
    kinds = {c.key: (c.kind, c.dtype, c.shape) for c in report.changed}
    assert kinds == {
        "m/s/.ATTRIBUTES/VARIABLE_VALUE": ("shape", ("float32", "float32"), ((2,), (4,))),
        "m/w/.ATTRIBUTES/VARIABLE_VALUE": ("dtype", ("float32", "float64"), ((3,), (3,))),
    }


def test_tolerances_decide_what_changed(tmp_path: Path) -> None:
    a = _save(tmp_path / "a", w=np.array([1.0, 2.0, np.nan]), z=np.array([0.0]))
    b = _save(tmp_path / "b", w=np.array([1.0, 2.002, np.nan]), z=np.array([1e-9]))
    exact = tp.diff(a, b)
    changed = {c.key: c for c in exact.changed}
    assert changed["m/w/.ATTRIBUTES/VARIABLE_VALUE"].max_abs == pytest.approx(0.002)
    assert changed["m/w/.ATTRIBUTES/VARIABLE_VALUE"].max_rel == pytest.approx(0.002 / 2.002)
    assert changed["m/z/.ATTRIBUTES/VARIABLE_VALUE"].max_rel == pytest.approx(1.0)  # |0 - 1e-9| / 1e-9
    assert tp.diff(a, b, rtol=1e-3, atol=1e-8).equal
    assert not tp.diff(a, b, rtol=1e-4, atol=1e-8).equal
    with pytest.raises(ValueError, match="must not be negative"):
        tp.diff(a, b, atol=-1)


def test_strings_bfloat16_and_a_flat_file(tmp_path: Path) -> None:
    a = _save(tmp_path / "a", s=np.array([b"x", b"y"], dtype=object), h=np.ones(2, ml_dtypes.bfloat16))
    b = _save(tmp_path / "b", s=np.array([b"x", b"z"], dtype=object), h=np.full(2, 1.5, ml_dtypes.bfloat16))
    report = tp.diff(a, b)
    changed = {c.key: c for c in report.changed}
    assert changed["m/s/.ATTRIBUTES/VARIABLE_VALUE"].max_abs is None
    assert changed["m/h/.ATTRIBUTES/VARIABLE_VALUE"].max_abs == 0.5
    tp.convert(a, str(tmp_path / "a.npz"))
    assert tp.diff(a, str(tmp_path / "a.npz")).equal


def test_integers_differ_by_exact_amounts(tmp_path: Path) -> None:
    """Step counters, hashed ids and RNG states: float64 cannot tell 2**62 + 1 from 2**62."""
    a = _save(
        tmp_path / "a",
        step=np.array(2**62 + 1, np.int64),
        seed=np.array([2**64 - 1], np.uint64),
        far=np.array([2**63 - 1], np.int64),
        same=np.array([2**62], np.int64),
    )
    b = _save(
        tmp_path / "b",
        step=np.array(2**62, np.int64),
        seed=np.array([2**64 - 2], np.uint64),
        far=np.array([-(2**63)], np.int64),
        same=np.array([2**62], np.int64),
    )
    report = tp.diff(a, b)
    changed = {c.key.split("/")[1]: c for c in report.changed}
    assert set(changed) == {"step", "seed", "far"} and report.same == 1
    assert changed["step"].max_abs == 1.0 and changed["seed"].max_abs == 1.0
    assert changed["far"].max_abs == float(2**64 - 1) and changed["far"].max_rel == pytest.approx(2.0)
    assert tp.diff(a, b, atol=1).changed == (changed["far"],)


def test_a_value_that_became_infinite_or_nan_is_changed_whatever_the_tolerance(tmp_path: Path) -> None:
    a = _save(tmp_path / "a", w=np.array([1.0, 2.0]), flip=np.array([np.inf]), kept=np.array([np.inf, np.nan]))
    b = _save(tmp_path / "b", w=np.array([np.inf, 2.0]), flip=np.array([-np.inf]), kept=np.array([np.inf, np.nan]))
    with np.errstate(all="raise"):  # and no floating-point warnings on the way
        report = tp.diff(a, b, rtol=1e-6)
    changed = {c.key.split("/")[1]: c for c in report.changed}
    assert set(changed) == {"w", "flip"} and report.same == 1
    assert changed["w"].max_abs == changed["w"].max_rel == np.inf
    assert changed["flip"].max_abs == changed["flip"].max_rel == np.inf
    c = _save(tmp_path / "c", w=np.array([1.0, np.nan]), flip=np.array([np.inf]), kept=np.array([np.inf, np.nan]))
    (nan,) = tp.diff(a, c, atol=1.0).changed  # NaN against a number has no size
    assert np.isnan(nan.max_abs) and np.isnan(nan.max_rel)


def test_a_state_dict_structure_is_compared_entry_by_entry(tmp_path: Path) -> None:
    base = {"groups": [{"lr": 0.1, "betas": (0.9, 0.999), "name": "a"}], "step": 3, "w": np.ones(2)}
    a = tp.Checkpoint(opt=StateHolder(base)).write(str(tmp_path / "a"))
    changed = {**base, "groups": [{"lr": 0.2, "betas": (0.9, 0.99), "name": "a"}], "extra": None}
    b = tp.Checkpoint(opt=StateHolder(changed)).write(str(tmp_path / "b"))
    report = tp.diff(a, b)
    assert [c.key for c in report.changed] == ["opt/.ATTRIBUTES/..STATE_DICT"] and report.same == 1
    assert report.changed[0].details == (
        "['extra']: (none) -> None",
        "['groups'][0]['betas'][1]: 0.999 -> 0.99",
        "['groups'][0]['lr']: 0.1 -> 0.2",
    )
    # Numbers in the structure compare within the tolerances, as tensors do; the rest must be equal.
    near = tp.Checkpoint(opt=StateHolder({**base, "step": 3, "groups": [{**base["groups"][0], "lr": 0.1000001}]}))
    c = near.write(str(tmp_path / "c"))
    assert not tp.diff(a, c).equal and tp.diff(a, c, rtol=1e-5).equal
    renamed = tp.Checkpoint(opt=StateHolder({**base, "groups": [{**base["groups"][0], "name": "b"}]}))
    d = renamed.write(str(tmp_path / "d"))
    assert tp.diff(a, d, rtol=1.0).changed[0].details == ("['groups'][0]['name']: 'a' -> 'b'",)


def test_other_strings_differ_without_details(tmp_path: Path) -> None:
    a = _save(tmp_path / "a", s=np.array([b"x"], dtype=object))
    b = _save(tmp_path / "b", s=np.array([b"y"], dtype=object))
    (change,) = tp.diff(a, b).changed
    assert change.details == () and change.max_abs is None


def test_state_dict_integers_compare_exactly_and_types_and_metadata_count(tmp_path: Path) -> None:
    def write(name: str, state: dict[str, object]) -> str:
        return tp.Checkpoint(s=StateHolder(state)).write(str(tmp_path / name))

    big = write("big", {"n": 2**62, "x": 1})
    assert tp.diff(big, write("big1", {"n": 2**62 + 1, "x": 1})).changed[0].details == (
        "['n']: 4611686018427387904 -> 4611686018427387905",
    )
    assert tp.diff(big, write("float", {"n": 2**62, "x": 1.0})).changed[0].details == ("['x']: 1 -> 1.0",)
    versioned = collections.OrderedDict(w=np.ones(1))
    versioned._metadata = {"": {"version": 1}}  # type: ignore[attr-defined]
    newer = collections.OrderedDict(w=np.ones(1))
    newer._metadata = {"": {"version": 2}}  # type: ignore[attr-defined]
    (change,) = tp.diff(write("v1", versioned), write("v2", newer)).changed
    assert change.details == ("._metadata['']['version']: 1 -> 2",)


def test_tensors_are_compared_in_batches_read_together(tmp_path: Path, bundle_reads: dict[str, int]) -> None:
    # One request per tensor and side made a diff of many small tensors take minutes on an object store.
    values = [np.full(3, float(i)) for i in range(200)]
    a = tp.Checkpoint(v=[tp.Variable(v) for v in values]).write(str(tmp_path / "a"))
    values[7] = values[7] + 1.0
    b = tp.Checkpoint(v=[tp.Variable(v) for v in values]).write(str(tmp_path / "b"))
    calls = bundle_reads
    report = tp.diff(a, b)
    assert [d.key for d in report.changed] == ["v/7/.ATTRIBUTES/VARIABLE_VALUE"] and report.same == 199
    assert calls == {"read": 0, "read_many": 2}


def _whole(x: np.ndarray, y: np.ndarray, atol: float, rtol: float) -> tuple[float, float | None] | None:
    """What diff reported before it compared in chunks, computed over the whole arrays: the reference."""
    if np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
        return None
    if x.dtype.kind in "iu":
        delta = np.maximum(x, y).astype(np.uint64) - np.minimum(x, y).astype(np.uint64)
        scale = np.where(y < 0, np.uint64(0) - y.astype(np.uint64), y.astype(np.uint64))
        if (atol or rtol) and np.all(delta.astype(np.float64) <= atol + rtol * scale.astype(np.float64)):
            return None
        nz = scale > 0
        return float(delta.max()), float(np.max(delta[nz] / scale[nz])) if np.any(nz) else None
    a, b = x.astype(np.float64), y.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if np.all(np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)):
            return None
        unchanged = (a == b) | (np.isnan(a) & np.isnan(b))
        delta = np.where(unchanged, 0.0, np.abs(a - b))
        scale = np.abs(b)
        nz = scale != 0
        if not np.any(nz):
            return float(np.max(delta)), None
        d, sc = delta[nz], scale[nz]
        rel = np.where(unchanged[nz], 0.0, np.where(np.isinf(sc) & (d > 0), np.inf, d / sc))
        return float(np.max(delta)), float(np.max(rel))


def _chunked_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Pairs of tensors of several chunks, their differences in different chunks."""
    from trackpoint.diff import CHUNK_ELEMENTS

    n = 3 * CHUNK_ELEMENTS + 17  # a last, short chunk
    rng = np.random.default_rng(1)
    base = rng.standard_normal(n).astype(np.float32)
    cases: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    b = base.copy()
    b[5] += 0.25  # chunk 0: small change
    b[-3] += 4.0  # last chunk: the largest
    cases["largest_in_the_last_chunk"] = (base, b)
    b = base.copy()
    b[CHUNK_ELEMENTS + 1] = np.nan  # a NaN against a number: no size, in chunk 1 only
    b[-1] += 1.0
    cases["nan_in_one_chunk"] = (base, b)
    a, b = np.zeros(n, np.float32), np.zeros(n, np.float32)
    a[2 * CHUNK_ELEMENTS] = 1.0  # the only difference, against b == 0: no relative size there
    b[3] = 7.0  # the only nonzero |b|, in an equal chunk: relative difference 0 there
    cases["nonzero_scale_only_in_an_equal_chunk"] = (a, b)
    b = base.copy()
    b[CHUNK_ELEMENTS * 2 + 5] = np.inf
    cases["became_infinite"] = (base, b)
    i = np.arange(n, dtype=np.int64) + 2**62
    j = i.copy()
    j[7] += 1  # exact, though float64 cannot tell them apart
    j[-2] -= 3
    cases["integers"] = (i, j)
    return cases


@pytest.mark.parametrize("case", sorted(_chunked_cases()))
@pytest.mark.parametrize(("atol", "rtol"), [(0.0, 0.0), (0.5, 0.0), (0.0, 1e-6)])
def test_a_comparison_in_chunks_reports_what_the_whole_tensor_does(
    tmp_path: Path, case: str, atol: float, rtol: float
) -> None:
    x, y = _chunked_cases()[case]
    report = tp.diff(_save(tmp_path / "a", w=x), _save(tmp_path / "b", w=y), atol=atol, rtol=rtol)
    expected = _whole(x, y, atol, rtol)
    if expected is None:
        assert report.equal
        return
    (changed,) = report.changed
    got = (changed.max_abs, changed.max_rel)
    assert np.array_equal(np.array(got, dtype=float), np.array(expected, dtype=float), equal_nan=True), (got, expected)
    assert (got[1] is None) == (expected[1] is None)


def test_the_comparison_holds_the_two_values_and_a_chunk_not_copies_of_them(tmp_path: Path) -> None:
    import tracemalloc

    n = 8 * 2**20  # 32 MiB of float32 on each side
    x = np.random.default_rng(2).standard_normal(n).astype(np.float32)
    y = x.copy()
    y[:: 2**16] += 1.0
    a, b = _save(tmp_path / "a", w=x), _save(tmp_path / "b", w=y)
    del x, y
    tp.diff(a, a)  # imports and caches before anything is measured
    for atol in (0.0, 2.0):
        tracemalloc.start()
        try:
            report = tp.diff(a, b, atol=atol)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert report.equal == (atol == 2.0)
        # The two values read (64 MiB) and the chunks' temporaries; before, about 19 times one value (600 MiB).
        assert peak < 64 * 2**20 + 32 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def _managed(directory: Path, metrics: dict[str, float] | None) -> str:
    """``ckpt-1`` of a CheckpointManager in ``directory``: the same weights, with ``metrics``."""
    ckpt = tp.Checkpoint(w=tp.Variable(np.arange(3, dtype=np.float32)))
    path = tp.CheckpointManager(ckpt, directory, max_to_keep=1).save(metrics=metrics)
    assert path is not None
    return path


def test_metrics_stored_by_a_manager_are_reported_apart_not_as_a_changed_tensor(tmp_path: Path) -> None:
    a = _managed(tmp_path / "a", {"loss": 0.5, "acc": float("nan")})
    b = _managed(tmp_path / "b", {"loss": 0.4, "acc": 0.9})
    report = tp.diff(a, b)
    # The weights are the same: other metrics do not make them different, but are shown.
    assert report.equal and report.changed == () and report.same == 2
    assert report.metrics == ({"acc": pytest.approx(float("nan"), nan_ok=True), "loss": 0.5}, {"acc": 0.9, "loss": 0.4})
    same = _managed(tmp_path / "same", {"loss": 0.5, "acc": float("nan")})
    assert tp.diff(a, same).metrics is None  # equal metrics (NaN too) are no difference
    without = _managed(tmp_path / "without", None)
    report = tp.diff(a, without)
    assert report.equal and report.added == report.removed == ()
    assert report.metrics is not None and report.metrics[1] is None
