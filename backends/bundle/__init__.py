"""TensorFlow's TensorBundle checkpoint format (``.index`` + ``.data-NNNNN-of-NNNNN``).

:class:`BundleBackend` reads and writes bundles byte-compatible with
``tf.train.Checkpoint`` on any :class:`~trackpoint.backends.stores.FileLayer`:
the local disk (:class:`trackpoint.backends.stores.LocalFiles`) or an object
store. See :doc:`/backends/bundle` for layout, atomicity and limits.

Modules, by job: ``_backend`` (the storage contract, delegating), ``_writer``
(data files and shard manifests), ``_reader`` (index parsing, reads, slice
assembly), ``_commit`` (the commit strategies, chosen from the store's
capabilities), ``_names`` (file names); ``_codec``, ``_sstable``, ``_crc``,
``_ordered_code`` and ``_dtypes`` encode TensorFlow's formats (with the varints
of ``trackpoint._varint``, which the object-graph encoder shares).
"""

from __future__ import annotations

from trackpoint.backends.bundle._backend import BundleBackend
from trackpoint.backends.bundle._names import data_filename

__all__ = ["BundleBackend", "data_filename"]
