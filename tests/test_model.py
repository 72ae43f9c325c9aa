"""End-to-end checks of model/ (the GPT target evo evolves): run as subprocesses, as evo does."""

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MODEL = Path(__file__).resolve().parent.parent / "model"
SUMMARY_LINE = re.compile(r"^(\w+):\s+(\S+)$")
PROGRESS_LINE = re.compile(r"^progress: (\d\.\d{3}) val_bpb: (\d+\.\d{6})$")


def run_script(script: Path, env: dict, tmp_cache: Path, timeout: float = 120):
    full = dict(os.environ)
    full.update({"EVO_CACHE": str(tmp_cache), "EVO_THREADS": "1", "EVO_DEVICE": "cpu",
                 "PYTHONUNBUFFERED": "1"})
    full.update(env)
    return subprocess.run([sys.executable, str(script)], env=full, capture_output=True, text=True,
                          timeout=timeout, cwd=str(MODEL.parent))


def summary(stdout: str) -> dict:
    lines = stdout.splitlines()
    assert "---" in lines, stdout
    out = {}
    for line in lines[lines.index("---") + 1:]:
        m = SUMMARY_LINE.match(line)
        assert m, f"bad summary line {line!r}"
        out[m[1]] = m[2]
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One prepared data cache shared by the tests of this module."""
    path = tmp_path_factory.mktemp("evo-cache")
    r = run_script(MODEL / "prepare.py", {}, path)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^data_fingerprint: [0-9a-f]{16}$", r.stdout, re.M), r.stdout
    return path


def test_end_to_end_time_budget(cache):
    r = run_script(MODEL / "train.py", {"EVO_TIME_BUDGET": "1", "EVO_SEED": "0"}, cache)
    assert r.returncode == 0, r.stdout + r.stderr
    s = summary(r.stdout)
    val = float(s["val_bpb"])
    assert 0 < val < 20
    assert int(s["num_steps"]) > 0
    for key in ("training_seconds", "total_seconds", "startup_seconds", "eval_seconds",
                "peak_rss_mb", "total_tokens_M", "num_params_M", "depth"):
        float(s[key])
    assert float(s["training_seconds"]) >= 1.0
    assert re.fullmatch(r"[0-9a-f]{16}", s["data_fingerprint"])
    progress = [PROGRESS_LINE.match(line) for line in r.stdout.splitlines() if line.startswith("progress:")]
    assert all(progress), r.stdout
    assert [m[1] for m in progress] == [f"{0.1 * k:.3f}" for k in range(1, 11)]


def _steps_run(cache, seed):
    r = run_script(MODEL / "train.py", {"EVO_MAX_STEPS": "4", "EVO_SEED": str(seed)}, cache)
    assert r.returncode == 0, r.stdout + r.stderr
    s = summary(r.stdout)
    assert s["num_steps"] == "4"
    return s["val_bpb"], [line for line in r.stdout.splitlines() if line.startswith("progress:")]


def test_same_seed_is_bitwise_identical_and_other_seed_differs(cache):
    a = _steps_run(cache, 3)
    b = _steps_run(cache, 3)
    assert a == b  # val_bpb and every progress value, as printed
    c = _steps_run(cache, 4)
    assert c[0] != a[0]


def test_nan_fails_fast(cache, tmp_path):
    shutil.copy(MODEL / "prepare.py", tmp_path / "prepare.py")
    src = (MODEL / "train.py").read_text()
    for name in ("EMBED_LR", "HEAD_LR", "MATRIX_LR", "MUON_LR"):
        src, n = re.subn(rf"^{name} = \S+", f"{name} = 1e30", src, flags=re.M)
        assert n == 1, name
    src, n = re.subn(r"^GRAD_CLIP = \S+", "GRAD_CLIP = 0", src, flags=re.M)
    assert n == 1
    (tmp_path / "train.py").write_text(src)
    r = run_script(tmp_path / "train.py", {"EVO_TIME_BUDGET": "60"}, cache, timeout=60)
    assert r.returncode != 0
    assert "FAIL:" in r.stdout and ("nan" in r.stdout or "inf" in r.stdout or "diverged" in r.stdout), r.stdout
    assert "\n---\n" not in r.stdout


def test_bad_budget_env_is_a_clear_error(cache):
    r = run_script(MODEL / "train.py", {"EVO_TIME_BUDGET": "soon"}, cache)
    assert r.returncode != 0
    assert "EVO_TIME_BUDGET" in r.stderr


# --- prepare.py's download path, on local files (no network) --------------------------------------


@pytest.fixture()
def prepare_module(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(MODEL))
    monkeypatch.setenv("EVO_CACHE", str(tmp_path / "cache"))
    import prepare
    return prepare


def test_download_local_file_verifies_and_caches(prepare_module, tmp_path):
    src = tmp_path / "corpus.txt"
    src.write_bytes(b"to be or not to be\n" * 100)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = tmp_path / "cache" / "corpus.txt"
    got = prepare_module.download(src.as_uri(), digest, str(dest))
    assert Path(got).read_bytes() == src.read_bytes()
    src.unlink()  # a verified cached copy is reused without touching the source
    assert prepare_module.download(src.as_uri(), digest, str(dest)) == str(dest)
    # a plain path works too
    other = tmp_path / "other.txt"
    other.write_bytes(b"abc")
    dest2 = tmp_path / "cache" / "other.txt"
    prepare_module.download(str(other), hashlib.sha256(b"abc").hexdigest(), str(dest2))
    assert dest2.read_bytes() == b"abc"


def test_download_checksum_mismatch_is_a_clear_error(prepare_module, tmp_path):
    src = tmp_path / "corpus.txt"
    src.write_bytes(b"not the real thing")
    dest = tmp_path / "cache" / "corpus.txt"
    with pytest.raises(prepare_module.ChecksumError, match="checksum mismatch"):
        prepare_module.download(src.as_uri(), "0" * 64, str(dest))
    assert not dest.exists()
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".part-")]


def test_download_missing_source_retries_then_fails(prepare_module, tmp_path):
    with pytest.raises(prepare_module.DataError, match="after 2 attempts"):
        prepare_module.download(str(tmp_path / "missing.txt"), "0" * 64, str(tmp_path / "d.txt"),
                                retries=2, backoff=0)


def test_concurrent_prepare_builds_one_cache(tmp_path):
    env = dict(os.environ, EVO_CACHE=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, str(MODEL / "prepare.py")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    prints = {re.search(r"^data_fingerprint: (\w+)$", o, re.M)[1] for o, _ in outs}
    assert len(prints) == 1
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == \
        [re.search(r"^cache_dir: +(\S+)$", outs[0][0], re.M)[1].rsplit(os.sep, 1)[1]]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".build-")]


def test_prepare_cli_tinyshakespeare_from_mirror_with_wrong_checksum(tmp_path):
    fake = tmp_path / "input.txt"
    fake.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 50)
    r = run_script(MODEL / "prepare.py", {"EVO_DATA": "tinyshakespeare", "EVO_DATA_URL": fake.as_uri()},
                   tmp_path / "cache")
    assert r.returncode == 1
    assert "checksum mismatch" in r.stderr


def test_the_main_job_end_to_end_with_a_tiny_budget(tmp_path):
    """README's first command on the shipped configs/default.toml (the real model/, setup included),
    cut to fifteen runs: in a copy of model/ so this repository gets no refs."""
    repo = tmp_path / "repo"
    shutil.copytree(MODEL, repo / "model", ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", "-b", "master", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "model"], check=True)
    config = (MODEL.parent / "configs" / "default.toml").read_text()
    config = config.replace('repo = ".."', f'repo = "{repo}"').replace("time_budget = 4 ", "time_budget = 1 ")
    cfg = tmp_path / "default.toml"
    cfg.write_text(config)
    env = {**os.environ, "PYTHONPATH": str(MODEL.parent), "EVO_RESULTS": str(tmp_path / "results"), "EVO_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "evo", "search", "--config", str(cfg), "--population", "8", "--generations", "40",
                        "--max-runs", "15"], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "study default: population, 327 children planned, budget max_runs 15" in r.stdout
    assert re.search(r"^noise model: sigma [\d.e-]+ over 12 seeds; delta [\d.e-]+; futility over \d+ checkpoints", r.stdout, re.M), r.stdout
    assert re.search(r"^done: .* 15 runs, .*; stopped by max_runs = 15$", r.stdout, re.M), r.stdout
    assert len(re.findall(r"val_bpb \d\.\d+", r.stdout)) >= 13  # the baseline's twelve seeds and at least one child
