"""Config -> the concrete parts of a search: operators, executor, storage URL.

The only place concrete classes are chosen. The CLI, the benchmarks and the tests all build a
search through here, so nothing below the CLI imports the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from evo.config import Config, default_results, default_storage_url
from evo.errors import EvoError
from evo.executors.base import python_command

if TYPE_CHECKING:
    from evo.executors.base import Executor, RunTemplate
    from evo.gitrepo import GitRepo
    from operators.base import ConflictResolver, Mutation


def default_storage(arg: str | None = None) -> str:
    """The storage an inspection command uses: the flag, else the search's default (evo.config)."""
    return absolute_storage(arg) or default_storage_url(default_results())


def absolute_storage(url: str | None) -> str | None:
    """A relative sqlite path given on the command line is relative to the current directory."""
    if url and url.startswith("sqlite:///") and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
        return f"sqlite:///{Path(url[len('sqlite:///'):]).resolve()}"
    return url


def build_operators(cfg: Config) -> tuple[Mutation, ConflictResolver]:
    """The mutation and the conflict resolver; LLM ones share one client (and one token budget)."""
    client = None
    if "llm" in (cfg.operators.mutation, cfg.operators.conflict):
        from operators.llm import LLMClient, LLMSettings

        l = cfg.llm  # noqa: E741
        try:
            client = LLMClient(LLMSettings(
                base_url=l.base_url, model=l.model, api_key_env=l.api_key_env, temperature=l.temperature,
                max_tokens=l.max_tokens, timeout=l.timeout, deadline=l.deadline, retries=l.retries,
                fix_attempts=l.fix_attempts, token_budget=l.token_budget or None,
            ))
        except ValueError as e:
            raise EvoError(f"{cfg.source}: [llm] {e}") from None
    kind = cfg.operators.mutation
    mutation: Mutation
    if kind == "llm":
        from operators.llm import LLMMutation

        mutation = LLMMutation(client)
    elif kind == "agent":
        from operators.agent import AgentMutation, AgentSettings

        a = cfg.agent
        mutation = AgentMutation(AgentSettings(command=python_command(a.command), timeout=a.timeout, env_allow=a.env_allow))
    else:
        from operators.constants import ConstantsMutation

        mutation = ConstantsMutation(max_changes=cfg.operators.max_changes, step=cfg.operators.step,
                                     step_dist=cfg.operators.step_dist, exclude=cfg.operators.exclude)
    resolver: ConflictResolver
    if cfg.operators.conflict == "llm":
        from operators.llm import LLMResolver

        resolver = LLMResolver(client)
    else:
        from operators.crossover import FitterResolver, RandomResolver

        resolver = RandomResolver() if cfg.operators.conflict == "random" else FitterResolver()
    return mutation, resolver


ExecutorFactory = Callable[["GitRepo", "RunTemplate"], "Executor"]


def build_executor(cfg: Config) -> ExecutorFactory:
    """A factory: the executor needs the study's repository and run template, known once it is open."""

    def make(repo: GitRepo, template: RunTemplate) -> Executor:
        if cfg.executor.kind == "ray":
            from evo.executors.ray import RayExecutor

            return RayExecutor(repo, template, cfg.search.workers, cfg.executor)
        from evo.executors.local import LocalExecutor

        return LocalExecutor(repo, template, cfg.search.workers)

    return make
