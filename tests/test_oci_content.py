import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from platforge.errors import ManifestError
from platforge.oci import mediatypes as mt
from platforge.oci.content import (
    Descriptor,
    History,
    ImageConfig,
    Index,
    Manifest,
    canonical_json,
    parse_manifest,
)
from platforge.oci.digest import Digest
from platforge.platforms import Platform
from platforge.platforms import parse as parse_platform

D1 = Digest.of(b"one")
D2 = Digest.of(b"two")


def descriptor(media_type=mt.OCI_LAYER_GZIP, digest=D1, size=3, **kw):
    return Descriptor(media_type=media_type, digest=digest, size=size, **kw)


def docker_list_bytes():
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST_LIST,
            "manifests": [
                {
                    "mediaType": mt.DOCKER_MANIFEST,
                    "digest": str(D1),
                    "size": 527,
                    "platform": {"architecture": "amd64", "os": "linux"},
                },
                {
                    "mediaType": mt.DOCKER_MANIFEST,
                    "digest": str(D2),
                    "size": 527,
                    "platform": {
                        "architecture": "arm",
                        "os": "linux",
                        "variant": "v6",
                    },
                },
            ],
        },
        indent=3,
    ).encode()


def test_parse_keeps_exact_bytes_and_digests_them():
    raw = docker_list_bytes()
    index = parse_manifest(raw)
    assert isinstance(index, Index)
    assert index.raw == raw
    assert index.digest == Digest.of(raw)
    assert index.size == len(raw)
    assert index.media_type == mt.DOCKER_MANIFEST_LIST
    assert [str(p) for p in index.platforms()] == ["linux/amd64", "linux/arm/v6"]


def test_index_find_uses_platform_fallbacks():
    index = Index.parse(docker_list_bytes())
    assert index.find(parse_platform("linux/amd64")).digest == D1
    # an arm64 host runs arm/v6 when nothing better is there
    assert index.find(parse_platform("linux/arm64")).digest == D2
    assert index.find(parse_platform("linux/s390x")) is None


def test_index_find_skips_nested_indexes_and_attestations():
    index = Index.build(
        [
            descriptor(mt.OCI_INDEX, D1, 10, platform=parse_platform("linux/amd64")),
            descriptor(
                mt.OCI_MANIFEST, D2, 10, platform=Platform("unknown", "unknown")
            ),
            descriptor(mt.OCI_MANIFEST, D2, 11, platform=parse_platform("linux/386")),
        ]
    )
    found = index.find(parse_platform("linux/amd64"))
    assert found is not None
    assert found.size == 11


def test_unknown_fields_survive_in_raw_json_and_descriptors():
    document = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {
            "mediaType": mt.OCI_CONFIG,
            "digest": str(D1),
            "size": 3,
            "x-future": {"kept": True},
        },
        "layers": [],
        "x-top": [1, 2],
    }
    raw = json.dumps(document).encode()
    m = Manifest.parse(raw)
    assert m.json["x-top"] == [1, 2]
    assert m.config.extra == {"x-future": {"kept": True}}
    assert m.config.to_json() == document["config"]
    rebuilt = Manifest.build(m.config, m.layers)
    assert json.loads(rebuilt.raw)["config"]["x-future"] == {"kept": True}


def test_oci_documents_without_media_type_are_told_apart_by_fields():
    manifest = {"schemaVersion": 2, "config": descriptor().to_json(), "layers": []}
    index = {"schemaVersion": 2, "manifests": []}
    assert parse_manifest(json.dumps(manifest).encode()).media_type == mt.OCI_MANIFEST
    assert parse_manifest(json.dumps(index).encode()).media_type == mt.OCI_INDEX
    with pytest.raises(ManifestError, match="neither 'manifests' nor 'config'"):
        parse_manifest(b'{"schemaVersion": 2}')


def test_given_media_type_decides_when_document_has_none():
    raw = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
    assert parse_manifest(raw, mt.DOCKER_MANIFEST_LIST).media_type == (
        mt.DOCKER_MANIFEST_LIST
    )
    # a generic Content-Type says nothing and is ignored
    assert parse_manifest(raw, "application/json").media_type == mt.OCI_INDEX


