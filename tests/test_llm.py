"""LLMClient / LLMMutation / LLMResolver against a real local HTTP server with scripted answers."""

from __future__ import annotations

import random
import time

import pytest
from llm_server import FakeLLMServer, Reply, llm_server  # noqa: F401  (llm_server is a fixture)

from operators.base import Conflict, Context, OperatorError, Parent, Proposal
from operators.llm import LLMClient, LLMError, LLMMutation, LLMResolver, LLMSettings

KEY = "sk-test-SECRET-key-0123456789"
ENV = "EVO_TEST_LLM_KEY"

TRAIN = """\
import math

LR = 0.01
DEPTH = 4


def schedule(step):
    if step < 10:
        return LR * step / 10
    return LR
"""
PARENT = Parent(commit="abc123", files={"train.py": TRAIN}, value=0.9979, description="baseline", trial=3)
CONTEXT = Context(
    metric="val_bpb",
    direction="minimize",
    mutable=("train.py",),
    program="Try schedules before architecture changes.",
    history="#1 0.9979 baseline\n#2 FAIL depth 12 (out of memory)",
)
GOOD = (
    "RATIONALE: double the learning rate for faster convergence\n\n"
    "train.py\n```python\n<<<<<<< SEARCH\nLR = 0.01\n=======\nLR = 0.02\n>>>>>>> REPLACE\n```\n"
)
MISSING = "RATIONALE: deeper\n\ntrain.py\n<<<<<<< SEARCH\nDEPTH = 5\n=======\nDEPTH = 6\n>>>>>>> REPLACE\n"


@pytest.fixture
def make(llm_server, monkeypatch):  # noqa: F811
    """make(**settings) -> LLMClient on the fake server, with short test timeouts."""
    monkeypatch.setenv(ENV, KEY)

    def factory(**overrides) -> LLMClient:
        values = dict(
            base_url=llm_server.base_url, model="fake-coder", api_key_env=ENV, timeout=10.0, deadline=30.0, backoff=0.01
        )
        values.update(overrides)
        return LLMClient(LLMSettings(**values))

    return factory


def mutate(client: LLMClient, parent: Parent = PARENT) -> Proposal:
    return LLMMutation(client).mutate(parent, random.Random(0), CONTEXT)


def failure(client: LLMClient, parent: Parent = PARENT) -> OperatorError:
    with pytest.raises(OperatorError) as info:
        mutate(client, parent)
    return info.value


def assert_no_key(*texts: object) -> None:
    for text in texts:
        assert KEY not in str(text)


# --- the happy path and what is sent --------------------------------------------------------


def test_fenced_edit_with_prose_gives_a_proposal(llm_server, make):
    llm_server.push(Reply("Sure! Here's my idea.\n\n" + GOOD + "\nThis should help.", usage={"prompt_tokens": 100, "completion_tokens": 20}))
    proposal = mutate(make())
    assert proposal.files == {"train.py": TRAIN.replace("LR = 0.01", "LR = 0.02")}
    assert proposal.description == "double the learning rate for faster convergence"
    assert proposal.usage == {"prompt_tokens": 100, "completion_tokens": 20}
    assert "Try schedules" in proposal.artifacts["prompt"] and "LR = 0.02" in proposal.artifacts["response"]

    (request,) = llm_server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"  # the key is sent ...
    assert_no_key(proposal.artifacts, proposal.description)  # ... and never recorded
    body = request.body
    assert body["model"] == "fake-coder" and body["temperature"] == 0.7 and body["max_tokens"] == 4096
    prompt = request.text
    for expected in ("Try schedules before architecture changes.", "#2 FAIL depth 12", "`val_bpb`", "minimize", "0.9979", "baseline", "### train.py", TRAIN, "RATIONALE:", "<<<<<<< SEARCH"):
        assert expected in prompt, expected


def test_whole_file_answer_is_accepted(llm_server, make):
    llm_server.push("RATIONALE: rewrite\n\n```python\n" + TRAIN.replace("DEPTH = 4", "DEPTH = 6") + "```\n")
    proposal = mutate(make())
    assert proposal.files["train.py"] == TRAIN.replace("DEPTH = 4", "DEPTH = 6")
    assert proposal.description == "rewrite"


def test_usage_omitted_by_the_server_counts_zero(llm_server, make):
    llm_server.push(Reply(GOOD, usage=None))
    assert mutate(make()).usage == {"prompt_tokens": 0, "completion_tokens": 0}


def test_description_falls_back_to_first_prose_line_and_is_trimmed(llm_server, make):
    llm_server.push("I will double the rate " + "very " * 40 + "carefully.\n" + GOOD.split("\n", 1)[1])
    description = mutate(make()).description
    assert description.startswith("I will double the rate") and len(description) <= 120 and "\n" not in description


