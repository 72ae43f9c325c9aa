"""AgentMutation with scripted "agents": small Python scripts run with sys.executable."""

from __future__ import annotations

import json
import random
import shlex
import sys
import time
from pathlib import Path

import pytest

from operators.agent import AgentMutation, AgentSettings
from operators.base import Context, OperatorError, Parent

TRAIN = "LR = 0.01\nDEPTH = 4\n"
PARENT = Parent("abc", {"train.py": TRAIN, "lib/util.py": "X = 1\n"}, value=1.25, description="baseline")
CONTEXT = Context(metric="loss", direction="minimize", program="Tune the learning rate.", history="#1 1.25 baseline")

AGENT = r'''
import json, os, pathlib, subprocess, sys, time

mode, prompt_file = sys.argv[1], sys.argv[2]
prompt = pathlib.Path(prompt_file).read_text()
assert prompt == pathlib.Path(os.environ["EVO_PROMPT_FILE"]).read_text()
assert "Tune the learning rate." in prompt and "`loss`" in prompt

def edit(path, old, new):  # sed -i s/old/new/
    p = pathlib.Path(path)
    p.write_text(p.read_text().replace(old, new))

if mode == "edit":
    edit("train.py", "LR = 0.01", "LR = 0.02")
    pathlib.Path("notes.txt").write_text("scratch")
    try:
        pathlib.Path("prepare.py").write_text("cheat")
    except PermissionError:
        print("prepare.py is read-only", file=sys.stderr)
    print("\n  raised the learning rate to 0.02\nsecond line")
elif mode == "describe":
    edit("lib/util.py", "X = 1", "X = 2")
    pathlib.Path("EVO_DESCRIPTION").write_text("set X to 2 in util\nmore detail\n")
    print("chatter")
elif mode == "quiet":
    edit("train.py", "DEPTH = 4", "DEPTH = 6")
elif mode == "nothing":
    print("looked around, changed nothing")
elif mode == "env":
    edit("train.py", "DEPTH = 4", "DEPTH = 5")
    print(json.dumps(dict(os.environ)))
elif mode == "fail":
    edit("train.py", "DEPTH = 4", "DEPTH = 5")
    print("working", flush=True)
    print("boom: out of credits", file=sys.stderr)
    sys.exit(3)
elif mode == "hang":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    pathlib.Path(sys.argv[3]).write_text(str(child.pid))
    edit("train.py", "DEPTH = 4", "DEPTH = 7")
    print("thinking...", flush=True)
    time.sleep(60)
'''


@pytest.fixture
def agent(tmp_path: Path):
    script = tmp_path / "agent.py"
    script.write_text(AGENT)

    def factory(mode: str, *args: str, timeout: float = 20.0, env_allow=(), extra_files=None) -> AgentMutation:
        words = [sys.executable, str(script), mode]
        command = " ".join(shlex.quote(w) for w in words) + " {prompt} " + " ".join(shlex.quote(a) for a in args)
        return AgentMutation(AgentSettings(command=command, timeout=timeout, env_allow=env_allow), extra_files)

    return factory


def mutate(mutation: AgentMutation):
    return mutation.mutate(PARENT, random.Random(0), CONTEXT)


def test_edit_becomes_a_proposal_and_extra_files_stay_read_only(agent):
    proposal = mutate(agent("edit", extra_files={"prepare.py": "EVAL = 1\n"}))
    assert proposal.files == {"train.py": "LR = 0.02\nDEPTH = 4\n"}
    assert proposal.description == "raised the learning rate to 0.02"  # first line of stdout
    assert "-LR = 0.01\n+LR = 0.02" in proposal.artifacts["diff"]
    ignored = proposal.artifacts["ignored"].splitlines()
    assert ignored[0] == "notes.txt (not an editable file, ignored)"
    if "prepare.py is read-only" not in proposal.artifacts["stderr"]:  # root writes read-only files
        assert ignored[1:] == ["prepare.py (read-only context, changes ignored)"]
    assert "Read-only context (changes are ignored): `prepare.py`" in proposal.artifacts["prompt"]
    assert proposal.usage == {}


def test_description_file_wins_and_nested_files_work(agent):
    proposal = mutate(agent("describe"))
    assert proposal.files == {"lib/util.py": "X = 2\n"}
    assert proposal.description == "set X to 2 in util"


def test_default_description(agent):
    proposal = mutate(agent("quiet"))
    assert proposal.description == "agent edit" and proposal.files == {"train.py": "LR = 0.01\nDEPTH = 6\n"}


def test_no_change_is_an_operator_error(agent):
    with pytest.raises(OperatorError) as info:
        mutate(agent("nothing"))
    assert info.value.reason == "agent made no change"
    assert "changed nothing" in info.value.artifacts["stdout"]


def test_environment_is_scrubbed_to_the_allow_list(agent, monkeypatch):
    monkeypatch.setenv("EVO_TEST_SECRET", "hunter2")
    monkeypatch.setenv("EVO_TEST_AGENT_KEY", "agent-key")
    proposal = mutate(agent("env", env_allow=("EVO_TEST_AGENT_*",)))
    env = json.loads(proposal.artifacts["stdout"].strip().splitlines()[-1])
    assert env["EVO_TEST_AGENT_KEY"] == "agent-key" and "EVO_TEST_SECRET" not in env
    assert "PATH" in env and env["EVO_PROMPT_FILE"].endswith("prompt.md")
    assert Path(env["EVO_WORKDIR"]) == Path(env["EVO_DESCRIPTION_FILE"]).parent


def test_failing_agent(agent):
    with pytest.raises(OperatorError) as info:
        mutate(agent("fail"))
    assert info.value.reason == "agent exited with status 3: boom: out of credits"
    assert info.value.artifacts["stdout"] == "working\n"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"  # a zombie is dead, only not yet reaped


def test_hanging_agent_is_killed_with_its_children(agent, tmp_path):
    pid_file = tmp_path / "child.pid"
    start = time.monotonic()
    with pytest.raises(OperatorError) as info:
        mutate(agent("hang", str(pid_file), timeout=1.0))
    assert time.monotonic() - start < 5
    assert info.value.reason == "agent timed out after 1 s (process group killed)"
    assert info.value.artifacts["stdout"] == "thinking...\n"
    child = int(pid_file.read_text())
    for _ in range(50):
        if not _alive(child):
            break
        time.sleep(0.02)
    assert not _alive(child)


def test_settings_validation():
    with pytest.raises(ValueError, match="command is not set"):
        AgentSettings()
    with pytest.raises(ValueError, match=r"unknown key\(s\) timout"):
        AgentSettings.from_dict({"command": "x", "timout": 1})
    assert AgentSettings.from_dict({"command": "x", "env_allow": ["A"]}).env_allow == ("A",)