def test_media_type_disagreement_is_refused():
    raw = Index.build([]).raw
    with pytest.raises(ManifestError, match="declares mediaType"):
        parse_manifest(raw, mt.OCI_MANIFEST)
    with pytest.raises(ManifestError, match="an index, not an image manifest"):
        Manifest.parse(raw)
    with pytest.raises(ManifestError, match="not an index"):
        Index.parse(Manifest.build(descriptor(mt.OCI_CONFIG), []).raw)


@pytest.mark.parametrize(
    ("raw", "media_type"),
    [
        (b'{"schemaVersion": 1, "name": "x", "fsLayers": []}', None),
        (b'{"schemaVersion": 2}', mt.DOCKER_SCHEMA1_SIGNED),
        (b'{"schemaVersion": 1}', mt.DOCKER_SCHEMA1_MANIFEST),
    ],
)
def test_schema1_is_recognised_and_refused_clearly(raw, media_type):
    with pytest.raises(ManifestError) as caught:
        parse_manifest(raw, media_type)
    message = str(caught.value)
    assert "schema 1" in message
    assert "unsupported" in message
    assert "skopeo copy --format v2s2" in message


@pytest.mark.parametrize(
    ("document", "why"),
    [
        (b"not json", "is not JSON"),
        (b"\xff\xfe", "is not JSON"),
        (b"[1, 2]", "not an object"),
        (b"[" * 100_000 + b"]" * 100_000, "nests JSON too deeply"),
        (b'{"schemaVersion": 3, "manifests": []}', "schemaVersion 3"),
        (b'{"schemaVersion": "2", "manifests": []}', "schemaVersion '2'"),
        (b'{"schemaVersion": 2, "manifests": {}}', "'manifests' is missing"),
        (b'{"schemaVersion": 2, "config": {}, "layers": []}', "'mediaType' is missing"),
        (
            b'{"schemaVersion": 2, "mediaType": "application/x-other", "layers": []}',
            "is not an image manifest or index",
        ),
    ],
)
def test_malformed_documents_are_refused_in_one_line(document, why):
    with pytest.raises(ManifestError) as caught:
        parse_manifest(document)
    assert why in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("patch", "why"),
    [
        ({"digest": "sha256:abc"}, "needs 64 lowercase hex"),
        ({"digest": None}, "not a string"),
        ({"size": -1}, "non-negative integer"),
        ({"size": "3"}, "non-negative integer"),
        ({"size": True}, "non-negative integer"),
        ({"urls": "http://x"}, "'urls' must be a list"),
        ({"annotations": {"a": 1}}, "annotations must map strings"),
        ({"data": "!!"}, "'data' is not base64"),
        ({"platform": {"os": "linux"}}, "'architecture'"),
        ({"artifactType": 5}, "'artifactType' must be a string"),
    ],
)
def test_bad_descriptors_are_refused_naming_where(patch, why):
    entry = {**descriptor().to_json(), **patch}
    raw = json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode()
    with pytest.raises(ManifestError) as caught:
        parse_manifest(raw)
    assert why in str(caught.value)
    assert "manifests[0]" in str(caught.value)


def test_build_serialises_compactly_in_a_fixed_key_order():
    config = descriptor(mt.OCI_CONFIG, D1, 3)
    layer = descriptor(
        mt.OCI_LAYER_GZIP,
        D2,
        3,
        annotations={"b": "2", "a": "1"},
        urls=("http://127.0.0.1/x",),
    )
    m = Manifest.build(config, [layer], {"z": "1", "a": "2"})
    expected = (
        '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
        f'"config":{{"mediaType":"{mt.OCI_CONFIG}","digest":"{D1}","size":3}},'
        f'"layers":[{{"mediaType":"{mt.OCI_LAYER_GZIP}","digest":"{D2}","size":3,'
        '"urls":["http://127.0.0.1/x"],"annotations":{"b":"2","a":"1"}}],'
        '"annotations":{"z":"1","a":"2"}}'
    )
    assert m.raw.decode() == expected
    assert Manifest.build(config, [layer], {"z": "1", "a": "2"}).digest == m.digest


