"""The documentation that is generated from the code matches the code."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location(
        "gen_cli_docs", REPO / "scripts" / "gen_cli_docs.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_matches_the_help_texts():
    expected = _generator().render()
    actual = (REPO / "docs" / "cli.md").read_text()
    assert actual == expected, (
        "docs/cli.md is out of date: run .venv/bin/python scripts/gen_cli_docs.py"
    )


def test_cli_reference_covers_every_command():
    text = (REPO / "docs" / "cli.md").read_text()
    for command in ("build", "push", "pull", "copy", "inspect", "login", "logout"):
        assert f"## `platforge {command}`" in text
    for command in ("run", "index create", "emulation status", "dockerfile plan"):
        assert f"## `platforge {command}`" in text
    for command in ("resource check", "resource in", "resource out", "task build"):
        assert f"## `platforge {command}`" in text
