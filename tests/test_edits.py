"""SEARCH/REPLACE parsing and applying (operators.edits): pure functions, no I/O."""

from __future__ import annotations

import pytest

from operators.edits import (
    Block,
    EditError,
    Hunk,
    apply_blocks,
    check_python,
    has_conflict_markers,
    parse_blocks,
    parse_whole_file,
    split_conflicts,
)

TRAIN = """\
import math

LR = 0.01
MIN_LR = 0.001
DEPTH = 4


def schedule(step):
    if step < 10:
        return LR * step / 10
    return LR
"""


def block(search: str, replace: str, path: str | None = "train.py") -> str:
    return f"{path}\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


# --- parsing --------------------------------------------------------------------------------


def test_parse_fenced_block_with_prose_around():
    answer = (
        "RATIONALE: raise the learning rate\n\nHere is my change:\n\n"
        "train.py\n```python\n<<<<<<< SEARCH\nLR = 0.01\n=======\nLR = 0.02\n>>>>>>> REPLACE\n```\n\n"
        "This should converge faster.\n"
    )
    assert parse_blocks(answer) == [Block("train.py", "LR = 0.01\n", "LR = 0.02\n", 1)]


@pytest.mark.parametrize(
    "header",
    ["`train.py`", "File: train.py", "**File:** `train.py`", "### train.py", "train.py:", "**train.py**", "- `train.py`"],
)
def test_parse_path_header_styles(header):
    answer = f"{header}\n```python\n<<<<<<< SEARCH\nLR = 0.01\n=======\nLR = 0.02\n>>>>>>> REPLACE\n```\n"
    assert parse_blocks(answer)[0].path == "train.py"


def test_parse_path_in_fence_info_and_nested_dirs():
    answer = "```python:model/train.py\n<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n```"
    assert parse_blocks(answer)[0].path == "model/train.py"


def test_parse_crlf_and_block_without_path():
    answer = "Sure.\r\n<<<<<<< SEARCH\r\nLR = 0.01\r\n=======\r\nLR = 0.02\r\n>>>>>>> REPLACE\r\n"
    assert parse_blocks(answer) == [Block(None, "LR = 0.01\n", "LR = 0.02\n", 1)]


def test_parse_following_blocks_inherit_the_path_and_fences_inside_markers_are_dropped():
    answer = (
        "a/x.py\n<<<<<<< SEARCH\n```python\none\n```\n=======\n```python\ntwo\n```\n>>>>>>> REPLACE\n\n"
        "<<<<<<< SEARCH\nthree\n=======\nfour\n>>>>>>> REPLACE\n"
        "b/y.py\n<<<<<<< SEARCH\nfive\n=======\n>>>>>>> REPLACE\n"
    )
    blocks = parse_blocks(answer)
    assert [(b.path, b.search, b.replace, b.index) for b in blocks] == [
        ("a/x.py", "one\n", "two\n", 1),
        ("a/x.py", "three\n", "four\n", 2),
        ("b/y.py", "five\n", "", 3),
    ]


def test_parse_prose_line_is_not_a_path():
    answer = "Change the rate as follows.\n<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n"
    assert parse_blocks(answer)[0].path is None


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("x.py\n<<<<<<< SEARCH\na\nb\n", "======="),
        ("x.py\n<<<<<<< SEARCH\na\n=======\nb\n", "REPLACE"),
        ("x.py\n<<<<<<< SEARCH\na\n<<<<<<< SEARCH\n", "======="),
    ],
)
def test_parse_malformed_block_is_an_error(answer, why):
    with pytest.raises(EditError, match=why):
        parse_blocks(answer)


def test_parse_no_blocks():
    assert parse_blocks("I would increase the learning rate.") == []


# --- applying -------------------------------------------------------------------------------


def test_apply_exact_match_returns_changed_files_only():
    files = {"train.py": TRAIN, "other.py": "x = 1\n"}
    out = apply_blocks(files, parse_blocks(block("LR = 0.01\n", "LR = 0.02\n")))
    assert out == {"train.py": TRAIN.replace("LR = 0.01\n", "LR = 0.02\n")}
    assert "MIN_LR = 0.001" in out["train.py"]  # the MIN_LR line is not a line-start match


def test_apply_ignores_trailing_whitespace():
    out = apply_blocks({"train.py": TRAIN}, parse_blocks(block("LR = 0.01   \nMIN_LR = 0.001\t\n", "LR = 0.03\n")))
    assert "LR = 0.03\nDEPTH = 4" in out["train.py"]


def test_apply_reindents_when_indentation_differs():
    search = "if step < 10:\n    return LR * step / 10\n"  # quoted without the function's indent
    replace = "if step < 20:\n    return LR * step / 20\n"
    out = apply_blocks({"train.py": TRAIN}, parse_blocks(block(search, replace)))
    assert "    if step < 20:\n        return LR * step / 20\n    return LR\n" in out["train.py"]


