"""Parameterizing and clustering error lines (drain3), and the miner's state
kept in the database across restarts."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from triage import persistence, services
from triage.mining import ErrorTemplateMiner, parameterize
from triage.models import AttemptClassification, ErrorClass, TemplateMinerState


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("open failed for run 1234 subrun 5 event 77",
         "open failed for run <ID> subrun <ID> event <ID>"),
        ("at 2025-03-01T10:00:02.123Z on 10.1.2.3:1094", "at <DATE> on <IP>"),
        ("file /pnfs/dune/tape/raw/np04_raw_run5758_0001.root", "file <PATH>"),
        ("host fndca1.fnal.gov refused", "host <HOST> refused"),
        ("id 3f2b9c1e-8a7d-4e2f-9b1c-0d9e8f7a6b5c gone", "id <UUID> gone"),
        ("ptr 0x7ffd5e8c and digest deadbeef01", "ptr <HEX> and digest <HEX>"),
        ("used 2048 MB of 1.5 GB in 12.5 s", "used <NUM> of <NUM> in <NUM>"),
        ("url root://eospublic.cern.ch//eos/x.root down", "url <URL> down"),
        ("nodes 1, 2, 3, 4 failed", "nodes <NUM> failed"),
    ],
)  # fmt: skip
def test_it_parameterizes_variable_parts(line, expected):
    assert parameterize(line) == expected


def test_it_does_not_split_a_class_on_numbers_paths_or_hosts():
    miner = ErrorTemplateMiner()
    lines = [
        f"ERROR: failed to read {n} bytes from /pnfs/dune/file_{n}.root on dcache{n % 7}.fnal.gov"
        for n in range(1, 60)
    ]
    ids = {miner.add_line(line).class_id for line in lines}
    assert len(ids) == 1


def test_it_does_not_merge_different_messages():
    miner = ErrorTemplateMiner()
    a = miner.add_line("ERROR: cannot open input file /data/run_12.root")
    b = miner.add_line("ERROR: cannot read input file /data/run_13.root")
    c = miner.add_line("Geometry service unreachable after 3 retries")
    assert len({a.class_id, b.class_id, c.class_id}) == 3


def test_it_merges_sibling_clusters_that_differ_by_a_variable_word():
    miner = ErrorTemplateMiner()
    users = ["alice", "bob", "carol", "dave"]
    results = [miner.add_line(f"Permission denied for user {u} on the output area") for u in users]
    # The third distinct word shows it is a variable: the classes merge.
    assert len({miner.drain.class_id(r.cluster_id) for r in results}) == 1
    assert results[2].merged  # the merge is reported to the caller


def test_it_turns_5000_identical_shape_failures_into_one_class(ended_attempt, experiment):
    # The first and last go through the whole classify path; the 4,998 in
    # between through the same database-backed miner (a full attempt each
    # would only add minutes of fixture writes).
    first = ended_attempt(
        log="event 1\nERROR: pedestal file pedestals_run0.db is corrupt (crc 0x0)\n"
    )
    services.attempt_classify(attempt_id=first.pk)
    for n in range(1, 4999):
        persistence.cluster_line(
            experiment_id=experiment.pk,
            line=f"ERROR: pedestal file pedestals_run{n}.db is corrupt (crc 0x{n:x})",
        )
    last = ended_attempt(
        log="event 9\nERROR: pedestal file pedestals_run99999.db is corrupt (crc 0xbeef)\n"
    )
    row = services.attempt_classify(attempt_id=last.pk)
    assert ErrorClass.objects.filter(experiment=experiment, source="cluster").count() == 1
    assert row.error_class.times_seen == 2
    state = persistence.miner_load(experiment_id=experiment.pk)
    assert len(state.drain.clusters) == 1
    assert AttemptClassification.objects.filter(error_class=row.error_class).count() == 2


def test_it_classifies_many_attempts_of_one_shape_into_one_class(ended_attempt, experiment):
    rows = [
        services.attempt_classify(
            attempt_id=ended_attempt(
                log=f"ERROR: job {n} lost heartbeat with server 10.0.{n % 250}.{n % 17}\n"
            ).pk
        )
        for n in range(200)
    ]
    assert len({r.error_class_id for r in rows}) == 1
    error_class = ErrorClass.objects.get(pk=rows[0].error_class_id)
    assert error_class.times_seen == 200


def test_it_does_not_write_the_state_when_a_line_joins_a_known_cluster(experiment):
    persistence.cluster_line(experiment_id=experiment.pk, line="ERROR: bad thing 1 happened")
    version = TemplateMinerState.objects.get(experiment=experiment).version
    with CaptureQueriesContext(connection) as queries:
        persistence.cluster_line(experiment_id=experiment.pk, line="ERROR: bad thing 2 happened")
    assert TemplateMinerState.objects.get(experiment=experiment).version == version
    assert not any(q["sql"].lstrip().upper().startswith("UPDATE") for q in queries.captured_queries)


def test_it_keeps_clusters_across_a_restart(experiment, other_experiment):
    before = persistence.cluster_line(
        experiment_id=experiment.pk, line="ERROR: DAQ fragment 17 missing in run 5000"
    )
    persistence.forget_cached_miners()  # a new process
    reloaded = persistence.miner_load(experiment_id=experiment.pk)
    assert reloaded.drain.clusters_counter == before.cluster_id
    after = reloaded.add_line("ERROR: DAQ fragment 3 missing in run 5071")
    assert after.class_id == before.class_id
    # The live path reloads from the database too, and other experiments are separate.
    again = persistence.cluster_line(
        experiment_id=experiment.pk, line="ERROR: DAQ fragment 99 missing in run 6000"
    )
    assert again.class_id == before.class_id
    elsewhere = persistence.cluster_line(
        experiment_id=other_experiment.pk, line="ERROR: DAQ fragment 99 missing in run 6000"
    )
    assert TemplateMinerState.objects.filter(experiment=other_experiment).exists()
    assert elsewhere.template == again.template


def test_it_reloads_when_another_process_saved_a_newer_state(experiment):
    persistence.cluster_line(experiment_id=experiment.pk, line="ERROR: alpha 1 broke")
    # Another process adds a new cluster and saves it.
    other = persistence.miner_load(experiment_id=experiment.pk)
    added = other.add_line("totally different failure in module Beta")
    assert TemplateMinerState.objects.get(experiment=experiment).version == 2
    # This process notices the newer version instead of overwriting it.
    seen = persistence.cluster_line(
        experiment_id=experiment.pk, line="totally different failure in module Beta"
    )
    assert seen.class_id == added.class_id


def test_it_merges_the_error_classes_of_merged_clusters(ended_attempt, experiment):
    rows = [
        services.attempt_classify(
            attempt_id=ended_attempt(log=f"ERROR: permission denied for user {u} on scratch\n").pk
        )
        for u in ("alice", "bob", "carol", "dave")
    ]
    live = ErrorClass.objects.filter(experiment=experiment, merged_into__isnull=True)
    assert live.count() == 1
    survivor = live.get()
    assert survivor.times_seen == 4
    assert AttemptClassification.objects.filter(error_class=survivor).count() == 4
    merged = ErrorClass.objects.get(pk=rows[1].error_class_id)
    assert merged.merged_into_id == survivor.pk
