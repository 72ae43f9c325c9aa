"""The README's commands are the ones CI and users run; every config key is documented."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

from evo import config

ROOT = Path(__file__).resolve().parents[1]


def commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.*?)\n```", text, re.DOTALL)[:2]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    main_job, tests = commands()
    assert "evo search" in main_job and "pytest" in tests
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    # services the tests need come first (a browser, a PostgreSQL server); the last line is the README's
    assert ci[-1] == tests and not any("pytest" in line for line in ci[:-1]), ci


def test_every_config_key_is_documented_and_the_shipped_configs_load() -> None:
    readme = (ROOT / "README.md").read_text()
    for section in dataclasses.fields(config.Config):
        if section.name == "source":
            continue
        cls = type(getattr(config.Config(), section.name))
        for f in dataclasses.fields(cls):
            assert re.search(rf"`{f.name}`", readme), f"[{section.name}] {f.name} is not in README.md"
    for path in sorted((ROOT / "configs").glob("*.toml")):
        tomllib.loads(path.read_text())
        cfg = config.load(path)
        assert cfg.target.run and cfg.target.mutable
