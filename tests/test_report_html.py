"""`evo report`: the lineage page, written from real searches (a git repository in a temp dir,
real `evo search` runs, a real SQLite storage) and opened in a real headless Chromium, whose
rendered DOM must hold what the page's JavaScript draws: the tree (with a crossover's two
incoming edges), the diffs git computes, the progress curves and the strategy comparison.

Chromium comes from the distribution (`apt-get install -y chromium`; .ci/run installs it). Set
EVO_NO_BROWSER=1 to skip the browser tests on a machine without it; EVO_DOCS_SCREENSHOT=PATH
also saves the screenshot there (docs/img/report.png was made that way).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import optuna
import pytest

from conftest import inspect_repo, facts
from evo import cli
from evo.inspect.html import batch_diffs

ROOT = Path(__file__).resolve().parents[1]

POP = {"search": {"strategy": "population", "population": 3, "generations": 3, "crossover_rate": 1.0, "tournament_size": 1,
                  "exploit": 0.0, "merge_side_lines": False}, "sprt": {"enabled": False},  # exploit 0: parents drawn by rank, so lines diverge and cross
       "operators": {"step": 0.5}}  # the seeded studies were chosen under step 0.5 (the default before issue 15's last bench)
STUDIES = {  # seeded: each makes what its tests need (promotions, crossovers); the tests read which from the archive
    "sprt": {"study": {"seed": 3}, "search": {"strategy": "greedy", "generations": 12}, "operators": {"step": 0.5},
             "sprt": {"enabled": True, "replicates": 3, "max_pairs": 6, "delta": 0.2}},
    "pop-s1": {"study": {"seed": 1}, **POP},
    "pop-s2": {"study": {"seed": 3}, **POP, "search": {**POP["search"], "exploit": 0.3}},
    "pop-g2": {"study": {"seed": 1}, **POP, "search": {**POP["search"], "population": 4, "generations": 2}},  # promoted by hand below
}
PNG = b"\x89PNG\r\n\x1a\n"


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


def config(root: Path, name: str, extra: dict[str, dict[str, Any]]) -> Path:
    sections: dict[str, dict[str, Any]] = {
        "study": {"name": name, "storage": f"sqlite:///{root / 'results' / 'evo.db'}", "results": str(root / "results")},
        "target": {"repo": str(root / "repo"), "mutable": ["target.py"], "run": "{python} target.py", "time_budget": 1,
                   "timeout": 20, "metric": "score", "direction": "maximize"},
    }
    for sec, kv in extra.items():
        sections.setdefault(sec, {}).update(kv)
    text = "".join(f"[{sec}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in kv.items()) for sec, kv in sections.items())
    path = root / f"{name}.toml"
    path.write_text(text)
    return path


class Lab:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.repo = root / "repo"
        self.url = f"sqlite:///{root / 'results' / 'evo.db'}"

    def study(self, name: str) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=self.url)

    def evo(self, *argv: str) -> str:
        buf, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
            rc = cli.main(list(argv))
        assert rc == 0, f"evo {' '.join(argv)} -> {rc}\n{err.getvalue()}\n{buf.getvalue()}"
        return buf.getvalue()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    root = tmp_path_factory.mktemp("report")
    lab = Lab(root)
    inspect_repo(lab.repo)
    for name, extra in STUDIES.items():
        lab.evo("search", "--config", str(config(root, name, extra)))
    return lab


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("EVO_NO_BROWSER"):
            pytest.skip("EVO_NO_BROWSER is set and chromium is not installed")
        pytest.fail("chromium is not installed: apt-get install -y chromium (or set EVO_NO_BROWSER=1 to skip the browser tests)")
    return exe


def browser(page: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    home = page.parent / "chromium-home"  # its profile and crash folders stay in the temp dir
    home.mkdir(exist_ok=True)
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           f"--user-data-dir={home}", "--window-size=1280,1800", *flags, page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(home)})


class Dom(HTMLParser):
    """The rendered DOM as a flat list of elements (tag, attrs, text inside), by id too."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[dict[str, Any]] = []
        self.open: list[dict[str, Any]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        e = {"tag": tag, "attrs": {k: v or "" for k, v in attrs}, "text": "", "parents": [p["tag"] for p in self.open],
             "parent_classes": [p["attrs"].get("class", "") for p in self.open],
             "parent_ids": [p["attrs"].get("id", "") for p in self.open]}
        self.elements.append(e)
        if tag not in ("br", "meta", "input", "img", "hr", "link"):
            self.open.append(e)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.open) - 1, -1, -1):
            if self.open[i]["tag"] == tag:
                del self.open[i:]
                break

    def handle_data(self, data: str) -> None:
        for e in self.open:
            e["text"] += data

    def by_id(self, ident: str) -> dict[str, Any] | None:
        return next((e for e in self.elements if e["attrs"].get("id") == ident), None)

    def with_class(self, cls: str, tag: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.elements if cls in e["attrs"].get("class", "").split() and (tag is None or e["tag"] == tag)]


