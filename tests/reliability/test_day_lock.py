"""The day lock and lease (emo_assets/lib/store/day_lock.py): one run per day, across processes."""

import signal
import subprocess
import sys
import textwrap

import pytest

from emo_assets.lib.store import day_lock

DAY = "2026-11-20"

HOLDER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from emo_assets.lib.store import day_lock
    locks, day = Path(sys.argv[1]), sys.argv[2]
    with day_lock.hold_day(locks, day, holder="emo run --date " + day):
        day_lock.claim_day(locks, day, "run-in-child", holder="dagster run run-in-child", is_active=lambda r: True)
        print("holding", flush=True)
        if sys.stdin.readline().strip() == "die":
            os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _holding_child(rel, locks):
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(locks), DAY],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=rel.emo_env(),
    )
    assert child.stdout.readline().strip() == "holding", child.stderr.read()
    return child


def test_lock_is_reentrant_in_its_process(tmp_path):
    with day_lock.hold_day(tmp_path, DAY, holder="outer"):
        assert day_lock.holds_day(tmp_path, DAY)
        with day_lock.hold_day(tmp_path, DAY, holder="inner"):
            pass
        assert day_lock.holds_day(tmp_path, DAY)
    assert not day_lock.holds_day(tmp_path, DAY)


def test_other_process_is_refused_while_held_and_served_after(tmp_path, rel):
    child = _holding_child(rel, tmp_path)
    try:
        with pytest.raises(day_lock.DayLockedError, match=f"day {DAY} is being processed by emo run --date {DAY}"):
            with day_lock.hold_day(tmp_path, DAY, holder="second"):
                pass
    finally:
        child.communicate("done\n", timeout=30)
    with day_lock.hold_day(tmp_path, DAY, holder="second"):  # released when the holder ended
        pass


def test_a_second_run_of_a_held_day_is_refused_by_emo_run_and_by_dagster(tmp_path, tiny_model_dir, rel, capsys):
    """While another process runs the day: `emo run` exits 3 naming it; a Dagster run fails at
    audio_files with the same words and nothing downstream runs; nothing reaches the lake."""
    from emo_assets import cli

    rel.write_small_day(tmp_path / "raw" / DAY)
    child = _holding_child(rel, tmp_path / "locks")
    try:
        capsys.readouterr()
        assert cli.run_day(DAY, data_dir=str(tmp_path), model=str(tiny_model_dir), device="cpu") == 3
        assert f"day {DAY} is being processed by emo run --date {DAY}" in capsys.readouterr().err
        refused = rel.materialize(tmp_path, tiny_model_dir, day=DAY)
        assert rel.failed_steps(refused) == ["audio_files"]
        assert f"is being processed by emo run --date {DAY}" in rel.step_failure_messages(refused)["audio_files"]
        assert not any(e.is_step_success for e in refused.all_events)
    finally:
        child.communicate("done\n", timeout=30)
    assert not list((tmp_path / "lake").rglob("*.parquet"))


def test_a_run_that_starts_down_the_graph_claims_the_day_too(tmp_path, tiny_model_dir, rel):
    """Assets picked in the UI without audio_files, or a retry from the failed step (Dagster's default
    for runs of assets picked in the UI): the run's first step claims the day, whichever step it is."""
    rel.write_small_day(tmp_path / "raw" / DAY)
    assert rel.materialize(tmp_path, tiny_model_dir).success
    scoring = ["emotion_scores", "emotion_embeddings", "emotion_segments", "quarantine"]
    locks = tmp_path / "locks"
    child = _holding_child(rel, locks)
    try:
        refused = rel.materialize(tmp_path, tiny_model_dir, selection=scoring)
        assert rel.failed_steps(refused) == ["emotion_tables"]
        assert f"is being processed by emo run --date {DAY}" in rel.step_failure_messages(refused)["emotion_tables"]
    finally:
        child.communicate("done\n", timeout=30)
    # The day's lease still names a run that died (the child's): the next run of the scoring steps takes it over.
    assert day_lock.read_lease(locks, DAY)["run_id"] == "run-in-child"
    again = rel.materialize(tmp_path, tiny_model_dir, selection=scoring)
    assert again.success and rel.failed_steps(again) == []
    assert day_lock.read_lease(locks, DAY)["run_id"] == again.run_id


def test_sigkilled_holder_frees_the_day_and_its_lease(tmp_path, rel):
    child = _holding_child(rel, tmp_path)
    child.communicate("die\n", timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert day_lock.read_lease(tmp_path, DAY)["whole_run_lock"] is True
    # The dead run still looks active to Dagster (its status was never updated): the free lock says otherwise.
    day_lock.claim_day(tmp_path, DAY, "next-run", holder="dagster run next-run", is_active=lambda run_id: True)
    assert day_lock.read_lease(tmp_path, DAY)["run_id"] == "next-run"


def test_lease_refuses_a_second_run_while_the_first_is_active(tmp_path):
    active = {"first"}
    day_lock.claim_day(tmp_path, DAY, "first", holder="dagster run first", is_active=active.__contains__)
    day_lock.claim_day(
        tmp_path, DAY, "first", holder="dagster run first", is_active=active.__contains__
    )  # itself: fine
    with pytest.raises(day_lock.DayLockedError, match="is being processed by run first"):
        day_lock.claim_day(tmp_path, DAY, "second", holder="dagster run second", is_active=active.__contains__)
    active.clear()  # the first run finished
    day_lock.claim_day(tmp_path, DAY, "second", holder="dagster run second", is_active=active.__contains__)
    assert day_lock.read_lease(tmp_path, DAY)["run_id"] == "second"
