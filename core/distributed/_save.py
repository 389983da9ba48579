"""The save protocol run by several ranks: one begin, every rank's shards, one commit, one outcome.

Every rank calls :func:`save` with its own tensors (its ``WriteItem`` list) and
the same prefix. Three exchanges through the coordinator make one checkpoint:

1. *plan* (all-gather): each rank sends the prefix, its tuning and, per tensor,
   key, size, dtype and shape; rank 0 first runs ``begin`` (with the save's
   overwrite) and adds the save id or its failure. From these messages every
   rank computes the same plan: which rank writes each tensor, and how the
   shards are numbered. A key held by several ranks is *replicated*: it is
   written once, by one of its holders, chosen greedily by size (largest
   tensor first, to the holder with the fewest bytes so far; ties to the lower
   rank) after the tensors only one rank holds are counted, so ranks write
   about the same number of bytes. The holders must agree on its dtype and
   shape (and, for string tensors such as the object graph, on the bytes).
2. *written* (all-gather): each rank writes its shards through
   ``write_shard`` and sends the manifests (``ShardResult``: plain data) or
   its failure.
3. *outcome* (one decision, then a broadcast from rank 0): if every rank
   wrote, rank 0 records "commit" for the save with the coordinator's
   ``set_if_absent`` and, if that record is the one kept, commits all
   manifests with one ``commit``; otherwise (a failure, a time-out, or an
   "abort" some rank recorded first) it calls ``abort``. It then broadcasts
   the outcome, which every rank returns or raises.

A rank that gives up waiting (a time-out in step 2 or 3) records "abort" with
``set_if_absent`` before raising. Of "commit" and "abort" only the first
recorded counts, so rank 0 never commits a save that a rank has already
reported as failed, and a rank that finds "commit" recorded waits for the
commit's outcome instead of failing: every rank follows the one recorded
decision. A rank that recorded "abort" still takes part in the broadcast, so
the ranks stay in step for the next save. The one case left undecided is rank
0 dying or hanging, after recording "commit", for longer than the time-out:
the waiting ranks then raise a :class:`CoordinationError` saying the outcome
is unknown.

Nothing is visible before rank 0's commit, so a failed save leaves the previous
checkpoint at the prefix as it was.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from trackpoint import _async, _resolve
from trackpoint.distributed._coordinator import Coordinator
from trackpoint.distributed._driver import Failure, collective, decode, describe, encode, operation, raise_failures
from trackpoint.errors import CoordinationError, CoordinationTimeoutError
from trackpoint.storage import (
    _SAVE_EVENTS,
    OBJECT_GRAPH_KEY,
    CheckpointOptions,
    ShardResult,
    ShardSpec,
    StorageBackend,
    WriteItem,
    _as_stored,
    _default_writers,
    _plan_sizes,
    assemble_slices,
    split_large,
)

__all__ = ["Plan", "plan_save", "save"]


@dataclass(frozen=True, slots=True)
class _Meta:
    """What a rank tells the others about one of its tensors."""

    key: str
    nbytes: int
    dtype: str
    shape: tuple[int, ...]
    digest: str | None  # string tensors only: their bytes must agree across holders
    slice: str | None = None  # the slice's TensorFlow spec, for one slice of the tensor ``key``

    @property
    def ident(self) -> tuple[str, str]:
        """What several ranks must hold alike to hold the same value: the key, and the slice if any."""
        return self.key, self.slice or ""

    def wire(self) -> list[Any]:
        return [self.key, self.nbytes, self.dtype, list(self.shape), self.digest, self.slice]

    @classmethod
    def unwire(cls, data: list[Any]) -> _Meta:
        key, nbytes, dtype, shape, digest, spec = data
        return cls(str(key), int(nbytes), str(dtype), tuple(int(d) for d in shape), digest, spec)


def _meta(item: WriteItem) -> _Meta:
    digest = None
    array = _as_stored(item)  # a JAX array's host copy is made only where it is written
    if array.dtype.kind == "O":
        h = hashlib.sha256()
        for x in array.flat:
            b = x.encode() if isinstance(x, str) else bytes(x)
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
        digest = h.hexdigest()
    spec = None if item.slice is None else item.slice.spec
    return _Meta(item.key, item.nbytes, str(array.dtype), tuple(array.shape), digest, spec)


def _ident(item: WriteItem) -> tuple[str, str]:
    return item.key, "" if item.slice is None else item.slice.spec


@dataclass(frozen=True, slots=True)
class Plan:
    """Who writes what: per rank, its shards as lists of values (key and slice spec), numbered in rank order."""

    shards: tuple[tuple[tuple[tuple[str, str], ...], ...], ...]

    @property
    def num_shards(self) -> int:
        return sum(len(s) for s in self.shards)

    def first_shard(self, rank: int) -> int:
        return sum(len(s) for s in self.shards[:rank])

    def bytes_per_rank(self, sizes: dict[str, int]) -> list[int]:
        """Bytes each rank writes, given the bytes of each key (of unsliced values)."""
        return [sum(sizes[k] for shard in rank for k, _ in shard) for rank in self.shards]


def plan_save(
    metas: Sequence[Sequence[_Meta]],
    writers: Sequence[int],
    max_shard_bytes: Sequence[int | None],
    min_bytes_per_writer: Sequence[int] | None = None,
) -> Plan:
    """The plan every rank computes from the exchanged metadata (see the module docstring).

    A rank with a positive ``min_bytes_per_writer`` (its backend's, sent when its
    ``num_writers`` was not given) uses at most one writer per that many bytes of
    what it writes, as a single-process save does.

    Raises
    ------
    CoordinationError
        Ranks holding one key disagree on its dtype, shape or (string tensors) bytes.
    """
    holders: dict[tuple[str, str], list[int]] = {}
    first: dict[tuple[str, str], tuple[int, _Meta]] = {}
    for rank, items in enumerate(metas):
        for m in items:
            seen = first.get(m.ident)
            if seen is None:
                first[m.ident] = (rank, m)
                holders[m.ident] = [rank]
                continue
            other, o = seen
            if (m.dtype, m.shape, m.digest) != (o.dtype, o.shape, o.digest):
                part = f" (slice {m.slice})" if m.slice else ""
                if m.key == OBJECT_GRAPH_KEY:
                    raise CoordinationError(
                        f"ranks {other} and {rank} save different object graphs: every rank must save the same "
                        "objects under the same names (the same Checkpoint structure, attribute and dict key "
                        "names on every rank; values may differ only in the parts of partitioned variables); "
                        "compare `trackpoint inspect --tree` of a checkpoint each rank writes alone"
                    )
                if (m.dtype, m.shape) == (o.dtype, o.shape):
                    how = f"both {_kind(o)}, different contents"
                else:
                    how = f"rank {other}: {_kind(o)}, rank {rank}: {_kind(m)}"
                from trackpoint.manager import METRICS_KEY  # only for this message, which is rare

                if m.key == METRICS_KEY:
                    advice = (
                        "the metrics given to CheckpointManager.save are stored once per checkpoint, so ranks "
                        "giving them must give the same: reduce them to one value per checkpoint first (average "
                        "the loss across ranks, say) or give them on rank 0 only (metrics=None on the others)"
                    )
                else:
                    advice = (
                        "a value saved by several ranks is written once and must be the same on each: save "
                        "per-rank values as the parts of a partitioned value (each rank's row of a "
                        "[world_size, n] tensor, declared with SaveSliceInfo)"
                    )
                raise CoordinationError(
                    f"ranks {other} and {rank} both save {m.key!r}{part} but disagree on it ({how}); {advice}"
                )
            holders[m.ident].append(rank)
    loads = [0] * len(metas)
    owner: dict[tuple[str, str], int] = {}
    for ident, ranks in holders.items():
        if len(ranks) == 1:
            owner[ident] = ranks[0]
            loads[ranks[0]] += first[ident][1].nbytes
    replicated = sorted((i for i, r in holders.items() if len(r) > 1), key=lambda i: (-first[i][1].nbytes, i))
    for ident in replicated:
        rank = min(holders[ident], key=lambda r: (loads[r], r))
        owner[ident] = rank
        loads[rank] += first[ident][1].nbytes
    shards = []
    for rank, items in enumerate(metas):
        # In the rank's own order (the object graph last), as a single process lays them out.
        mine = [m for m in items if owner[m.ident] == rank]
        sizes = [m.nbytes for m in mine]
        count = writers[rank]
        least = min_bytes_per_writer[rank] if min_bytes_per_writer else 0
        if least > 0:
            # Counted after replicated values were given out: the bytes this rank writes, not those it holds.
            count = max(1, min(count, sum(sizes) // least))
        groups = _plan_sizes(sizes, max_shard_bytes[rank], count)
        shards.append(tuple(tuple(mine[i].ident for i in g) for g in groups))
    return Plan(tuple(shards))


def _encode_result(r: ShardResult) -> list[Any]:
    return [
        r.spec.shard_id,
        r.spec.num_shards,
        r.spec.save_id,
        list(r.keys),
        r.nbytes,
        base64.b64encode(r.payload).decode(),
    ]


def _decode_result(data: list[Any]) -> ShardResult:
    shard_id, num_shards, save_id, keys, nbytes, payload = data
    return ShardResult(
        ShardSpec(int(shard_id), int(num_shards), str(save_id)), tuple(keys), int(nbytes), base64.b64decode(payload)
    )


def _write(
    backend: StorageBackend, prefix: str, specs: list[ShardSpec], groups: list[list[WriteItem]], writers: int
) -> list[ShardResult]:
    write: Callable[[str, ShardSpec, Sequence[WriteItem]], ShardResult] = backend.write_shard
    events = _SAVE_EVENTS.get()
    if events is not None:
        # Observed (trackpoint.observe), as a single process's StorageBackend.save: each shard
        # reports its bytes as it goes, and an async save's values are released as written.
        from trackpoint.observe import write_shard

        write = functools.partial(write_shard, events, backend.write_shard)
    if len(groups) <= 1:
        return [write(prefix, s, g) for s, g in zip(specs, groups, strict=True)]
    with ThreadPoolExecutor(max_workers=min(writers, len(groups)), thread_name_prefix="trackpoint-write") as ex:
        futures = [ex.submit(write, prefix, s, g) for s, g in zip(specs, groups, strict=True)]
        return [f.result() for f in futures]


def save(
    coordinator: Coordinator,
    backend: StorageBackend,
    prefix: str,
    items: Sequence[WriteItem],
    options: CheckpointOptions,
    *,
    overwrite: bool = True,
    failure: BaseException | None = None,
) -> None:
    """Write and commit one checkpoint together with the other ranks (see the module docstring).

    ``failure``: this rank failed before the save could start (collecting its values raised); it takes
    part anyway, so that the save fails on every rank instead of pairing the other ranks' save with this
    rank's next one.

    Raises
    ------
    CheckpointError
        On every rank when any rank failed: the rank's own error where it
        failed, the same trackpoint error class (naming the failed rank) on
        the others, :class:`CoordinationError` when the ranks disagree and
        :class:`CoordinationTimeoutError` when a rank did not answer in time.
    """
    # One operation: a rank that fell behind (timed out, or arrived after the others gave up) can only
    # meet this save's messages, never the next save's.
    with operation(coordinator, "save"):
        _save(coordinator, backend, prefix, items, options, overwrite=overwrite, failure=failure)


def _save(
    coordinator: Coordinator,
    backend: StorageBackend,
    prefix: str,
    items: Sequence[WriteItem],
    options: CheckpointOptions,
    *,
    overwrite: bool,
    failure: BaseException | None = None,
) -> None:
    target = backend.with_options(options)
    defaults = backend.save_defaults
    max_shard_bytes = options.max_shard_bytes if options.max_shard_bytes is not None else defaults.max_shard_bytes
    writers = options.num_writers or defaults.num_writers or _default_writers()
    # As in StorageBackend.save: the backend's floor applies only when no writer count was asked for.
    least = 0 if options.num_writers or defaults.num_writers else target.min_bytes_per_writer
    if not target.capabilities.parallel_writes:
        writers = 1
    rank = coordinator.rank
    begun: str | None = None  # rank 0: the save id, once begin succeeded
    try:
        # ---- 1. plan
        own: BaseException | None = None
        message: dict[str, Any] = {"step": "plan", "prefix": prefix, "overwrite": overwrite, "error": None}
        try:
            if failure is not None:
                raise failure
            if target.supports_slices:
                if target.splits_large_tensors:
                    # Split alike on every rank (same max_shard_bytes), so a replicated large tensor's
                    # pieces are replicated pieces, spread over the ranks like any other value.
                    items = split_large(items, max_shard_bytes)
            elif any(it.slice is not None for it in items):
                # A format without slice entries needs the whole tensor in one rank; assembling fails
                # (naming the key) when this rank holds only some of its slices.
                items = assemble_slices(items, where=f"{target.name or type(target).__name__}: save of {prefix!r}")
            metas = [_meta(it) for it in items]
            message.update(
                writers=writers,
                min_bytes_per_writer=least,
                max_shard_bytes=max_shard_bytes,
                items=[m.wire() for m in metas],
            )
            if rank == 0:
                # Rank 0 asks for all: a refusal on some ranks only would split the save.
                _resolve.refuse_shadow(prefix, options, backend, "Checkpoint.write")
                save_id = uuid.uuid4().hex
                target.begin(prefix, save_id, overwrite=overwrite)
                begun = save_id
                message["save_id"] = save_id
        except Exception as exc:  # noqa: BLE001 - carried to the other ranks, then raised here
            own = exc
            message["error"] = describe(rank, exc)
        what = f"saving {prefix!r}"
        data = collective(lambda: coordinator.all_gather(encode(message)), what, "planning", rank)
        gathered = [decode(m, r, "plan") for r, m in enumerate(data)]
        failures: list[Failure] = [m["error"] for m in gathered if m.get("error")]
        if failures:
            raise_failures(failures, own, what)
        for r, m in enumerate(gathered):
            if m["prefix"] != prefix or m["overwrite"] != overwrite:
                raise CoordinationError(
                    f"ranks save different checkpoints: rank {rank} saves {prefix!r} (overwrite={overwrite}), rank "
                    f"{r} saves {m['prefix']!r} (overwrite={m['overwrite']}); every rank must make the same call "
                    "with the same path (are the save counters of the ranks' checkpoints equal?)"
                )
        save_id = str(gathered[0]["save_id"])
        plan = plan_save(
            [[_Meta.unwire(x) for x in m["items"]] for m in gathered],
            [int(m["writers"]) for m in gathered],
            [m["max_shard_bytes"] for m in gathered],
            [int(m["min_bytes_per_writer"]) for m in gathered],
        )
        # ---- 2. write this rank's shards
        report: dict[str, Any] = {"step": "written", "error": None}
        try:
            by_ident = {_ident(it): it for it in items}
            first = plan.first_shard(rank)
            groups = [[by_ident[i] for i in shard] for shard in plan.shards[rank]]
            # Values the plan gave another rank (replicated ones) are never read here again: an async save
            # gives their pins and copies back now instead of holding them until the commit.
            mine = {i for shard in plan.shards[rank] for i in shard}
            _async.items_passed([it for it in items if _ident(it) not in mine])
            del mine
            specs = [ShardSpec(first + i, plan.num_shards, save_id) for i in range(len(groups))]
            report["shards"] = [_encode_result(r) for r in _write(target, prefix, specs, groups, writers)]
        except Exception as exc:  # noqa: BLE001 - carried to the other ranks, then raised here
            own = exc
            report["error"] = describe(rank, exc)
        wrote = report["error"] is None
        gave_up: CoordinationTimeoutError | None = None
        try:
            data = collective(lambda: coordinator.all_gather(encode(report)), what, "writing", rank)
            gathered = [decode(m, r, "written") for r, m in enumerate(data)]
        except CoordinationTimeoutError as exc:
            # Not the end of the save for the others: rank 0 may still be about to commit. The decision below
            # settles it; until then this rank's own contribution is in, and it goes on to step 3.
            gave_up, gathered = exc, []
        except CoordinationError as exc:
            if rank == 0 or not wrote:
                raise
            # Rank 0 may have had every report, this rank's included, and committed before it was lost.
            raise _outcome_lost(what, rank, prefix, exc) from exc
        failures = [m["error"] for m in gathered if m.get("error")]
        # ---- 3. one decision, commit on rank 0, outcome to all
        decision_key = f"save/{save_id}"

        def decide(value: bytes) -> int | None:
            return _decision(collective(lambda: coordinator.set_if_absent(decision_key, value), what, "decision", rank))

        if rank == 0:
            outcome: dict[str, Any] = {"step": "outcome", "error": None, "cleanup": False}
            if gave_up is not None:
                # Rank 0 alone records "commit", so a rank 0 that gave up needs no record to abort; the
                # ranks whose shards it never heard of clean up their own pieces (``cleanup``).
                outcome.update(error=describe(0, gave_up), cleanup=True)
            elif failures:
                outcome["error"] = failures[0]
            else:
                decided = decide(_COMMIT)
                if decided is None:
                    try:
                        results = [_decode_result(x) for m in gathered for x in m["shards"]]
                        target.commit(prefix, results, overwrite=overwrite)
                        begun = None  # committed: nothing to abort
                    except Exception as exc:  # noqa: BLE001 - carried to the other ranks, then raised here
                        own = exc
                        outcome["error"] = describe(0, exc)
                else:
                    # A rank gave up waiting before rank 0 could record "commit": the save is aborted.
                    outcome["error"] = [decided, "CoordinationTimeoutError", _gave_up_message(decided, coordinator)]
            if outcome["error"] is not None:
                _abort(target, prefix, begun)
                begun = None
            collective(lambda: coordinator.broadcast(encode(outcome)), what, "outcome", rank)
            if gave_up is not None:
                raise gave_up
            if failures or outcome["error"] is not None:
                raise_failures(failures or [outcome["error"]], own, what)
        else:
            committing = False  # whether this rank found "commit" recorded
            if gave_up is not None:
                committing = decide(_abort_record(rank)) is None
            # Even a rank that recorded "abort" takes part in the outcome broadcast: rank 0 sends it once it
            # learns of the abort, and a rank that skipped it would be a collective behind the others.
            try:
                outcome = decode(collective(lambda: coordinator.broadcast(None), what, "outcome", rank), 0, "outcome")
            except CoordinationTimeoutError as exc:
                if gave_up is None:
                    committing = decide(_abort_record(rank)) is None
                if committing:
                    raise CoordinationError(
                        f"{what}: rank 0 decided to commit but did not report the outcome to rank {rank} within "
                        f"{coordinator.timeout:g} s (rank 0 died or hangs while committing); whether the checkpoint "
                        f"at {prefix!r} was committed is unknown: check with the storage (latest_checkpoint, "
                        "load_checkpoint) before relying on it"
                    ) from exc
                # "abort" is recorded, so rank 0 cannot commit: failing here agrees with every other rank.
                if gave_up is not None:
                    raise gave_up from gave_up.__cause__
                raise
            except CoordinationError as exc:
                raise _outcome_lost(what, rank, prefix, exc) from exc
            if outcome.get("error"):
                if outcome.get("cleanup") and wrote:
                    # Rank 0 aborted without this rank's manifests: these pieces may postdate its abort.
                    _abort(target, prefix, save_id)
                raise_failures([outcome["error"]], own or gave_up, what)
            if own is not None:
                raise own
    except BaseException as exc:
        if begun is not None:
            # A time-out or a failure before the outcome: nothing was committed.
            _abort(target, prefix, begun, exc)
        raise


def _kind(meta: _Meta) -> str:
    """``meta``'s dtype and shape for a message: ``float32 [4]``, ``string []``."""
    dtype = "string" if meta.dtype == "object" else meta.dtype
    return f"{dtype} {list(meta.shape)}"


