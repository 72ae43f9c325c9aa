"""Whole searches with the LLM operators against a real HTTP server, and with a scripted agent CLI."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import optuna

from conftest import evo, git, write_config
from llm_server import FakeLLMServer, Request

TARGET = '''\
X = 1.0  # best at 3.0
Y = 5  # best at 7
print(f"score: {-(X - 3.0) ** 2 - 0.1 * (Y - 7) ** 2}")
'''


def model(request: Request) -> str:
    """A scripted 'model': nudges X or Y in the file it was shown; settles conflicts by conflict number."""
    text = request.text
    conflicts = sorted(set(re.findall(r"\(conflict #(\d+)\)", text)), key=int)
    if "RESOLVE" in text and conflicts:
        return "RATIONALE: keep A's side\n" + "\n".join(f"RESOLVE target.py #{k}: A" for k in conflicts)
    if "RESOLVE" in text:
        return "RATIONALE: nothing to settle\nRESOLVE target.py\n```python\n" + TARGET + "```"
    # the parent's file is the first one shown in the conversation (later messages are our answers)
    x_line, x = re.findall(r"^(X = ([-0-9.e]+).*)$", text, re.MULTILINE)[0]
    y_line, y = re.findall(r"^(Y = (-?\d+).*)$", text, re.MULTILINE)[0]
    n = len(request.text)  # varies between prompts: a cheap deterministic 'temperature'
    if n % 2:
        old, new, why = x_line, x_line.replace(f"X = {x}", f"X = {float(x) + 0.5:.3g}", 1), "raise X"
    else:
        old, new, why = y_line, y_line.replace(f"Y = {y}", f"Y = {int(y) + 1}", 1), "raise Y"
    return f"RATIONALE: {why}\ntarget.py\n```\n<<<<<<< SEARCH\n{old}\n=======\n{new}\n>>>>>>> REPLACE\n```\n"


def test_population_search_with_llm_mutations_and_llm_merges(make_repo, tmp_path: Path, monkeypatch) -> None:
    repo = make_repo(files={"target.py": TARGET})
    with FakeLLMServer(responder=model) as server:
        cfg = write_config(
            tmp_path / "evo.toml", repo, tmp_path / "evo.db",
            search={"strategy": "population", "population": 4, "generations": 6, "crossover_rate": 0.7, "tournament_size": 1, "exploit": 0.0},
            operators={"mutation": "llm", "conflict": "llm"},
            llm={"base_url": server.base_url, "model": "fake", "api_key_env": "EVO_TEST_KEY", "timeout": 10, "deadline": 60},
        )
        res = evo("search", "--config", str(cfg), cwd=tmp_path, env={"EVO_TEST_KEY": "sk-test-secret-123"})
        assert res.returncode == 0, res.stdout + res.stderr
        assert server.requests and all(r.headers.get("authorization") == "Bearer sk-test-secret-123" for r in server.requests)
    ts = optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'evo.db'}").get_trials(deepcopy=False)
    ops = {t.user_attrs["operator"] for t in ts}
    assert "llm" in ops
    llm = [t for t in ts if t.user_attrs["operator"] == "llm" and t.user_attrs["outcome"] == "complete"]
    assert llm and all(t.user_attrs["description"] in ("raise X", "raise Y") for t in llm)
    assert all(t.user_attrs.get("usage", {}).get("prompt_tokens", 0) > 0 for t in llm if t.user_attrs["role"] == "candidate")
    for t in llm:  # prompt and response are kept with the trial
        folder = Path(t.user_attrs["artifacts"])
        assert (folder / "prompt.txt").exists() and (folder / "response.txt").exists()
    merged = [t for t in ts if t.user_attrs["operator"].startswith("crossover") and t.user_attrs.get("commit")]
    assert merged, "no crossover child"
    for t in merged:
        assert len(git(repo, "log", "-1", "--format=%P", t.user_attrs["commit"]).split()) == 2
    # the key never reaches the archive, the logs or the artifacts
    blob = (tmp_path / "evo.db").read_bytes()
    assert b"sk-test-secret-123" not in blob
    for f in (tmp_path / "results").rglob("*"):
        if f.is_file():
            assert b"sk-test-secret-123" not in f.read_bytes(), f


AGENT = '''\
import os, re, sys
path = "target.py"
text = open(path).read()
x = float(re.search(r"^X = ([-0-9.e]+)", text, re.M).group(1))
open(path, "w").write(text.replace(f"X = {x}", f"X = {x + 0.5}", 1))
open(os.environ.get("EVO_DESCRIPTION", "EVO_DESCRIPTION"), "w").write(f"agent: X {x} -> {x + 0.5}\\n")
'''


def test_greedy_search_with_a_scripted_agent(make_repo, tmp_path: Path) -> None:
    repo = make_repo(files={"target.py": TARGET})
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT)
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db", search={"generations": 3},
                       operators={"mutation": "agent"}, agent={"command": f"{sys.executable} {agent}", "timeout": 30})
    res = evo("search", "--config", str(cfg), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    ts = sorted(optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'evo.db'}").get_trials(deepcopy=False), key=lambda t: t.number)
    kids = [t for t in ts if t.user_attrs["index"] > 0]
    assert len(kids) == 3 and all(t.user_attrs["operator"] == "agent" for t in kids)
    assert [t.value for t in ts] == sorted(t.value for t in ts)  # each child of the mainline moves X toward 3
    assert kids[0].user_attrs["description"].startswith("agent: X 1.0 -> 1.5")
