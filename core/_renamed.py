"""Path arguments that took TensorFlow's name: the former name stays accepted as a keyword, never with the new."""

from __future__ import annotations

import os

from trackpoint.errors import ArgumentTypeError


def renamed(
    call: str,
    name: str,
    value: str | os.PathLike[str] | None,
    former: str,
    former_value: str | os.PathLike[str] | None,
) -> str | os.PathLike[str]:
    """The path given to ``call`` as ``name`` (TensorFlow's) or as ``former`` (trackpoint's earlier name).

    Raises
    ------
    ArgumentTypeError
        Both names were given (which one was meant is not guessed), or neither.
    """
    if former_value is None:
        if value is None:
            raise ArgumentTypeError(f"{call}() missing its required argument {name!r}; pass it first or as {name}=")
        return value
    if value is not None:
        raise ArgumentTypeError(
            f"{call}() got {name!r} and {former!r}, two names of the same argument ({former!r} is its former "
            f"name); pass only {name}="
        )
    return former_value
