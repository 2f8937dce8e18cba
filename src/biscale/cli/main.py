"""The ``biscale`` command: assembles the command groups and maps user errors to exit code 2."""

from __future__ import annotations

import contextlib
import sys

import typer

from biscale.cli.common import readable
from biscale.errors import InputError, NoGpuError, PermissionRequiredError

try:  # typer >= 0.2x vendors click; older versions depend on it
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import NoArgsIsHelpError, UsageError  # type: ignore[no-redef,assignment,unused-ignore]

app = typer.Typer(
    name="biscale",
    help="Cut the GPU energy of prefill/decode-disaggregated LLM serving without breaking latency SLOs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(given: bool) -> None:
    if given:
        from biscale import __version__

        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the biscale version and exit."
    ),
) -> None:
    """biscale: plan placement and control GPU clocks for disaggregated LLM serving."""


@app.command()
def version() -> None:
    """Print the biscale version."""
    from biscale import __version__

    typer.echo(__version__)


def _register_all() -> None:
    # Each command group lives in its own module and adds itself to ``app``.
    from biscale.cli import config, emulate, evaluate, gpu, hardware, loadgen, plan, predict, report, simulate, trace

    for module in (evaluate, report, hardware, trace, simulate, config, plan, predict, gpu, loadgen, emulate):
        module.register(app)


_register_all()

#: Errors that mean "the user must change something": one line on stderr, exit code 2, no traceback.
USER_ERRORS = (InputError, PermissionRequiredError, NoGpuError)


def _one_line(text: str) -> str:
    """One line, with a file name that is not valid UTF-8 (surrogate escapes) shown as its bytes (``\\xff``)."""
    return readable(" ".join(str(text).split()))


#: Options that take a path: an empty value (often an unset shell variable, ``--out "$DIR"``) would mean the
#: current directory; it is refused instead.
PATH_OPTIONS = frozenset(
    {"--out", "-o", "--output", "--cache-dir", "--config", "--predictors", "--artifact", "--placement", "--trace",
     "--lengths"}
)  # fmt: skip


def _empty_path_option(argv: list[str]) -> str | None:
    """The first path option given an empty value, or ``None``."""
    for i, arg in enumerate(argv):
        if arg == "--":
            return None
        name, eq, value = arg.partition("=")
        if name not in PATH_OPTIONS:
            continue
        given = value if eq else (argv[i + 1] if i + 1 < len(argv) else None)
        if given is not None and not given.strip():
            return name
    return None


def _safe_streams() -> None:
    """Under a locale whose encoding cannot write every character (``LC_ALL=C`` with ``PYTHONUTF8=0``: ASCII),
    stdout replaces what it cannot encode by ``?`` and stderr writes it as ``\\xNN`` (error lines stay exact)
    instead of raising ``UnicodeEncodeError``."""
    for stream, errors in ((sys.stdout, "replace"), (sys.stderr, "backslashreplace")):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "")
        reconfigure = getattr(stream, "reconfigure", None)
        if encoding != "utf8" and reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):  # a stream that cannot be changed stays as it is
                reconfigure(errors=errors)


def _usage_message(err: UsageError) -> str:
    """A command-line usage error (unknown option, bad option type, missing argument) as one line."""
    where = err.ctx.command_path if err.ctx is not None else "biscale"
    return f"{_one_line(err.format_message())} (see '{where} --help')"


def _os_message(err: OSError) -> str:
    """An operating-system error that escaped a command's own checks, naming the file when the OS does."""
    reason = err.strerror or _one_line(str(err)) or type(err).__name__
    return f"{err.filename}: {reason}" if err.filename else reason


def main(argv: list[str] | None = None) -> int:
    """Entry point. With ``argv=None`` (console script) it exits the process; otherwise returns the code.

    Every way a command can fail on its input ends here as one line, ``biscale: error: <reason>``, and exit
    code 2 (see docs/cli.md): :data:`USER_ERRORS`, command-line usage errors, and, as a last resort, operating-
    system errors (an unwritable path a command did not check) and running out of memory.
    """
    message: str | None = None
    _safe_streams()
    args = sys.argv[1:] if argv is None else argv
    try:
        empty = _empty_path_option(args)
        if empty is not None:
            raise InputError(f"{empty} is empty: give a path (an unset shell variable?), or leave the option out")
        result = app(args=argv, prog_name="biscale", standalone_mode=False)
        code = result if isinstance(result, int) else 0  # typer.Exit(n) comes back as n
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except NoArgsIsHelpError as err:  # `biscale` or a group alone: print the help, as click does
        err.show()
        code = 2
    except UsageError as err:
        message, code = _usage_message(err), 2
    except typer.Abort:  # Ctrl-C while reading input: like click's "Aborted!"
        message, code = "aborted", 1
    except USER_ERRORS as err:
        message, code = str(err), 2
    except OSError as err:
        message, code = _os_message(err), 2
    except MemoryError:
        message, code = "out of memory: the input asks for more than this machine holds (see docs/cli.md)", 2
    if message is not None:
        print(f"biscale: error: {_one_line(message)}", file=sys.stderr)
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":  # pragma: no cover
    main()
