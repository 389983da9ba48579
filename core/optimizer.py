"""Optimizers with slot variables, and a numpy ``SGD``.

Slot variables (per-variable optimizer state such as momentum) are saved the
way TensorFlow saves them: not as children of the optimizer but as
``slot_variables`` references on the optimizer's node, keyed
``<variable path>/.OPTIMIZER_SLOT/<optimizer path>/<slot>``. On restore a slot
is created from its checkpoint value as soon as both its variable and its
optimizer are matched, whichever comes first (TensorFlow's eager behaviour);
an optimizer that cannot create slots on restore defers them until it creates
them itself (``_deferred_slot_restorations``).

A slot of a variable that holds one slice of a larger tensor (``save_slice_info``)
holds the same slice of the slot's whole tensor, as TensorFlow's slot creator
makes it: it is saved as a slice, so the slots of every part (in one process or
on several ranks) form one tensor in the checkpoint, and it restores into any
other partitioning.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from trackpoint.autotrackable import AutoTrackable
from trackpoint.errors import DTypeMismatchError, ShapeMismatchError, TrackableError
from trackpoint.variables import SaveSliceInfo, Variable

if TYPE_CHECKING:
    from trackpoint.restore import CheckpointPosition

__all__ = ["SGD", "Optimizer"]


class Optimizer(AutoTrackable):
    """Base class for optimizers that keep slot variables.

    Parameters
    ----------
    name
        Used in slot variable names (``"<variable name>/<name>"``).
    """

    #: Whether a slot missing at restore time is created from the checkpoint
    #: value (TensorFlow eager) or waits until :meth:`add_slot` creates it.
    create_slots_on_restore: ClassVar[bool] = True

    def __init__(self, name: str) -> None:
        self._maybe_initialize_trackable()
        self._self_name = name
        self._self_slots: dict[int, tuple[Variable, dict[str, Variable]]] = {}
        self._self_deferred_slot_restorations: dict[str, dict[int, list[CheckpointPosition]]] = {}

    @property
    def name(self) -> str:
        """The optimizer's name."""
        return self._self_name

    def get_slot_names(self) -> list[str]:
        """Names of the slots this optimizer holds for any variable, sorted."""
        return sorted({slot for _, slots in self._self_slots.values() for slot in slots})

    def get_slot(self, var: Variable, name: str) -> Variable | None:
        """The slot ``name`` of ``var``, or ``None`` if it does not exist."""
        entry = self._self_slots.get(id(var))
        if entry is None or entry[0] is not var:
            return None
        return entry[1].get(name)

    def _store_slot(self, var: Variable, name: str, slot: Variable) -> None:
        # Slots are keyed by variable identity; the variable is kept alive with its slots.
        self._self_slots.setdefault(id(var), (var, {}))[1][name] = slot

    def _slot_variable_name(self, var: Variable, slot_name: str) -> str:
        return f"{var.name}/{self._self_name}/{slot_name}"

    def _slot_slice_info(self, var: Variable, slot_name: str, ndim: int) -> SaveSliceInfo | None:
        """The slice a slot with ``ndim`` dimensions of the sliced variable ``var`` holds (``None``: unsliced).

        TensorFlow's rule (``slot_creator``): the slot covers the same part of
        its whole tensor as ``var`` in the leading ``ndim`` dimensions, and a
        scalar slot is no slice. Its ``full_name`` is the variable's
        ``full_name`` followed by the slot variable's name below ``var``'s, the
        name TensorFlow 1's ``Saver`` gives the slot of a partitioned variable.
        """
        info = var.save_slice_info
        if info is None or ndim == 0:
            return None
        own = self._slot_variable_name(var, slot_name)
        below = own[len(var.name) + 1 :] if own.startswith(f"{var.name}/") else slot_name
        return SaveSliceInfo(
            None if info.full_name is None else f"{info.full_name}/{below}",
            info.full_shape[:ndim],
            info.var_offset[:ndim],
            info.var_shape[:ndim],
        )

    def add_slot(self, var: Variable, slot_name: str, initializer: Any = None) -> Variable:
        """The slot ``slot_name`` of ``var``, created (zeros by default) if missing.

        A newly created slot is then restored from any checkpoint value that
        was waiting for it (the latest restore wins). The slot of a variable
        with ``save_slice_info`` holds the same slice of its whole tensor.
        """
        existing = self.get_slot(var, slot_name)
        if existing is not None:
            return existing
        value = np.zeros(var.shape, dtype=var.dtype) if initializer is None else initializer
        slot = Variable(
            value,
            dtype=var.dtype,
            name=self._slot_variable_name(var, slot_name),
            trainable=False,
            shape=var.shape,
            save_slice_info=self._slot_slice_info(var, slot_name, len(var.shape)),
        )
        self._store_slot(var, slot_name, slot)
        self._restore_slot_variable(slot_name, var, slot)
        return slot

    def _restore_slot_variable(self, slot_name: str, var: Variable, slot: Variable) -> None:
        """Apply deferred restores for a slot that was just created."""
        waiting = self._self_deferred_slot_restorations.get(slot_name, {}).pop(id(var), [])
        for position in sorted(waiting, key=lambda p: p.restore_uid, reverse=True):
            position.restore(slot)

    def _create_or_restore_slot_variable(
        self, *, slot_variable_position: CheckpointPosition, slot_name: str, variable: Any
    ) -> None:
        """Called by the restore code when a slot's variable and optimizer are both matched."""
        if not isinstance(variable, Variable):
            return
        slot = self.get_slot(variable, slot_name)
        if slot is None and self.create_slots_on_restore and slot_variable_position.is_simple_variable():
            info = slot_variable_position.tensor_info()
            shape = tuple(info.shape)
            sliced = variable.save_slice_info
            part = None
            if sliced is not None and shape == sliced.full_shape[: len(shape)]:
                # The checkpoint holds the slot's whole tensor: this variable's slot is its slice of it.
                part = self._slot_slice_info(variable, slot_name, len(shape))
            slot = Variable._uninitialized(
                shape if part is None else part.var_shape,
                info.dtype,
                name=self._slot_variable_name(variable, slot_name),
                trainable=False,
            )
            slot._set_save_slice_info(part)
            self._store_slot(variable, slot_name, slot)
        if slot is not None:
            slot_variable_position.restore(slot)
        else:
            by_var = self._self_deferred_slot_restorations.setdefault(slot_name, {})
            by_var.setdefault(id(variable), []).append(slot_variable_position)


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, on numpy arrays.

    The update is TensorFlow's ``MomentumOptimizer`` rule: with momentum,
    ``accum = momentum * accum + grad; var -= learning_rate * accum``, the
    accumulator being the slot ``"momentum"``; without momentum,
    ``var -= learning_rate * grad`` and no slot exists. Slots are created on
    the first :meth:`apply_gradients`.

    The only other state is :attr:`iterations` (dependency ``"iter"``, as in
    Keras), created on first use, so a checkpoint written by TensorFlow's
    ``MomentumOptimizer`` restores into ``SGD`` with ``assert_consumed()``.

    Parameters
    ----------
    learning_rate
        Step size.
    momentum
        Momentum factor in ``[0, 1)``; 0 disables the slot.
    name
        Slot variables are named ``"<variable name>/<name>"``; pass
        ``name="Momentum"`` to match the names TF1's ``MomentumOptimizer``
        gives them (name-based restores).
    """

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, name: str = "SGD") -> None:
        super().__init__(name)
        if not 0.0 <= momentum < 1.0:
            raise TrackableError(f"SGD momentum must be in [0, 1), got {momentum}")
        self._self_learning_rate = float(learning_rate)
        self._self_momentum = float(momentum)

    @property
    def learning_rate(self) -> float:
        """Step size."""
        return self._self_learning_rate

    @property
    def momentum(self) -> float:
        """Momentum factor."""
        return self._self_momentum

    @property
    def iterations(self) -> Variable:
        """Number of :meth:`apply_gradients` calls (an int64 variable, created on first use)."""
        counter = self._lookup_dependency("iter")
        if isinstance(counter, Variable):
            return counter
        return self.add_variable("iter", shape=(), dtype=np.int64, initializer=0, trainable=False)

    def _slot_variable_name(self, var: Variable, slot_name: str) -> str:
        # TF1 MomentumOptimizer's rule ("<variable>/<optimizer name>"): with
        # name="Momentum", name-based restores of TF1 checkpoints find the slots.
        return f"{var.name}/{self.name}"

    def _dependency_requested(self, name: str) -> None:
        # A checkpoint holds a step counter: create it now so it is restored at once.
        if name == "iter":
            self.iterations  # noqa: B018 - property creates the counter

    def apply_gradients(self, grads_and_vars: Iterable[tuple[Any, Variable | None]]) -> None:
        """Apply one update step for each ``(gradient, variable)`` pair.

        Pairs whose gradient or variable is ``None`` are skipped. All
        gradients are checked before any variable changes.

        Raises
        ------
        ShapeMismatchError, DTypeMismatchError
            A gradient does not fit its variable, or the variable is not
            floating point.
        """
        steps: list[tuple[np.ndarray[Any, Any], Variable]] = []
        for grad, var in grads_and_vars:
            if grad is None or var is None:
                continue
            if var.dtype.kind not in "fcV":
                raise DTypeMismatchError(f"SGD cannot update Variable {var.name!r} of dtype {var.dtype}")
            g = np.asarray(grad, dtype=var.dtype)
            if g.shape != var.shape:
                raise ShapeMismatchError(
                    f"gradient for Variable {var.name!r} has shape {g.shape}, the variable has shape {var.shape}"
                )
            steps.append((g, var))
        lr = np.asarray(self._self_learning_rate, dtype=np.float64)
        for g, var in steps:
            if self._self_momentum:
                accum = self.add_slot(var, "momentum")
                accum.assign((self._self_momentum * accum.value + g).astype(var.dtype))
                g = accum.value
            var.assign((var.value - lr * g).astype(var.dtype))
        self.iterations.assign_add(1)