# --- answers that do not apply are sent back ------------------------------------------------


def test_search_not_found_is_fed_back_then_fixed(llm_server, make):
    llm_server.push(MISSING, GOOD)
    proposal = mutate(make())
    assert proposal.files["train.py"].count("LR = 0.02") == 1
    assert proposal.usage == {"prompt_tokens": 22, "completion_tokens": 14}  # both answers counted
    first, second = llm_server.requests
    assert len(second.messages) == len(first.messages) + 2  # + the bad answer + the error
    assert second.messages[-2] == {"role": "assistant", "content": MISSING}
    feedback = second.messages[-1]["content"]
    assert "block 1 (train.py): its SEARCH text was not found" in feedback and "DEPTH = 4" in feedback
    assert "----- answer 2 -----" in proposal.artifacts["response"]


def test_all_answers_bad_is_an_operator_error(llm_server, make):
    llm_server.push(MISSING, MISSING, MISSING)
    error = failure(make(fix_attempts=2))
    assert error.reason.startswith("LLM edits failed after 3 answers: block 1 (train.py): its SEARCH text was not found")
    assert len(llm_server.requests) == 3 and llm_server.remaining == 0
    assert error.usage == {"prompt_tokens": 33, "completion_tokens": 21}
    assert error.artifacts["response"].count("DEPTH = 5") == 3


def test_edit_to_a_file_that_is_not_mutable_is_fed_back(llm_server, make):
    protected = "RATIONALE: cheat\n\nprepare.py\n<<<<<<< SEARCH\nEVAL = 1\n=======\nEVAL = 0\n>>>>>>> REPLACE\n"
    llm_server.push(protected, protected)
    error = failure(make(fix_attempts=1))
    assert "prepare.py is not one of the editable files (train.py)" in error.reason
    assert "prepare.py is not one of the editable files" in llm_server.requests[1].messages[-1]["content"]


def test_syntax_error_is_fed_back(llm_server, make):
    broken = GOOD.replace("LR = 0.02", "LR = (0.02")
    llm_server.push(broken, GOOD)
    proposal = mutate(make())
    assert "LR = 0.02" in proposal.files["train.py"]
    assert "does not compile" in llm_server.requests[1].messages[-1]["content"]
    assert "train.py:3:" in llm_server.requests[1].messages[-1]["content"]


def test_snippet_instead_of_whole_file_is_fed_back(llm_server, make):
    long_file = TRAIN + "".join(f"X{i} = {i}\n" for i in range(30))
    llm_server.push("RATIONALE: lr\n```python\nLR = 0.02\n```\n", "RATIONALE: lr\n" + GOOD.split("\n", 1)[1])
    proposal = mutate(make(), Parent("c", {"train.py": long_file}))
    assert "LR = 0.02" in proposal.files["train.py"] and "X29 = 29" in proposal.files["train.py"]
    assert "has 1 lines but the file has 40" in llm_server.requests[1].messages[-1]["content"]


def test_prose_without_edits_and_no_op_edits_are_fed_back(llm_server, make):
    noop = "RATIONALE: nothing\ntrain.py\n<<<<<<< SEARCH\nLR = 0.01\n=======\nLR = 0.01\n>>>>>>> REPLACE\n"
    llm_server.push("I think the learning rate is too low.", noop)
    error = failure(make(fix_attempts=1))
    assert "no SEARCH/REPLACE blocks found" in llm_server.requests[1].messages[-1]["content"]
    assert error.reason == "LLM edits failed after 2 answers: the edits change nothing: propose a real change"


# --- answers that end the proposal at once --------------------------------------------------


def test_empty_answer(llm_server, make):
    llm_server.push("   \n")
    error = failure(make())
    assert error.reason == "model returned an empty answer" and len(llm_server.requests) == 1
    assert error.usage == {"prompt_tokens": 11, "completion_tokens": 7}


def test_refusal_in_text_and_in_the_refusal_field(llm_server, make):
    llm_server.push("I'm sorry, but I can't help with that request.", Reply(text=None, refusal="I cannot assist with this."))
    assert failure(make()).reason == "model refused: I'm sorry, but I can't help with that request."
    error = failure(make())
    assert error.reason == "model refused: I cannot assist with this."
    assert len(llm_server.requests) == 2


def test_truncated_answer(llm_server, make):
    llm_server.push(Reply(GOOD[:60], finish_reason="length"))
    error = failure(make(max_tokens=50))
    assert error.reason == "answer truncated at max_tokens=50 (finish_reason=length)"
    assert GOOD[:60] in error.artifacts["response"] and error.usage["completion_tokens"] == 7


# --- HTTP failures, retries, timeouts, deadline, budget -------------------------------------


