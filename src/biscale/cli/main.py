"""The ``biscale`` command: assembles the command groups and maps user errors to exit code 2."""

from __future__ import annotations

import sys

import typer

from biscale.errors import InputError, NoGpuError, PermissionRequiredError

app = typer.Typer(
    name="biscale",
    help="Cut the GPU energy of prefill/decode-disaggregated LLM serving without breaking latency SLOs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """biscale: plan placement and control GPU clocks for disaggregated LLM serving."""


@app.command()
def version() -> None:
    """Print the biscale version."""
    from biscale import __version__

    typer.echo(__version__)


def _register_all() -> None:
    # Each command group lives in its own module and adds itself to ``app``.
    from biscale.cli import config, emulate, gpu, hardware, loadgen, plan, predict, simulate, trace

    for module in (hardware, trace, simulate, config, plan, predict, gpu, loadgen, emulate):
        module.register(app)


_register_all()

#: Errors that mean "the user must change something": one line on stderr, exit code 2, no traceback.
USER_ERRORS = (InputError, PermissionRequiredError, NoGpuError)


def main(argv: list[str] | None = None) -> int:
    """Entry point. With ``argv=None`` (console script) it exits the process; otherwise returns the code."""
    try:
        app(args=argv, prog_name="biscale")
        code = 0
    except SystemExit as exc:  # typer/click exit (usage errors already printed, code 2)
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except USER_ERRORS as err:
        print(f"biscale: error: {err}", file=sys.stderr)
        code = 2
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":  # pragma: no cover
    main()
