"""SEARCH/REPLACE edits: parse them out of a model's answer and apply them to file texts.

Pure functions, no I/O. The answer format (the one LLM evolvers settled on):

    path/to/file.py
    ```python
    <<<<<<< SEARCH
    lines copied from the current file
    =======
    the lines that replace them
    >>>>>>> REPLACE
    ```

Parsing tolerates prose around blocks, code fences, CRLF line ends and a path written as
`path`, **path**, "File: path", "### path" or in the fence's info string. Applying tries an
exact match first, then a line-by-line match that ignores trailing whitespace, then one that
ignores a uniform indentation offset (and re-indents the replacement). A block that matches
nothing, or more than one place, is an error that names the block: nothing is ever skipped
silently, and a failed apply changes nothing.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "Block",
    "EditError",
    "Hunk",
    "apply_blocks",
    "check_python",
    "fenced_blocks",
    "has_conflict_markers",
    "parse_blocks",
    "parse_whole_file",
    "split_conflicts",
]


class EditError(ValueError):
    """Edits could not be parsed or applied. `failures` holds one line per failed block."""

    def __init__(self, message: str, failures: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures)


@dataclass(frozen=True)
class Block:
    """One SEARCH/REPLACE block. Texts use "\\n" line ends and end with "\\n" unless empty."""

    path: str | None  # None: the answer named no file (the caller's default_path applies)
    search: str
    replace: str
    index: int = 1  # 1-based position in the answer, for error messages


_SEARCH = re.compile(r"^\s*<{5,9}\s*SEARCH\b.*$", re.I)
_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_REPLACE = re.compile(r"^\s*>{5,9}\s*REPLACE\b.*$", re.I)
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*(.*?)\s*$")
_PATH_PREFIX = re.compile(r"^(?:file(?:name)?|path)\s*:\s*", re.IGNORECASE)
_PATHLIKE = re.compile(r"^[\w.\-/+@]+$")
_EXTENSION = re.compile(r"[^/.]\.[A-Za-z0-9_]{1,10}$")


def _normalize(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _as_path(candidate: str) -> str | None:
    """The path a header line names ("`a/b.py`", "File: b.py", "### b.py:"), or None for prose."""
    s = candidate.strip()
    s = s.lstrip("#").strip()
    if s[:2] in ("- ", "* "):
        s = s[2:].strip()
    s = s.strip("*").strip()
    s = _PATH_PREFIX.sub("", s)
    s = s.strip("*`'\"").strip()
    s = _PATH_PREFIX.sub("", s)  # "**File:** `x.py`"
    s = s.strip("*`'\"").rstrip(":").strip().strip("`'\"")
    if not _PATHLIKE.match(s) or s.endswith(("/", ".")) or s.startswith("//"):
        return None  # (an absolute path is returned: it names a file, which apply_blocks then refuses)
    return s if "/" in s or _EXTENSION.search(s) else None


def _fence_path(info: str) -> str | None:
    """A path in a fence's info string: ```train.py, ```python train.py, ```python:train.py."""
    for token in re.split(r"[\s:]+", info):
        path = _as_path(token)
        if path is not None:
            return path
    return None


def _section(lines: list[str]) -> str:
    """Text of a SEARCH or REPLACE section, minus a code fence wrapped inside the markers."""
    if len(lines) >= 2 and _FENCE.match(lines[0]) and _FENCE.match(lines[-1]):
        lines = lines[1:-1]
    return "".join(line + "\n" for line in lines)


def _header_path(lines: list[str], start: int, stop: int, previous: Block | None) -> str | None:
    """Walk back from the SEARCH marker at `start` (not past `stop`) to find its block's path."""
    fence_path = None
    i = start - 1
    while i >= stop:
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            fence_path = fence_path or _fence_path(fence.group(2))
            i -= 1
            continue
        if not line.strip():
            i -= 1
            continue
        # A path line, else a path in the fence, else prose: same file as the block before, if any.
        return _as_path(line) or fence_path or (previous.path if previous else None)
    return fence_path or (previous.path if previous else None)


