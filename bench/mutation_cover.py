"""Which tests can notice a mutant: the tests that executed its lines on the unmutated tree.

A deterministic test that never runs a line behaves the same whether or not that line
is mutated, so a mutant need only be run against the tests that executed one of its
lines.  The baseline run of bench/mutation.py measures that once, with coverage.py's
per-test contexts (pytest-cov's ``--cov-context=test``), split over the workers, and
keeps the map in a cache keyed by the content of src/ and tests/.  Three cases fall
back to every covering test file: a line that runs only at import time (a module-level
constant, a default argument), a test that starts a Python subprocess (its lines are
not traced; such tests always run), and a map that could not be measured.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pinlab" / "mutation"
# the pytest plugin below records tests that start a Python subprocess
SPAWN_PLUGIN = "pinlab_mutation_spawns"
SPAWN_FILE_ENV = "PINLAB_MUTATION_SPAWNS"
PLUGIN_SOURCE = '''\
"""Records the tests that start a Python subprocess (whose lines coverage cannot see)."""
import os, subprocess, sys

_current = [""]
_seen = set()
_init = subprocess.Popen.__init__


def _popen(self, args, *a, **kw):
    argv = [args] if isinstance(args, (str, bytes)) else list(args)
    if argv and os.path.basename(str(argv[0])).startswith("python") or (
        argv and str(argv[0]) == sys.executable
    ):
        _seen.add(_current[0])
    return _init(self, args, *a, **kw)


subprocess.Popen.__init__ = _popen


def pytest_runtest_logstart(nodeid, location):
    _current[0] = nodeid


def pytest_sessionfinish(session):
    with open(os.environ["PINLAB_MUTATION_SPAWNS"], "w") as out:
        out.write("\\n".join(sorted(n for n in _seen if n)))
'''


@dataclass(slots=True)
class CoverMap:
    """For each file under src/ (relative, e.g. ``pinlab/kernel/mm/gup.py``), each line's
    test node ids; "" stands for the lines run outside any test (imports)."""

    lines: dict[str, dict[int, list[str]]] = field(default_factory=dict)
    spawners: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # tests (or files) failing unmutated

    def to_json(self) -> str:
        return json.dumps({"lines": self.lines, "spawners": self.spawners, "failed": self.failed})

    @staticmethod
    def from_json(text: str) -> CoverMap:
        raw = json.loads(text)
        lines = {f: {int(n): ids for n, ids in by.items()} for f, by in raw["lines"].items()}
        return CoverMap(lines, list(raw["spawners"]), list(raw["failed"]))


def tree_key(root: Path, tests: Iterable[str]) -> str:
    """A digest of everything a baseline depends on: src/, tests/, and the test list."""
    h = hashlib.sha256()
    for top in ("src", "tests"):
        for p in sorted((root / top).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts and ".hypothesis" not in p.parts:
                h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    h.update("\0".join(sorted(tests)).encode())
    return h.hexdigest()[:32]


def cached(key: str) -> CoverMap | None:
    path = CACHE / f"{key}.json"
    try:
        return CoverMap.from_json(path.read_text())
    except (OSError, ValueError, KeyError):
        return None


def store(key: str, cover: CoverMap) -> None:
    """Write the map atomically (a concurrent run may read the cache)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=CACHE, suffix=".part")
    with os.fdopen(fd, "w") as out:
        out.write(cover.to_json())
    os.replace(tmp, CACHE / f"{key}.json")


def install_plugin(copy: Path) -> None:
    """Put the spawn-recording plugin where the copy's tests import from (its src/)."""
    (copy / "src" / f"{SPAWN_PLUGIN}.py").write_text(PLUGIN_SOURCE)


def coverage_args(data_file: Path, spawns: Path) -> tuple[list[str], dict[str, str]]:
    """pytest arguments and environment for a measured baseline run."""
    args = ["-p", SPAWN_PLUGIN, "--cov=pinlab", "--cov-context=test", "--cov-report="]
    env = {"COVERAGE_FILE": str(data_file), SPAWN_FILE_ENV: str(spawns)}
    return args, env


# pytest-cov names a context "<node id>|setup", "|run" or "|teardown"
_PHASE = re.compile(r"\|(setup|run|teardown)$")


def read_runs(data_files: Sequence[Path], spawn_files: Sequence[Path]) -> CoverMap:
    """Merge the measured runs into one map."""
    from coverage import CoverageData

    cover = CoverMap()
    for data_file in data_files:
        data = CoverageData(str(data_file))
        data.read()
        for measured in data.measured_files():
            at = measured.replace(os.sep, "/").rfind("/src/pinlab/")
            if at < 0:
                continue
            rel = measured[at + len("/src/") :]
            by_line = cover.lines.setdefault(rel, {})
            for line, contexts in data.contexts_by_lineno(measured).items():
                ids = by_line.setdefault(line, [])
                for ctx in contexts:
                    node = _PHASE.sub("", ctx)
                    if node not in ids:
                        ids.append(node)
    for spawn_file in spawn_files:
        if spawn_file.exists():
            cover.spawners += [n for n in spawn_file.read_text().split("\n") if n]
    return cover


def snippet_lines(text: str, snippet: str) -> list[int]:
    """The line numbers (1-based) the one occurrence of ``snippet`` in ``text`` spans, with
    the first line of each statement they belong to: coverage records a statement that
    spans lines (a module-level tuple, a call over several lines) at its first line only."""
    from coverage.python import PythonParser

    start = text.index(snippet)
    first = text.count("\n", 0, start) + 1
    spanned = range(first, first + snippet.strip("\n").count("\n") + 1)
    parser = PythonParser(text=text)
    parser.parse_source()
    heads = {parser.first_line(n) for n in spanned}
    return sorted(heads | set(spanned))


def select(
    cover: CoverMap, path: str, lines: Iterable[int], files: Sequence[str]
) -> list[str] | None:
    """The test node ids to run for a change of ``lines`` of src/``path``, the tests of
    ``files`` first, in their order; None when every test of ``files`` must run."""
    by_line = cover.lines.get(path.removeprefix("src/"), {})
    nodes: list[str] = []
    for line in lines:
        ids = by_line.get(line, [])
        if "" in ids and len(ids) == 1:
            return None  # run at import time only: any test may depend on it
        nodes += [n for n in ids if n and n not in nodes]
    nodes += [n for n in cover.spawners if n.split("::")[0] in files and n not in nodes]
    rank = {f: i for i, f in enumerate(files)}
    return sorted(nodes, key=lambda n: rank.get(n.split("::")[0], len(rank)))


def not_found(output: str, copy: Path) -> set[str]:
    """The test ids pytest reported as "not found", relative to ``copy``, without
    parameters."""
    prefix = f"{copy}/"
    found = re.findall(r"^ERROR: not found: (\S+)", output, re.M)
    # pytest names a parametrised test it cannot find without its parameters
    return {f.removeprefix(prefix).split("[")[0] for f in found}
