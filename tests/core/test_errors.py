"""The error hierarchy: one root, and every subclass also the matching builtin."""

from __future__ import annotations

import errno
import inspect

import pytest

import trackpoint.errors as E

BUILTIN_OF = {
    E.CheckpointNotFoundError: FileNotFoundError,
    E.ForeignCheckpointError: FileNotFoundError,
    E.InvalidSavePathError: ValueError,
    E.SavePathIsNoneError: ValueError,
    E.CheckpointExistsError: FileExistsError,
    E.InvalidCheckpointError: ValueError,
    E.DataLossError: ValueError,
    E.InvalidPathError: ValueError,
    E.CheckpointKeyError: KeyError,
    E.TrackableError: ValueError,
    E.NameConflictError: ValueError,
    E.IncompletePartitionError: ValueError,
    E.NotTrackableError: TypeError,
    E.AssignmentError: ValueError,
    E.ShapeMismatchError: ValueError,
    E.DTypeMismatchError: TypeError,
    E.UnsupportedDTypeError: TypeError,
    E.InvalidArgumentError: ValueError,
    E.ArgumentTypeError: TypeError,
    E.UnsupportedOptionError: NotImplementedError,
    E.SaveInProgressError: RuntimeError,
    E.MatchError: AssertionError,
    E.CoordinationError: RuntimeError,
    E.CoordinationTimeoutError: TimeoutError,
    E.StorageError: OSError,
    E.StoragePermissionError: PermissionError,
    E.TransientStorageError: OSError,
    E.ConcurrentModificationError: OSError,
    E.BackendError: LookupError,
    E.UnknownBackendError: LookupError,
    E.BackendOptionError: ValueError,
    E.BackendUnavailableError: ImportError,
    E.PluginError: LookupError,
}


def _public_classes() -> list[type[BaseException]]:
    return [
        obj
        for name, obj in inspect.getmembers(E, inspect.isclass)
        if issubclass(obj, BaseException) and name in E.__all__
    ]


def test_every_public_error_is_listed_here() -> None:
    listed = set(BUILTIN_OF) | {E.CheckpointError}
    assert set(_public_classes()) == listed


@pytest.mark.parametrize("cls", sorted(BUILTIN_OF, key=lambda c: c.__name__))
def test_subclass_of_root_and_builtin(cls: type[BaseException]) -> None:
    assert issubclass(cls, E.CheckpointError)
    assert issubclass(cls, BUILTIN_OF[cls])
    # Generic handlers for the builtin catch it.
    with pytest.raises(BUILTIN_OF[cls]):
        raise cls("boom")


@pytest.mark.parametrize(
    "cls", [E.CheckpointNotFoundError, E.CheckpointExistsError, E.StorageError, E.StoragePermissionError]
)
def test_oserror_subclasses_keep_the_message_verbatim(cls: type[BaseException]) -> None:
    err = cls("s3: bucket 'b' key 'k' is missing; check the prefix")
    assert str(err) == "s3: bucket 'b' key 'k' is missing; check the prefix"


def test_key_error_message_is_not_repr_quoted() -> None:
    assert str(E.CheckpointKeyError("no tensor 'a'")) == "no tensor 'a'"


def test_root_is_exported_from_package() -> None:
    import trackpoint

    assert trackpoint.CheckpointError is E.CheckpointError
    assert trackpoint.DataLossError is E.DataLossError


# ------------------------------------------------------------------ context fields
def test_context_fields_default_to_none_and_are_keyword_only() -> None:
    err = E.StorageError("boom")
    assert (err.backend, err.url, err.key) == (None, None, None)
    with pytest.raises(TypeError):
        E.StorageError("boom", "s3")  # type: ignore[misc]


@pytest.mark.parametrize("cls", sorted(BUILTIN_OF, key=lambda c: c.__name__))
def test_every_error_carries_context_fields(cls: type[E.CheckpointError]) -> None:
    err = cls("cannot read it", backend="s3", url="s3://b/run/ckpt-1", key="w/.ATTRIBUTES/VARIABLE_VALUE")
    assert (err.backend, err.url, err.key) == ("s3", "s3://b/run/ckpt-1", "w/.ATTRIBUTES/VARIABLE_VALUE")
    assert str(err) == "cannot read it (backend 's3', url 's3://b/run/ckpt-1', key 'w/.ATTRIBUTES/VARIABLE_VALUE')"


