"""COPY's source rules on a real directory: what is selected and where it lands."""

import pytest

from platforge.build.context import FileHasher, SourceTree, join_dest
from platforge.dockerfile.dockerignore import IgnoreMatcher
from platforge.errors import BuildError


@pytest.fixture
def tree(tmp_path):
    for name in ("a.txt", "b.txt", "c.md", "dir/x", "dir/sub/y", "other/z"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / "link").symlink_to("a.txt")
    return SourceTree(tmp_path)


def _dests(items):
    return [(i.dest, i.kind) for i in items]


@pytest.mark.parametrize(
    ("workdir", "dest", "expected"),
    [
        ("/", "x", "/x"),
        ("/app", "x", "/app/x"),
        ("/app", "x/", "/app/x/"),
        ("/app", "/abs", "/abs"),
        ("/app", "../up", "/up"),
        ("/app", ".", "/app"),
        ("/", "/", "/"),
    ],
)
def test_destinations_are_relative_to_workdir(workdir, dest, expected):
    assert join_dest(workdir, dest) == expected


def test_a_directory_source_copies_its_contents_not_itself(tree):
    assert _dests(tree.select(["dir"], "/opt")) == [
        ("/opt/sub", "dir"),
        ("/opt/sub/y", "file"),
        ("/opt/x", "file"),
    ]


def test_a_file_to_a_slash_destination_keeps_its_name(tree):
    assert _dests(tree.select(["a.txt"], "/d/")) == [("/d/a.txt", "file")]
    assert _dests(tree.select(["a.txt"], "/d/renamed")) == [("/d/renamed", "file")]
    existing_dir = tree.select(["a.txt"], "/etc", dest_is_dir_in_image=True)
    assert _dests(existing_dir) == [("/etc/a.txt", "file")]


def test_wildcards_match_within_one_component_and_double_star_across(tree):
    assert _dests(tree.select(["*.txt"], "/t/")) == [
        ("/t/a.txt", "file"),
        ("/t/b.txt", "file"),
    ]
    assert [i.dest for i in tree.select(["**/y"], "/s/")] == ["/s/y"]
    assert _dests(tree.select(["[ab].txt"], "/t/")) == [
        ("/t/a.txt", "file"),
        ("/t/b.txt", "file"),
    ]


def test_several_sources_need_a_directory_destination(tree):
    with pytest.raises(BuildError, match=r"ending in '/'"):
        tree.select(["a.txt", "b.txt"], "/one-file")


def test_missing_sources_and_empty_wildcards_are_errors(tree):
    with pytest.raises(BuildError, match=r"nope\.txt"):
        tree.select(["nope.txt"], "/x")
    with pytest.raises(BuildError, match=r"\*.none"):
        tree.select(["*.none"], "/x/")


def test_sources_cannot_climb_out_of_the_tree(tree):
    assert _dests(tree.select(["../../a.txt"], "/x")) == [("/x", "file")]


def test_links_inside_are_copied_as_links_and_named_links_are_followed(tree):
    items = {i.dest: i for i in tree.select(["."], "/all/")}
    assert items["/all/link"].kind == "symlink"
    assert items["/all/link"].link == "a.txt"
    named = tree.select(["link"], "/named")
    assert named[0].kind == "file"


def test_ignored_files_are_invisible(tmp_path, tree):
    class Ignore(IgnoreMatcher):
        def excluded(self, relpath, is_dir=False):  # noqa: ARG002 - the interface
            return relpath.endswith(".md") or relpath == "other"

        def can_prune(self, reldir):
            return reldir == "other"

    ignoring = SourceTree(tmp_path, Ignore([]))
    dests = [i.dest for i in ignoring.select(["."], "/c/")]
    assert "/c/c.md" not in dests
    assert "/c/other/z" not in dests
    assert "/c/a.txt" in dests


def test_exclude_and_parents(tree):
    kept = [i.dest for i in tree.select(["dir"], "/e/", excludes=["**/y"])]
    assert kept == ["/e/sub", "/e/x"]
    parents = [i.dest for i in tree.select(["dir/sub/y", "a.txt"], "/p/", parents=True)]
    assert parents == ["/p/a.txt", "/p/dir/sub/y"]
    pivot = [i.dest for i in tree.select(["dir/./sub/y"], "/q/", parents=True)]
    assert pivot == ["/q/sub/y"]


def test_hasher_remembers_by_stat_and_notices_changes(tmp_path, tree):
    state = tmp_path / "hashes.json"
    hasher = FileHasher(state)
    first = hasher.items_digest(tree.select(["dir"], "/d/"))
    hasher.save()
    again = FileHasher(state).items_digest(tree.select(["dir"], "/d/"))
    assert again == first
    (tmp_path / "dir" / "x").write_text("changed content")
    changed = FileHasher(state).items_digest(tree.select(["dir"], "/d/"))
    assert changed != first