def test_build_index_with_platforms_and_round_trip():
    m = Manifest.build(descriptor(mt.OCI_CONFIG), [descriptor()])
    entries = [
        m.descriptor(parse_platform("linux/amd64")),
        m.descriptor(parse_platform("linux/arm/v7"), {"k": "v"}),
    ]
    index = Index.build(entries, {"top": "1"})
    again = Index.parse(index.raw)
    assert again.manifests == index.manifests == tuple(entries)
    assert again.annotations == {"top": "1"}
    assert index.descriptor().digest == index.digest
    assert index.descriptor().media_type == mt.OCI_INDEX


def test_docker_manifests_can_be_built_but_without_oci_only_fields():
    m = Manifest.build(
        descriptor(mt.DOCKER_CONFIG),
        [descriptor(mt.DOCKER_LAYER_GZIP)],
        media_type=mt.DOCKER_MANIFEST,
    )
    assert json.loads(m.raw)["mediaType"] == mt.DOCKER_MANIFEST
    with pytest.raises(ManifestError, match="no subject"):
        Manifest.build(
            descriptor(mt.DOCKER_CONFIG),
            [],
            media_type=mt.DOCKER_MANIFEST,
            subject=m.descriptor(),
        )
    with pytest.raises(ManifestError, match="cannot build a manifest"):
        Manifest.build(descriptor(), [], media_type=mt.OCI_INDEX)
    with pytest.raises(ManifestError, match="cannot build an index"):
        Index.build([], media_type=mt.OCI_MANIFEST)


def test_descriptor_helpers():
    d = Descriptor.of(b"{}", mt.OCI_EMPTY, annotations={"a": "1"})
    assert d.digest == Digest.of(b"{}")
    assert d.size == 2
    tagged = d.with_annotations({"org.opencontainers.image.ref.name": "v1"})
    assert tagged.ref_name == "v1"
    assert tagged.annotations["a"] == "1"
    assert d.ref_name is None
    assert d != tagged
    assert len({d, tagged, Descriptor.from_json(d.to_json())}) == 2
    assert Descriptor.from_json(tagged.to_json()) == tagged


def test_embedded_data_round_trips_as_base64():
    d = descriptor(data=b"\x00\x01binary")
    assert Descriptor.from_json(d.to_json()).data == b"\x00\x01binary"


DOCKER_CONFIG_JSON = {
    "architecture": "arm64",
    "variant": "v8",
    "os": "linux",
    "created": "2024-05-01T00:00:00Z",
    "docker_version": "20.10.24",
    "config": {
        "Hostname": "",
        "Env": ["PATH=/usr/bin", "A=1"],
        "Cmd": ["/bin/sh"],
        "Labels": {"l": "v"},
        "ExposedPorts": {"80/tcp": {}},
        "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1000000000},
        "OnBuild": None,
        "StopTimeout": 5,
    },
    "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) CMD"]},
    "rootfs": {"type": "layers", "diff_ids": [str(D1)]},
    "history": [
        {"created": "2024-05-01T00:00:00Z", "created_by": "ADD x /"},
        {"created_by": "CMD", "empty_layer": True, "x-extra": 1},
    ],
}


def test_a_parsed_config_keeps_its_bytes_until_a_field_changes():
    raw = json.dumps(DOCKER_CONFIG_JSON, indent=1).encode()
    config = ImageConfig.parse(raw)
    assert config.content() == raw
    assert config.descriptor().digest == Digest.of(raw)

    config.config.set_env("B", "2")

    assert config.content() == config.to_bytes() != raw
    assert "B=2" in json.loads(config.content())["config"]["Env"]
    assert config.digest == config.descriptor().digest == Digest.of(config.to_bytes())


