""".dockerignore: Docker's matching rules, per-Dockerfile files, directory pruning."""

from __future__ import annotations

import os

import pytest

from platforge.dockerfile.dockerignore import IgnoreMatcher, load, parse_patterns
from platforge.errors import DockerfileError


def matcher(*lines):
    return IgnoreMatcher(parse_patterns(lines))


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        (["foo"], "foo", True),
        (["foo"], "foo/bar/baz.txt", True),  # a matched directory takes its content
        (["foo"], "x/foo", False),  # anchored at the root
        (["/foo"], "foo", True),  # a leading slash is cleaned
        (["./foo/"], "foo/a", True),  # so are ./ and a trailing slash
        (["foo/../bar"], "bar", True),
        (["*.md"], "README.md", True),
        (["*.md"], "docs/a.md", False),  # * stays inside one component
        (["*/*.md"], "docs/a.md", True),
        (["**/*.md"], "a.md", True),  # ** matches no directories too
        (["**/*.md"], "x/y/z/a.md", True),
        (["docs/**"], "docs/a/b", True),
        (["**"], "anything/at/all", True),
        (["a?c"], "abc", True),
        (["a?c"], "a/c", False),
        (["[a-c]x"], "bx", True),
        (["[!a-c]x"], "bx", False),
        (["\\*x"], "*x", True),
        (["\\*x"], "ax", False),
        (["*.md", "!README.md"], "README.md", False),  # ! re-includes
        (["*.md", "!README.md"], "CHANGES.md", True),
        (["!README.md", "*.md"], "README.md", True),  # the last match wins
        (["docs", "!docs/keep.txt"], "docs/keep.txt", False),
        (["docs", "!docs/keep.txt"], "docs/other.txt", True),
        (["# comment", "", "  spaced  "], "spaced", True),
        (["# comment"], "# comment", False),
        (["."], "x", True),  # the whole context
    ],
)
def test_docker_matching_rules(patterns, path, excluded):
    assert matcher(*patterns).excluded(path) is excluded


def test_paths_are_cleaned_before_matching():
    m = matcher("foo")
    assert m.excluded("./foo/x")
    assert m.excluded("/foo")
    assert not m.excluded(".")


def test_a_lone_bang_is_an_error_with_its_line():
    with pytest.raises(DockerfileError, match=r"^\.dockerignore:2: '!' alone"):
        parse_patterns(["a", "!"])


@pytest.mark.parametrize(
    ("patterns", "directory", "prunable"),
    [
        (["node_modules"], "node_modules", True),
        (["node_modules"], "src", False),
        (["build", "!build/keep"], "build", False),
        (["build", "!build/keep"], "build/other", True),
        (["build", "!**/keep"], "build", False),
        (["build", "!*/keep"], "build", False),
        (["build", "!src/*"], "build", True),
    ],
)
def test_can_prune_only_when_nothing_below_can_be_reincluded(
    patterns, directory, prunable
):
    assert matcher(*patterns).can_prune(directory) is prunable


def test_pruned_walk_and_full_walk_agree(tmp_path):
    for rel in ("a/x.txt", "a/keep/y.txt", "b/c/d.md", "b/e.txt", "top.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    m = matcher("a", "!a/keep", "b/**/*.md", "*.md")

    def walk(prune):
        kept = []
        for root, dirs, files in os.walk(tmp_path):
            rel_root = os.path.relpath(root, tmp_path)
            rel_root = "" if rel_root == "." else rel_root + "/"
            if prune:
                dirs[:] = [d for d in dirs if not m.can_prune(rel_root + d)]
            kept += [rel_root + f for f in files if not m.excluded(rel_root + f)]
        return sorted(kept)

    assert walk(prune=True) == walk(prune=False) == ["a/keep/y.txt", "b/e.txt"]


def test_load_prefers_the_dockerfile_specific_ignore_file(tmp_path):
    (tmp_path / ".dockerignore").write_text("general\n")
    (tmp_path / "build").mkdir()
    dockerfile = tmp_path / "build" / "app.Dockerfile"
    dockerfile.write_text("FROM a\n")
    (tmp_path / "build" / "app.Dockerfile.dockerignore").write_text("specific\n")

    specific = load(tmp_path, dockerfile)
    assert specific.source == tmp_path / "build" / "app.Dockerfile.dockerignore"
    assert specific.excluded("specific")
    assert not specific.excluded("general")

    general = load(tmp_path, tmp_path / "Dockerfile")
    assert general.excluded("general")
    assert not load(tmp_path / "build").excluded("general")
    assert not load(tmp_path / "build")
