"""The main job's time estimate and time left (guestio.progress), on synthetic bench data."""

import json
import logging
import time
from types import SimpleNamespace

import pytest
from snakemake_interface_logger_plugins.common import LogEvent

from guestio import progress


def bench_store(probe_s=0.1):
    """A bench with one cold default main job: kernel 10 min over 2 jobs, disk_vm 6 min over 3,
    and 2 min left over for the 4 unlisted jobs of its 9."""
    store = {"parts": {"mainjob default": {"date": "2026-12-01", "accelerator": "tcg", "rows": [
        ["main job `snakemake --cores all`, default profile, cold", "18.0 min (CPU 20 min)", "9 jobs; load 0.1"],
        ["time by rule (jobs), default profile", "", "kernel 10.0 min (2); disk_vm 6.0 min (3)"],
    ]}}}
    if probe_s is not None:
        store["cpu_probe"] = {"seconds": probe_s}
    return store


def write(tmp_path, store):
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(store))
    return path


JOBS = {1: "kernel", 2: "kernel", 3: "disk_vm", 4: "disk_vm", 5: "fig1"}


def test_costs_are_per_job_and_unlisted_rules_share_the_rest():
    costs = progress.costs_from_bench(bench_store(), "default")
    assert costs.of("kernel") == pytest.approx(300)
    assert costs.of("disk_vm") == pytest.approx(120)
    assert costs.of("fig1") == pytest.approx(30)  # (18 - 16) min over 9 - 5 jobs


def test_estimate_is_the_sum_per_stage_scaled_by_the_probe(tmp_path):
    bench = write(tmp_path, bench_store(probe_s=0.1))
    estimate = progress.estimate_for(JOBS, [], bench, measure=lambda: 0.2)  # this host: half as fast
    assert estimate.factor == pytest.approx(2.0)
    stages = estimate.by_stage()
    assert list(stages) == ["kernels", "disk VM runs", progress.OTHER_STAGE]
    assert stages["kernels"] == (pytest.approx(1200), 2)
    assert stages["disk VM runs"] == (pytest.approx(480), 2)
    assert stages[progress.OTHER_STAGE] == (pytest.approx(60), 1)
    assert estimate.total_s() == pytest.approx(1740)
    assert "~29 min for 5 jobs" in progress.start_lines(estimate)[0]


def test_no_probe_reference_means_factor_one(tmp_path):
    bench = write(tmp_path, bench_store(probe_s=None))
    estimate = progress.estimate_for(JOBS, [], bench, measure=lambda: 5.0)
    assert estimate.factor == 1.0


def test_time_left_decreases_as_jobs_finish(tmp_path):
    estimate = progress.estimate_for(JOBS, [], write(tmp_path, bench_store()), measure=lambda: 0.1)
    lefts = [estimate.left_s()]
    for job_id in JOBS:
        estimate.job_finished(job_id)
        lefts.append(estimate.left_s())
    assert lefts == sorted(lefts, reverse=True) and len(set(lefts)) == len(lefts)
    assert lefts[0] == pytest.approx(870) and lefts[-1] == 0


def test_a_slow_pace_stretches_the_time_left(tmp_path):
    estimate = progress.estimate_for(JOBS, [], write(tmp_path, bench_store()), measure=lambda: 0.1)
    estimate.job_finished(1)  # 300 s of 870 estimated, but it took 600 s
    assert estimate.left_s(now=estimate.started + 600) == pytest.approx(2 * 570)


def test_missing_bench_file_gives_no_estimate_and_no_error(tmp_path, caplog):
    assert progress.estimate_for(JOBS, [], tmp_path / "absent.json") is None
    workflow = SimpleNamespace(dag=SimpleNamespace(needrun_jobs=lambda: []), overwrite_configfiles=None)
    logger = logging.getLogger("test-progress-missing")
    with caplog.at_level(logging.INFO, logger=logger.name):
        assert progress.start(workflow, logger, bench=tmp_path / "absent.json") is None
    assert "No estimate" in caplog.text


def test_start_never_raises_and_warns_once(tmp_path, caplog):
    def broken():
        raise RuntimeError("dag gone")
    workflow = SimpleNamespace(dag=SimpleNamespace(needrun_jobs=broken), overwrite_configfiles=None)
    logger = logging.getLogger("test-progress-broken")
    with caplog.at_level(logging.INFO, logger=logger.name):
        assert progress.start(workflow, logger, bench=write(tmp_path, bench_store())) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "dag gone" in warnings[0].getMessage()


