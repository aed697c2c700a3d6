"""``--chown`` names from the image's own account files, ``--chmod`` in both forms."""

import pytest

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
