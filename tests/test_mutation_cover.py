"""bench/mutation_cover.py: a mutant runs against the tests that executed its lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.mutation_cover import CoverMap, not_found, select, snippet_lines

GUP = "src/pinlab/kernel/mm/gup.py"
FILES = ("tests/kernel/test_gup.py", "tests/kernel/test_fork.py")

COVER = CoverMap(
    lines={
        "pinlab/kernel/mm/gup.py": {
            1: [""],  # an import-time line
            10: ["", "tests/kernel/test_fork.py::test_b"],
            11: ["tests/other.py::test_z", "tests/kernel/test_gup.py::test_a[6.1]"],
            20: ["tests/kernel/test_gup.py::test_a[6.1]"],
        }
    },
    spawners=["tests/kernel/test_fork.py::test_spawns", "tests/elsewhere.py::test_spawns"],
)


@pytest.mark.parametrize(
    ("lines", "want"),
    [
        # only run when imported: every covering test file must run
        ((1,), None),
        ((1, 20), None),
        # the mutant's own files first, in their order; other covering tests after; the
        # tests of its files that start a Python subprocess (untraced) always
        (
            (10, 11),
            [
                "tests/kernel/test_gup.py::test_a[6.1]",
                "tests/kernel/test_fork.py::test_b",
                "tests/kernel/test_fork.py::test_spawns",
                "tests/other.py::test_z",
            ],
        ),
        # lines no test executes: only the spawners of its files can notice
        ((30, 31), ["tests/kernel/test_fork.py::test_spawns"]),
    ],
)
def test_select(lines: tuple[int, ...], want: list[str] | None) -> None:
    assert select(COVER, GUP, lines, FILES) == want


def test_select_without_spawners_of_its_files_is_empty_for_unexecuted_lines() -> None:
    assert select(COVER, GUP, (30,), ("tests/kernel/test_gup.py",)) == []


@pytest.mark.parametrize(
    ("snippet", "want"),
    [
        ("b = 2\n", [2]),
        ("    c = 3\n    d = 4", [4, 5]),
        ("d = 4\n", [5]),
        # inside a statement over several lines: coverage records its first line only
        ('    "y",\n', [6, 8]),
        ("g(\n", [10]),
        ("    2)", [10, 11]),
    ],
)
def test_snippet_lines(snippet: str, want: list[int]) -> None:
    text = 'a = 1\nb = 2\nif a:\n    c = 3\n    d = 4\nT = (\n    "x",\n    "y",\n)\ng(\n    2)\n'
    assert snippet_lines(text, snippet) == want


def test_map_round_trips_through_json() -> None:
    again = CoverMap.from_json(COVER.to_json())
    assert again == COVER


def test_not_found_ids_lose_their_parameters() -> None:
    """pytest names a parametrised test it cannot find by its function: the bench must
    match it against the measured ids with parameters (whose draw may differ per run)."""
    output = (
        "ERROR: not found: /copy/tests/anchors/test_spin.py::test_match[hillf-K2]\n"
        "(no match in any of [<Module test_spin.py>])\n"
        "ERROR: not found: /copy/tests/kernel/test_gup.py::test_pin\n"
    )
    assert not_found(output, Path("/copy")) == {
        "tests/anchors/test_spin.py::test_match",
        "tests/kernel/test_gup.py::test_pin",
    }
