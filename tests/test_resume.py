"""The state of a job's long loops (losstopo.resume): saved only inside a job, one file per loop in the order the
job asks, at the interval the environment sets. The descents that use it are tested where they live
(tests/test_path_maximum.py: the merge and the certification of its maximum, interrupted and resumed;
tests/test_descent.py: a descent interrupted at any iteration)."""

from __future__ import annotations

import pytest

from losstopo.errors import LosstopoError
from losstopo.resume import LoopState, job_scratch, save_interval


def test_outside_a_job_nothing_is_saved(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSTOPO_SAVE_EVERY_S", "0")
    monkeypatch.chdir(tmp_path)
    state = LoopState("loop")
    assert state.file is None and not state.save_due() and state.restore() is None
    state.save({"step": 1})
    assert list(tmp_path.iterdir()) == []


def test_loops_of_one_job_get_their_own_files_in_order_and_a_rerun_finds_them(tmp_path, monkeypatch,
                                                                                capsys):
    monkeypatch.setenv("LOSSTOPO_SAVE_EVERY_S", "0")
    with job_scratch(tmp_path):
        first, second = LoopState("a"), LoopState("b")
        assert first.save_due()
        first.save({"step": 3})
        second.save({"step": 7})
    with job_scratch(tmp_path):
        again, other = LoopState("a"), LoopState("not b")
    assert (first.file.name, second.file.name, again.file.name) == ("loop0.pt", "loop1.pt", "loop0.pt")
    assert again.restore() == {"step": 3}
    assert "a: resumed from the state an interrupted run saved" in capsys.readouterr().err
    assert other.restore() is None  # the state of another loop is never used


def test_a_loop_inside_a_loop_saves_beside_it_and_takes_no_place_in_the_jobs_order(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSTOPO_SAVE_EVERY_S", "0")
    with job_scratch(tmp_path):
        outer = LoopState("outer")
        inner = outer.part("half", "from x")
        after = LoopState("after")
        inner.save({"iteration": 5})
    assert (inner.file.name, after.file.name) == ("loop0.half.pt", "loop1.pt")
    with job_scratch(tmp_path):
        again = LoopState("outer")
        assert again.part("half", "from x").restore() == {"iteration": 5}
        assert again.part("half", "from y").restore() is None  # another start: not this loop's state
        assert again.part("other half", "from x").restore() is None
    assert LoopState("outside a job").part("half", "from x").file is None


def test_a_save_is_due_after_the_interval(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSTOPO_SAVE_EVERY_S", "3600")
    with job_scratch(tmp_path):
        state = LoopState("slow")
    assert not state.save_due()
    state._last -= 3601
    assert state.save_due()


def test_save_interval_is_read_from_the_environment(monkeypatch):
    monkeypatch.delenv("LOSSTOPO_SAVE_EVERY_S", raising=False)
    assert save_interval() == 300.0
    monkeypatch.setenv("LOSSTOPO_SAVE_EVERY_S", "12.5")
    assert save_interval() == 12.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("LOSSTOPO_SAVE_EVERY_S", bad)
        with pytest.raises(LosstopoError, match="LOSSTOPO_SAVE_EVERY_S"):
            save_interval()
