"""The one exception type that means "the user's input is wrong".

Library code raises :class:`UserError` with a message that says what is wrong and what to do.
The CLI turns it into a one-line message on stderr and exit code 2; any other exception is an
internal error (exit code 1).
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input (file, option, data, model). The message is shown to the user as one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))
