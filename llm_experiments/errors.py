"""User-facing errors for llm_experiments."""


class UserError(Exception):
    """A bad input that deserves one clear line, not a traceback."""


class RankFailure(Exception):
    """A distributed run lost a rank (crash, kill, timeout): one line, exit status 1, no traceback."""
