"""AgentMutation with scripted "agents": small Python scripts run with sys.executable."""

from __future__ import annotations

import json
import os
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
elif mode == "sneaky":
    edit("train.py", "LR = 0.01", "LR = 0.03")
    pathlib.Path("README.md").write_text("rewritten\n")  # not one of the files it was given
    pathlib.Path("lib/new.py").write_text("Y = 2\n")
    os.makedirs("__pycache__", exist_ok=True)
    pathlib.Path("__pycache__/x.pyc").write_bytes(b"\x00\xff")  # tool caches are never part of a child
elif mode == "delete":
    os.remove("lib/util.py")
elif mode == "symlink":
    edit("train.py", "LR = 0.01", "LR = 0.05")
    os.symlink("/etc/hostname", "secrets.txt")
elif mode == "binary":
    pathlib.Path("blob.bin").write_bytes(b"\xff\xfe\x00")
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


def test_edit_becomes_a_proposal_with_every_file_the_agent_touched(agent):
    """The proposal reports new files and changed read-only context too: the search loop rejects
    a child that touches anything outside the mutable files (tests/test_isolation.py)."""
    proposal = mutate(agent("edit", extra_files={"prepare.py": "EVAL = 1\n"}))
    # the context file is read-only on disk; only root (who ignores file modes) can write it
    refused = "prepare.py is read-only" in proposal.artifacts["stderr"]
    assert refused == (os.geteuid() != 0), proposal.artifacts["stderr"]
    expected = {"train.py": "LR = 0.02\nDEPTH = 4\n", "notes.txt": "scratch"} | ({} if refused else {"prepare.py": "cheat"})
    assert proposal.files == expected
    assert proposal.description == "raised the learning rate to 0.02"  # first line of stdout
    assert "-LR = 0.01\n+LR = 0.02" in proposal.artifacts["diff"]
    assert "--- /dev/null\n+++ b/notes.txt\n" in proposal.artifacts["diff"]
    assert "ignored" not in proposal.artifacts
    assert "Read-only context (changing it rejects your edit): `prepare.py`" in proposal.artifacts["prompt"]
    assert proposal.usage == {}


def test_files_outside_the_given_ones_are_reported_not_dropped(agent):
    proposal = mutate(agent("sneaky"))
    assert proposal.files == {"train.py": "LR = 0.03\nDEPTH = 4\n", "README.md": "rewritten\n", "lib/new.py": "Y = 2\n"}


def test_deleted_symlinked_or_binary_files_fail_the_proposal(agent):
    for mode, reason in (("delete", "agent deleted lib/util.py (deleting a file is not supported)"),
                         ("symlink", "agent left a symbolic link at secrets.txt (not supported)"),
                         ("binary", "agent left blob.bin not valid UTF-8")):
        with pytest.raises(OperatorError) as info:
            mutate(agent(mode))
        assert info.value.reason == reason


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
    """The same scrubber as a run's (evo.runner.run_env): a glob never lets a secret-looking name
    through, an exact name does; evo's storage URL and unlisted variables never pass."""
    monkeypatch.setenv("EVO_TEST_SECRET", "hunter2")
    monkeypatch.setenv("EVO_TEST_AGENT_KEY", "agent-key")
    monkeypatch.setenv("EVO_TEST_OPT_MODE", "fast")
    monkeypatch.setenv("EVO_TEST_OPT_TOKEN", "tok-123")
    monkeypatch.setenv("EVO_STORAGE", "postgresql://user:pw@db/evo")
    proposal = mutate(agent("env", env_allow=("EVO_TEST_AGENT_KEY", "EVO_TEST_OPT_*")))
    env = json.loads(proposal.artifacts["stdout"].strip().splitlines()[-1])
    assert env["EVO_TEST_AGENT_KEY"] == "agent-key" and "EVO_TEST_SECRET" not in env
    assert env["EVO_TEST_OPT_MODE"] == "fast" and "EVO_TEST_OPT_TOKEN" not in env
    assert "EVO_STORAGE" not in env
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
    assert time.monotonic() - start < 30  # the agent would sleep 60 s: a bound that still catches a hang
    assert info.value.reason == "agent timed out after 1 s (process group killed)"
    assert info.value.artifacts["stdout"] == "thinking...\n"
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 20
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_settings_validation():
    with pytest.raises(ValueError, match="command is not set"):
        AgentSettings()
    with pytest.raises(ValueError, match=r"unknown key\(s\) timout"):
        AgentSettings.from_dict({"command": "x", "timout": 1})
    assert AgentSettings.from_dict({"command": "x", "env_allow": ["A"]}).env_allow == ("A",)