def test_image_config_reads_docker_configs_and_keeps_unknown_fields():
    raw = json.dumps(DOCKER_CONFIG_JSON).encode()
    config = ImageConfig.parse(raw)
    assert config.raw == raw
    assert config.digest == Digest.of(raw)
    assert config.platform == Platform("linux", "arm64", "v8")
    assert config.config.env == ["PATH=/usr/bin", "A=1"]
    assert config.config.env_dict() == {"PATH": "/usr/bin", "A": "1"}
    assert config.config.cmd == ["/bin/sh"]
    assert config.config.entrypoint is None
    assert config.config.labels == {"l": "v"}
    assert config.config.exposed_ports == ["80/tcp"]
    assert config.config.healthcheck == {"Test": ["CMD", "true"], "Interval": 10**9}
    assert config.config.on_build == []
    assert config.diff_ids == [D1]
    history = config.history
    assert history[0].created_by == "ADD x /"
    assert history[1].empty_layer
    assert history[1].extra == {"x-extra": 1}
    written = json.loads(config.to_bytes())
    assert written == DOCKER_CONFIG_JSON


def test_image_config_edits_go_to_the_document():
    config = ImageConfig.parse(json.dumps(DOCKER_CONFIG_JSON).encode())
    child = config.copy()
    child.config.set_env("A", "2")
    child.config.set_env("B", "3")
    child.config.entrypoint = ["/init"]
    child.config.cmd = None
    child.config.user = "nobody"
    child.config.working_dir = "/srv"
    child.config.stop_signal = "SIGINT"
    child.config.shell = ["/bin/bash", "-c"]
    child.config.on_build = ["RUN true"]
    child.config.args_escaped = True
    child.config.volumes = ["/v"]
    child.config.healthcheck = None
    child.add_layer(Digest.of(b"new"), History(created_by="RUN x"))
    child.add_history(History(created_by="ENV A=2"))
    child.platform = parse_platform("linux/arm/v7")
    child.created = "2025-01-01T00:00:00Z"

    doc = json.loads(child.to_bytes())
    assert doc["config"]["Env"] == ["PATH=/usr/bin", "A=2", "B=3"]
    assert "Cmd" not in doc["config"]
    assert doc["config"]["Entrypoint"] == ["/init"]
    assert doc["config"]["StopTimeout"] == 5
    assert doc["config"]["Volumes"] == {"/v": {}}
    assert "Healthcheck" not in doc["config"]
    assert doc["rootfs"]["diff_ids"] == [str(D1), str(Digest.of(b"new"))]
    assert doc["history"][-2:] == [
        {"created_by": "RUN x"},
        {"created_by": "ENV A=2", "empty_layer": True},
    ]
    assert (doc["architecture"], doc["variant"]) == ("arm", "v7")
    assert doc["created"] == "2025-01-01T00:00:00Z"
    # the parent is untouched
    assert config.config.env == ["PATH=/usr/bin", "A=1"]
    # written keys come in the fixed order
    assert list(doc)[:5] == ["created", "architecture", "os", "variant", "config"]
    assert list(doc["config"]) == [
        "User",
        "ExposedPorts",
        "Env",
        "Entrypoint",
        "Volumes",
        "WorkingDir",
        "Labels",
        "StopSignal",
        "ArgsEscaped",
        "OnBuild",
        "Shell",
        "Hostname",
        "StopTimeout",
    ]


def test_new_config_for_scratch_is_minimal_and_deterministic():
    config = ImageConfig.new(
        parse_platform("linux/amd64"), created="1970-01-01T00:00:00Z"
    )
    assert config.to_bytes() == canonical_json(
        {
            "created": "1970-01-01T00:00:00Z",
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [],
        }
    )
    assert config.raw is None
    assert config.digest == Digest.of(config.to_bytes())
    assert config.descriptor().media_type == mt.OCI_CONFIG
    assert config.descriptor().size == len(config.to_bytes())


@pytest.mark.parametrize(
    ("document", "why"),
    [
        ({"os": "linux"}, "'architecture'"),
        ({"os": "linux", "architecture": "amd64", "config": []}, "'config'"),
        (
            {"os": "linux", "architecture": "amd64", "rootfs": {"diff_ids": ["x"]}},
            "rootfs.diff_ids",
        ),
        ({"os": "linux", "architecture": "amd64", "history": [1]}, "history[0]"),
        (
            {"os": "linux", "architecture": "amd64", "history": [{"empty_layer": 1}]},
            "empty_layer",
        ),
    ],
)
def test_bad_configs_are_refused(document, why):
    with pytest.raises(ManifestError) as caught:
        ImageConfig.parse(json.dumps(document).encode())
    assert why in str(caught.value)