def test_handler_logs_time_left_after_snakemake_progress_records(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(progress, "probe_seconds", lambda: 0.1)
    jobs = [SimpleNamespace(jobid=i, rule=SimpleNamespace(name=r)) for i, r in JOBS.items()]
    workflow = SimpleNamespace(dag=SimpleNamespace(needrun_jobs=lambda: iter(jobs)), overwrite_configfiles=[])
    logger = logging.getLogger("test-progress-handler")
    logger.setLevel(logging.INFO)
    with caplog.at_level(logging.INFO, logger=logger.name):
        estimate = progress.start(workflow, logger, bench=write(tmp_path, bench_store()))
        assert "Estimated time of this run: ~14 min for 5 jobs" in caplog.text
        assert "kernels: ~10 min (2 jobs)" in caplog.text
        estimate.started -= 300  # job 1 took the 300 s the bench says: the pace so far is 1
        # the records Snakemake's scheduler logs when a job ends
        logger.info("Finished jobid: 1 (Rule: kernel)", extra=dict(event=LogEvent.JOB_FINISHED, job_id=1))
        logger.info(None, extra=dict(event=LogEvent.PROGRESS, done=1, total=5))
    handlers = [h for h in logger.handlers if isinstance(h, progress.ProgressHandler)]
    for h in handlers:
        logger.removeHandler(h)
    assert estimate.finished == {1}
    messages = [r.getMessage() for r in caplog.records]
    assert messages.index("Time left: ~10 min (estimate)") > messages.index("Finished jobid: 1 (Rule: kernel)")


def test_profile_follows_the_configfile():
    store = bench_store()
    store["parts"]["mainjob quick"] = store["parts"]["mainjob default"]
    assert progress.profile_of(["config/quick.yaml"], store) == "quick"
    assert progress.profile_of(["my-ccache.yaml"], store) == "default"


def test_ninja_steps_is_the_last_step_line(tmp_path):
    log_path = tmp_path / "build.log"
    log_path.write_text("$ ninja -j2 qemu-system-x86_64\n[1/2345] Compiling C object a.o\n[12/2345] Linking b\n")
    assert progress.ninja_steps(log_path) == "12/2345"
    assert progress.ninja_steps(tmp_path / "absent.log") == "0"


def test_heartbeat_writes_to_log_and_stderr(tmp_path, capsys):
    log_path = tmp_path / "build.log"
    log_path.write_text("  CC      kernel/fork.o\n  LD      vmlinux\n  CC      mm/slab.o\n")
    with open(tmp_path / "out.log", "w") as out:
        with progress.heartbeat(lambda: f"kernel baseline: {progress.compiled_objects(log_path)} objects compiled",
                                out, every_s=0.05):
            time.sleep(0.2)
    assert "kernel baseline: 2 objects compiled" in (tmp_path / "out.log").read_text()
    assert "kernel baseline: 2 objects compiled" in capsys.readouterr().err


def test_time_left_follows_snakemakes_steps_line_with_its_own_formatter(tmp_path, monkeypatch):
    """As Snakemake prints it: its formatter on a handler added before ours, as its stream handler is."""
    import io
    from snakemake.logging import DefaultFormatter

    monkeypatch.setattr(progress, "probe_seconds", lambda: 0.1)
    logger = logging.getLogger("test-progress-snakemake-format")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    out = io.StringIO()
    terminal = logging.StreamHandler(out)
    terminal.setFormatter(DefaultFormatter())
    logger.addHandler(terminal)
    jobs = [SimpleNamespace(jobid=i, rule=SimpleNamespace(name=r)) for i, r in JOBS.items()]
    workflow = SimpleNamespace(dag=SimpleNamespace(needrun_jobs=lambda: iter(jobs)), overwrite_configfiles=[])
    try:
        estimate = progress.start(workflow, logger, bench=write(tmp_path, bench_store()))
        estimate.started -= 300  # job 1 took the 300 s the bench says: the pace so far is 1
        logger.info("Finished jobid: 1 (Rule: kernel)", extra=dict(event=LogEvent.JOB_FINISHED, job_id=1))
        logger.info(None, extra=dict(event=LogEvent.PROGRESS, done=1, total=5))
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    steps = next(i for i, line in enumerate(lines) if "1 of 5 steps (20%) done" in line)
    assert lines[steps + 1] == "Time left: ~10 min (estimate)"
    assert lines[0].startswith("Estimated time of this run: ~14 min for 5 jobs")
