"""The inspection commands and `evo.load_study`, on studies made for real: a git repository in a
temp dir, real `evo search` runs (in-process), a real SQLite storage, real PNGs and a real
optuna-dashboard server."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from unittest import mock

import optuna
import pytest

import evo
from conftest import git, inspect_repo, facts
from evo import cli


STUDIES = {  # name -> config sections (the storage and results default to ./results: the closing line works)
    "toy": {"search": {"strategy": "greedy", "generations": 6}, "sprt": {"enabled": False}},
    "sprt": {"study": {"seed": 3}, "search": {"strategy": "greedy", "generations": 12},
             "sprt": {"enabled": True, "replicates": 3, "max_pairs": 6, "delta": 0.2}},
    "pop-s1": {"study": {"seed": 1}, "search": {"strategy": "population", "population": 3, "generations": 3, "exploit": 0.0,
                                                 "crossover_rate": 1.0, "tournament_size": 1}, "sprt": {"enabled": False}},
    "pop-s2": {"study": {"seed": 3}, "search": {"strategy": "population", "population": 3, "generations": 3, "exploit": 0.3,
                                                 "crossover_rate": 1.0, "tournament_size": 1}, "sprt": {"enabled": False}},
}
PNG = b"\x89PNG\r\n\x1a\n"


def toml(sections: dict[str, dict[str, object]]) -> str:
    lines = []
    for sec, kv in sections.items():
        lines.append(f"[{sec}]")
        for k, v in kv.items():
            lines.append(f"{k} = {json.dumps(v)}")  # JSON scalars and lists are TOML too
    return "\n".join(lines) + "\n"


def config(root: Path, name: str, extra: dict[str, dict[str, object]]) -> Path:
    sections: dict[str, dict[str, object]] = {
        "study": {"name": name},
        "target": {"repo": str(root / "repo"), "mutable": ["target.py"], "run": "{python} target.py", "time_budget": 1,
                   "timeout": 20, "metric": "score", "direction": "maximize"},
    }
    for sec, kv in extra.items():
        sections.setdefault(sec, {}).update(kv)
    path = root / f"{name}.toml"
    path.write_text(toml(sections))
    return path


@contextlib.contextmanager
def inside(folder: Path):
    """cwd = folder, with no EVO_STORAGE/EVO_RESULTS: the defaults (./results/evo.db) apply."""
    old = Path.cwd()
    env = {k: v for k, v in os.environ.items() if k not in ("EVO_STORAGE", "EVO_RESULTS")}
    with mock.patch.dict(os.environ, env, clear=True):
        os.chdir(folder)
        try:
            yield
        finally:
            os.chdir(old)


class Lab:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.repo = root / "repo"
        self.db = root / "results" / "evo.db"
        self.url = f"sqlite:///{self.db}"
        self.logs: dict[str, str] = {}

    def trials(self, name: str) -> list[optuna.trial.FrozenTrial]:
        return optuna.load_study(study_name=name, storage=self.url).get_trials(deepcopy=False)

    def attrs(self, name: str) -> dict:
        return facts(optuna.load_study(study_name=name, storage=self.url))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    root = tmp_path_factory.mktemp("inspect")
    lab = Lab(root)
    inspect_repo(lab.repo)
    with inside(root):
        for name, extra in STUDIES.items():
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                rc = cli.main(["search", "--config", str(config(root, name, extra))])
            assert rc == 0, buf.getvalue()
            lab.logs[name] = buf.getvalue()
    assert lab.db.is_file()
    return lab


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`evo ARGV` in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def ok(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    rc, out, err = run(capsys, *argv)
    assert rc == 0, f"evo {' '.join(argv)} -> {rc}\n{err}\n{out}"
    return out


def error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one-line error of a command that must fail with exit code 2."""
    rc, out, err = run(capsys, *argv)
    assert rc == 2, f"evo {' '.join(argv)} -> {rc}\n{err}\n{out}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evo: error: "), err
    return lines[0]


