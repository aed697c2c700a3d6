"""``out``'s tags: version aliases on a new repository and with a tag prefix."""

import uuid

import pytest

from test_concourse_support import (
    answer,
    client_for,
    push,
    resource,
    single_image,
    source_for,
    write_layout,
)

pytestmark = pytest.mark.registry


def _tags_of(pushed: dict) -> list[str]:
    return {m["name"]: m["value"] for m in pushed["metadata"]}["tags"].split()


def test_bump_aliases_on_a_repository_that_does_not_exist_yet(registry_basic, tmp_path):
    repo = f"concourse/new-{uuid.uuid4().hex[:8]}"
    image = single_image("first")
    write_layout(tmp_path / "image" / "image", image)
    request = {
        "source": source_for(registry_basic, repo, tag="latest"),
        "params": {"image": "image/image", "version": "1.4.0", "bump_aliases": True},
    }
    pushed = answer(resource("out", request, str(tmp_path)))
    assert pushed["version"] == {"tag": "latest", "digest": image.digest}
    assert _tags_of(pushed) == ["latest", "1.4.0", "1.4", "1"]
    with client_for(registry_basic) as client:
        assert sorted(client.list_tags(repo)) == ["1", "1.4", "1.4.0", "latest"]


def test_tag_prefix_never_moves_aliases_back_to_an_older_version(
    registry_plain, tmp_path
):
    repo = f"concourse/prefix-{uuid.uuid4().hex[:8]}"
    newer = single_image("2.0.0")
    push(registry_plain, repo, newer, ["2.0.0", "2.0", "2", "latest"])
    push(registry_plain, repo, single_image("1.5.0"), ["1.5.0", "1.5", "1"])
    hotfix = single_image("1.2.3")
    write_layout(tmp_path / "img", hotfix)
    request = {
        "source": source_for(registry_plain, repo),
        "params": {
            "image": "img",
            "version": "1.2.3",
            "tag_prefix": "v",
            "bump_aliases": True,
        },
    }
    pushed = answer(resource("out", request, str(tmp_path)))
    # 1.2 is new and 1.2.3 its newest; 1 (1.5.0) and latest (2.0.0) are newer.
    assert _tags_of(pushed) == ["v1.2.3", "1.2"]
    with client_for(registry_plain) as client:
        latest = client.head_manifest(repo, "latest")
    assert latest is not None
    assert str(latest.digest) == newer.digest