def test_str_shows_only_the_context_the_message_lacks() -> None:
    err = E.CheckpointNotFoundError(
        "s3: 's3://b/run/ckpt-1.index' does not exist", backend="s3", url="s3://b/run/ckpt-1"
    )
    # The URL is shown as part of the index object's name and the backend as the message's first word.
    assert str(err) == "s3: 's3://b/run/ckpt-1.index' does not exist"
    # A longer name that merely starts with the URL does not count as showing it.
    other = E.CheckpointNotFoundError("no checkpoint 's3://b/run/ckpt-10'", url="s3://b/run/ckpt-1")
    assert str(other) == "no checkpoint 's3://b/run/ckpt-10' (url 's3://b/run/ckpt-1')"
    key = E.CheckpointKeyError("no such tensor", key="w")
    assert str(key) == "no such tensor (key 'w')"
    # An object key is shown by the URL that holds it.
    obj = E.StorageError("s3: writing 's3://b/run/x.index' failed", url="s3://b/run/x.index", key="run/x.index")
    assert str(obj) == "s3: writing 's3://b/run/x.index' failed"


def test_errors_with_context_survive_pickling() -> None:
    # Errors travel between processes (multi-process saves, process pools).
    import pickle

    for err in (
        E.CheckpointNotFoundError("gone", backend="gcs", url="gs://b/x"),
        E.CheckpointKeyError("no tensor", key="k"),
        E.DataLossError("short", url="/tmp/x"),
        E.StoragePermissionError("refused", backend="local"),
    ):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err)
        assert (back.backend, back.url, back.key) == (err.backend, err.url, err.key)
        assert str(back) == str(err)


# ------------------------------------------------------------------ translation table
@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("transient", E.TransientStorageError),
        ("not_found", E.CheckpointNotFoundError),
        ("precondition", E.ConcurrentModificationError),
        ("permission", E.StoragePermissionError),
        ("range", E.DataLossError),
        ("other", E.StorageError),
    ],
)
def test_translate_error_by_kind(kind: E.ErrorKind, cls: type[E.CheckpointError]) -> None:
    err = E.translate_error(kind, "s3: reading 's3://b/k' failed", backend="s3", url="s3://b/k", key="k")
    assert type(err) is cls
    assert (err.backend, err.url, err.key) == ("s3", "s3://b/k", "k")
    assert str(err) == "s3: reading 's3://b/k' failed"


def test_every_error_kind_is_in_the_table() -> None:
    from typing import get_args

    assert set(get_args(E.ErrorKind)) == {k for k in E.ERROR_CLASSES if isinstance(k, str)}


def test_a_failed_create_only_write_means_the_object_exists() -> None:
    err = E.translate_error("precondition", "gcs: 'gs://b/x.index' exists", create_only=True)
    assert type(err) is E.CheckpointExistsError
    assert isinstance(E.translate_error("not_found", "x", create_only=True), E.CheckpointNotFoundError)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (errno.ENOENT, E.CheckpointNotFoundError),
        (errno.EACCES, E.StoragePermissionError),
        (errno.EPERM, E.StoragePermissionError),
        (errno.EROFS, E.StoragePermissionError),
        (errno.EEXIST, E.CheckpointExistsError),
        (errno.ENOSPC, E.StorageError),
        (None, E.StorageError),
    ],
)
def test_translate_error_by_errno(code: int | None, cls: type[E.CheckpointError]) -> None:
    exc = OSError(code, "reason") if code is not None else OSError("no errno")
    err = E.translate_error(exc, "local: cannot write '/d/ckpt-1.index'", backend="bundle", url="/d/ckpt-1.index")
    assert type(err) is cls
    assert err.url == "/d/ckpt-1.index"


def test_translate_error_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match=r"unknown error kind 'missing'.*'not_found'"):
        E.translate_error("missing", "x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "error",
    [
        E.CheckpointNotFoundError("mystore: no checkpoint at 'my://b/ckpt-1'"),
        E.CheckpointExistsError("mystore: 'my://b/ckpt-1' is committed already"),
        E.ConcurrentModificationError("mystore: 'my://b/checkpoint' changed"),
        E.DataLossError("mystore: 'my://b/ckpt-1' fails its checksum"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_translate_error_returns_a_trackpoint_error_unchanged(error: E.CheckpointError) -> None:
    """A plugin's `except OSError: raise translate_error(exc, ...)` also catches the trackpoint errors it raised
    itself (several are OSErrors without an errno): they come back as they were, not as StorageError."""
    message = str(error)
    try:
        try:
            raise error
        except (OSError, E.CheckpointError) as exc:
            raise E.translate_error(exc, "mystore: reading failed", url="my://b/ckpt-1", key="k") from exc
    except E.CheckpointError as raised:
        got = raised
    assert got is error and type(got) is type(error)
    assert got.args[0] == message  # the store's own message, not the generic one
    assert (got.url, got.key) == ("my://b/ckpt-1", "k")  # only missing context is added


def test_translate_error_keeps_the_context_a_trackpoint_error_has() -> None:
    error = E.CheckpointNotFoundError("gone", backend="mystore", url="my://b/a", key="x")
    assert E.translate_error(error, "other", backend="s3", url="my://b/other", key="y") is error
    assert (error.backend, error.url, error.key) == ("mystore", "my://b/a", "x")
