"""The critical-path projection on a graph small enough to schedule by hand."""

import pytest

from srpo_bench.pipeline.projection import critical_path, list_schedule_makespan, project

# a(3) -> b(2), a -> c(4), (b, c) -> d(1); e(5) on its own. Work 15.
DUR = {"a": 3.0, "b": 2.0, "c": 4.0, "d": 1.0, "e": 5.0}
UP = {"b": ["a"], "c": ["a"], "d": ["b", "c"]}
ORDER = ["a", "b", "c", "d", "e"]


def test_critical_path_is_the_longest_chain():
    assert critical_path(DUR, UP) == (8.0, ["a", "c", "d"])  # 3 + 4 + 1


def test_list_schedule_by_hand():
    # 1 worker: the sum. 2 workers: a|e at 0; b at 3 (a done); c at 5 (b and e done) until 9; d 9-10.
    assert list_schedule_makespan(DUR, UP, ORDER, 1) == 15.0
    assert list_schedule_makespan(DUR, UP, ORDER, 2) == 10.0
    # 3 workers: a|e at 0; b, c at 3; c ends 7; d 7-8 = the critical path.
    assert list_schedule_makespan(DUR, UP, ORDER, 3) == 8.0
    p = project(DUR, UP, ORDER, 2)
    assert p["lower_bound"] == 8.0 and p["work"] == 15.0  # max(8, 15 / 2)


def test_bad_graphs_are_refused_in_one_line():
    with pytest.raises(ValueError, match="upstream stage.*z have no duration"):
        critical_path(DUR, {"b": ["z"]})
    with pytest.raises(ValueError, match="cycle"):
        critical_path({"x": 1.0, "y": 1.0}, {"x": ["y"], "y": ["x"]})
    with pytest.raises(ValueError, match="workers must be at least 1"):
        list_schedule_makespan(DUR, UP, ORDER, 0)
