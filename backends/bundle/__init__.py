"""TensorFlow's TensorBundle checkpoint format (``.index`` + ``.data-NNNNN-of-NNNNN``).

:class:`BundleBackend` reads and writes bundles byte-compatible with
``tf.train.Checkpoint`` on any :class:`~trackpoint.backends.files.FileLayer`:
the local disk (:class:`trackpoint.backends.local.LocalFiles`) or an object
store. See :doc:`/backends/bundle` for layout, atomicity and limits.
"""

from __future__ import annotations

from trackpoint.backends.bundle._backend import BundleBackend, data_filename

__all__ = ["BundleBackend", "data_filename"]
