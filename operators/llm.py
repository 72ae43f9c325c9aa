"""LLM operators: a mutation that asks a chat model for SEARCH/REPLACE edits, and a conflict
resolver for crossovers, both over any OpenAI-compatible chat-completions server.

    client = LLMClient(LLMSettings(base_url="http://localhost:11434/v1", model="qwen2.5-coder"))
    mutation = LLMMutation(client)      # Mutation, name "llm"
    resolver = LLMResolver(client)      # ConflictResolver, name "llm"

One LLMClient is meant to be shared by all LLM operators of a study: it holds the HTTP client,
the retry policy and the token budget (the operators also accept LLMSettings and then make a
client of their own, with a budget of its own). Every failure is an OperatorError (LLMError) with a
specific reason, the conversation so far as artifacts, and the tokens spent. The API key is
read once from the environment and is scrubbed from every message, artifact and log line.
"""

from __future__ import annotations

import difflib
import functools
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from evo.runner import cap_artifacts, safe_text

from .base import Conflict, Context, OperatorError, Parent, Proposal
from .edits import (
    EditError,
    Hunk,
    apply_blocks,
    check_python,
    fenced_blocks,
    has_conflict_markers,
    parse_blocks,
    parse_whole_file,
    split_conflicts,
)

__all__ = ["LLMClient", "LLMError", "LLMMutation", "LLMResolver", "LLMSettings", "one_line", "render_prompt"]

log = logging.getLogger("evo.operators.llm")

PROMPTS = Path(__file__).with_name("prompts")
NO_KEY = ("", "none")  # values of the key variable that mean "this server needs no key"
MAX_RETRY_AFTER = 60.0  # seconds: a larger Retry-After is not honoured (our own back-off applies)
MAX_BACKOFF = 30.0