def rendered(lab: Lab, *studies: str, name: str = "report.html", extra: tuple[str, ...] = ()) -> tuple[Path, Dom]:
    page = lab.root / name
    out = lab.evo("report", *studies, "-o", str(page), "--storage", lab.url, *extra)
    assert out.startswith(f"wrote {page}"), out
    proc = browser(page, "--dump-dom")
    assert proc.returncode == 0 and "<body" in proc.stdout, proc.stderr[-2000:]
    return page, Dom(proc.stdout)


def screening(study: optuna.Study) -> dict[int, optuna.trial.FrozenTrial]:
    out: dict[int, optuna.trial.FrozenTrial] = {}
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.user_attrs.get("role") in ("baseline", "candidate"):
            out.setdefault(t.user_attrs["index"], t)
    return out


def path_points(d: str) -> int:
    """How many points an SVG path's d attribute visits (M, L: one each; a step's H+V: one)."""
    return len(re.findall(r"[ML]", d)) + len(re.findall(r"V", d))


# -- the page in a browser -------------------------------------------------------------------------
def test_the_page_renders_tree_diff_and_curves_in_chromium(lab: Lab) -> None:
    page, dom = rendered(lab, "sprt", name="sprt.html")
    body = next(e for e in dom.elements if e["tag"] == "body")
    assert body["attrs"].get("data-rendered") == "yes", "the page's script did not run to the end"
    assert dom.by_id("nojs") is None  # the script replaced the no-JavaScript placeholder

    st = lab.study("sprt")
    shots = screening(st)
    # the tree: one node per individual, each child with an edge from its parent
    nodes = [e for e in dom.with_class("node", "g") if e["attrs"]["id"].startswith("s0-node-")]
    assert sorted(int(e["attrs"]["data-index"]) for e in nodes) == sorted(shots)
    for idx, t in shots.items():
        for p in t.user_attrs.get("parent_indices", []):
            assert dom.by_id(f"s0-edge-{p}-{idx}") is not None, (p, idx)
        node = dom.by_id(f"s0-node-{idx}")
        assert f"#{idx} " in node["text"]
    promoted = {p["index"] for p in facts(st)["promotions"]}
    assert promoted  # the seeded SPRT search confirms a candidate (tests/test_inspect.py checks which)
    assert {int(e["attrs"]["data-index"]) for e in nodes if "promoted" in e["attrs"]["class"].split()} == promoted
    top = facts(st)["promotions"][-1]["index"]

    # the detail panel opens on the mainline's best: its diff as git computes it, line by line
    detail = dom.by_id("s0-detail")
    assert detail is not None and detail["text"].startswith(f"#{top} ★ promoted")
    t5 = shots[top]
    want = git(lab.repo, "diff", t5.user_attrs["parents"][0], t5.user_attrs["commit"])
    added = [ln for ln in want.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    removed = [ln for ln in want.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    assert added and removed
    in_detail = [e for e in dom.elements if e["tag"] == "span" and "s0-detail" in e["parent_ids"]
                 and any("diff" in c.split() for c in e["parent_classes"])]
    assert [e["text"] for e in in_detail if e["attrs"].get("class") == "d-add"] == added
    assert [e["text"] for e in in_detail if e["attrs"].get("class") == "d-del"] == removed
    # its progress curves: one path per run (screening and confirmation seeds), each with every progress point
    runs = [t for t in st.get_trials(deepcopy=False) if t.user_attrs.get("index") == top and t.intermediate_values]
    d = facts(st)["decisions"][str(top)]
    assert len(runs) >= d["pairs"] >= 1
    for t in runs:
        path = next((e for e in dom.elements if e["tag"] == "path" and f"s0-run-{t.number}" in e["parent_ids"]), None)
        assert path is not None and "curve-line" in path["attrs"]["class"].split(), t.number
        assert path_points(path["attrs"]["d"]) == len(t.intermediate_values), (t.number, path["attrs"]["d"])
    # the parent's curve is drawn dashed beside them
    assert dom.with_class("parent-curve", "path")
    # the mainline: one row per step, the confirmed gain's interval, the whole diff from the previous step
    steps = dom.with_class("step", "tr")
    assert len(steps) == 1 + len(promoted)
    row = dom.by_id(f"s0-step-{len(promoted)}")["text"]
    assert f"{d['pairs']} pairs" in row
    if d["pairs"] >= 2:  # the 95% interval of the gain per seed (test_confirmed_gain_interval checks its maths)
        assert re.search(rf"\[[-0-9.e+]+, [-0-9.e+]+\] over {d['pairs']} pairs", row), row
    else:
        assert "(1 pair)" in row, row
    stepdiff = dom.by_id(f"s0-stepdiff-{len(promoted)}")
    assert stepdiff is not None and all(a in stepdiff["text"] for a in added)
    # the progress overview: one curve per screening run, with every point
    for idx, t in shots.items():
        assert dom.by_id(f"s0-curve-{idx}") is not None, idx
    hist = dom.with_class("mainline-line", "path")
    assert hist and path_points(hist[0]["attrs"]["d"]) >= 2
    # self-contained: nothing is fetched
    text = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "<link" not in text and "@import" not in text


def test_a_crossover_has_two_incoming_edges_and_several_studies_get_a_comparison(lab: Lab) -> None:
    _, dom = rendered(lab, "pop-s*", "sprt")
    names = ["pop-s1", "pop-s2", "sprt"]
    crossed = 0
    for k, name in enumerate(names):
        for idx, t in screening(lab.study(name)).items():
            parents = t.user_attrs.get("parent_indices", [])
            if len(parents) == 2:
                first, merge = dom.by_id(f"s{k}-edge-{parents[0]}-{idx}"), dom.by_id(f"s{k}-edge-{parents[1]}-{idx}")
                assert first is not None and merge is not None, (name, idx)
                assert first["attrs"]["class"] == "edge" and merge["attrs"]["class"] == "edge merge"
                assert "crossover" in dom.by_id(f"s{k}-node-{idx}")["attrs"]["class"]
                crossed += 1
    assert crossed, "the seeded population searches make crossovers"
    # the comparison: a row per study, a curve per study, groups by strategy (population has two studies: an interval)
    sec = dom.by_id("compare")
    assert sec is not None and "grouped by strategy" in sec["text"]
    for name in names:
        g = dom.by_id(f"compare-curve-{name}")
        assert g is not None, name
    groups = dom.with_class("group", "tr")
    text = {r["attrs"]["id"][len("compare-group-"):]: r["text"] for r in groups}
    assert set(text) == {"population", "greedy"}
    assert "none: one study" in text["greedy"] and re.search(r"\[[-0-9.e]+, [-0-9.e]+\]", text["population"])
    assert dom.with_class("ci-bar", "path") and len(dom.with_class("final-dot", "circle")) == 3


def test_a_screenshot_of_the_page(lab: Lab) -> None:
    page = lab.root / "shot.html"
    lab.evo("report", "pop-s1", "-o", str(page), "--storage", lab.url)  # a crossover: merges in the tree
    png = lab.root / "report.png"
    proc = browser(page, f"--screenshot={png}", "--hide-scrollbars")
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == PNG and len(data) > 30_000, len(data)  # a blank page compresses to a few KiB
    import matplotlib.image

    img = matplotlib.image.imread(str(png))
    assert img.shape[1] == 1280 and img.shape[0] >= 1000
    assert len({tuple(px) for px in img[::17, ::13].reshape(-1, img.shape[2]).tolist()}) > 50  # drawn, not empty
    if os.environ.get("EVO_DOCS_SCREENSHOT"):
        shutil.copy(png, os.environ["EVO_DOCS_SCREENSHOT"])


# -- the data behind it, without a browser ------------------------------------------------------------
def test_the_embedded_data_matches_the_archive_and_git(lab: Lab) -> None:
    page = lab.root / "data.html"
    lab.evo("report", "pop-s1", "-o", str(page), "--storage", lab.url, "--max-diff-lines", "3")
    text = page.read_text()
    blob = re.search(r'<script type="application/json" id="evo-data">(.*?)</script>', text, re.S).group(1)
    assert "<" not in blob  # no text inside the JSON can close the script element
    data = json.loads(blob)
    (s,) = data["studies"]
    assert data["compare"] is None and s["name"] == "pop-s1" and s["metric"] == "score"
    st = lab.study("pop-s1")
    shots = screening(st)
    assert [m["index"] for m in s["members"]] == sorted(shots)
    for m in s["members"]:
        t = shots[m["index"]]
        assert m["value"] == pytest.approx(t.value) and m["parents"] == list(t.user_attrs.get("parent_indices", []))
        first = next(r for r in m["runs"] if r["trial"] == t.number)
        assert first["curve"] == [[round(k / 1000, 4), v] for k, v in sorted(t.intermediate_values.items())]
        for d in m["diffs"]:  # cut at 3 lines, and says by how much
            full = git(lab.repo, "diff", t.user_attrs["parents"][m["parents"].index(d["against"])], t.user_attrs["commit"])
            assert d["text"] == "".join(full.splitlines(keepends=True)[:3]) and d["cut"] == len(full.splitlines()) - 3
    assert [r["index"] for r in s["mainline"]] == [0] + [p["index"] for p in facts(st)["promotions"]]


def test_confirmed_gain_interval() -> None:
    from scipy import stats

    from evo.inspect.html import _ci

    # the judge's mean_diff is in lower-is-better units: a gain is its negative
    gain, lo, hi = _ci({"mean_diff": -0.5, "sd": 0.2, "pairs": 4})
    half = stats.t.ppf(0.975, 3) * 0.2 / 2
    assert gain == 0.5 and lo == pytest.approx(0.5 - half) and hi == pytest.approx(0.5 + half)
    assert _ci({"mean_diff": 0.1, "sd": None, "pairs": 1}) == (-0.1, None, None)
    assert _ci({"decision": "untested"}) == (None, None, None)


def test_batch_diffs_equal_git_diff_and_fall_back_on_a_bad_commit(lab: Lab) -> None:
    from evo.gitrepo import GitRepo

    repo = GitRepo(lab.repo)
    shots = screening(lab.study("pop-s2"))
    pairs = [(p, t.user_attrs["commit"]) for t in shots.values() if t.user_attrs.get("commit") for p in t.user_attrs.get("parents", [])]
    base = git(lab.repo, "rev-parse", "master").strip()
    pairs.append((base, base))  # no change: an empty diff, and the split stays in step
    got = batch_diffs(repo, pairs)
    assert len(got) == len(set(pairs)) >= 3
    for (a, b), text in got.items():
        assert text == git(lab.repo, "diff", a, b), (a, b)
    bad = batch_diffs(repo, [pairs[0], ("0" * 40, base)])
    assert bad[pairs[0]] == got[pairs[0]] and bad[("0" * 40, base)].startswith("(git diff failed")


def test_report_errors_are_one_line(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, want in ((["report", "nope"], "study 'nope' not found"),
                       (["report", "sprt", "-o", str(lab.root / "missing" / "x.html")], "folder"),
                       (["report", "zz-*"], "no study matches 'zz-*'"),
                       (["report", "sprt", "--max-diff-lines", "-1"], "--max-diff-lines -1")):
        capsys.readouterr()
        rc = cli.main([*argv, "--storage", lab.url])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and want in err, (argv, err)


# -- the command line's own help, version and defaults ------------------------------------------------
def test_version_is_the_installed_distributions() -> None:
    from importlib.metadata import version

    proc = subprocess.run([sys.executable, "-m", "evo", "--version"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0 and proc.stdout.strip() == f"evo {version('evo-search')}", proc


def test_every_flag_of_search_and_the_inspection_commands_states_its_default() -> None:
    import argparse

    p = cli.parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    commands = ["search", "studies", "trials", "best", "show", "lineage", "mainline", "compare", "report", "clean", "plot", "dashboard"]
    assert set(commands) <= set(sub.choices)
    missing = []
    for name in commands:
        for a in sub.choices[name]._actions:
            if not a.option_strings or isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
                continue
            if not a.help or "default" not in a.help:
                missing.append(f"evo {name} {a.option_strings[0]}")
    assert not missing, missing
    search = sub.choices["search"].format_help()
    for flag, default in (("--strategy", "population"), ("--population", "8"), ("--generations", "40"), ("--workers", "1")):
        assert re.search(rf"{flag}.*?else {default}\)", " ".join(search.split())), flag


def test_lineage_and_members_print_readably(lab: Lab) -> None:
    import evo as evo_pkg
    from evo.inspect.api import TreeNode

    s = evo_pkg.load_study("pop-s1", lab.url)
    tree = s.lineage()
    text = repr(tree)
    lines = text.splitlines()
    n = len(s.members())
    assert lines[0] == f"<TreeNode #0: {n} node(s)>" and len(lines) == 1 + n
    assert lines[1].startswith("#0  g0  baseline  ")
    shots = screening(lab.study("pop-s1"))
    cross = next(i for i, t in shots.items() if len(t.user_attrs.get("parent_indices", [])) == 2)
    other = shots[cross].user_attrs["parent_indices"][1]
    assert any(re.search(rf"#{cross}  g\d+  crossover\S* x #{other}  ", ln) for ln in lines), text
    for i in (p["index"] for p in facts(lab.study("pop-s1"))["promotions"]):
        assert any(f"* #{i}  " in ln for ln in lines)  # promoted, marked
    assert str(tree) == "\n".join(lines[1:])
    old = TreeNode.REPR_LINES
    TreeNode.REPR_LINES = 2
    try:
        short = repr(tree).splitlines()
    finally:
        TreeNode.REPR_LINES = old
    assert len(short) == 4 and short[-1].startswith(f"... {n - 2} more node(s)")
    m = s.member(cross)
    assert re.match(rf"<Member (\* )?#{cross}  g\d+  ", repr(m)) and repr(m).endswith("(1 run)>") and "FrozenTrial" not in repr(m)


def test_compare_defaults_to_the_confirmed_mainline(lab: Lab) -> None:
    default = json.loads(lab.evo("compare", "sprt", "pop-s*", "-f", "json", "--budget", "end", "--storage", lab.url))
    best = json.loads(lab.evo("compare", "sprt", "pop-s*", "-f", "json", "--value", "best", "--budget", "end", "--storage", lab.url))
    assert default["value"] == "mainline" and best["value"] == "best"
    for name in ("sprt", "pop-s1", "pop-s2"):
        st = lab.study(name)
        promotions = facts(st).get("promotions", [])
        main = promotions[-1]["value"] if promotions else screening(st)[0].value
        assert next(r for r in default["studies"] if r["study"] == name)["final"] == pytest.approx(main)
        top = max(t.value for t in screening(st).values() if t.value is not None)
        assert next(r for r in best["studies"] if r["study"] == name)["final"] == pytest.approx(top)
    # somewhere a best single run was never confirmed, so the two views differ
    finals = {r["study"]: r["final"] for r in default["studies"]}
    assert any(finals[r["study"]] != r["final"] for r in best["studies"]), (finals, best["studies"])
    text = lab.evo("compare", "sprt", "pop-s*", "--storage", lab.url)
    assert "mainline (promoted) value at " in text.splitlines()[0] and "runs each" in text.splitlines()[0]


def test_dashboard_hint_names_the_extra(lab: Lab, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails as if not installed
    capsys.readouterr()
    rc = cli.main(["dashboard", "--storage", lab.url])
    err = capsys.readouterr().err
    assert rc == 2 and "pip install 'evo-search[dashboard]'" in err, err


def test_the_dashboard_is_read_only_by_default(lab: Lab, tmp_path: Path) -> None:
    pytest.importorskip("optuna_dashboard")
    import socket
    import time
    import urllib.error
    import urllib.request

    from evo.inspect.api import ReadOnlyError, ReadOnlyStorage

    ro = ReadOnlyStorage(optuna.storages.RDBStorage(lab.url))
    assert sorted(s.study_name for s in ro.get_all_studies()) == sorted(STUDIES)
    sid = ro.get_study_id_from_name("sprt")
    assert len(ro.get_all_trials(sid)) == len(lab.study("sprt").trials)
    with pytest.raises(ReadOnlyError, match="evo clean"):
        ro.delete_study(sid)
    with pytest.raises(ReadOnlyError):
        ro.set_study_user_attr(sid, "x", 1)
    # a real server: the delete button's request fails and the study stays
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "evo", "dashboard", "--port", str(port), "--storage", lab.url],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline, studies = time.time() + 30, None
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as resp:
                    studies = json.loads(resp.read())["study_summaries"]
                    break
            except OSError:
                time.sleep(0.25)
        assert studies, proc.poll()
        target = next(s for s in studies if s["study_name"] == "pop-s2")
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/studies/{target['study_id']}", method="DELETE",
                                     data=b"{}", headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code >= 400
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert "read-only" in out.splitlines()[0]
    assert "pop-s2" in optuna.get_all_study_names(lab.url)


# -- every change from the previous mainline, inherited ones named ------------------------------------
def test_constant_changes_from_a_diff() -> None:
    from evo.inspect.api import constant_changes, summarize_changes

    diff = """diff --git a/t.py b/t.py
--- a/t.py
+++ b/t.py
@@ -1,6 +1,6 @@
-LR = 0.1  # the rate
+LR = 0.2  # the rate
 WIDTH = 8
-OLD: int = 3
+NEW = 'x'
-    INNER = 1
+    INNER = 2
+print('hi')
"""
    consts, other = constant_changes(diff)
    assert consts == [("LR", "0.1", "0.2"), ("OLD", "3", None), ("NEW", None, "'x'")] and other == 3
    assert summarize_changes(consts, other) == "LR 0.1 -> 0.2; OLD 3 -> (removed); NEW (new) -> 'x' (+3 other changed lines)"
    assert summarize_changes([], 0) == "no change"


def test_mainline_names_every_change_from_the_previous_step(lab: Lab, tmp_path: Path) -> None:
    import evo as evo_pkg

    st = lab.study("pop-g2")
    shots = screening(st)
    parents = {i: list(t.user_attrs.get("parent_indices", [])) for i, t in shots.items()}

    def ancestors(i: int) -> set[int]:
        seen, stack = set(), [i]
        while stack:
            j = stack.pop()
            if j not in seen:
                seen.add(j)
                stack.extend(parents.get(j, []))
        return seen

    # promote by hand a candidate whose first parent was never promoted: its parent's change
    # arrives with it, untested, and must be named
    promoted = {p["index"] for p in facts(st).get("promotions", [])}
    main_idx = facts(st)["promotions"][-1]["index"] if promoted else 0
    pick = next((i for i, t in sorted(shots.items(), reverse=True)
                 if i > 0 and t.user_attrs.get("commit") and t.value is not None and parents[i] and parents[i][0] not in promoted | {0}
                 and i not in ancestors(main_idx) and (ancestors(i) - ancestors(main_idx)) - {i}), None)
    assert pick is not None, "the seeded population search makes a child of an unpromoted parent"
    lab.evo("promote", "pop-g2", "--trial", str(shots[pick].number), "--storage", lab.url)

    data = json.loads(lab.evo("mainline", "pop-g2", "-f", "json", "--storage", lab.url))
    steps = data["steps"]
    assert steps[-1]["index"] == pick
    from evo.inspect.api import constant_changes, summarize_changes

    for prev, step in zip(steps, steps[1:]):
        assert step["brings"] == sorted(ancestors(step["index"]) - ancestors(prev["index"]))
        diff = git(lab.repo, "diff", prev["commit"], step["commit"])
        assert step["changes"] == summarize_changes(*constant_changes(diff))
        assert step["drops"] == sorted(ancestors(prev["index"]) - ancestors(step["index"]))
        # every constant that changed is the change of an individual the step brings or undoes
        for name, _, _ in constant_changes(diff)[0]:
            assert any(name in {c[0] for c in constant_changes(git(lab.repo, "diff", shots[b].user_attrs["parents"][0],
                                                                   shots[b].user_attrs["commit"]))[0]}
                       for b in step["brings"] + step["drops"] if shots[b].user_attrs.get("parents")), (step, name)
    last = steps[-1]
    inherited = [b for b in last["brings"] if b != pick]
    assert inherited
    text = lab.evo("mainline", "pop-g2", "--storage", lab.url)
    line = next(ln for ln in text.splitlines() if ln.startswith(f"step {last['step']} #{pick}: "))
    assert line.startswith(f"step {last['step']} #{pick}: {last['changes']}; from ")
    for b in inherited:
        assert re.search(rf"#{b} \w+ '[^']*' \(\w+, inherited\)", line), (b, line)
    for b in last["drops"]:
        assert f"#{b} '" in line.split("; undoes ")[1], line
    assert "change from the previous step" in text.splitlines()[1]
    shown = lab.evo("show", "pop-g2", str(shots[pick].number), "--storage", lab.url, "--no-diff")
    promo = next(ln for ln in shown.splitlines() if ln.strip().startswith("promotion"))
    assert f"mainline step {last['step']}" in promo and last["changes"] in promo
    assert all(f"#{b} '" in promo for b in inherited), promo
    # the page: the step's section names the whole change and the inherited individuals
    page = tmp_path / "g2.html"
    lab.evo("report", "pop-g2", "-o", str(page), "--storage", lab.url)
    blob = json.loads(re.search(r'id="evo-data">(.*?)</script>', page.read_text(), re.S).group(1))
    step = blob["studies"][0]["mainline"][-1]
    assert step["changes"] == last["changes"] and [v["index"] for v in step["via"]] == last["brings"]
    assert [v["promoted"] for v in step["via"]] == [b == pick for b in last["brings"]]
    s = evo_pkg.load_study("pop-g2", lab.url)
    assert [c["index"] for c in s.mainline_changes()] == [st_["index"] for st_ in steps[1:]]