def parse_blocks(text: str) -> list[Block]:
    """All SEARCH/REPLACE blocks in an answer, in order. Raises EditError on a malformed block."""
    lines = _normalize(text).split("\n")
    blocks: list[Block] = []
    i, stop = 0, 0  # stop: first line after the previous block (header search stays behind it)
    while i < len(lines):
        if not _SEARCH.match(lines[i]):
            i += 1
            continue
        index = len(blocks) + 1
        path = _header_path(lines, i, stop, blocks[-1] if blocks else None)
        j = i + 1
        while j < len(lines) and not _DIVIDER.match(lines[j]):
            if _SEARCH.match(lines[j]) or _REPLACE.match(lines[j]):
                raise EditError(f"block {index}: SEARCH without a ======= line before the next marker")
            j += 1
        if j == len(lines):
            raise EditError(f"block {index}: SEARCH without a ======= line (answer cut short?)")
        k = j + 1
        while k < len(lines) and not _REPLACE.match(lines[k]):
            if _SEARCH.match(lines[k]) or _DIVIDER.match(lines[k]):
                raise EditError(f"block {index}: no >>>>>>> REPLACE line before the next marker")
            k += 1
        if k == len(lines):
            raise EditError(f"block {index}: no >>>>>>> REPLACE line (answer cut short?)")
        blocks.append(Block(path, _section(lines[i + 1 : j]), _section(lines[j + 1 : k]), index))
        i = stop = k + 1
    return blocks


# --- applying -------------------------------------------------------------------------------


def _resolve_path(path: str | None, files: Mapping[str, str], default_path: str | None) -> str:
    if path is None:
        if default_path is None:
            raise EditError("it names no file (put the file path on the line before the block)")
        return default_path
    if path.startswith("/"):  # never taken for the only mutable file: that edit was meant for another file
        known = ", ".join(sorted(files)) or "none"
        raise EditError(f"{path} is an absolute path; name one of the editable files as the repository does ({known})")
    path = path.removeprefix("./")
    if path in files:
        return path
    same_name = [p for p in files if p.rsplit("/", 1)[-1] == path.rsplit("/", 1)[-1]]
    if len(same_name) == 1 and (path.count("/") == 0 or same_name[0].endswith("/" + path)):
        return same_name[0]
    return path  # unknown: the caller decides (create, or error)


def _strip_blank_ends(lines: list[str]) -> list[str]:
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _uniform_offset(window: list[str], search: list[str]) -> tuple[str, str] | None:
    """(added, removed) indentation turning each search line into its file line, if uniform."""
    offset: tuple[str, str] | None = None
    for f, s in zip(window, search):
        if not s.strip():
            if f.strip():
                return None
            continue
        if f.strip() != s.strip():
            return None
        fi, si = _indent(f), _indent(s)
        if fi.endswith(si):
            this = (fi[: len(fi) - len(si)], "")
        elif si.endswith(fi):
            this = ("", si[: len(si) - len(fi)])
        else:
            return None
        if offset is None:
            offset = this
        elif offset != this:
            return None
    return offset


def _reindent(lines: list[str], offset: tuple[str, str]) -> list[str]:
    added, removed = offset
    out = []
    for line in lines:
        if line.strip():
            if removed and line.startswith(removed):
                line = line[len(removed) :]
            line = added + line
        out.append(line)
    return out


def _closest_hint(text: str, search: str) -> str:
    first = next((s.strip() for s in search.split("\n") if s.strip()), "")
    stripped = [line.strip() for line in text.split("\n")]
    close = difflib.get_close_matches(first, stripped, n=1, cutoff=0.6)
    if not close:
        return ""
    line_no = stripped.index(close[0]) + 1
    return f"; its first line most resembles line {line_no}: {close[0][:100]!r}"


