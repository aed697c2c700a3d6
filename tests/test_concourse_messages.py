"""What a Concourse user reads: fixes named as pipeline keys, and progress lines."""

import uuid

import pytest

from test_concourse_support import (
    multi_image,
    push,
    resource,
    single_image,
    source_for,
    write_layout,
)

pytestmark = pytest.mark.registry


def test_refused_credentials_name_the_source_keys(registry_basic):
    source = {
        "repository": f"{registry_basic.host}/concourse/x",
        "tag": "t",
        "username": registry_basic.username,
        "password": "wrong-password-xyz",
    }
    result = resource("check", {"source": source}, check=False)
    assert result.returncode == 1
    assert "source.username and source.password" in result.stderr
    assert "platforge login" not in result.stderr
    assert "wrong-password-xyz" not in result.stderr


def test_an_untrusted_tls_registry_names_ca_certs(registry_tls):
    source = {"repository": f"{registry_tls.host}/concourse/x", "tag": "t"}
    result = resource("check", {"source": source}, check=False)
    assert result.returncode == 1
    assert "source.ca_certs" in result.stderr
    assert "--ca-file" not in result.stderr


def test_a_platform_the_index_lacks_names_the_platform_keys(registry_plain, tmp_path):
    repo = f"concourse/plat-{uuid.uuid4().hex[:8]}"
    digest = push(registry_plain, repo, multi_image("plat"), ["t"])
    request = {
        "source": source_for(registry_plain, repo, platform={"architecture": "s390x"}),
        "version": {"tag": "t", "digest": digest},
    }
    result = resource("in", request, str(tmp_path), check=False)
    assert result.returncode == 1
    assert "source.platform or the get step's params.platform" in result.stderr
    assert "--platform" not in result.stderr


def test_in_and_out_say_what_they_fetch_and_push(registry_plain, tmp_path):
    repo = f"concourse/say-{uuid.uuid4().hex[:8]}"
    image = single_image("say")
    write_layout(tmp_path / "img", image)
    source = source_for(registry_plain, repo, tag="t")
    pushed = resource(
        "out", {"source": source, "params": {"image": "img"}}, str(tmp_path)
    )
    assert "pushing" in pushed.stderr
    assert f"pushed {image.digest}" in pushed.stderr
    version = {"tag": "t", "digest": image.digest}
    got = resource("in", {"source": source, "version": version}, str(tmp_path / "g"))
    assert f"fetching {source['repository']}@{image.digest}" in got.stderr
