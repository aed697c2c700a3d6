"""The task's environment read as oci-build-task reads it: unknown names are
environment, files of build args and labels never fail on what upstream accepts."""

import logging

import pytest

from platforge.concourse.task import parse_env
from platforge.errors import ConcourseError


def env_for(tmp_path, **params):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    return parse_env(dict(params), tmp_path)


@pytest.mark.parametrize(
    "name", ["IMAGE_TAG", "IMAGE_NAME", "TARGETARCH", "TARGETPLATFORM", "PYTHONPATH"]
)
def test_environment_that_is_no_parameter_is_ignored(tmp_path, name):
    config = env_for(tmp_path, **{name: "x"})
    assert config.build_args == {}


def test_buildkit_extra_config_is_ignored_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="platforge.concourse.task"):
        env_for(tmp_path, BUILDKIT_EXTRA_CONFIG="[worker.oci]\n")
    assert "BUILDKIT_EXTRA_CONFIG is ignored" in caplog.text


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("OUTPUT_OCX", "OUTPUT_OCI"),
        ("BUILD_ARGS_VERSION", "BUILD_ARG_"),
        ("DOCKER_FILE", "DOCKERFILE"),
    ],
)
def test_a_near_miss_of_a_parameter_still_fails_naming_both(tmp_path, name, meant):
    with pytest.raises(ConcourseError) as caught:
        env_for(tmp_path, **{name: "x"})
    assert name in str(caught.value)
    assert meant in str(caught.value)


def test_build_args_file_skips_comments_and_reads_bare_names_from_the_environment(
    tmp_path,
):
    (tmp_path / "args").write_text("# build args for CI\nA=1\nB\nC\n")
    config = env_for(tmp_path, BUILD_ARGS_FILE="args", B="from-env")
    assert config.build_args == {"A": "1", "B": "from-env"}


def test_the_files_win_over_build_arg_and_label_params(tmp_path):
    (tmp_path / "args").write_text("A=from-file\n")
    (tmp_path / "labels").write_text("l=from-file\n")
    config = env_for(
        tmp_path,
        BUILD_ARGS_FILE="args",
        BUILD_ARG_A="from-env",
        BUILD_ARG_Z="env-only",
        LABELS_FILE="labels",
        LABEL_l="from-env",
    )
    assert config.build_args == {"A": "from-file", "Z": "env-only"}
    assert config.labels == {"l": "from-file"}


@pytest.mark.parametrize(
    "text",
    ['{"A": 1.10, "B": true, "C": "010"}', "A: 1.10\nB: true\nC: 010\n"],
)
def test_yaml_and_json_values_are_taken_as_written(tmp_path, text):
    (tmp_path / "args").write_text(text)
    config = env_for(tmp_path, BUILD_ARGS_FILE="args")
    assert config.build_args == {"A": "1.10", "B": "true", "C": "010"}


def test_a_yaml_value_that_is_a_list_is_refused_naming_the_parameter(tmp_path):
    (tmp_path / "args").write_text("A: [1, 2]\n")
    with pytest.raises(ConcourseError, match="BUILD_ARGS_FILE"):
        env_for(tmp_path, BUILD_ARGS_FILE="args")
