"""The ``platforge`` command: one click group, commands registered by area.

Each area of the command line lives in its own module with a ``register(group)``
function, so the areas can grow without touching each other. Errors from the library
(``PlatforgeError``) become one line on stderr and exit status 1; click's usage errors
exit with 2.
"""

from __future__ import annotations

import logging
import signal
import sys
from importlib import import_module

import click

from platforge import __version__
from platforge.errors import PlatforgeError

__all__ = ["cli", "main"]

# Each command, by the module that defines it. A module exposes ``register(group)``;
# it is imported only when one of its commands runs (or for the full ``--help``),
# so a command starts without importing every other area's dependencies.
_AREAS = {
    "platforge.cli.build_cmds": ("build",),
    "platforge.cli.registry_cmds": (
        "push",
        "pull",
        "copy",
        "inspect",
        "login",
        "logout",
    ),
    "platforge.cli.run_cmds": ("run", "index", "emulation"),
    "platforge.cli.dockerfile_cmds": ("dockerfile",),
    "platforge.cli.concourse_cmds": ("resource", "task"),
}
_MODULE_OF = {name: module for module, names in _AREAS.items() for name in names}


class _LazyGroup(click.Group):
    """A group that imports a command's module when the command is needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        del ctx
        return list(_MODULE_OF)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        del ctx
        module = _MODULE_OF.get(cmd_name)
        if module is None:
            return None
        area = click.Group()
        import_module(module).register(area)
        return area.commands[cmd_name]


class _PlainFormatter(logging.Formatter):
    """INFO as the bare message; warnings and errors say what they are."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"platforge: {record.levelname.lower()}: {message}"
        return message


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="platforge")
@click.option("--debug", is_flag=True, help="Log everything platforge does to stderr.")
def cli(debug: bool) -> None:
    """Build every platform of a Dockerfile into one OCI image index, no daemon.

    \b
    Example:
      platforge build --platform linux/amd64,linux/arm64 -t 127.0.0.1:5000/app --push .
    """
    handler = logging.StreamHandler(sys.stderr)
    if debug:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
        )
        logging.basicConfig(level=logging.DEBUG, handlers=[handler])
        # httpcore narrates every socket event; httpx's one line per request and
        # platforge's own records say what matters.
        logging.getLogger("httpcore").setLevel(logging.INFO)
    else:
        # The library logs INFO for events a user wants to see (a retry, a
        # fallback); show them as plain lines, without logger names or times,
        # since CI logs (Concourse) add their own.
        handler.setFormatter(_PlainFormatter())
        logging.basicConfig(level=logging.WARNING, handlers=[handler])
        logging.getLogger("platforge").setLevel(logging.INFO)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it unwinds as ^C does."""


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    # Python would otherwise die of SIGTERM (a CI abort, ``timeout``) at once,
    # leaving a RUN's container running and its mounts and secret files behind;
    # as an exception it unwinds through the sandbox's clean-up.
    del signum, frame
    raise _Terminated


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning our errors into one line and status 1."""
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        status = cli.main(args=argv, prog_name="platforge", standalone_mode=False)
    except click.exceptions.Abort as exc:
        # click turns ^C (and our SIGTERM) into Abort, keeping the cause.
        if isinstance(exc.__cause__, _Terminated):
            click.echo("platforge: terminated", err=True)
            sys.exit(143)
        click.echo("platforge: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except PlatforgeError as exc:
        click.echo(f"platforge: error: {exc}", err=True)
        sys.exit(1)
    except _Terminated:
        click.echo("platforge: terminated", err=True)
        sys.exit(143)
    except KeyboardInterrupt:
        click.echo("platforge: interrupted", err=True)
        sys.exit(130)
    sys.exit(status if isinstance(status, int) else 0)