def test_429_then_success(llm_server, make):
    llm_server.push(Reply(status=429, headers={"Retry-After": "0"}, error_message="slow down"), GOOD)
    proposal = mutate(make())
    assert proposal.files and len(llm_server.requests) == 2


def test_500_exhausts_retries(llm_server, make):
    llm_server.push(500, 500, 503)
    error = failure(make(retries=2))
    assert error.reason == "LLM request failed after 3 attempts (HTTP 503: scripted error)"
    assert len(llm_server.requests) == 3 and error.usage == {"prompt_tokens": 0, "completion_tokens": 0}
    assert "### user" in error.artifacts["prompt"]


def test_client_error_is_not_retried_and_the_key_is_redacted(llm_server, make):
    llm_server.push(Reply(status=401, error_message=f"Incorrect API key provided: {KEY}"))
    error = failure(make())
    assert error.reason == "LLM request failed (HTTP 401: Incorrect API key provided: [REDACTED]; not retried)"
    assert len(llm_server.requests) == 1
    assert_no_key(error, error.reason, error.artifacts)


def test_unreachable_server_and_malformed_responses(llm_server, make):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = failure(make(base_url=f"http://127.0.0.1:{port}/v1", retries=1))
    assert error.reason.startswith("LLM request failed after 2 attempts (connection error:")
    llm_server.push(Reply(body="<html>bad gateway</html>"), Reply(body=[1, 2]), Reply(body={"id": "x"}))
    assert failure(make()).reason.startswith("LLM server sent a malformed response: Expecting value")
    assert failure(make()).reason == "LLM server sent a malformed response: [1, 2]"
    assert failure(make()).reason == "LLM server returned no choices"


# The answers below hang for 60 s (the server wakes them when it closes): only evo's own timeout
# or deadline can end a request, and the bounds leave seconds of slack yet catch a hang.
HANG = 60.0


def test_timeout_is_retried_then_fails(llm_server, make):
    llm_server.push(Reply(GOOD, delay=HANG), Reply(GOOD, delay=HANG))
    start = time.monotonic()
    error = failure(make(timeout=0.4, retries=1))
    assert error.reason == "LLM request failed after 2 attempts (request timed out after 0.4 s)"
    assert len(llm_server.requests) == 2 and time.monotonic() - start < 10.0


def test_overall_deadline(llm_server, make):
    llm_server.push(*[Reply(GOOD, delay=HANG)] * 60)
    start = time.monotonic()
    # without the deadline, 51 attempts of 0.4 s would take over 20 s
    error = failure(make(timeout=0.4, deadline=0.7, retries=50))
    assert error.reason.startswith("LLM deadline of 0.7 s exceeded")
    assert time.monotonic() - start < 10.0


def test_deadline_covers_fix_attempts(llm_server, make):
    # every answer takes 1 s, well inside the request timeout and each far inside the 3.5 s
    # deadline; only the proposal's deadline, counting all its fix attempts, stops the 4th
    llm_server.push(*[Reply(MISSING, delay=1.0)] * 11)
    start = time.monotonic()
    error = failure(make(timeout=20.0, deadline=3.5, fix_attempts=10))
    assert error.reason.startswith("LLM deadline of 3.5 s exceeded"), error.reason
    assert time.monotonic() - start < 9.0  # eleven answers would take 11 s
    assert 2 <= len(llm_server.requests) <= 4
    assert "DEPTH = 5" in error.artifacts["response"]  # the answer that came back is kept


def test_token_budget_is_shared_and_enforced(llm_server, make):
    client = make(token_budget=30)
    llm_server.push(MISSING, GOOD)
    mutate(client)  # 36 tokens: over budget after this proposal
    assert client.tokens_used == 36
    error = failure(client)
    assert error.reason == "LLM token budget exhausted (36 of 30 tokens spent)"
    assert len(llm_server.requests) == 2


def test_missing_key_variable_and_keyless_servers(llm_server, monkeypatch):
    monkeypatch.delenv("EVO_TEST_UNSET_KEY", raising=False)
    with pytest.raises(ValueError, match="environment variable EVO_TEST_UNSET_KEY is not set"):
        LLMClient(LLMSettings(base_url=llm_server.base_url, model="m", api_key_env="EVO_TEST_UNSET_KEY"))
    with pytest.raises(ValueError, match="model is not set"):
        LLMClient(LLMSettings(base_url=llm_server.base_url, api_key_env=""))
    llm_server.push("hello")
    client = LLMClient(LLMSettings(base_url=llm_server.base_url, model="m", api_key_env=""))
    assert client.chat([{"role": "user", "content": "hi"}]) == ("hello", {"prompt_tokens": 11, "completion_tokens": 7})
    assert llm_server.requests[0].headers["authorization"] == "Bearer none"


