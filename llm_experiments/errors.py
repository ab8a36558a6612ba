"""User-facing errors for llm_experiments."""


class UserError(Exception):
    """A bad input that deserves one clear line, not a traceback."""
