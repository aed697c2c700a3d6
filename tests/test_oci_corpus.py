"""Real manifests from containers/image, and the image-spec JSON schemas.

The corpus lives beside the repository (../shared/corpus) and is never copied in.
"""

import json
from pathlib import Path

import jsonschema
import pytest
import referencing
from referencing.jsonschema import DRAFT4

from platforge.errors import ManifestError
from platforge.oci import mediatypes as mt
from platforge.oci.content import (
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    canonical_json,
    parse_manifest,
)
from platforge.oci.digest import Digest
from platforge.platforms import parse as parse_platform

CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpus"
FIXTURES = CORPUS / "containers-image" / "manifest" / "fixtures"
SCHEMAS = CORPUS / "image-spec" / "schema"

needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason=f"manifest corpus not found at {FIXTURES}"
)
needs_schemas = pytest.mark.skipif(
    not SCHEMAS.is_dir(), reason=f"image-spec schemas not found at {SCHEMAS}"
)

# How each fixture must come out. Files whose whole content is a relative path
# ("../../internal/manifest/testdata/…") are symbolic links in the upstream tree
# whose targets are not part of the corpus; they are not JSON and must be refused
# as such.
SCHEMA1 = {"v2s1.everything.json"}
EXPECTED_MEDIA_TYPE = {
    "ociv1.encrypted.manifest.json": mt.OCI_MANIFEST,
    "ociv1.everything.json": mt.OCI_MANIFEST,
    # no top-level mediaType, a layer of unknown compression: parsed, and the layer
    # type is reported as unknown (pullers refuse it when unpacking)
    "ociv1.invalid.mediatype.manifest.json": mt.OCI_MANIFEST,
    "ociv1.nondistributable.gzip.manifest.json": mt.OCI_MANIFEST,
    "ociv1.nondistributable.manifest.json": mt.OCI_MANIFEST,
    "ociv1.nondistributable.zstd.manifest.json": mt.OCI_MANIFEST,
    "ociv1.uncompressed.manifest.json": mt.OCI_MANIFEST,
    "ociv1.zstd.manifest.json": mt.OCI_MANIFEST,
    "v2s2.everything.json": mt.DOCKER_MANIFEST,
    "v2s2.nondistributable.gzip.manifest.json": mt.DOCKER_MANIFEST,
    "v2s2.nondistributable.manifest.json": mt.DOCKER_MANIFEST,
    "v2s2.uncompressed.manifest.json": mt.DOCKER_MANIFEST,
}


def _is_link_placeholder(raw: bytes) -> bool:
    return raw.startswith(b"../") and b"\n" not in raw.strip()


@needs_fixtures
def test_every_manifest_fixture_is_handled():
    files = sorted(p for p in FIXTURES.iterdir() if p.is_file())
    assert len(files) >= 20
    handled = parsed = refused = 0
    for path in files:
        raw = path.read_bytes()
        name = path.name
        if name in SCHEMA1:
            with pytest.raises(ManifestError, match=r"schema 1 manifest.*unsupported"):
                parse_manifest(raw)
            refused += 1
        elif _is_link_placeholder(raw):
            with pytest.raises(ManifestError, match="is not JSON"):
                parse_manifest(raw)
            refused += 1
        else:
            doc = parse_manifest(raw)
            assert doc.media_type == EXPECTED_MEDIA_TYPE[name], name
            assert doc.raw == raw
            assert doc.digest == Digest.of(raw)
            parsed += 1
        handled += 1
    print(
        f"manifest corpus: {handled}/{len(files)} handled "
        f"({parsed} parsed, {refused} refused with a clear error)"
    )
    assert handled == len(files)
    assert parsed == len(EXPECTED_MEDIA_TYPE)


@needs_fixtures
def test_everything_fixture_keeps_every_field():
    raw = (FIXTURES / "ociv1.everything.json").read_bytes()
    m = parse_manifest(raw)
    assert isinstance(m, Manifest)
    assert m.artifact_type == "application/our-artifact"
    assert m.config.media_type == "application/our-artifact-config"
    assert m.config.urls == ("https://some.example/config",)
    assert m.config.annotations == {"config": "1"}
    assert m.config.data == b"a"
    assert m.layers[0].data == b"bc"
    assert m.subject is not None
    assert m.subject.artifact_type == "application/our-subject"
    platform = m.subject.platform
    assert platform is not None
    assert (platform.architecture, platform.os, platform.variant) == ("a", "b", "e")
    assert (platform.os_version, platform.os_features) == ("c", ("d",))
    assert m.annotations == {"top": "0"}
    # re-serialising the descriptors gives back the same objects
    original = json.loads(raw)
    assert m.subject.to_json() == original["subject"]
    assert m.config.to_json() == original["config"]
    assert [d.to_json() for d in m.layers] == original["layers"]