def test_apply_file_without_final_newline():
    out = apply_blocks({"a.py": "x = 1\ny = 2"}, [Block("a.py", "y = 2\n", "y = 3\n")])
    assert out == {"a.py": "x = 1\ny = 3"}


def test_apply_not_found_and_ambiguous_are_listed_and_nothing_applies():
    files = {"train.py": TRAIN + "\nLR = 0.01\n"}
    blocks = parse_blocks(
        block("DEPTH = 4\n", "DEPTH = 6\n") + block("LR = 0.01\n", "LR = 0.02\n") + block("WIDTH = 3\n", "WIDTH = 4\n")
    )
    with pytest.raises(EditError) as info:
        apply_blocks(files, blocks)
    assert len(info.value.failures) == 2
    assert "block 2 (train.py)" in info.value.failures[0] and "matches 2 places" in info.value.failures[0]
    assert "block 3 (train.py)" in info.value.failures[1] and "not found" in info.value.failures[1]
    assert "2 edit block(s) failed" in str(info.value)


def test_apply_not_found_hints_at_the_closest_line():
    with pytest.raises(EditError, match=r"resembles line 5: 'DEPTH = 4'"):
        apply_blocks({"train.py": TRAIN}, [Block("train.py", "DEPTH = 5\n", "DEPTH = 6\n")])


def test_apply_unknown_file_is_an_error_and_basename_maps_to_the_only_candidate():
    with pytest.raises(EditError, match=r"prepare\.py is not one of the editable files \(model/train\.py\)"):
        apply_blocks({"model/train.py": TRAIN}, [Block("prepare.py", "x\n", "y\n")])
    out = apply_blocks({"model/train.py": TRAIN}, [Block("train.py", "DEPTH = 4\n", "DEPTH = 8\n")])
    assert list(out) == ["model/train.py"]


def test_apply_default_path_and_missing_path():
    blocks = [Block(None, "DEPTH = 4\n", "DEPTH = 8\n")]
    assert "DEPTH = 8" in apply_blocks({"train.py": TRAIN}, blocks, "train.py")["train.py"]
    with pytest.raises(EditError, match="names no file"):
        apply_blocks({"train.py": TRAIN, "b.py": ""}, blocks, None)


def test_apply_empty_search_creates_only_when_allowed():
    blocks = [Block("new.py", "", "x = 1\n")]
    with pytest.raises(EditError, match="not one of the editable files"):
        apply_blocks({"train.py": TRAIN}, blocks)
    assert apply_blocks({"train.py": TRAIN}, blocks, allow_create=True) == {"new.py": "x = 1\n"}
    with pytest.raises(EditError, match="SEARCH section is empty"):
        apply_blocks({"train.py": TRAIN}, [Block("train.py", "", "x\n")])


def test_apply_sequential_blocks_see_earlier_edits():
    blocks = [Block("t.py", "a = 1\n", "a = 2\n"), Block("t.py", "a = 2\n", "a = 3\n")]
    assert apply_blocks({"t.py": "a = 1\n"}, blocks) == {"t.py": "a = 3\n"}


def test_apply_crlf_file_keeps_its_line_ends():
    assert apply_blocks({"t.py": "a = 1\r\nb = 2\r\n"}, [Block("t.py", "b = 2\n", "b = 3\n")]) == {"t.py": "a = 1\r\nb = 3\r\n"}


# --- whole files, python check, conflicts ---------------------------------------------------


def test_whole_file_single_path_unheaded():
    answer = "RATIONALE: rewrite\n```python\nx = 2\n```\n"
    assert parse_whole_file(answer, ["train.py"]) == {"train.py": "x = 2\n"}


def test_whole_file_headed_by_paths():
    answer = "`a.py`\n```python\nA = 1\n```\nand\nFile: lib/b.py\n```\nB = 2\n```\n"
    assert parse_whole_file(answer, ["a.py", "lib/b.py"]) == {"a.py": "A = 1\n", "lib/b.py": "B = 2\n"}


def test_whole_file_none_when_ambiguous_or_blocks():
    assert parse_whole_file("```\nA\n```\n```\nB\n```", ["a.py"]) is None
    assert parse_whole_file("```\nA\n```", ["a.py", "b.py"]) is None
    assert parse_whole_file(block("a\n", "b\n"), ["train.py"]) is None
    assert parse_whole_file("no code here", ["a.py"]) is None


def test_check_python():
    assert check_python({"a.py": "x = 1\n", "notes.md": "((("}) is None
    assert check_python({"a.py": "def f(:\n"}) == "a.py:1: invalid syntax"


def test_split_conflicts_and_markers():
    merged = "a\n<<<<<<< ours\nb1\n||||||| base\nb0\n=======\nb2\n>>>>>>> theirs\nc\n"
    parts = split_conflicts(merged)
    assert parts == ["a\n", Hunk("b1\n", "b2\n", "b0\n"), "c\n"]
    assert has_conflict_markers(merged) and not has_conflict_markers("a\n== x\n")
    with pytest.raises(EditError, match="unbalanced"):
        split_conflicts("<<<<<<< a\nx\n")