def test_settings_validation():
    with pytest.raises(ValueError, match=r"\[llm\] unknown key\(s\) modle"):
        LLMSettings.from_dict({"modle": "x"})
    with pytest.raises(ValueError, match="timeout must be > 0"):
        LLMSettings(timeout=0)
    assert LLMSettings.from_dict({"model": "m", "retries": 1}).retries == 1
    assert LLMSettings(token_budget=0).token_budget is None  # 0 = unlimited, as in the TOML


def test_operators_accept_settings(llm_server, make):
    settings = make().settings
    llm_server.push(GOOD)
    assert LLMMutation(settings).mutate(PARENT, random.Random(0), CONTEXT).files
    assert isinstance(LLMResolver(settings).client, LLMClient)


def test_client_is_usable_from_threads(llm_server, make):
    import threading

    client = make()
    llm_server.push(*["ok"] * 4)
    results = []
    threads = [threading.Thread(target=lambda: results.append(client.chat([{"role": "user", "content": "x"}]))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and client.tokens_used == 4 * 18


# --- conflict resolution --------------------------------------------------------------------

BASE = "LR = 0.01\nDEPTH = 4\nWIDTH = 128\n"
OURS = "LR = 0.02\nDEPTH = 4\nWIDTH = 256\n"
THEIRS = "LR = 0.03\nDEPTH = 4\nWIDTH = 64\n"
MERGED = (
    "<<<<<<< a\nLR = 0.02\n=======\nLR = 0.03\n>>>>>>> b\nDEPTH = 4\n"
    "<<<<<<< a\nWIDTH = 256\n=======\nWIDTH = 64\n>>>>>>> b\n"
)
CONFLICT = Conflict("model/train.py", BASE, OURS, THEIRS, MERGED)
A = Parent("aaa", {"model/train.py": OURS}, value=0.99, description="lr 0.02, width 256")
B = Parent("bbb", {"model/train.py": THEIRS}, value=0.98, description="lr 0.03, width 64")


def resolve(client: LLMClient, conflicts=(CONFLICT,)) -> Proposal:
    return LLMResolver(client).resolve(list(conflicts), A, B, random.Random(0), CONTEXT)


def test_resolver_hunks_by_pick_and_by_text(llm_server, make):
    llm_server.push("RATIONALE: B's rate, a middle width\n\nRESOLVE model/train.py #1: B\n\nRESOLVE train.py #2\n```python\nWIDTH = 160\n```\n")
    proposal = resolve(make())
    assert proposal.files == {"model/train.py": "LR = 0.03\nDEPTH = 4\nWIDTH = 160\n"}
    assert proposal.description == "B's rate, a middle width"
    prompt = llm_server.requests[0].text
    for expected in ("<<<<<<< A (conflict #2)", "-WIDTH = 128", "+WIDTH = 64", "value 0.99", "lr 0.03, width 64", "prefer the fitter parent, B"):
        assert expected in prompt, expected


def test_resolver_feeds_back_missing_hunks_and_markers(llm_server, make):
    llm_server.push(
        "RESOLVE model/train.py #1: A\n",
        "RESOLVE model/train.py #1: A\nRESOLVE model/train.py #2\n```\n<<<<<<< a\nWIDTH = 1\n```\n",
        "RESOLVE model/train.py #1: A\nRESOLVE model/train.py #2: A\n",
    )
    proposal = resolve(make(fix_attempts=2))
    assert proposal.files == {"model/train.py": OURS}
    assert proposal.description == "llm resolved conflicts in model/train.py"
    assert "model/train.py #2: no answer" in llm_server.requests[1].messages[-1]["content"]
    assert "still contains conflict markers" in llm_server.requests[2].messages[-1]["content"]


def test_resolver_whole_file_when_git_left_no_markers(llm_server, make):
    deleted = Conflict("b.py", "x = 1\n", "x = 2\n", "", "x = 2\n")  # modify/delete: no markers
    llm_server.push("RATIONALE: keep A's edit\nRESOLVE b.py\n```python\nx = 2\n```\n")
    proposal = resolve(make(), [deleted])
    assert proposal.files == {"b.py": "x = 2\n"}
    assert "### b.py (whole files)" in llm_server.requests[0].text


def test_resolver_gives_up_with_a_reason(llm_server, make):
    llm_server.push("I'd merge them carefully.", "Still thinking.")
    with pytest.raises(OperatorError) as info:
        resolve(make(fix_attempts=1))
    assert info.value.reason == "LLM conflict resolution failed after 2 answers: no RESOLVE lines found: answer each conflict with `RESOLVE <path> #<number>`"
    assert isinstance(info.value, LLMError)


def test_server_fixture_works_as_a_context_manager():
    with FakeLLMServer("a", 429) as server:
        assert server.remaining == 2 and server.base_url.startswith("http://127.0.0.1:")
