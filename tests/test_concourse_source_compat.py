"""``source`` and ``params`` that upstream accepts or refuses, read the same way."""

import pytest

from platforge import platforms
from platforge.concourse.source import parse_put_params, parse_source
from platforge.errors import ConcourseError

REPO = "127.0.0.1:5000/app"


def test_aws_ecr_registry_id_is_the_older_name_of_aws_account_id():
    source = parse_source(
        {
            "repository": "my-repo",
            "aws_region": "us-east-1",
            "aws_ecr_registry_id": "123456789012",
        }
    )
    assert source.aws is not None
    assert source.aws.account_id == "123456789012"


@pytest.mark.parametrize(
    "platform",
    [{"os": "linux"}, {}, {"architecture": ""}],
)
def test_a_platform_field_left_out_is_the_workers(platform):
    source = parse_source({"repository": REPO, "platform": platform})
    worker = platforms.host()
    assert source.platform is not None
    assert source.platform.os == worker.os
    assert source.platform.architecture == worker.architecture


def test_a_platform_without_os_keeps_its_architecture():
    source = parse_source({"repository": REPO, "platform": {"architecture": "arm64"}})
    assert str(source.platform) == "linux/arm64"


@pytest.mark.parametrize(
    "tag", ["multi?x=1", "multi#frag", "Bad Tag", "../roundtrip/manifests/multi", "-x"]
)
def test_an_invalid_source_tag_fails_every_step_naming_it(tag):
    with pytest.raises(ConcourseError) as caught:
        parse_source({"repository": REPO, "tag": tag})
    assert "source.tag" in str(caught.value)
    assert repr(tag) in str(caught.value)


def test_a_numeric_tag_is_still_read_as_text():
    assert parse_source({"repository": REPO, "tag": 3}).tag == "3"


def test_a_version_given_as_a_number_is_refused():
    source = parse_source({"repository": REPO})
    with pytest.raises(ConcourseError, match=r"params\.version.*quote it"):
        parse_put_params({"image": "image/image", "version": 1.1}, source)
    params = parse_put_params({"image": "image/image", "version": "1.10"}, source)
    assert params.version == "1.10"


@pytest.mark.parametrize(
    "host", ["http://127.0.0.1:5001", "127.0.0.1:5001/path", "mirror host", ""]
)
def test_a_mirror_host_that_is_not_host_port_is_refused(host):
    with pytest.raises(ConcourseError, match=r"registry_mirror\.host"):
        parse_source({"repository": "alpine", "registry_mirror": {"host": host}})


@pytest.mark.parametrize("host", ["127.0.0.1:5001", "mirror.internal", "[::1]:5000"])
def test_a_mirror_host_port_is_accepted(host):
    source = parse_source({"repository": "alpine", "registry_mirror": {"host": host}})
    assert source.registry_mirror is not None
    assert source.registry_mirror.host == host
