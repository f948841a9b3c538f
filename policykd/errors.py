"""User-facing errors: one line naming the problem and what to do about it."""


class PolicyKDError(Exception):
    """An error caused by the user's input; the CLI prints it as one line, without a traceback."""
