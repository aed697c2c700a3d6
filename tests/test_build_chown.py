"""``--chown`` names from the image's own account files, ``--chmod`` in both forms."""

import stat
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from platforge.build.chown import Owner, parse_chmod, resolve_owner
from platforge.errors import BuildError

PASSWD = "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n"
GROUP = "root:x:0:\nstaff:x:50:\napp:x:1001:\n"


@pytest.mark.parametrize(
    ("spec", "owner"),
    [
        ("app", Owner(1000, 1001)),
        ("app:staff", Owner(1000, 50)),
        ("1000", Owner(1000, 1000)),
        ("1000:50", Owner(1000, 50)),
        ("app:7", Owner(1000, 7)),
        ("0:staff", Owner(0, 50)),
    ],
)
def test_owner_specs_resolve_like_docker(spec, owner):
    assert resolve_owner(spec, PASSWD, GROUP) == owner


@pytest.mark.parametrize("spec", ["nobody", "app:wheel", ":50"])
def test_unknown_names_are_errors_naming_them(spec):
    with pytest.raises(BuildError, match="--chown"):
        resolve_owner(spec, PASSWD, GROUP)


def test_names_need_the_image_files_not_the_hosts():
    with pytest.raises(BuildError, match="/etc/passwd"):
        resolve_owner("root", None, None)


@pytest.mark.parametrize(
    ("spec", "before", "is_dir", "after"),
    [
        ("755", 0o644, False, 0o755),
        ("0640", 0o777, True, 0o640),
        ("u+x", 0o644, False, 0o744),
        ("go-w", 0o666, False, 0o644),
        ("a=r", 0o755, False, 0o444),
        ("u=rwx,g=rx,o=", 0o600, False, 0o750),
        ("a+X", 0o644, True, 0o755),
        ("a+X", 0o644, False, 0o644),
        ("a+X", 0o744, False, 0o755),
        ("+t", 0o755, True, 0o1755),
        ("u+s", 0o755, False, 0o4755),
    ],
)
def test_chmod_octal_and_symbolic(spec, before, is_dir, after):
    assert parse_chmod(spec).apply(before, is_dir=is_dir) == after


@pytest.mark.parametrize("spec", ["999", "u+q", "rwx", "u+x,,"])
def test_bad_chmod_is_an_error(spec):
    with pytest.raises(BuildError, match="--chmod"):
        parse_chmod(spec)


_WHO = st.sampled_from(["", "u", "g", "o", "a", "ug", "go", "uo"])
_OP = st.sampled_from(["+", "-", "="])
_PERMS = st.text(alphabet="rwxXst", max_size=3)
_CLAUSE = st.builds(lambda w, o, p: f"{w}{o}{p}", _WHO, _OP, _PERMS)


@settings(max_examples=150, deadline=None)
@given(
    spec=st.lists(_CLAUSE, min_size=1, max_size=3).map(",".join),
    before=st.integers(min_value=0, max_value=0o7777),
    is_dir=st.booleans(),
)
def test_symbolic_chmod_agrees_with_coreutils_chmod(
    tmp_path_factory, spec, before, is_dir
):
    """Our symbolic modes against the real chmod(1), with a umask of 0."""
    target = tmp_path_factory.mktemp("chmod") / "t"
    if is_dir:
        target.mkdir()
    else:
        target.write_text("")
    target.chmod(before)
    subprocess.run(
        ["sh", "-c", 'umask 0 && chmod -- "$0" "$1"', spec, str(target)], check=True
    )
    expected = stat.S_IMODE(target.stat().st_mode)
    assert parse_chmod(spec).apply(before, is_dir=is_dir) == expected