def _line_starts(text: str, search: str) -> list[int]:
    """Offsets where `search` occurs in `text` starting at the beginning of a line."""
    found, start = [], 0
    while (at := text.find(search, start)) != -1:
        if at == 0 or text[at - 1] == "\n":
            found.append(at)
        start = at + 1
    return found


def _apply_one(text: str, search: str, replace: str) -> str:
    """Apply one non-empty SEARCH/REPLACE to `text`, or raise EditError with the reason."""
    exact = _line_starts(text, search)
    if len(exact) == 1:
        return text[: exact[0]] + replace + text[exact[0] + len(search) :]
    file_lines = text.split("\n")
    want = _strip_blank_ends(search.split("\n"))
    if not want:
        raise EditError("its SEARCH section is blank")
    new = _strip_blank_ends(replace.split("\n"))
    n = len(want)
    windows = range(len(file_lines) - n + 1)
    # Trailing whitespace ignored, then a uniform indentation offset ignored.
    matches = [i for i in windows if all(f.rstrip() == s.rstrip() for f, s in zip(file_lines[i : i + n], want))]
    offsets: dict[int, tuple[str, str]] = {}
    if not matches:
        for i in windows:
            offset = _uniform_offset(file_lines[i : i + n], want)
            if offset is not None:
                offsets[i] = offset
        matches = list(offsets)
    if not matches:
        raise EditError("its SEARCH text was not found" + _closest_hint(text, search))
    if len(matches) > 1:
        lines = ", ".join(str(i + 1) for i in matches[:5])
        raise EditError(f"its SEARCH text matches {len(matches)} places (lines {lines}); add lines to make it unique")
    i = matches[0]
    if i in offsets:
        new = _reindent(new, offsets[i])
    return "\n".join(file_lines[:i] + new + file_lines[i + n :])


def apply_blocks(
    files: Mapping[str, str],
    blocks: Iterable[Block],
    default_path: str | None = None,
    *,
    allow_create: bool = False,
) -> dict[str, str]:
    """Apply blocks in order; return the new text of each file that changed (CRLF files stay CRLF).

    A block with no path applies to `default_path`. A path not in `files` is an error unless
    the block's SEARCH is empty and `allow_create` is set (then it creates the file). Every
    block is tried; if any fails, EditError lists each failure and nothing is applied.
    """
    current = {path: _normalize(text) for path, text in files.items()}
    failures: list[str] = []
    for block in blocks:
        where = block.path or default_path or "?"
        try:
            path = _resolve_path(block.path, current, default_path)
            where = path
            if path not in current:
                if block.search.strip() or not allow_create:
                    known = ", ".join(sorted(files)) or "none"
                    raise EditError(f"{path} is not one of the editable files ({known})")
                current[path] = block.replace
            elif not block.search.strip():
                if current[path].strip():
                    raise EditError("its SEARCH section is empty but the file is not; quote the lines to replace")
                current[path] = block.replace
            else:
                current[path] = _apply_one(current[path], block.search, block.replace)
        except EditError as exc:
            failures.append(f"block {block.index} ({where}): {exc}")
    if failures:
        raise EditError(f"{len(failures)} edit block(s) failed:\n" + "\n".join(f"- {f}" for f in failures), failures)
    changed = {}
    for path, text in current.items():
        if path not in files:
            changed[path] = text
        elif _normalize(files[path]) != text:
            changed[path] = text.replace("\n", "\r\n") if "\r\n" in files[path] else text  # keep CRLF files CRLF
    return changed


# --- whole-file answers ---------------------------------------------------------------------


def fenced_blocks(text: str) -> list[tuple[str, str, str]]:
    """(header line before the fence, fence info, body) of each fenced code block."""
    lines = _normalize(text).split("\n")
    found = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence = opening.group(1)
        j = i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if closing and closing.group(1)[0] == fence[0] and len(closing.group(1)) >= len(fence) and not closing.group(2):
                break
            j += 1
        header = next((lines[h] for h in range(i - 1, -1, -1) if lines[h].strip()), "")
        found.append((header, opening.group(2), "".join(line + "\n" for line in lines[i + 1 : j])))
        i = j + 1
    return found