@dataclass(frozen=True)
class LLMSettings:
    """The `[llm]` section of the config. Times are seconds."""

    base_url: str = "http://127.0.0.1:8000/v1"  # a local vLLM; OpenAI is https://api.openai.com/v1
    model: str = ""  # required: e.g. "gpt-4.1-mini", "qwen2.5-coder:14b"
    api_key_env: str = "OPENAI_API_KEY"  # variable holding the key; "" = the server needs no key
    temperature: float = 0.7
    max_tokens: int = 4096  # per answer
    timeout: float = 120.0  # per HTTP request
    deadline: float = 600.0  # per proposal, all requests, retries, back-off and fix attempts together
    retries: int = 3  # extra tries of one request on 408/409/429/5xx, timeouts and connection errors
    fix_attempts: int = 2  # times an answer that does not apply is sent back with the error
    program: str = ""  # path of the research directions; the loop reads it into Context.program
    token_budget: int | None = None  # prompt+completion tokens one LLMClient may spend; None or 0 = unlimited
    backoff: float = 1.0  # first retry delay; doubles per retry (with jitter), capped at 30 s

    def __post_init__(self) -> None:
        problems = []
        for name in ("timeout", "deadline"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0")
        for name in ("retries", "fix_attempts", "backoff", "temperature"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        if self.max_tokens < 1:
            problems.append("max_tokens must be >= 1")
        if self.token_budget == 0:
            object.__setattr__(self, "token_budget", None)
        elif self.token_budget is not None and self.token_budget < 0:
            problems.append("token_budget must be >= 0 (0 = unlimited)")
        if problems:
            raise ValueError("[llm] " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LLMSettings:
        """Build from a TOML table; an unknown key is an error that lists the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"[llm] unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)


class LLMError(OperatorError):
    """An LLM call failed (HTTP error after retries, timeout, deadline, budget, refusal, ...)."""


# --- small text helpers (shared with operators.agent) ---------------------------------------


@functools.cache
def _template(name: str) -> str:
    return (PROMPTS / f"{name}.md").read_text(encoding="utf-8")


def render_prompt(name: str, **values: str) -> str:
    """Fill `{{key}}` placeholders of prompts/<name>.md in one pass (values are not re-scanned)."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: str(values[m.group(1)]), _template(name)).strip() + "\n"


def one_line(text: str, limit: int = 120) -> str:
    """Collapse whitespace; cut to `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`{3,}", text)), default=2)
    return "`" * max(3, longest + 1)


def fenced(text: str, lang: str = "") -> str:
    fence = _fence(text)
    if text and not text.endswith("\n"):
        text += "\n"
    return f"{fence}{lang}\n{text}{fence}"


def _lang(path: str) -> str:
    return {".py": "python", ".md": "markdown", ".toml": "toml", ".json": "json", ".sh": "bash"}.get(
        Path(path).suffix, ""
    )


def _value(value: float | None) -> str:
    return "not measured" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(value)


def prompt_values(parent: Parent, context: Context) -> dict[str, str]:
    """Placeholders shared by the mutation prompts (LLM and agent)."""
    maximize = context.direction.lower().startswith("max")
    return {
        "program": context.program.strip() or "(none given)",
        "metric": context.metric,
        "direction": "maximize" if maximize else "minimize",
        "better": "higher" if maximize else "lower",
        "value": _value(parent.value),
        "description": one_line(parent.description, 300) or "(none)",
        "history": context.history.strip() or "(no earlier trials)",
        "paths": ", ".join(f"`{p}`" for p in sorted(parent.files)) or "(none)",
    }


# --- the client -----------------------------------------------------------------------------


class LLMClient:
    """Chat completions with bounded, logged retries, an overall deadline and a token budget.

    The key comes from the environment variable `settings.api_key_env`, read here: unset is an
    error naming the variable; set to "" or "none" means the server needs no key (vLLM, Ollama),
    as does `api_key_env = ""`. `tokens_used` seeds the budget count (e.g. on resume).
    """

    def __init__(self, settings: LLMSettings, *, tokens_used: int = 0) -> None:
        import openai  # deferred: ~1 s to import, and operators.agent reuses this module's helpers

        if not settings.model:
            raise ValueError("[llm] model is not set (e.g. model = \"gpt-4.1-mini\")")
        if not settings.base_url:
            raise ValueError("[llm] base_url is not set")
        key = ""
        if settings.api_key_env:
            if settings.api_key_env not in os.environ:
                raise ValueError(
                    f"environment variable {settings.api_key_env} is not set: it must hold the API key for "
                    f"{settings.base_url} ([llm] api_key_env names the variable; set it to 'none' for a server "
                    "without keys)"
                )
            key = os.environ[settings.api_key_env].strip()
        self._secret = key if key.lower() not in NO_KEY and len(key) >= 4 else None
        self.settings = settings
        self._openai = openai
        self._client = openai.OpenAI(
            base_url=settings.base_url,
            api_key=key if key.lower() not in NO_KEY else "none",
            timeout=settings.timeout,
            max_retries=0,  # retries are ours: bounded by settings.retries and the deadline, and logged
        )
        self._lock = threading.Lock()
        self.tokens_used = tokens_used
        self._jitter = random.Random()  # time-seeded: retries must not perturb the search's rng

    def redact(self, text: str) -> str:
        """`text` with the API key replaced by [REDACTED] and every URL credential masked (a
        server's error may echo a URL with a password or an `api_key=` in it)."""
        from evo.archive import mask_url  # deferred: the archive module imports optuna

        text = text.replace(self._secret, "[REDACTED]") if self._secret else text
        return mask_url(text) if "://" in text or "=" in text else text

    def _error(self, reason: str, response: str = "", usage: dict[str, int] | None = None) -> LLMError:
        reason, response = safe_text(reason), safe_text(response)
        return LLMError(self.redact(reason), cap_artifacts({"response": self.redact(response)}) if response else {}, usage)

    def chat(self, messages: list[dict[str, str]], *, deadline: float | None = None) -> tuple[str, dict[str, int]]:
        """Send a conversation; return (answer text, usage). `deadline` is a time.monotonic() instant
        (default: now + settings.deadline). Raises LLMError; its usage holds tokens already spent."""
        s = self.settings
        if deadline is None:
            deadline = time.monotonic() + s.deadline
        errors = self._openai
        attempt = 0
        while True:
            with self._lock:
                if s.token_budget is not None and self.tokens_used >= s.token_budget:
                    raise self._error(f"LLM token budget exhausted ({self.tokens_used} of {s.token_budget} tokens spent)")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._error(f"LLM deadline of {s.deadline:g} s exceeded")
            timeout = min(s.timeout, remaining)
            retry_after = None
            try:
                response = self._client.chat.completions.create(
                    model=s.model,
                    messages=messages,  # type: ignore[arg-type]
                    temperature=s.temperature,
                    max_tokens=s.max_tokens,
                    timeout=timeout,
                )
            except errors.APITimeoutError:
                if timeout < s.timeout:
                    raise self._error(f"LLM deadline of {s.deadline:g} s exceeded (request cut at {timeout:.3g} s)") from None
                why, retryable = f"request timed out after {timeout:g} s", True
            except errors.APIConnectionError as exc:
                why, retryable = f"connection error: {one_line(str(exc), 200)}", True
            except errors.APIStatusError as exc:
                status = exc.status_code
                why = f"HTTP {status}: {one_line(_server_message(exc), 200)}"
                retryable = status in (408, 409, 429) or status >= 500
                retry_after = _retry_after(exc.response.headers)
            except errors.OpenAIError as exc:
                raise self._error(f"LLM request failed: {one_line(str(exc), 200)}") from None
            except ValueError as exc:  # a body that is not JSON
                raise self._error(f"LLM server sent a malformed response: {one_line(str(exc), 200)}") from None
            else:
                return self._answer(response)
            attempt += 1
            tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
            if not retryable:
                raise self._error(f"LLM request failed ({why}; not retried)")
            if attempt > s.retries:
                raise self._error(f"LLM request failed after {tries} ({why})")
            if retry_after is not None and retry_after <= MAX_RETRY_AFTER:
                delay = retry_after
            else:
                delay = min(MAX_BACKOFF, s.backoff * 2 ** (attempt - 1)) * self._jitter.uniform(0.5, 1.0)
            if time.monotonic() + delay >= deadline:
                raise self._error(f"LLM deadline of {s.deadline:g} s exceeded after {tries} ({why})")
            log.warning("%s", self.redact(f"LLM {why}; retry {attempt}/{s.retries} in {delay:.2f} s"))
            time.sleep(delay)

    def _answer(self, response: Any) -> tuple[str, dict[str, int]]:
        try:
            choices = list(response.choices or ())
            message, finish_reason = (choices[0].message, choices[0].finish_reason) if choices else (None, None)
        except (AttributeError, TypeError):
            raise self._error(f"LLM server sent a malformed response: {one_line(repr(response), 200)}") from None
        raw_usage = getattr(response, "usage", None)
        usage = {
            "prompt_tokens": int(getattr(raw_usage, "prompt_tokens", 0) or 0),
            "completion_tokens": int(getattr(raw_usage, "completion_tokens", 0) or 0),
        }
        with self._lock:
            self.tokens_used += usage["prompt_tokens"] + usage["completion_tokens"]
        if message is None:
            raise self._error("LLM server returned no choices", usage=usage)
        # Untrusted text: a lone surrogate (JSON allows "\ud800") would crash every later write of it.
        text = safe_text(str(getattr(message, "content", None) or ""))
        refusal = safe_text(str(getattr(message, "refusal", None) or ""))
        if refusal:
            raise self._error(f"model refused: {one_line(refusal)}", refusal, usage)
        if finish_reason == "length":
            reason = f"answer truncated at max_tokens={self.settings.max_tokens} (finish_reason=length)"
            raise self._error(reason, text, usage)
        if finish_reason == "content_filter":
            raise self._error("answer blocked by the server's content filter", text, usage)
        if not text.strip():
            raise self._error("model returned an empty answer", usage=usage)
        return text, usage


def _server_message(exc: Any) -> str:
    """The server's own error message (the "message" of an OpenAI-style error body), else the SDK's."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
    return str(exc.message)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds asked by retry-after-ms or Retry-After (numbers only; HTTP dates are ignored)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            value = float(headers.get(name, ""))
        except ValueError:
            continue
        if math.isfinite(value) and value >= 0:
            return value * scale
    return None


# --- conversations with fix attempts --------------------------------------------------------

T = TypeVar("T")

_REFUSAL = re.compile(r"^\W*(i'?m sorry|i am sorry|sorry,|i can(?:'|no)t|i cannot|i won'?t|i will not|as an ai)\b", re.I)
_RATIONALE = re.compile(r"^[\s#>*_`-]*rationale[\s*_`]*[:\-]\s*[*_`]*\s*(.+)$", re.I)


class _Conversation:
    """One proposal's exchange with the model: messages, raw answers and summed usage."""

    def __init__(self, client: LLMClient, user: str) -> None:
        self.client = client
        self.messages = [{"role": "system", "content": render_prompt("system")}, {"role": "user", "content": user}]
        self.answers: list[str] = []
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0}

    def _count(self, usage: Mapping[str, int]) -> None:
        for key in self.usage:
            self.usage[key] += int(usage.get(key, 0))

    def artifacts(self) -> dict[str, str]:
        prompt = "\n\n".join(f"### {m['role']}\n\n{m['content']}" for m in self.messages)
        answers = "\n\n".join(f"----- answer {i} -----\n{a}" for i, a in enumerate(self.answers, 1))
        # capped per proposal (one proposal once wrote 63 MB), the cut said in the artifact itself
        return cap_artifacts({"prompt": self.client.redact(prompt), "response": self.client.redact(answers)})

    def error(self, reason: str) -> OperatorError:
        return LLMError(self.client.redact(safe_text(reason)), self.artifacts(), dict(self.usage))

    def run(self, interpret: Callable[[str], T], what: str) -> tuple[T, str]:
        """Ask, interpret the answer; on EditError send the error back, up to fix_attempts times."""
        settings = self.client.settings
        deadline = time.monotonic() + settings.deadline
        for attempt in range(settings.fix_attempts + 1):
            try:
                text, usage = self.client.chat(self.messages, deadline=deadline)
            except LLMError as exc:
                self._count(exc.usage)
                if exc.artifacts.get("response"):
                    self.answers.append(exc.artifacts["response"])
                raise self.error(exc.reason) from None
            self._count(usage)
            self.answers.append(text)
            self.messages.append({"role": "assistant", "content": text})
            try:
                return interpret(text), text
            except EditError as exc:
                last = exc
                log.info("%s", self.client.redact(f"{what}: answer {attempt + 1} unusable: {one_line(str(exc), 300)}"))
                if attempt < settings.fix_attempts:
                    self.messages.append({"role": "user", "content": render_prompt("fix", error=str(exc).strip())})
            except OperatorError as exc:
                raise self.error(exc.reason) from None
        detail = last.failures[0] if last.failures else str(last).strip().splitlines()[0]
        n = settings.fix_attempts + 1
        raise self.error(f"{what} failed after {n} answer{'s' if n > 1 else ''}: {one_line(detail, 300)}")


def _as_client(client: LLMClient | LLMSettings) -> LLMClient:
    """Operators take a shared LLMClient (one token budget) or settings (a client of their own)."""
    return LLMClient(client) if isinstance(client, LLMSettings) else client


def _rationale(text: str, default: str) -> str:
    """The answer's `RATIONALE:` line, else its first line of prose before any code, else default."""
    lines = text.replace("\r\n", "\n").split("\n")
    for line in lines:
        match = _RATIONALE.match(line)
        if match and match.group(1).strip("*_` "):
            return one_line(match.group(1).strip("*_` "))
    for line in lines:
        stripped = line.strip()
        if stripped.startswith(("```", "~~~", "<<<<<<<", "RESOLVE")):
            break
        if stripped and not stripped.startswith("#") and " " in stripped:
            return one_line(stripped.rstrip(":"))
    return default


def _check_refusal(text: str) -> None:
    first = text.strip().splitlines()[0] if text.strip() else ""
    if _REFUSAL.match(first):
        raise OperatorError(f"model refused: {one_line(first)}")


# --- mutation -------------------------------------------------------------------------------


class LLMMutation:
    """Mutation "llm": the model proposes SEARCH/REPLACE edits (or whole files) to the parent's
    mutable files; edits that do not apply or do not compile are sent back up to fix_attempts times."""

    name = "llm"

    def __init__(self, client: LLMClient | LLMSettings, *, allow_create: bool = False) -> None:
        self.client = _as_client(client)
        self.allow_create = allow_create  # an empty SEARCH on a new path creates that file

    def prompt(self, parent: Parent, context: Context) -> str:
        files = "\n\n".join(f"### {path}\n{fenced(parent.files[path], _lang(path))}" for path in sorted(parent.files))
        return render_prompt(
            "mutation",
            **prompt_values(parent, context),
            files=files or "(no files)",
            example_path=min(parent.files, default="path/to/file.py"),
        )

    def mutate(self, parent: Parent, rng: random.Random, context: Context) -> Proposal:
        if not parent.files:
            raise OperatorError("the parent has no mutable files to edit")
        conversation = _Conversation(self.client, self.prompt(parent, context))
        files, text = conversation.run(lambda answer: self._interpret(answer, parent), "LLM edits")
        return Proposal(files, _rationale(text, "llm edit"), conversation.artifacts(), dict(conversation.usage))

    def _interpret(self, text: str, parent: Parent) -> dict[str, str]:
        """The changed files an answer describes, or EditError (sent back) / OperatorError (final)."""
        blocks = parse_blocks(text)
        if blocks:
            default = next(iter(parent.files)) if len(parent.files) == 1 else None
            changed = apply_blocks(parent.files, blocks, default, allow_create=self.allow_create)
        else:
            whole = parse_whole_file(text, parent.files)
            if whole is None:
                _check_refusal(text)
                raise EditError(
                    "no SEARCH/REPLACE blocks found: give the file path on one line, then "
                    "<<<<<<< SEARCH, the exact current lines, =======, the new lines, >>>>>>> REPLACE"
                )
            for path, new in whole.items():
                old_lines, new_lines = parent.files[path].count("\n"), new.count("\n")
                if old_lines >= 20 and new_lines < old_lines / 2:
                    raise EditError(
                        f"your code block for {path} has {new_lines} lines but the file has {old_lines}: "
                        "answer with SEARCH/REPLACE blocks (or the complete file)"
                    )
            changed = {path: new for path, new in whole.items() if new != parent.files[path]}
        if not changed:
            raise EditError("the edits change nothing: propose a real change")
        problem = check_python(changed)
        if problem:
            raise EditError(f"the edited code does not compile:\n{problem}")
        return changed


# --- conflict resolution --------------------------------------------------------------------

_RESOLVE = re.compile(
    r"^[\s#>*`-]*RESOLVE[\s*`]+(?P<path>[^\s`*#:]+)[\s`*]*(?:#\s*(?P<k>\d+))?[\s`*]*(?::\s*[*`]*(?P<pick>[AB])\b)?"
)


def _resolve_answers(text: str) -> dict[tuple[str, int | None], str | tuple[str]]:
    """(path, conflict number or None for a whole file) -> the side picked, ("A",) or ("B",), or
    the text of the fenced block that follows the RESOLVE line."""
    answers: dict[tuple[str, int | None], str | tuple[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        match = _RESOLVE.match(line)
        if match and match.group("pick"):
            answers[(match.group("path"), int(match.group("k")) if match.group("k") else None)] = (match.group("pick"),)
    for header, _info, body in fenced_blocks(text):
        match = _RESOLVE.match(header)
        if match and not match.group("pick"):
            answers[(match.group("path"), int(match.group("k")) if match.group("k") else None)] = body
    return answers


class LLMResolver:
    """ConflictResolver "llm": the model settles each conflict hunk (picks A or B, or writes the
    merged text); files git could not mark hunk by hunk are answered whole. The result must have
    no conflict markers and must compile, else the error is sent back (fix_attempts)."""

    name = "llm"

    def __init__(self, client: LLMClient | LLMSettings) -> None:
        self.client = _as_client(client)

    def prompt(self, conflicts: list[Conflict], a: Parent, b: Parent, context: Context) -> str:
        values = prompt_values(a, context)
        better = values["better"]
        fitter = "the fitter parent"
        if a.value is not None and b.value is not None and a.value != b.value:
            a_wins = (a.value > b.value) == (better == "higher")
            fitter = f"the fitter parent, {'A' if a_wins else 'B'}"
        sections = []
        for conflict in conflicts:
            parts = _hunks(conflict)
            if parts is None:
                sections.append(
                    f"### {conflict.path} (whole files)\n\nThe common ancestor:\n{fenced(conflict.base, _lang(conflict.path))}\n\n"
                    f"Parent A:\n{fenced(conflict.ours, _lang(conflict.path))}\n\nParent B:\n{fenced(conflict.theirs, _lang(conflict.path))}"
                )
                continue
            merged, k = [], 0
            for part in parts:
                if isinstance(part, str):
                    merged.append(part)
                    continue
                k += 1
                base = f"||||||| ancestor (conflict #{k})\n{part.base}" if part.base is not None else ""
                merged.append(f"<<<<<<< A (conflict #{k})\n{part.ours}{base}=======\n{part.theirs}>>>>>>> B (conflict #{k})\n")
            sections.append(
                f"### {conflict.path} ({k} conflict{'s' if k > 1 else ''})\n\n"
                f"What A changed since the common ancestor:\n{fenced(_diff(conflict.base, conflict.ours, conflict.path), 'diff')}\n\n"
                f"What B changed since the common ancestor:\n{fenced(_diff(conflict.base, conflict.theirs, conflict.path), 'diff')}\n\n"
                f"The merged file, conflicts numbered:\n{fenced(''.join(merged), _lang(conflict.path))}"
            )
        return render_prompt(
            "resolve",
            metric=values["metric"],
            direction=values["direction"],
            better=better,
            program=values["program"],
            fitter=fitter,
            a_value=_value(a.value),
            b_value=_value(b.value),
            a_description=one_line(a.description, 300) or "(none)",
            b_description=one_line(b.description, 300) or "(none)",
            conflicts="\n\n".join(sections),
            example_path=conflicts[0].path if conflicts else "path/to/file.py",
        )

    def resolve(
        self, conflicts: list[Conflict], a: Parent, b: Parent, rng: random.Random, context: Context
    ) -> Proposal:
        if not conflicts:
            raise OperatorError("no conflicts to resolve")
        conversation = _Conversation(self.client, self.prompt(conflicts, a, b, context))
        files, text = conversation.run(lambda answer: self._interpret(answer, conflicts), "LLM conflict resolution")
        default = "llm resolved conflicts in " + ", ".join(c.path for c in conflicts)
        return Proposal(files, _rationale(text, default), conversation.artifacts(), dict(conversation.usage))

    def _interpret(self, text: str, conflicts: list[Conflict]) -> dict[str, str]:
        answers = _resolve_answers(text)
        if not answers:
            _check_refusal(text)
            raise EditError("no RESOLVE lines found: answer each conflict with `RESOLVE <path> #<number>`")
        by_path = {c.path: c for c in conflicts}
        named: dict[tuple[str, int | None], str | tuple[str]] = {}
        failures = []
        for (path, k), answer in answers.items():
            same_name = [p for p in by_path if p == path or p.rsplit("/", 1)[-1] == path]
            if len(same_name) != 1:
                failures.append(f"RESOLVE {path}: not a conflicted file (those are {', '.join(by_path)})")
                continue
            named[(same_name[0], k)] = answer
        resolved = {}
        for conflict in conflicts:
            parts = _hunks(conflict)
            if parts is None:
                answer = named.get((conflict.path, None))
                if not isinstance(answer, str):
                    failures.append(f"{conflict.path}: give the whole resolved file as `RESOLVE {conflict.path}` and a code block")
                    continue
                text_out = answer
            else:
                out, k = [], 0
                for part in parts:
                    if isinstance(part, str):
                        out.append(part)
                        continue
                    k += 1
                    answer = named.get((conflict.path, k))
                    if answer is None:
                        failures.append(f"{conflict.path} #{k}: no answer")
                    elif isinstance(answer, tuple):
                        out.append(part.ours if answer == ("A",) else part.theirs)
                    else:
                        out.append(answer)
                extra = sorted(k2 for (p, k2) in named if p == conflict.path and k2 is not None and not 1 <= k2 <= k)
                if extra:
                    failures.append(f"{conflict.path}: there is no conflict #{extra[0]} (conflicts are #1..#{k})")
                text_out = "".join(out)
            if has_conflict_markers(text_out):
                failures.append(f"{conflict.path}: the result still contains conflict markers")
            resolved[conflict.path] = text_out
        if failures:
            raise EditError(f"{len(failures)} problem(s):\n" + "\n".join(f"- {f}" for f in failures), failures)
        problem = check_python(resolved)
        if problem:
            raise EditError(f"the resolved code does not compile:\n{problem}")
        return resolved


def _hunks(conflict: Conflict) -> list[str | Hunk] | None:
    """The merged text split into plain text and hunks, or None when it has no usable markers."""
    try:
        parts = split_conflicts(conflict.merged)
    except EditError:
        return None
    return parts if any(isinstance(p, Hunk) for p in parts) else None


def _diff(old: str, new: str, path: str) -> str:
    lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True), f"ancestor/{path}", path, n=2)
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines) or "(no change)\n"
