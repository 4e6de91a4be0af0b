"""The one exception type that means "the user's input is wrong".

Library code raises :class:`UserError` with a message that says what is wrong and what to do.
The CLI turns it into a one-line message on stderr and exit code 2; any other exception is an
internal error (exit code 1).

A message about one argument of a library call names it through the placeholder ``{param}`` and
passes ``param="mc_samples"``: a Python caller then reads ``mc_samples must be at least 1``, and
the CLI, which knows the running command's options, shows ``--mc-samples must be at least 1``.
Other arguments a suggested fix mentions are listed in ``mentions`` and written ``{batch_size}``.
Library messages therefore never spell a command-line flag that the caller may not have.
"""

from __future__ import annotations

from collections.abc import Mapping

PLACEHOLDER = "{param}"


class ParameterText:
    """A message for the user that names library parameters: ``{param}`` for the one it is about and
    ``{name}`` for each further one it mentions. ``str()`` shows the parameters' names (what a Python
    caller passes); the CLI shows the running command's flags (``cli/flags.py``). Notes a library call
    returns for the user are of this type, and so is every :class:`UserError`.

    Args:
        message: the text; ``{param}`` stands for the parameter's name.
        param: the library parameter the message is about (a keyword argument's name, such as
            ``"batch_size"``), or None when no single parameter is to blame.
        mentions: further parameters the message names as ``{name}`` (in suggested fixes).
    """

    def __init__(self, message: str, *, param: str | None = None, mentions: tuple[str, ...] = ()) -> None:
        self.template = " ".join(message.split())
        self.param = param
        self.mentions = mentions

    @property
    def params(self) -> tuple[str, ...]:
        """Every parameter the message names: ``param`` first, then ``mentions``."""
        return ((self.param,) if self.param else ()) + tuple(self.mentions)

    def render(self, names: Mapping[str, str]) -> str:
        """The message with each parameter shown as ``names[parameter]`` (e.g. ``--mc-samples``),
        or as its own name where ``names`` has none.
        """
        text = self.template
        if self.param:
            text = text.replace(PLACEHOLDER, names.get(self.param, self.param))
        for name in self.mentions:
            text = text.replace("{" + name + "}", names.get(name, name))
        return text

    def __str__(self) -> str:
        return self.render({})


class UserError(ParameterText, Exception):
    """Bad input (file, option, data, model). The message is shown to the user as one line.

    Args:
        message: what is wrong and what to do; ``{param}`` stands for the parameter's name.
        param: the library parameter the message is about, or None when no single parameter is to blame.
        mentions: further parameters the message names as ``{name}`` (in suggested fixes).
    """

    def __init__(self, message: str, *, param: str | None = None, mentions: tuple[str, ...] = ()) -> None:
        ParameterText.__init__(self, message, param=param, mentions=mentions)
        Exception.__init__(self, self.render({}))


class ModelWarning(UserWarning):
    """Something about the user's model that makes uncert's numbers mean less than they seem (a network
    whose outputs are random in eval mode). The work goes on; the CLI prints it as one ``warning:`` line.
    """
