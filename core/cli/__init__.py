"""The ``trackpoint`` command line: inspect, verify, compare and convert checkpoints without a script.

Installed as the console script ``trackpoint`` and runnable as ``python -m trackpoint``. Every command
is a thin layer over the library (:func:`trackpoint.list_variables`, :func:`trackpoint.verify`,
:func:`trackpoint.diff`, :func:`trackpoint.convert`, ...): it parses arguments, calls one function and
prints the result, as a table or (``--json``) as JSON.

Exit status
-----------
===  ==========================================================================================
0    success; ``verify``: every checkpoint intact; ``diff``: the checkpoints are equal
1    ``verify``: a checkpoint is damaged or missing (``--latest-good``: no intact checkpoint); ``ls``:
     the index of a listed checkpoint (all ``ls`` reads of it: no data) is damaged; ``diff``: the
     checkpoints differ
2    the command line is wrong (unknown command or option, bad value, unknown ``--backend`` or
     ``TRACKPOINT_BACKEND``, or one that does not serve the path, a storage option the store does not
     take, a path no store can use, an ``rm`` path that names no ``NAME-N`` checkpoint)
3    a checkpoint, file or directory (``ls``, ``cleanup``) was not found
4    any other failure (storage, permissions, unsupported dtype, missing extra, ...); ``verify``
     and ``ls``: a checkpoint could not be read (it may be intact), even when another is damaged
5    ``verify``: nothing found damaged, but a file was read without checksums to check it against
     (a safetensors file trackpoint did not write), so it is not known to be intact
130  interrupted (Ctrl-C)
143  stopped by SIGTERM (129: SIGHUP), after unwinding as for Ctrl-C (a convert removes its unfinished copy)
141  the reader of the output went away (``trackpoint inspect run | head``), as SIGPIPE ends a command
===  ==========================================================================================

The parser is the standard library's :mod:`argparse`: a command line shipped with the library must
install with it, and it needs nothing beyond sub-commands, repeated options and help texts.
Nothing here is imported by ``import trackpoint``.
"""

from __future__ import annotations

from trackpoint.cli._app import (
    EXIT_DIFFERENT,
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNVERIFIED,
    EXIT_USAGE,
    main,
)

__all__ = ["EXIT_DIFFERENT", "EXIT_ERROR", "EXIT_NOT_FOUND", "EXIT_OK", "EXIT_UNVERIFIED", "EXIT_USAGE", "main"]
