"""User-facing errors: one line naming the problem and what to do about it."""


class PolicyKDError(Exception):
    """An error caused by the user's input; the CLI prints it as one line, without a traceback."""


class InvalidObservation(PolicyKDError, ValueError):
    """An observation a policy refuses: wrong shape (never broadcast), not a number array, or NaN/inf entries.

    Also a ValueError, so code written for the earlier ValueError on a wrong shape still catches it."""


class UnknownFamily(PolicyKDError, ValueError):
    """A distribution family name that is not one of distributions.FAMILIES (also a ValueError, as DistParams raised)."""
