"""How a bundle save becomes a committed checkpoint: commit strategies as objects.

A :class:`CommitStrategy` carries out the save protocol (``begin`` ->
``write_shard`` -> ``commit``, or ``abort``) on one kind of store. The
strategy is chosen from the store's declared capabilities by
:func:`choose_strategy`, never from the store's type:

* :class:`RenameCommit` (``atomic_rename``; local disks). Each shard's data
  file is written (and fsynced) as ``<prefix>_temp/part-<save_id>-iiiii-of-NNNNN``;
  a one-shard save also writes its piece index beside it, which is then
  already the final index. ``commit`` merges the pieces the way TensorFlow's
  ``MergeV2Checkpoints`` does, from the shard manifests and without
  re-reading data, writes the merged index into ``<prefix>_temp/``, renames
  the data files to their final names, and renames the merged index (or the
  one-shard piece index) over ``<prefix>.index`` last.
* :class:`CreateCommit` (``conditional_create`` without atomic rename; object
  stores). Data objects are written once, create-only, under their final
  names; a per-shard piece index ``<prefix>.part-iiiii-of-MMMMM.<save_id>.piece``
  is the only other temporary object. It is created (empty) before the shard's
  data and is the save's ownership marker: an overwriting save removes every
  marker before any data object. ``commit`` is one conditional write of
  ``<prefix>.index`` (create-only, or replacing exactly the index it read)
  between two checks that the save's markers still exist.

Both keep a staging file that ``cleanup`` removes before any data file of the
save, and check it after the index is in place (the rename strategy in the
same step: it renames that file): with ``BundleBackend.cleanup``, which reads
the index again before it removes data files, a commit and a cleanup never
leave a committed index without its data.

Neither strategy touches a committed checkpoint before the new index is in
place: TensorFlow derives data file names from the prefix, the shard number
and the shard count (``<prefix>.data-iiiii-of-NNNNN``), so a save whose shard
count equals the committed checkpoint's names its files for one more shard
(the extra data file is empty) and the two sets of names never meet. After
the index is replaced, the old checkpoint's data files are deleted.
"""

from __future__ import annotations

from typing import Final

from trackpoint.backends.bundle._create_commit import CreateCommit
from trackpoint.backends.bundle._rename_commit import RenameCommit
from trackpoint.backends.bundle._strategy import CommitStrategy
from trackpoint.backends.stores import FileLayer
from trackpoint.errors import BackendError

__all__ = ["CommitStrategy", "CreateCommit", "RenameCommit", "choose_strategy"]


#: Tried in this order; the first whose ``suits`` accepts the store's capabilities is used.
STRATEGIES: Final[tuple[type[CommitStrategy], ...]] = (RenameCommit, CreateCommit)


def choose_strategy(files: FileLayer) -> CommitStrategy:
    """The commit strategy for ``files``, chosen from its declared capabilities.

    Raises
    ------
    BackendError
        No strategy suits the store: it offers neither atomic rename nor
        conditional create, so no save could be committed atomically.
    """
    for cls in STRATEGIES:
        if cls.suits(files.capabilities):
            return cls(files)
    raise BackendError(
        f"bundle: store {files.store_name!r} has neither atomic rename nor conditional create, "
        "so checkpoints cannot be committed atomically; use a store that supports one of them"
    )
