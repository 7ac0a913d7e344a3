"""The one exception family the command line turns into a one-line message (no traceback), and the one function
that makes any message fit for a person or a program to read (`one_line`)."""

from __future__ import annotations

import re

__all__ = ["AlexnetError", "one_line"]

# A Python object's default repr, as Pillow puts in its messages ("cannot identify image file <_io.BytesIO object
# at 0x7f...>"): an address that means nothing to a reader and changes on every run.
_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


class AlexnetError(Exception):
    """A user-facing error: bad input, missing file, wrong weights. ``str(e)`` is one line for the user."""


def one_line(message: BaseException | str, *, limit: int | None = 300, what: str = "the file") -> str:
    """``message`` (an exception's or a text) on one line, with every Python object repr replaced by ``what``, cut
    to ``limit`` characters (None: no cut). An exception without a message gives its type's name."""
    text = str(message)
    text = " ".join(_REPR.sub(what, text).split())
    if not text and isinstance(message, BaseException):
        text = type(message).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."