def assert_png(path: Path, min_bytes: int = 20_000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG, path
    assert len(data) > min_bytes, (path, len(data))
    import matplotlib.image

    h, w = matplotlib.image.imread(str(path)).shape[:2]
    assert w >= 800 and h >= 300, (w, h)


def screening(ts: list[optuna.trial.FrozenTrial]) -> dict[int, optuna.trial.FrozenTrial]:
    out: dict[int, optuna.trial.FrozenTrial] = {}
    for t in sorted(ts, key=lambda t: t.number):
        if t.user_attrs["role"] in ("baseline", "candidate"):
            out.setdefault(t.user_attrs["index"], t)
    return out


# -- the closing line of a search --------------------------------------------------------------------
def test_the_commands_the_search_suggests_work_from_its_folder(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    line = next(x for x in lab.logs["toy"].splitlines() if x.startswith("inspect: "))
    commands = [shlex.split(c) for c in line[len("inspect: "):].split(" | ")]
    assert all(c[0] == "evo" for c in commands)
    assert {c[1] for c in commands} >= {"best", "trials", "mainline", "lineage"}
    with inside(lab.root):
        for argv in commands:
            out = ok(capsys, *argv[1:])
            assert "toy" in out


# -- studies -------------------------------------------------------------------------------------
def test_studies_lists_every_study_with_counts(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    out = ok(capsys, "studies", "--storage", lab.url)
    header, *rows = out.strip().splitlines()
    assert header.split()[:4] == ["name", "direction", "metric", "strategy"]
    assert "promotions" in header and "created" in header
    assert sorted(r.split()[0] for r in rows[:-1]) == sorted(STUDIES)
    data = {r["name"]: r for r in json.loads(ok(capsys, "studies", "--storage", lab.url, "--format", "json"))}
    for name in STUDIES:
        ts = lab.trials(name)
        r = data[name]
        assert r["trials"] == len(ts)
        assert r["complete"] + r["pruned"] + r["fail"] == len(ts)
        assert r["complete"] == sum(t.state.name == "COMPLETE" for t in ts)
        assert r["promotions"] == len(lab.attrs(name).get("promotions", []))
        assert r["direction"] == "maximize" and r["metric"] == "score"
        best = max(t.value for t in screening(ts).values() if t.value is not None)
        assert r["best"] == pytest.approx(best)
    assert data["toy"]["strategy"] == "greedy" and data["pop-s1"]["strategy"] == "population"
    # a bare file path works as --storage; csv parses
    rows_csv = list(csv.DictReader(io.StringIO(ok(capsys, "studies", "--storage", str(lab.db), "-f", "csv"))))
    assert {r["name"] for r in rows_csv} == set(STUDIES)


# -- trials --------------------------------------------------------------------------------------
def test_trials_table_filters_and_formats(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    ts = lab.trials("sprt")
    out = ok(capsys, "trials", "sprt", "--storage", lab.url)
    lines = out.strip().splitlines()
    assert lines[0].split() == ["trial", "index", "role", "seed", "state", "value", "operator", "gen", "outcome", "seconds", "description"]
    assert len(lines) == len(ts) + 2 and lines[-1].startswith(f"{len(ts)} trials of study sprt")

    recs = json.loads(ok(capsys, "trials", "sprt", "--storage", lab.url, "--format", "json"))
    assert [r["number"] for r in recs] == sorted(t.number for t in ts)
    assert {r["role"] for r in recs} >= {"baseline", "replicate", "candidate"}
    for r in recs:
        t = next(t for t in ts if t.number == r["number"])
        assert r["state"] == t.state.name and r["value"] == t.value and r["index"] == t.user_attrs["index"]

    for role in ("baseline", "replicate", "candidate"):
        got = json.loads(ok(capsys, "trials", "sprt", "--role", role, "-f", "json", "--storage", lab.url))
        assert got and {r["role"] for r in got} == {role}
        assert len(got) == sum(t.user_attrs["role"] == role for t in ts)
    complete = json.loads(ok(capsys, "trials", "sprt", "--state", "complete", "-f", "json", "--storage", lab.url))
    assert len(complete) == sum(t.state.name == "COMPLETE" for t in ts)
    gen = json.loads(ok(capsys, "trials", "sprt", "--generation", "2", "-f", "json", "--storage", lab.url))
    assert gen and {r["generation"] for r in gen} == {2}
    ops = json.loads(ok(capsys, "trials", "sprt", "--operator", "const*", "-f", "json", "--storage", lab.url))
    assert ops and {r["operator"] for r in ops} == {"constants"}
    none = ok(capsys, "trials", "sprt", "--operator", "nothing-like-this", "--storage", lab.url)
    assert none.strip() == f"0 of {len(ts)} trials of study sprt (maximize score)"

    top = json.loads(ok(capsys, "trials", "sprt", "--sort", "value", "--limit", "3", "-f", "json", "--storage", lab.url))
    values = sorted((t.value for t in ts if t.value is not None), reverse=True)
    assert [r["value"] for r in top] == values[:3]
    limited = ok(capsys, "trials", "sprt", "--limit", "2", "--storage", lab.url).strip().splitlines()
    assert len(limited) == 4 and "raise --limit" in limited[-1]

    rows = list(csv.DictReader(io.StringIO(ok(capsys, "trials", "sprt", "--format", "csv", "--storage", lab.url))))
    assert len(rows) == len(ts)
    assert {"number", "index", "role", "seed", "state", "value", "operator", "generation", "outcome", "seconds", "description"} <= set(rows[0])
    assert float(rows[0]["value"]) == pytest.approx(next(t.value for t in ts if t.number == 0))


# -- best ------------------------------------------------------------------------------------------
def test_best_reports_the_mainline_and_how_to_check_it_out(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    promotions = lab.attrs("toy")["promotions"]
    assert promotions, "the toy's first constants mutations improve it"
    last = promotions[-1]
    out = ok(capsys, "best", "toy", "--storage", lab.url)
    assert f"mainline evo/toy/main: #{last['index']} " in out
    assert f"{last['value']:.6g}" in out
    assert f"git -C {lab.repo} checkout evo/toy/main" in out
    assert "in %d promotion(s)" % len(promotions) in out
    b = json.loads(ok(capsys, "best", "toy", "--format", "json", "--storage", lab.url))
    assert b["mainline"]["index"] == last["index"] and b["mainline"]["value"] == pytest.approx(last["value"])
    assert b["mainline"]["commit"] == git(lab.repo, "rev-parse", "evo/toy/main")
    assert b["mainline"]["branch"] == "evo/toy/main"
    base = screening(lab.trials("toy"))[0].value
    assert b["mainline"]["gain"] == pytest.approx(last["value"] - base)
    best_run = max((t for t in screening(lab.trials("toy")).values() if t.value is not None), key=lambda t: t.value)
    assert b["best_run"]["trial"] == best_run.number


def test_optuna_studies_is_one_screen_wide_and_names_the_confirmed_best(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    """`optuna studies` prints every user attr: only short labels live there (config, decisions,
    logbook and promotions are system attrs), and the `best` label is `evo best`'s mainline."""
    optuna_cli = Path(sys.executable).with_name("optuna")
    out = subprocess.run([str(optuna_cli), "studies", "--storage", lab.url, "-f", "json"], capture_output=True, text=True, check=True).stdout
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == set(STUDIES)
    for name, row in rows.items():
        assert set(row["user_attrs"]) <= {"metric", "direction", "strategy", "repo", "mainline", "base_commit", "best"}, row
        assert len(json.dumps(row["user_attrs"])) < 600, row  # was 11,255 characters on the default job
    table = subprocess.run([str(optuna_cli), "studies", "--storage", lab.url], capture_output=True, text=True, check=True).stdout
    assert max(map(len, table.splitlines())) < 900
    b = json.loads(ok(capsys, "best", "toy", "--format", "json", "--storage", lab.url))["mainline"]
    label = rows["toy"]["user_attrs"]["best"]
    assert label.startswith(f"score {b['value']:.6g}: mainline #{b['index']} (evo/toy/main {b['commit'][:10]})"), (label, b)
    # the decisions and logbook are still whole for evo's readers, one row per candidate / generation
    attrs = lab.attrs("toy")
    assert str(b["index"]) in attrs["decisions"] and attrs["decisions"][str(b["index"])]["decision"] == "accept"
    assert [r["gen"] for r in attrs["logbook"]] == list(range(len(attrs["logbook"]))) and len(attrs["logbook"]) >= 3


def test_best_with_sprt_shows_the_confirmation_and_warns_about_single_runs(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    attrs = lab.attrs("sprt")
    b = json.loads(ok(capsys, "best", "sprt", "-f", "json", "--storage", lab.url))
    out = ok(capsys, "best", "sprt", "--storage", lab.url)
    m = b["mainline"]
    # the target starts far from its optimum: the seeded search promotes after paired confirmation
    assert attrs["promotions"], "the seeded SPRT search promoted nothing"
    d = attrs["decisions"][str(m["index"])]
    assert m["index"] == attrs["promotions"][-1]["index"] and d["decision"] == "accept"
    assert m["pairs"] == d["pairs"] and m["llr"] == pytest.approx(d["llr"])
    assert f"{d['pairs']} paired seeds" in out and "llr" in out
    assert "baseline (no promotion yet)" not in out
    assert m["n"] >= d["pairs"] >= 1  # the mainline's value rests on its paired seeds
    r = b["best_run"]
    off = not r["on_mainline"] and r["index"] != 0
    assert ("NOT on the mainline" in out) == off, (r, out)
    assert ("may be seed noise" in out) == (off and len(r["seeds"]) == 1), (r, out)


# -- show ------------------------------------------------------------------------------------------
def test_show_a_candidate_diff_log_and_sprt(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    ts = lab.trials("sprt")
    cand = next(t for t in ts if t.user_attrs["role"] == "candidate" and t.user_attrs.get("commit"))
    out = ok(capsys, "show", "sprt", str(cand.number), "--storage", lab.url)
    a = cand.user_attrs
    assert out.startswith(f"trial {cand.number} of study sprt (#{a['index']} candidate, seed {a['seed']})")
    assert a["description"] in out and a["outcome"] in out
    assert f"git -C {lab.repo} diff {a['parents'][0][:10]} {a['commit'][:10]}" in out
    assert "diff --git a/target.py b/target.py" in out
    assert "--- log " in out and "score: " in out.split("--- log ")[1]
    # futility traces and promotion decisions, wherever the search made them
    traced = [t for t in ts if t.user_attrs.get("sprt")]
    assert traced, "the seeded SPRT search traces the futility test of every candidate"
    out = ok(capsys, "show", "sprt", str(traced[0].number), "--storage", lab.url)
    assert "futility" in out and "fraction:llr" in out
    tested = [k for k, d in lab.attrs("sprt").get("decisions", {}).items() if "pairs" in d]
    assert tested, lab.attrs("sprt").get("decisions")  # the promotion was tested on paired seeds
    t = screening(ts)[int(tested[0])]
    out = ok(capsys, "show", "sprt", str(t.number), "--storage", lab.url)
    assert "llr trace" in out and "pairs" in out
    assert "runs " in out  # its confirmation runs on other seeds
    # --index: an individual's screening run; --lines; --no-diff
    out = ok(capsys, "show", "sprt", "0", "--index", "--lines", "3", "--no-diff", "--storage", lab.url)
    assert "(#0 baseline, seed 3)" in out and "diff --git" not in out  # the study seed (3) is the screening seed
    assert len(out.split("--- log ")[1].strip().splitlines()) == 1 + 3


def test_show_a_crossover_diffs_against_both_parents(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("pop-s1", "pop-s2"):
        cross = [t for t in lab.trials(name) if len(t.user_attrs.get("parent_indices", [])) == 2 and t.user_attrs.get("commit")]
        if cross:
            break
    else:
        pytest.fail("the seeded searches made no crossover commit")
    t = cross[0]
    out = ok(capsys, "show", name, str(t.number), "--storage", lab.url)
    p1, p2 = t.user_attrs["parent_indices"]
    assert f"--- diff #{p1} -> #{t.user_attrs['index']}" in out
    assert f"--- diff #{p2} -> #{t.user_attrs['index']}" in out


# -- lineage ---------------------------------------------------------------------------------------
def test_lineage_whole_tree_and_ancestry(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    ts = lab.trials("toy")
    out = ok(capsys, "lineage", "toy", "--storage", lab.url)
    head, *lines = out.strip().splitlines()
    assert "the whole tree from the baseline" in head
    assert lines[0].startswith("#0 ")
    assert len(lines) == len({t.user_attrs["index"] for t in ts})
    assert all(x.lstrip("│ ").startswith(("├─", "└─")) for x in lines[1:])
    for p in lab.attrs("toy")["promotions"]:
        assert any(f"★ #{p['index']} " in x for x in lines)

    last = screening(ts)[max(screening(ts))]
    out = ok(capsys, "lineage", "toy", str(last.number), "--storage", lab.url)
    head, *lines = out.strip().splitlines()
    assert lines[0].lstrip("★ ").startswith(f"#{last.user_attrs['index']} ") and "(trial %d)" % last.number in lines[0]
    assert lines[-1].lstrip("│ ├└─").startswith("#0 ")
    # every ancestor appears, following parent_indices
    chain, i = [], last.user_attrs["index"]
    parents = {t.user_attrs["index"]: t.user_attrs["parent_indices"] for t in ts}
    while parents[i]:
        i = parents[i][0]
        chain.append(i)
    assert [int(x.lstrip("│ ├└─★").split()[0][1:]) for x in lines[1:]] == chain
    best = ok(capsys, "lineage", "toy", "--best", "--storage", lab.url)
    assert f"ancestry of #{lab.attrs('toy')['promotions'][-1]['index']} " in best


def test_lineage_of_a_crossover_has_two_branches(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("pop-s1", "pop-s2"):
        cross = [t for t in lab.trials(name) if len(t.user_attrs.get("parent_indices", [])) == 2]
        if cross:
            break
    else:
        pytest.fail("the seeded searches made no crossover")
    t = cross[0]
    p1, p2 = t.user_attrs["parent_indices"]
    out = ok(capsys, "lineage", name, str(t.number), "--storage", lab.url)
    lines = out.strip().splitlines()[1:]
    assert any(x.startswith("├─ ") and f"#{p1} " in x for x in lines)
    assert any(x.startswith("└─ ") and f"#{p2} " in x for x in lines)
    whole = ok(capsys, "lineage", name, "--storage", lab.url)
    assert f"x #{p2}" in whole  # the whole tree names the second parent


# -- mainline --------------------------------------------------------------------------------------
def test_mainline_matches_the_git_log(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    log = git(lab.repo, "log", "--first-parent", "--format=%H %(trailers:key=Evo-Index,valueonly)", "evo/toy/main").splitlines()
    promos = [line.split() for line in log if len(line.split()) == 2][::-1]
    data = json.loads(ok(capsys, "mainline", "toy", "-f", "json", "--storage", lab.url))
    steps = data["steps"]
    assert steps[0]["index"] == 0 and steps[0]["decision"] == "baseline"
    assert [(s["commit"], str(s["index"])) for s in steps[1:]] == [tuple(p) for p in promos]
    for prev, s in zip(steps, steps[1:]):
        assert s["gain"] == pytest.approx(s["value"] - prev["value"]) and s["gain"] > 0
        assert s["decision"].startswith("accept") and s["source"] == "git+archive"
    out = ok(capsys, "mainline", "toy", "--storage", lab.url)
    assert out.startswith(f"mainline evo/toy/main of study toy (maximize score): {len(promos)} promotion(s)")
    for c, _ in promos:
        assert c[:8] in out
    rows = list(csv.DictReader(io.StringIO(ok(capsys, "mainline", "toy", "-f", "csv", "--storage", lab.url))))
    assert len(rows) == len(steps)


# -- compare and plot ------------------------------------------------------------------------------
def test_compare_groups_by_strategy_with_a_test_and_a_png(lab: Lab, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    png = tmp_path / "cmp.png"
    out = ok(capsys, "compare", "toy", "sprt", "pop-*", "-o", str(png), "--storage", lab.url)
    assert "grouped by strategy" in out
    assert "Mann-Whitney U (two-sided): greedy vs population: U = " in out and "p = " in out
    assert f"wrote {png}" in out
    assert_png(png)
    data = json.loads(ok(capsys, "compare", "toy", "sprt", "pop-*", "-f", "json", "--value", "best", "--budget", "end", "--storage", lab.url))
    groups = {g["group"]: g for g in data["groups"]}
    assert set(groups) == {"greedy", "population"} and groups["greedy"]["n"] == 2
    for g in groups.values():
        assert g["ci_low"] <= g["mean"] <= g["ci_high"]
    (test,) = data["tests"]
    assert 0.0 <= test["p"] <= 1.0
    finals = {r["study"]: r["final"] for r in data["studies"]}
    for name in STUDIES:
        assert finals[name] == pytest.approx(max(t.value for t in screening(lab.trials(name)).values() if t.value is not None))
        curve = data["curves"][name]
        assert [c["best"] for c in curve] == sorted(c["best"] for c in curve)  # best-so-far never gets worse
        assert curve[-1]["seconds"] == pytest.approx(sum(t.user_attrs.get("run_seconds", 0) for t in lab.trials(name)))
    # a name regex makes the groups; mainline values; every study when none is named
    out = ok(capsys, "compare", "--group", r"^(pop|toy|sprt)", "--value", "mainline", "--storage", lab.url)
    assert "grouped regex" in out and "pop  " in out
    by_name = json.loads(ok(capsys, "compare", "--by", "name", "-f", "json", "--storage", lab.url))
    assert {g["group"] for g in by_name["groups"]} == set(STUDIES) and not by_name["tests"]


def test_plot_writes_a_png(lab: Lab, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for name in ("sprt", "pop-s1"):
        png = tmp_path / f"{name}.png"
        out = ok(capsys, "plot", name, "-o", str(png), "--storage", lab.url)
        assert out.strip() == f"wrote {png}"
        assert_png(png)


# -- errors ----------------------------------------------------------------------------------------
def test_errors_are_one_line_with_exit_code_2(lab: Lab, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here.db"
    for argv in (["studies"], ["trials", "toy"], ["best", "toy"], ["show", "toy", "0"], ["lineage", "toy"],
                 ["mainline", "toy"], ["compare"], ["plot", "toy"], ["dashboard"]):
        msg = error(capsys, *argv, "--storage", f"sqlite:///{missing}")
        assert "does not exist" in msg and str(missing) in msg
    assert not missing.exists()  # looking never creates a database

    empty = tmp_path / "empty.db"
    optuna.storages.RDBStorage(f"sqlite:///{empty}")  # a valid, empty Optuna database
    for argv in (["studies"], ["best", "toy"], ["compare"], ["dashboard"]):
        msg = error(capsys, *argv, "--storage", f"sqlite:///{empty}")
        assert "no studies in" in msg

    for argv in (["trials", "nope"], ["best", "nope"], ["show", "nope", "1"], ["lineage", "nope"], ["mainline", "nope"],
                 ["compare", "toy", "nope"], ["plot", "nope"]):
        msg = error(capsys, *argv, "--storage", lab.url)
        assert "study 'nope' not found" in msg and "pop-s1" in msg and "toy" in msg
    assert "did you mean 'toy'" in error(capsys, "best", "tyo", "--storage", lab.url)
    assert "no study matches 'zz*'" in error(capsys, "compare", "zz*", "--storage", lab.url)

    n = len(lab.trials("toy"))
    for argv in (["show", "toy", "999"], ["lineage", "toy", "999"]):
        msg = error(capsys, *argv, "--storage", lab.url)
        assert msg == f"evo: error: study 'toy' has no trial 999 (its trials are 0..{n - 1})"
    assert "no individual #999" in error(capsys, "show", "toy", "999", "--index", "--storage", lab.url)


def test_a_moved_repository_falls_back_to_the_archive(lab: Lab, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = tmp_path / "copy.db"
    shutil.copy(lab.db, db)
    optuna.load_study(study_name="toy", storage=f"sqlite:///{db}").set_user_attr("repo", str(tmp_path / "gone"))
    url = f"sqlite:///{db}"
    out = ok(capsys, "mainline", "toy", "--storage", url)
    assert "note: repository unavailable" in out
    assert len(out.strip().splitlines()) >= 2 + len(lab.attrs("toy")["promotions"])
    cand = next(t for t in lab.trials("toy") if t.user_attrs["role"] == "candidate" and t.user_attrs.get("artifacts"))
    out = ok(capsys, "show", "toy", str(cand.number), "--storage", url)
    assert "diff.patch)" in out and "diff --git" in out


# -- the Python API --------------------------------------------------------------------------------
def test_load_study_is_an_optuna_study_with_helpers(lab: Lab) -> None:
    s = evo.load_study("sprt", lab.url)
    assert isinstance(s, optuna.Study) and s.study is s
    ts = lab.trials("sprt")
    assert len(s.trials) == len(ts) and s.best_trial.number == optuna.load_study(study_name="sprt", storage=lab.url).best_trial.number
    df = s.dataframe()
    assert len(df) == len(ts) and {"number", "value", "state", "index", "role", "metrics.score", "decision"} <= set(df.columns)
    assert list(df["metrics.score"].dropna()) == pytest.approx([t.user_attrs["metrics"]["score"] for t in ts if "score" in t.user_attrs.get("metrics", {})])
    members = s.members()
    assert set(members) == {t.user_attrs["index"] for t in ts}
    assert len(members[0].seed_values()) >= 3  # the baseline's replicates
    tree = s.lineage()
    assert tree.member.index == 0 and sum(1 for _ in tree.walk()) == len(members)
    anc = s.lineage(index=max(members))
    assert [n.member.index for _, n in anc.walk()][-1] == 0
    main = s.mainline()
    assert main[0]["index"] == 0 and len(main) == 1 + len(lab.attrs("sprt").get("promotions", []))
    assert s.best()["mainline"]["index"] == main[-1]["index"]
    hist = s.history()
    assert len(hist) == sum("run_seconds" in t.user_attrs for t in ts)
    assert all(b["seconds"] >= a["seconds"] for a, b in zip(hist, hist[1:]))
    with pytest.raises(evo.errors.EvoError, match="study 'nope' not found"):
        evo.load_study("nope", lab.url)


# -- the dashboard ---------------------------------------------------------------------------------
def test_dashboard_serves_the_storage(lab: Lab) -> None:
    pytest.importorskip("optuna_dashboard")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "evo", "dashboard", "--port", str(port), "--storage", lab.url],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 30
        status = None
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                    status = resp.status
                    break
            except OSError:
                time.sleep(0.25)
        assert status == 200, proc.poll()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as resp:
            names = {s["study_name"] for s in json.loads(resp.read())["study_summaries"]}
        assert names == set(STUDIES)
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert f"on http://127.0.0.1:{port}/" in out


# -- an LLM study: prompts, responses, token usage -------------------------------------------------
GOOD = "RATIONALE: raise the learning rate\n\ntarget.py\n```python\n<<<<<<< SEARCH\nLR = 0.1\n=======\nLR = 0.3\n>>>>>>> REPLACE\n```\n"
PROSE = "I think the momentum is too low."


@pytest.fixture(scope="module")
def llm_lab(tmp_path_factory: pytest.TempPathFactory, lab: Lab) -> Lab:
    from llm_server import FakeLLMServer

    with FakeLLMServer(GOOD, PROSE) as server, inside(lab.root):
        extra = {"search": {"strategy": "greedy", "generations": 2}, "sprt": {"enabled": False},
                 "operators": {"mutation": "llm"},
                 "llm": {"base_url": server.base_url, "model": "fake", "api_key_env": "", "fix_attempts": 0, "retries": 0, "timeout": 5}}
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = cli.main(["search", "--config", str(config(lab.root, "llm", extra))])
        assert rc == 0, buf.getvalue()
    return lab


def test_show_an_llm_proposal_prompt_response_and_usage(llm_lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    ts = sorted(llm_lab.trials("llm"), key=lambda t: t.number)
    good = next(t for t in ts if t.user_attrs["index"] == 1)
    out = ok(capsys, "show", "llm", str(good.number), "--storage", llm_lab.url)
    prompt = Path(good.user_attrs["artifacts"]) / "prompt.txt"
    assert f"--- prompt ({prompt})" in out and prompt.read_text().splitlines()[0] in out
    assert "--- response (" in out and "RATIONALE: raise the learning rate" in out
    assert "-LR = 0.1" in out and "+LR = 0.3" in out
    failed = next(t for t in ts if t.user_attrs["index"] == 2)
    assert failed.user_attrs["outcome"] == "operator_failed"
    out = ok(capsys, "show", "llm", str(failed.number), "--storage", llm_lab.url)
    assert "operator_failed: " in out and "the proposal never became a commit" in out
    assert "11 prompt + 7 completion tokens" in out  # the fake server's usage
    assert PROSE in out.split("--- response (")[1]
    tree = ok(capsys, "lineage", "llm", "--storage", llm_lab.url)
    assert "OPERATOR_FAILED" in tree
    table = ok(capsys, "trials", "llm", "--state", "FAIL", "--storage", llm_lab.url)
    row = table.strip().splitlines()[1]
    assert row.split()[:2] == [str(failed.number), "2"] and "operator_failed" in row and "no SEARCH/REPLACE" in row


def test_a_terminal_without_utf8_gets_an_ascii_tree(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii")
    monkeypatch.setattr(sys, "stdout", out)
    assert cli.main(["lineage", "toy", "--storage", lab.url]) == 0
    assert cli.main(["trials", "toy", "--storage", lab.url]) == 0
    out.flush()
    text = raw.getvalue().decode("ascii")
    assert "`- " in text and "* #" in text and "trials of study toy" in text