def parse_whole_file(text: str, paths: Iterable[str]) -> dict[str, str] | None:
    """Whole files given as fenced code blocks, each headed by its path (line before the fence,
    or the fence's info string). With a single path, one unheaded fenced block is that file.
    Returns None when the answer holds no such block (or holds SEARCH/REPLACE markers)."""
    paths = list(paths)
    if any(_SEARCH.match(line) for line in _normalize(text).split("\n")):
        return None
    blocks = fenced_blocks(text)
    found: dict[str, str] = {}
    for header, info, body in blocks:
        for candidate in (_fence_path(info), _as_path(header)):
            if candidate is None:
                continue
            path = _resolve_path(candidate, dict.fromkeys(paths, ""), None)  # EditError for an absolute path
            if path in paths:
                found[path] = body
                break
    if found:
        return found
    if len(paths) == 1 and len(blocks) == 1 and blocks[0][2].strip():
        return {paths[0]: blocks[0][2]}
    return None


# --- checks and conflict markers ------------------------------------------------------------


def check_python(files: Mapping[str, str]) -> str | None:
    """None if every .py file compiles, else one "path:line: message" line per broken file."""
    errors = []
    for path, text in files.items():
        if not path.endswith(".py"):
            continue
        try:
            compile(text, path, "exec", dont_inherit=True)
        except SyntaxError as exc:
            errors.append(f"{path}:{exc.lineno}: {exc.msg}")
        except ValueError as exc:  # e.g. null bytes
            errors.append(f"{path}: {exc}")
    return "\n".join(errors) or None


@dataclass(frozen=True)
class Hunk:
    """One conflicted region of a merged file: side a ("ours"), side b ("theirs"), base if shown."""

    ours: str
    theirs: str
    base: str | None = None


_C_START = re.compile(r"^<{7}(?: .*)?$")
_C_BASE = re.compile(r"^\|{7}(?: .*)?$")
_C_MID = re.compile(r"^={7}$")
_C_END = re.compile(r"^>{7}(?: .*)?$")


def has_conflict_markers(text: str) -> bool:
    markers = (_C_START, _C_BASE, _C_MID, _C_END)
    return any(marker.match(line) for line in _normalize(text).split("\n") for marker in markers)


def split_conflicts(merged: str) -> list[str | Hunk]:
    """Split git's merged text into plain text and Hunks. Raises EditError if markers are unbalanced."""
    out: list[str | Hunk] = []
    plain: list[str] = []
    lines = merged.split("\n")
    i = 0
    while i < len(lines):
        if not _C_START.match(lines[i]):
            plain.append(lines[i])
            i += 1
            continue
        parts: dict[str, list[str]] = {"ours": [], "base": [], "theirs": []}
        part, has_base = "ours", False
        i += 1
        while i < len(lines) and not _C_END.match(lines[i]):
            if _C_START.match(lines[i]):
                raise EditError(f"nested conflict marker at line {i + 1}")
            if part == "ours" and _C_BASE.match(lines[i]):
                part, has_base = "base", True
            elif part in ("ours", "base") and _C_MID.match(lines[i]):
                part = "theirs"
            else:
                parts[part].append(lines[i])
            i += 1
        if i == len(lines) or part != "theirs":
            raise EditError("unbalanced conflict markers")
        i += 1
        if plain:
            out.append("".join(line + "\n" for line in plain))
            plain = []
        text = {k: "".join(line + "\n" for line in v) for k, v in parts.items()}
        out.append(Hunk(text["ours"], text["theirs"], text["base"] if has_base else None))
    if plain:
        out.append("\n".join(plain))  # the tail: keeps the file's own final newline (or lack of it)
    return out
