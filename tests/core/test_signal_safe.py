"""trackpoint._signal_safe: work handed over inside a section runs when the outermost section ends."""

from __future__ import annotations

import threading

import pytest

from trackpoint import _signal_safe


def test_work_handed_over_inside_runs_when_the_outermost_section_ends() -> None:
    ran: list[str] = []
    assert not _signal_safe.inside()
    with _signal_safe.section:
        with _signal_safe.section:
            assert _signal_safe.inside()
            _signal_safe.call_outside(lambda: ran.append("handler"))
        assert ran == []  # an inner section ending is not the end of the call
        ran.append("rest of the call")
    assert ran == ["rest of the call", "handler"]
    assert not _signal_safe.inside()


def test_what_the_work_raises_comes_out_of_the_section_even_when_it_failed() -> None:
    def leave() -> None:
        raise SystemExit(143)

    with pytest.raises(SystemExit) as exited, _signal_safe.section:
        _signal_safe.call_outside(leave)
        raise ValueError("the interrupted call failed")
    assert exited.value.code == 143 and isinstance(exited.value.__context__, ValueError)
    assert not _signal_safe.inside()


def test_other_threads_neither_count_nor_run_handed_over_work() -> None:
    seen: list[bool] = []

    def other() -> None:
        with _signal_safe.section:
            seen.append(_signal_safe.inside())

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == [False]


@_signal_safe.guarded
def _guarded(x: int) -> bool:
    return _signal_safe.inside() and x == 1


def test_guarded_functions_run_inside_a_section() -> None:
    assert _guarded(1)
    assert _guarded.__name__ == "_guarded" and not _signal_safe.inside()
