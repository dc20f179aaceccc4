"""Errors a user can fix. The CLI turns them into ``error: ...`` and exit code 2."""


class DollError(Exception):
    """Bad usage or bad input: the message says what is wrong and how to fix it."""