def _outcome_lost(what: str, rank: int, prefix: str, exc: CoordinationError) -> CoordinationError:
    """The error of a rank that lost the coordinator once rank 0 could have committed without it."""
    # The store itself failed, not a wait: with torch's tcp:// and env:// groups and with JAX it lives in
    # rank 0's process, so rank 0 may have died before or after committing, and no record can tell now.
    return CoordinationError(
        f"{what}: rank {rank} lost the coordinator while waiting for rank 0 to commit and report the outcome "
        f"(rank 0, which often hosts the coordinator's store, may have died): whether the checkpoint at {prefix!r} "
        f"was committed is unknown: check with the storage (latest_checkpoint, load_checkpoint) before relying on "
        f"it; the coordinator said: {exc}"
    )


#: Rank 0's record of a save's commit decision; any other record is an abort.
_COMMIT = b'{"decision":"commit"}'


def _abort_record(rank: int) -> bytes:
    return encode({"decision": "abort", "rank": rank})


def _decision(recorded: bytes) -> int | None:
    """``None`` for a recorded commit, else the rank that recorded the abort."""
    if recorded == _COMMIT:
        return None
    message = decode(recorded, -1)
    if message.get("decision") != "abort" or not isinstance(message.get("rank"), int):
        raise CoordinationError(f"a save's decision record holds {recorded!r:.80}; do all ranks run one trackpoint?")
    return int(message["rank"])


def _gave_up_message(rank: int, coordinator: Coordinator) -> str:
    return (
        f"rank {rank} gave up waiting for the other ranks (time-out {coordinator.timeout:g} s) before rank 0 could "
        "commit, so the save was aborted and nothing of it is visible; raise the coordinator's timeout above the "
        "slowest rank's write time"
    )


def _abort(backend: StorageBackend, prefix: str, save_id: str | None, cause: BaseException | None = None) -> None:
    if save_id is None:
        return
    try:
        backend.abort(prefix, save_id)
    except Exception as cleanup:  # noqa: BLE001 - the failure that stopped the save is the one to raise
        if cause is not None:
            cause.add_note(f"cleaning up after this failure also failed: {type(cleanup).__name__}: {cleanup}")
