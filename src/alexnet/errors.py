"""The one exception family the command line turns into a one-line message (no traceback)."""


class AlexnetError(Exception):
    """A user-facing error: bad input, missing file, wrong weights. ``str(e)`` is one line for the user."""
