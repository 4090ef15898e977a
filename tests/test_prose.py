"""No file of the project narrates the history of its making.

Docstrings, comments and the README state the math and today's design in the
present tense; history and measurement anecdotes live in CHANGELOG.md and
benchmarks/RESULTS.md, marked by date. This test reads README.md, setup.py,
every ``*.py`` and ``*.md`` under scratchvae/, kernels/, tests/, benchmarks/ and
examples/, and docs/*.md, and fails on a phrase that tells how the work was
organised (sessions, "no longer", "the earlier kernels", ...). Exempt: the two
files where history belongs, docs/derivations.md (generated from docstrings,
which are read here), benchmarks/results/ (tables the scripts write) and this
file, whose patterns name the phrases.
"""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: where the project's prose is read
ROOT_FILES = ("README.md", "setup.py")
TREES = ("scratchvae", "kernels", "tests", "benchmarks", "examples")

#: where history belongs, or what is not prose written by hand
EXEMPT = {"CHANGELOG.md", "benchmarks/RESULTS.md", "docs/derivations.md", "tests/test_prose.py"}
EXEMPT_DIRS = ("benchmarks/results/",)

_ORDINAL = (r"first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|"
            r"twelfth|thirteenth|fourteenth|fifteenth|\d+(?:st|nd|rd|th)")
_W = r"(?:[\s\-]|#:?)+"   # words may be hyphenated or split across lines (of comments too)

#: (pattern, what it catches); matched case-insensitively over a file's whole text
FORBIDDEN = [
    (rf"\b(?:{_ORDINAL}|this|that|these|those|earlier|later|previous|next|last|past|"
     rf"other|same){_W}sessions?\b", "a session of the work"),
    (rf"\bproject's{_W}sessions\b", "the project's sessions"),
    (rf"\buntil{_W}the{_W}\w+{_W}(?:session|version|commit)\b", "until the ... session"),
    (rf"\bno{_W}longer\b", "'no longer': state what is"),
    (rf"\bused{_W}to{_W}(?:be|share|take|have|live|cost|need|spin|sleep|differ|fail|pass)\b",
     "'used to': state what is"),
    (rf"\b(?:earlier|previous|former|older|old){_W}(?:kernels?|code|designs?|"
     rf"implementations?|defaults?)\b", "the earlier code"),
    (rf"\b(?:earlier|former|older|old){_W}versions?\b", "the earlier code"),
    (rf"\bbefore{_W}(?:this|that|the){_W}(?:change|fix|refactor\w*|rewrite|session)s?\b",
     "before the change"),
]
_COMPILED = [(re.compile(p, re.IGNORECASE), why) for p, why in FORBIDDEN]


def prose_files(root=REPO):
    """The files this test reads, relative to ``root``."""
    files = [root / name for name in ROOT_FILES if (root / name).is_file()]
    for tree in TREES:
        files += sorted(p for p in (root / tree).rglob("*") if p.suffix in (".py", ".md"))
    files += sorted((root / "docs").glob("*.md"))
    out = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        if rel in EXEMPT or rel.startswith(EXEMPT_DIRS) or "__pycache__" in rel:
            continue
        out.append(path)
    return out


def narration(path, root=REPO):
    """``"file:line: phrase (what it is)"`` for every forbidden phrase in ``path``."""
    text = path.read_text(encoding="utf-8")
    rel = path.relative_to(root).as_posix()
    hits = []
    for pattern, why in _COMPILED:
        for m in pattern.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            phrase = " ".join(m.group(0).split())
            hits.append((line, f"{rel}:{line}: {phrase!r} ({why})"))
    return [hit for _, hit in sorted(hits)]


def test_no_file_narrates_its_history():
    files = prose_files()
    assert any(p.name == "README.md" for p in files) and len(files) > 50   # it reads the project
    hits = [hit for path in files for hit in narration(path)]
    assert not hits, "history belongs in CHANGELOG.md or benchmarks/RESULTS.md:\n" + "\n".join(hits)


NARRATION = [
    "scratchvae no longer sets OMP_WAIT_POLICY",
    "(until the ninth session it set it to PASSIVE)",
    "No GPU was available to this project's sessions.",
    "the fifth session's bench_train.py did this, unnoticed",
    "measured in the 3rd session",
    "the earlier sessions' statistics",
    "as this session showed",
    "with the earlier kernels",
    "mean 105.63 (seventh-session run)",
    "the products run on one pool (before the\n    fix they ran on two)",
    "spinning starved those threads, so earlier\n# versions set OMP_WAIT_POLICY",
    "until the ninth\n    session it did",
    "two thread pools used to share the cores",
]
PRESENT = [
    "import scratchvae  # already imported by the test session",
    "@pytest.fixture(scope='session')",
    "the old run's files stay until the new run's first epoch is written",
    "a run that stops earlier leaves them intact",
    "grad is None until the first backward",
    "a code that loses its vectors never gets a gradient again",
    "a crash mid-write leaves the previous version intact",
    "a small CNN trained with the engine, used to score what a CVAE draws",
    "benchmarks/RESULTS.md, 2026-12-01: 32 -> 29 ms a step",
]


@pytest.mark.parametrize("line", NARRATION)
def test_a_narrating_line_is_caught(tmp_path, line):
    (tmp_path / "kernels").mkdir()
    planted = tmp_path / "kernels" / "planted.py"
    planted.write_text(f'"""A kernel.\n\nIts docstring: {line}.\n"""\n')
    assert planted in prose_files(tmp_path)
    hits = narration(planted, tmp_path)
    assert hits and hits[0].startswith("kernels/planted.py:3:"), hits


@pytest.mark.parametrize("line", PRESENT)
def test_present_tense_prose_passes(tmp_path, line):
    (tmp_path / "README.md").write_text(f"# x\n\n{line}\n")
    assert narration(tmp_path / "README.md", tmp_path) == []


def test_history_files_are_exempt(tmp_path):
    for rel in ("CHANGELOG.md", "benchmarks/RESULTS.md", "benchmarks/results/t.md", "README.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("the ninth session\n")
    assert [p.relative_to(tmp_path).as_posix() for p in prose_files(tmp_path)] == ["README.md"]
