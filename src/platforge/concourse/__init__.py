"""platforge in Concourse CI: a resource type and a build task, drop-in replacements.

Pipelines keep their configuration: the resource reads the ``registry-image``
resource's ``source`` and ``params``, the task reads ``oci-build-task``'s
environment. The modules, in the order a step uses them:

========================  =========================================================
:mod:`.protocol`          the JSON request on stdin and the answer on stdout
:mod:`.source`            ``source`` and get/put ``params``, validated strictly
:mod:`.remote`            the registry behind a source: mirror, ECR, retry notices
:mod:`.check`             versions of a repository: tag, semver and regex modes
:mod:`.semver`            tags as versions, variants, constraints, alias tags
:mod:`.get`               ``in``: rootfs, OCI archive or OCI layout of a version
:mod:`.put`               ``out``: layouts and tarballs pushed, then tagged
:mod:`.resource`          the three scripts (``platforge resource check|in|out``)
:mod:`.task`              ``platforge task build`` from oci-build-task's params
========================  =========================================================
"""
