"""check: the semver cursor saves requests; odd registry content never crashes it."""

import json
import uuid

import pytest
from testbed import Fault

from test_concourse_support import (
    OCI_CONFIG,
    OCI_MANIFEST,
    Blob,
    Image,
    answer,
    push,
    resource,
    single_image,
    source_for,
)

pytestmark = pytest.mark.registry


@pytest.fixture(scope="module")
def many(registry_plain):
    """40 version tags on one image, then 2.0.0 and 2.1.0 on two others."""
    repo = f"concourse/many-{uuid.uuid4().hex[:8]}"
    push(registry_plain, repo, single_image("old"), [f"1.{i}.0" for i in range(40)])
    two = push(registry_plain, repo, single_image("two"), ["2.0.0"])
    newest = push(registry_plain, repo, single_image("newest"), ["2.1.0"])
    return repo, two, newest


def test_semver_check_from_the_newest_version_heads_only_that_tag(
    registry_plain, fault_proxy, many
):
    repo, _, newest = many
    proxy = fault_proxy(registry_plain)
    request = {
        "source": {"repository": f"{proxy.host}/{repo}"},
        "version": {"tag": "2.1.0", "digest": newest},
    }
    assert answer(resource("check", request)) == [{"tag": "2.1.0", "digest": newest}]
    assert len(proxy.seen("HEAD")) == 1


def test_semver_check_from_an_older_version_heads_the_tags_above_it(
    registry_plain, fault_proxy, many
):
    repo, two, newest = many
    proxy = fault_proxy(registry_plain)
    request = {
        "source": {"repository": f"{proxy.host}/{repo}"},
        "version": {"tag": "2.0.0", "digest": two},
    }
    assert answer(resource("check", request)) == [
        {"tag": "2.0.0", "digest": two},
        {"tag": "2.1.0", "digest": newest},
    ]
    assert len(proxy.seen("HEAD")) == 2


def test_semver_check_whose_cursor_moved_asks_every_tag(
    registry_plain, fault_proxy, many
):
    repo, _, newest = many
    proxy = fault_proxy(registry_plain)
    stale = "sha256:" + "3" * 64  # 2.1.0 was pushed again since
    request = {
        "source": {"repository": f"{proxy.host}/{repo}"},
        "version": {"tag": "2.1.0", "digest": stale},
    }
    versions = answer(resource("check", request))
    assert versions[-1] == {"tag": "2.1.0", "digest": newest}
    assert len(proxy.seen("HEAD")) >= 42  # every version tag


def test_semver_check_skips_tag_list_entries_that_are_not_strings(
    registry_plain, fault_proxy, many
):
    repo, _, newest = many
    body = json.dumps({"name": repo, "tags": [1, None, {"a": 1}, "2.1.0"]})
    proxy = fault_proxy(
        registry_plain,
        Fault(
            path="/tags/list",
            method="GET",
            status=200,
            body=body.encode(),
            headers={"Content-Type": "application/json"},
        ),
    )
    result = resource("check", {"source": {"repository": f"{proxy.host}/{repo}"}})
    assert answer(result) == [{"tag": "2.1.0", "digest": newest}]


def _odd_config_image(config: bytes) -> Image:
    config_blob = Blob(OCI_CONFIG, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [],
    }
    return Image(
        top=Blob(OCI_MANIFEST, json.dumps(manifest).encode()),
        blobs=[config_blob],
        manifests=[],
    )


def test_created_at_sort_reads_an_unreadable_config_as_oldest(registry_plain):
    repo = f"concourse/odd-{uuid.uuid4().hex[:8]}"
    good = push(registry_plain, repo, single_image("good"), ["cfg-good"])
    listed = push(registry_plain, repo, _odd_config_image(b"[]"), ["cfg-list"])
    binary = push(registry_plain, repo, _odd_config_image(b"\xff\xfe no"), ["cfg-bin"])
    source = source_for(registry_plain, repo, tag_regex="^cfg", created_at_sort=True)
    assert answer(resource("check", {"source": source})) == [
        {"tag": "cfg-bin", "digest": binary},
        {"tag": "cfg-list", "digest": listed},
        {"tag": "cfg-good", "digest": good},
    ]


def test_regex_mode_orders_tags_that_are_not_versions_lexically(registry_plain):
    repo = f"concourse/lex-{uuid.uuid4().hex[:8]}"
    names = ["r3-v4", "r1-v6", "r6-v1", "r2-v5"]
    digests = {
        name: push(registry_plain, repo, single_image(name), [name]) for name in names
    }
    source = source_for(registry_plain, repo, tag_regex="^r")
    assert answer(resource("check", {"source": source})) == [
        {"tag": name, "digest": digests[name]} for name in sorted(names)
    ]