@needs_fixtures
def test_unknown_layer_compression_is_reported_not_guessed():
    raw = (FIXTURES / "ociv1.invalid.mediatype.manifest.json").read_bytes()
    m = Manifest.parse(raw)
    assert mt.layer_compression(m.layers[0].media_type) is None
    assert mt.layer_compression(m.layers[1].media_type) == "gzip"


@needs_fixtures
def test_nondistributable_layers_are_recognised():
    for name in (
        "ociv1.nondistributable.gzip.manifest.json",
        "v2s2.nondistributable.gzip.manifest.json",
    ):
        m = Manifest.parse((FIXTURES / name).read_bytes())
        assert all(mt.is_nondistributable(d.media_type) for d in m.layers)
        assert mt.layer_compression(m.layers[0].media_type) == "gzip"


def _schema_validator(name):
    def retrieve(uri):
        # every schema refers to its siblings by file name; ids are URLs that
        # are never fetched
        local = SCHEMAS / uri.rstrip("/").rsplit("/", 1)[-1]
        if not local.suffix:
            local = local.with_suffix(".json")
        return DRAFT4.create_resource(json.loads(local.read_text()))

    registry = referencing.Registry(retrieve=retrieve)
    schema = json.loads((SCHEMAS / name).read_text())
    return jsonschema.Draft4Validator(
        schema, registry=registry, format_checker=jsonschema.FormatChecker()
    )


def _sample_config():
    config = ImageConfig.new(
        parse_platform("linux/arm/v7"), created="2024-01-02T03:04:05Z"
    )
    config.config.env = ["PATH=/usr/bin:/bin"]
    config.config.cmd = ["sh"]
    config.config.labels = {"a": "b"}
    config.config.exposed_ports = ["80/tcp"]
    config.config.volumes = ["/data"]
    config.config.working_dir = "/work"
    config.config.user = "1000:1000"
    config.config.stop_signal = "SIGTERM"
    config.diff_ids = [Digest.of(b"layer")]
    return config


def _sample_manifest():
    config = _sample_config()
    layer = Descriptor(
        media_type=mt.OCI_LAYER_GZIP, digest=Digest.of(b"gz"), size=2
    ).with_annotations({"org.opencontainers.image.title": "l1"})
    return Manifest.build(
        config.descriptor(),
        [layer],
        {"org.opencontainers.image.created": "2024-01-02T03:04:05Z"},
    )


@needs_schemas
def test_built_manifest_validates_against_the_image_spec_schema():
    validator = _schema_validator("image-manifest-schema.json")
    m = _sample_manifest()
    validator.validate(json.loads(m.raw))
    subject = m.descriptor()
    # an artifact with no content of its own carries the empty blob as its layer
    empty = Descriptor.of(b"{}", mt.OCI_EMPTY)
    artifact = Manifest.build(
        empty,
        [empty],
        subject=subject,
        artifact_type="application/example",
    )
    validator.validate(json.loads(artifact.raw))


@needs_schemas
def test_schema_check_is_able_to_fail():
    validator = _schema_validator("image-manifest-schema.json")
    bad = json.loads(_sample_manifest().raw)
    bad["config"]["digest"] = "sha256 without colon"
    assert list(validator.iter_errors(bad))


@needs_schemas
def test_built_index_validates_against_the_image_spec_schema():
    validator = _schema_validator("image-index-schema.json")
    m = _sample_manifest()
    index = Index.build(
        [
            m.descriptor(parse_platform("linux/arm/v7")),
            m.descriptor(parse_platform("windows(10.0.17763)/amd64"), {"x": "y"}),
        ],
        {"org.opencontainers.image.ref.name": "v1"},
    )
    validator.validate(json.loads(index.raw))


@needs_schemas
def test_built_config_validates_against_the_image_spec_schema():
    validator = _schema_validator("config-schema.json")
    validator.validate(json.loads(_sample_config().to_bytes()))


@needs_schemas
def test_descriptor_validates_against_the_image_spec_schema():
    validator = _schema_validator("content-descriptor.json")
    d = Descriptor.of(b"{}", mt.OCI_EMPTY).with_annotations({"k": "v"})
    validator.validate(d.to_json())
    validator.validate(json.loads(canonical_json(d.to_json())))
