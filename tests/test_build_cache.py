"""The layer cache and reproducible output.

A second build of an unchanged context runs no step; changing one file reruns
the steps from the one that reads it; ``--no-cache`` runs everything. With the
same inputs and SOURCE_DATE_EPOCH, two builds on two clean stores give the
same digests, RUN layers included.
"""

import pytest

from test_build_support import build_image, push_busybox_base

pytestmark = pytest.mark.registry


def _ran(events):
    return sum(1 for e in events if e.kind == "done")


def _cached(events):
    return sum(1 for e in events if e.kind == "cached")


def _context(tmp_path, base):
    ctx = tmp_path / "ctx"
    (ctx / "app").mkdir(parents=True)
    (ctx / "app" / "main.sh").write_text("echo main\n")
    (ctx / "README").write_text("readme\n")
    (ctx / "Dockerfile").write_text(
        f"FROM {base}\n"
        "COPY README /doc/README\n"
        "COPY app/ /app/\n"
        "RUN ls /app > /app.list\n"
        'CMD ["sh", "/app/main.sh"]\n'
    )
    return ctx


@pytest.mark.privileged
def test_second_build_runs_no_step_and_changes_rerun_from_the_changed_copy(
    tmp_path, tmp_store, registry_plain, busybox
):
    ctx = _context(tmp_path, push_busybox_base(busybox, registry_plain.host))

    first, events = build_image(ctx)
    assert _cached(events) == 0

    again, events = build_image(ctx)
    assert again.digest == first.digest
    assert _cached(events) == 3  # COPY, COPY, RUN; CMD only edits the config

    (ctx / "app" / "main.sh").write_text("echo changed\n")
    changed, events = build_image(ctx)
    assert changed.digest != first.digest
    assert _cached(events) == 1  # only COPY README

    _, events = build_image(ctx, no_cache=True)
    assert _cached(events) == 0


@pytest.mark.privileged
@pytest.mark.usefixtures("require_qemu")
def test_same_inputs_and_source_date_epoch_give_identical_digests(
    tmp_path, registry_plain, busybox
):
    ctx = _context(tmp_path, push_busybox_base(busybox, registry_plain.host))
    results = []
    for name in ("store-a", "store-b"):
        result, _ = build_image(
            ctx,
            platforms_text="linux/amd64,linux/arm64",
            store=tmp_path / name,
            build_args={"SOURCE_DATE_EPOCH": "1700000000"},
        )
        results.append(result)
    a, b = results
    assert a.digest == b.digest
    assert {p: d.digest for p, d in a.manifests.items()} == {
        p: d.digest for p, d in b.manifests.items()
    }
