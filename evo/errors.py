"""Errors a user sees as one clear line (the CLI prints them and exits with the code)."""


class EvoError(Exception):
    """A problem with the user's input or environment: printed as one line, exit code 2."""

    exit_code = 2


class ConfigError(EvoError):
    """A bad config file, key or value."""


class GitError(EvoError):
    """A git command failed or the repository is not usable."""


class StudyLocked(EvoError):
    """Another live evo process is running this study."""

    exit_code = 3
