"""Write docs/cli.md from the command line's own help texts.

The help texts are the one source of truth for commands and options; this page is
their printed form, so it cannot drift: tests/test_docs.py fails when docs/cli.md
differs from what this script writes. Run it after changing a command:

    .venv/bin/python scripts/gen_cli_docs.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from platforge.cli.main import cli

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"

INTRO = """\
# platforge command line

Generated from `platforge --help` by `scripts/gen_cli_docs.py`; do not edit by hand.

Exit status: 0 on success; 1 on an error platforge reports (one line on stderr: what
failed, on which input, and how to fix it); 2 on bad usage. Output meant for
programs (digests, `--raw`, Concourse JSON) goes to stdout, everything else to
stderr. `platforge --debug COMMAND …` logs every step to stderr.

Environment variables that platforge reads:

- `PLATFORGE_STORE`: the local store, an OCI image layout
  (default `~/.local/share/platforge/store`).
- `PLATFORGE_ROOTFS`: where unpacked layers are cached for `run` and `RUN`
  (default: beside the store).
- `PLATFORGE_CA_FILE`: extra CA certificates (PEM) trusted for every registry.
- `DOCKER_CONFIG`: the directory of docker's `config.json` (credentials;
  default `~/.docker`).
- `PLATFORGE_SANDBOX=runtime|chroot|proot`: force how `RUN` and `run` execute;
  `PLATFORGE_RUNTIME=runc|crun` picks the OCI runtime; `PLATFORGE_RUN_DIR` holds
  their per-run state (default `/dev/shm`).
- `SOURCE_DATE_EPOCH`: timestamps of reproducible builds (also as a `--build-arg`).
"""


def _sections(command: click.Command, path: list[str], parent: click.Context) -> str:
    """The help of ``command`` and of every subcommand, depth first, in order."""
    name = " ".join(path)
    with click.Context(command, info_name=path[-1], parent=parent) as ctx:
        text = command.get_help(ctx).rstrip()
        sections = [f"## `{name}`\n\n```\n{text}\n```\n"]
        if isinstance(command, click.Group):
            for child_name in command.list_commands(ctx):
                child = command.get_command(ctx, child_name)
                if child is not None and not child.hidden:
                    sections.append(_sections(child, [*path, child_name], ctx))
    return "\n".join(sections)


def render() -> str:
    # A fixed width, so the page does not depend on the terminal it was made in;
    # child contexts inherit it.
    with click.Context(
        cli,
        info_name="platforge",
        terminal_width=88,
        max_content_width=88,
        help_option_names=["-h", "--help"],
    ) as top:
        parts = [INTRO, f"## `platforge`\n\n```\n{cli.get_help(top).rstrip()}\n```\n"]
        for name in cli.list_commands(top):
            command = cli.get_command(top, name)
            if command is not None:
                parts.append(_sections(command, ["platforge", name], top))
    return "\n".join(parts)


def main() -> int:
    DOCS.write_text(render())
    print(f"wrote {DOCS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