def test_config_field_types_are_checked_when_read():
    config = ImageConfig.parse(
        json.dumps(
            {"os": "linux", "architecture": "amd64", "config": {"Env": "A=1"}}
        ).encode()
    )
    with pytest.raises(ManifestError, match=r"config\.Env must be a list"):
        _ = config.config.env


def test_media_type_predicates():
    assert mt.is_index(mt.OCI_INDEX)
    assert mt.is_index(mt.DOCKER_MANIFEST_LIST + "; charset=utf-8")
    assert mt.is_manifest(mt.DOCKER_MANIFEST)
    assert not mt.is_manifest(mt.OCI_INDEX)
    assert mt.is_schema1(mt.DOCKER_SCHEMA1_SIGNED)
    assert mt.is_config(mt.DOCKER_CONFIG)
    assert mt.is_layer(mt.DOCKER_LAYER_GZIP)
    assert mt.layer_compression(mt.OCI_LAYER_ZSTD) == "zstd"
    assert mt.layer_compression(mt.OCI_LAYER) == "none"
    assert mt.to_docker(mt.OCI_LAYER_GZIP) == mt.DOCKER_LAYER_GZIP
    assert mt.to_oci(mt.DOCKER_MANIFEST_LIST) == mt.OCI_INDEX
    assert mt.is_docker(mt.DOCKER_CONFIG)
    assert not mt.is_docker(mt.OCI_CONFIG)


JSON_LEAVES = st.none() | st.booleans() | st.integers(-2, 2**40) | st.text(max_size=8)
KEYS = st.sampled_from(
    [
        "schemaVersion",
        "mediaType",
        "config",
        "layers",
        "manifests",
        "digest",
        "size",
        "platform",
        "annotations",
        "urls",
        "data",
        "os",
        "architecture",
        "variant",
        "artifactType",
        "subject",
    ]
)
JSON_VALUES = st.recursive(
    JSON_LEAVES | st.sampled_from([2, str(D1), mt.OCI_MANIFEST, mt.OCI_INDEX]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=6)
    ),
    max_leaves=20,
)


@given(st.dictionaries(KEYS, JSON_VALUES, max_size=8))
def test_any_json_document_parses_or_fails_with_manifest_error(document):
    raw = json.dumps(document).encode()
    parsed, error = None, ""
    try:
        parsed = parse_manifest(raw)
    except ManifestError as exc:
        error = str(exc)
    assert parsed is not None or (error and "\n" not in error)
    assert parsed is None or parsed.raw == raw


@given(st.binary(max_size=64))
def test_any_bytes_parse_or_fail_with_manifest_error(raw):
    parsed = None
    with contextlib.suppress(ManifestError):
        parsed = parse_manifest(raw)
    assert parsed is None or parsed.raw == raw


PLATFORMS = st.builds(
    Platform,
    os=st.sampled_from(["linux", "windows", "freebsd"]),
    architecture=st.sampled_from(["amd64", "arm64", "arm", "s390x"]),
    variant=st.none() | st.sampled_from(["v6", "v7", "v8.2"]),
    os_version=st.none() | st.just("10.0.17763.1"),
    os_features=st.lists(st.sampled_from(["win32k", "x"]), max_size=2).map(tuple),
)
DESCRIPTORS = st.builds(
    Descriptor,
    media_type=st.sampled_from([mt.OCI_MANIFEST, mt.OCI_LAYER_ZSTD, "application/x"]),
    digest=st.binary(max_size=8).map(Digest.of),
    size=st.integers(0, 2**53),
    platform=st.none() | PLATFORMS,
    annotations=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    urls=st.lists(st.text(min_size=1, max_size=10), max_size=2).map(tuple),
    artifact_type=st.none() | st.just("application/y"),
    data=st.none() | st.binary(max_size=10),
)


@given(st.lists(DESCRIPTORS, max_size=4))
def test_descriptors_round_trip_through_a_built_index(descriptors):
    index = Index.build(descriptors, {"k": "v"})
    again = Index.parse(index.raw)
    assert again.manifests == tuple(descriptors)
    assert Index.build(again.manifests, {"k": "v"}).raw == index.raw
