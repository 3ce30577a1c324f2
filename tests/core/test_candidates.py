"""The Pareto front of candidate models, and the plot of it."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from core.candidates import Point, candidates_svg, dominates, label_row, pareto_front

SVG = "{http://www.w3.org/2000/svg}"
POINTS = [
    Point("teacher", 0.95, 110_000, 0.30),  # the most accurate: on the front
    Point("teacher+int8", 0.94, 40_000, 0.50),  # smaller than the teacher: on the front
    Point("teacher+prune", 0.90, 70_000, 0.30),  # beaten by int8 on size and accuracy? no: faster
    Point("baseline", 0.70, 60_000, 0.05),  # beaten by the student on accuracy, equal otherwise
    Point("student", 0.85, 60_000, 0.05),  # on the front
    Point("student+prune", 0.84, 35_000, 0.05),  # the smallest: on the front
    Point("student+int8", 0.84, 36_000, 0.08),  # beaten by student+prune on size and latency
]


def test_the_front_on_three_objectives_by_hand() -> None:
    front = dict(zip([p.name for p in POINTS], pareto_front(POINTS), strict=True))
    assert front == {
        "teacher": True,
        "teacher+int8": True,
        "teacher+prune": True,  # int8 is smaller and more accurate, but slower: not dominated
        "baseline": False,
        "student": True,
        "student+prune": True,
        "student+int8": False,
    }


def test_without_latencies_the_front_is_on_accuracy_and_size() -> None:
    points = [
        Point(p.name, p.top1, p.size_bytes, None if p.name == "baseline" else p.latency_ms) for p in POINTS
    ]
    front = {p.name for p, on in zip(points, pareto_front(points), strict=True) if on}
    # speed no longer counts: teacher+int8 (more accurate, smaller) beats teacher+prune and even the
    # student; student+prune beats student+int8
    assert front == {"teacher", "teacher+int8", "student+prune"}


def test_latencies_within_a_tenth_are_a_tie() -> None:
    # the same architecture timed twice: the more accurate one wins whichever timing came out lower
    baseline, student = Point("baseline", 0.608, 61_488, 0.0388), Point("student", 0.635, 61_488, 0.0394)
    assert pareto_front([baseline, student]) == [False, True]
    # beyond a tenth, speed counts again: 0.0388 * 1.1 < 0.0430
    assert pareto_front([baseline, Point("student", 0.635, 61_488, 0.0430)]) == [True, True]
    # and a tie in speed is not a strict gain: equal accuracy and size leave both on the front
    assert pareto_front([Point("a", 0.6, 10, 1.0), Point("b", 0.6, 10, 0.95)]) == [True, True]


def test_equal_points_do_not_dominate_each_other() -> None:
    a, b = Point("a", 0.8, 100, 1.0), Point("b", 0.8, 100, 1.0)
    assert not dominates(a, b, latency=True) and pareto_front([a, b]) == [True, True]
    assert dominates(Point("c", 0.8, 99, 1.0), a, latency=True)


def test_the_plot_names_the_front_and_draws_every_candidate() -> None:
    front = pareto_front(POINTS)
    root = ET.fromstring(candidates_svg(POINTS, front))
    circles = root.findall(f".//{SVG}circle")
    assert len(circles) == 2 * len(POINTS)  # one panel against size, one against latency
    named = [t.text for t in root.findall(f".//{SVG}text") if t.get("class") == "pareto"]
    assert sorted(named) == sorted(2 * [p.name for p, on in zip(POINTS, front, strict=True) if on])
    hover = {c.find(f"{SVG}title").text.split(":")[0] for c in circles}  # type: ignore[union-attr]
    assert hover == {p.name for p in POINTS}
    filled = [c.get("fill") != "#fff" for c in circles[: len(POINTS)]]
    assert filled == front


def test_without_latencies_only_the_size_panel_is_drawn() -> None:
    points = [Point("a", 0.9, 1000, None), Point("b & <c>", 0.8, 500, None)]
    text = candidates_svg(points, pareto_front(points))
    root = ET.fromstring(text)  # the name is escaped: still well-formed XML
    assert len(root.findall(f".//{SVG}circle")) == 2 and root.get("width") == "380"
    assert "b &amp; &lt;c&gt;" in text
    with pytest.raises(ValueError):
        candidates_svg([], [])


def test_names_of_close_points_go_one_under_another() -> None:
    placed: list[tuple[float, float, float]] = []
    assert label_row(placed, 100, 160, 50) == 50
    assert label_row(placed, 140, 200, 55) == 67  # 55 is within 12 px of the first: one step down
    # 50 and 62 clash with the first, 74 with the second (67): 86
    assert label_row(placed, 150, 170, 50) == 86
    assert label_row(placed, 170, 230, 50) == 50  # right of the first, 17 px above the second
    assert label_row(placed, 300, 360, 50) == 50  # elsewhere: where it was asked
