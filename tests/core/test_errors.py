"""The error hierarchy: one root, and every subclass also the matching builtin."""

from __future__ import annotations

import inspect

import pytest

import trackpoint.errors as E

BUILTIN_OF = {
    E.CheckpointNotFoundError: FileNotFoundError,
    E.CheckpointExistsError: FileExistsError,
    E.InvalidCheckpointError: ValueError,
    E.DataLossError: ValueError,
    E.InvalidPathError: ValueError,
    E.CheckpointKeyError: KeyError,
    E.TrackableError: ValueError,
    E.NameConflictError: ValueError,
    E.AssignmentError: ValueError,
    E.ShapeMismatchError: ValueError,
    E.DTypeMismatchError: TypeError,
    E.UnsupportedDTypeError: TypeError,
    E.MatchError: AssertionError,
    E.StorageError: OSError,
    E.StoragePermissionError: PermissionError,
    E.TransientStorageError: OSError,
    E.ConcurrentModificationError: OSError,
    E.BackendError: LookupError,
    E.UnknownBackendError: LookupError,
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
