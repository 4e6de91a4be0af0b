"""Entry point: builds the Typer app and maps errors to exit codes.

Exit codes: 0 success, 2 bad input (a :class:`UserError` or a usage error), 1 internal error,
130 interrupted. Without ``--debug`` every failure is a single line on stderr, never a traceback.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from typing import Annotated

from uncert_cli.cli.interrupt import (  # noqa: E402 - after the guarded slow imports above
    EXIT_INTERRUPTED,
    Interrupted,
    exit_at_once_on_interrupt,
    exit_interrupted_during_startup,
    interrupt_received,
    interrupts_raise_interrupted,
    restore_interrupt_handler,
    say_interrupted,
)

_handler_before_imports = exit_at_once_on_interrupt()
try:  # the slow imports (typer here, torch in _register): Ctrl-C meanwhile is one line, not a traceback
    import typer
    from typer.exceptions import Abort, Exit, TyperException
except KeyboardInterrupt:
    exit_interrupted_during_startup()

from uncert_cli.cli.flags import (  # noqa: E402 - after the guarded slow imports above
    all_flags,
    is_mutating_forward,
    is_out_of_memory,
    mutating_forward_message,
    out_of_memory_message,
    render_for_command,
    running_command,
)
from uncert_cli.cli.validate import check_number_options, empty_path_argument, hide_flag_types  # noqa: E402 - after the guarded slow imports above
from uncert_cli.core import file_session  # noqa: E402 - after the guarded slow imports above
from uncert_cli.core.errors import ModelWarning, UserError  # noqa: E402 - after the guarded slow imports above
from uncert_cli.core.slow_path import SlowPathWarning  # noqa: E402 - after the guarded slow imports above

app = typer.Typer(
    name="uncert",
    help="How certain is your trained network, and where does its uncertainty live? "
    "Post-hoc Laplace approximations (diagonal GGN, KFAC) saved to HDF5.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _print_version(value: bool) -> None:
    if value:
        from uncert_cli import __version__

        print(f"uncert {__version__}")
        raise Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print uncert's version and exit.")
    ] = False,
) -> None:
    # Options of `uncert` itself (before the subcommand); every subcommand has its own.
    pass


def _register() -> None:
    # Imported here so that `uncert --help` stays the only place that lists every subcommand.
    from uncert_cli.cli import attack, compare, demo, fit, info, ood, prune, report, toy, track, tune

    for module in (info, fit, report, compare, ood, attack, prune, track, tune, demo, toy):
        module.register(app)


try:
    _register()
except KeyboardInterrupt:
    exit_interrupted_during_startup()
restore_interrupt_handler(_handler_before_imports)


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("UNCERT_DEBUG", "") not in ("", "0")


def _error(message: str) -> None:
    print(f"uncert: error: {' '.join(str(message).split())}", file=sys.stderr)


_plain_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Uncert's own slow-path notices as one line on stderr; every other warning as Python shows it."""
    if issubclass(category, SlowPathWarning):
        print(f"uncert: note: {' '.join(str(message).split())}", file=sys.stderr)
        return
    if issubclass(category, ModelWarning):
        print(f"uncert: warning: {' '.join(str(message).split())}", file=sys.stderr)
        return
    _plain_showwarning(message, category, filename, lineno, file, line)


def _usage_message(message: str, group, args: list[str]) -> str:
    """A usage error as one line, pointing at the running subcommand's help (where it is known).

    A ``key=value`` word that click took for an extra argument is almost always the second argument
    of an ``--arch-kwargs`` that was given several (the option takes one value per use), so say so.
    """
    subcommand = running_command(group, args)
    where = f"uncert {subcommand.name} --help" if subcommand is not None else "uncert --help"
    if "unexpected extra argument" in message and subcommand is not None and "--arch-kwargs" in all_flags(subcommand):
        keywords = [word for word in args if "=" in word and not word.startswith("-")]
        if keywords:
            message += ("; --arch-kwargs takes one key=value each: repeat it for each argument ("
                        + " ".join(f"--arch-kwargs {word}" for word in keywords) + ")")
    return f"{message} (see '{where}')"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (also the console script ``uncert``)."""
    program = argv is None  # not a caller in Python: Ctrl-C may end the process at once outside the command
    if program:
        exit_at_once_on_interrupt()  # until the command's own handler is in place: nothing written yet
    return _run(list(sys.argv[1:] if argv is None else argv), program=program)


def _run(args: list[str], *, program: bool) -> int:
    debug = _debug_requested(args)
    if not debug:
        # torch's own deprecation notices (e.g. from forward-mode AD internals) are not the user's business.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\..*")
    warnings.showwarning = _show_warning
    command = typer.main.get_command(app)
    check_number_options(command)  # inf, nan and out-of-range numbers stop at the option
    hide_flag_types(command)  # `--quiet`, not `--quiet <bool>`, in every --help
    subcommand = running_command(command, args)
    empty = empty_path_argument(subcommand, args) if subcommand is not None else None
    if empty is not None:  # before Path('') becomes the current folder
        _error(f"{empty} is empty; give a file or folder name ('.' for the current folder)")
        return 2
    nested = file_session.in_session()  # run by another command (uncert demo), which reports an interrupt once
    try:
        with interrupts_raise_interrupted(then_exit_at_once=program), file_session.command_session():
            try:
                result = command.main(args=args, prog_name="uncert", standalone_mode=False)
                if interrupt_received():  # Ctrl-C that a finalizer or a library's bare except: swallowed
                    raise Interrupted()
            except (Interrupted, KeyboardInterrupt, Abort):
                if not nested:
                    say_interrupted(file_session.interrupted_message())  # while the session still knows
                return EXIT_INTERRUPTED
    except Interrupted:  # Ctrl-C between the command's end and the handler's restoration
        if not nested:
            say_interrupted("interrupted as the command finished; what it wrote is complete")
        return EXIT_INTERRUPTED
    except Exit as exc:
        return exc.exit_code
    except TyperException as exc:
        # Usage errors (unknown option, bad value): one line, with where to look.
        if debug:
            traceback.print_exc()
        _error(_usage_message(exc.format_message(), command, args))
        return 2
    except UserError as exc:
        if debug:
            traceback.print_exc()
        _error(render_for_command(exc, running_command(command, args)))
        return 2
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, exit 1
        if interrupt_received():  # Ctrl-C that library code turned into another exception
            say_interrupted(file_session.interrupted_message())
            return EXIT_INTERRUPTED
        if debug:
            traceback.print_exc()
        if is_out_of_memory(exc):  # the sizes the user chose, not a bug: say which to lower
            _error(out_of_memory_message(exc, running_command(command, args)))
            return 2
        if is_mutating_forward(exc):  # the model's own forward, not a bug of uncert's
            _error(mutating_forward_message(exc))
            return 2
        _error(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # `python -m uncert_cli.cli.main ...` runs the CLI like `python -m uncert_cli`
    sys.exit(main())
