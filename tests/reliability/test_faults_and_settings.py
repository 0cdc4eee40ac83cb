"""Faults that are not the file's (issue 12 items 1, 5, 7): a bad window setting is refused before any
file is touched, a changed window is never silently ignored, the machine's faults (full disk, I/O,
memory, a data directory that is a file) fail the step instead of quarantining recordings, and a day
whose recordings are gone is not emptied by surprise."""

import errno
import os

import dagster as dg
import pytest

from emo_assets import cli
from emo_assets.assets import all_assets
from emo_assets.checks import all_checks
from emo_assets.definitions import SETTINGS, SettingError
from emo_assets.lib.model.windows import plan_windows
from emo_assets.lib.schemas import SAMPLE_RATE
from emo_assets.lib.store import lake
from emo_assets.lib.store.accounting import account_day
from emo_assets.resources import EmotionModelResource, RayResource, StorageResource

DAY = "2026-11-20"
BAD_WINDOWS = ["0", "-1", "0.5", "1", "2", "abc", "nan", "inf"]


def _files_under(path) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)


def _run(data_dir, model_dir, *extra) -> list[str]:
    return ["run", "--date", DAY, "--data-dir", str(data_dir), "--model", str(model_dir), "--device", "cpu", *extra]


def _materialize(data_dir, model_dir, window_s=30.0, segments="turns", **kwargs):
    model = EmotionModelResource(model=str(model_dir), device="cpu", window_s=window_s, segments=segments)
    return dg.materialize(
        [*all_assets(), *all_checks],
        partition_key=DAY,
        resources={"storage": StorageResource(data_dir=str(data_dir)), "emotion_model": model, "ray": RayResource()},
        raise_on_error=False,
        **kwargs,
    )


def _quarantine_reasons(data_dir) -> list[str]:
    rows = lake.gather_rejects(data_dir / "lake", DAY)
    return rows.column("reason").to_pylist()


# --- 1. a bad window setting -------------------------------------------------------------------


@pytest.mark.parametrize("value", BAD_WINDOWS)
def test_bad_window_is_refused_by_emo_run_before_any_file(tmp_path, tiny_model_dir, rel, monkeypatch, capsys, value):
    data_dir = tmp_path / "data"
    rel.write_small_day(data_dir / "raw" / DAY, n=1)
    before = _files_under(data_dir)
    monkeypatch.setenv("EMO_WINDOW_S", value)
    assert cli.main(_run(data_dir, tiny_model_dir)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"emo: error: EMO_WINDOW_S={value!r}") and "greater than 2" in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert _files_under(data_dir) == before  # no quarantine row, no lake, no lock


@pytest.mark.parametrize("value", BAD_WINDOWS)
def test_bad_window_is_refused_for_dagster_before_any_file(tmp_path, tiny_model_dir, monkeypatch, value):
    # the launchpad's path: the environment variable, parsed when the run starts
    parse = next(s.parse for s in SETTINGS if s.env == "EMO_WINDOW_S")
    with pytest.raises(SettingError, match="EMO_WINDOW_S.*greater than 2"):
        parse("EMO_WINDOW_S", value)
    # dg.materialize's path: the resource itself refuses the window, so no step ever runs
    try:
        seconds = float(value)
    except ValueError:
        return  # a non-number never reaches the float field
    with pytest.raises(Exception, match="EMO_WINDOW_S.*greater than 2"):
        _materialize(tmp_path, tiny_model_dir, window_s=seconds)
    assert _files_under(tmp_path) == []


def test_a_changed_window_rescores_instead_of_reusing(tmp_path, tiny_model_dir, rel):
    data_dir = tmp_path / "data"
    rel.write_small_day(data_dir / "raw" / DAY, n=2, seconds=7.0)
    assert _materialize(data_dir, tiny_model_dir, window_s=30.0, segments="windows").success
    one = lake.read_partition(data_dir / "lake", "emotion_segments", DAY)
    assert one.num_rows == 2  # one window per 7 s recording

    assert _materialize(data_dir, tiny_model_dir, window_s=4.0, segments="windows").success
    segments = lake.read_partition(data_dir / "lake", "emotion_segments", DAY).to_pylist()
    planned = plan_windows(7 * SAMPLE_RATE, window_s=4.0, overlap_s=1.0)
    for audio_id in {s["audio_id"] for s in segments}:
        spans = sorted((s["start_s"], s["end_s"]) for s in segments if s["audio_id"] == audio_id)
        assert len(spans) == len(planned) > 1  # every recording of the day cut by the new window
        assert spans[-1][1] * SAMPLE_RATE == pytest.approx(planned[-1][1], abs=1)

    # and the same window again reuses what it wrote (nothing is re-scored needlessly)
    again = _materialize(data_dir, tiny_model_dir, window_s=4.0, segments="windows")
    assert again.success
    assert lake.read_partition(data_dir / "lake", "emotion_segments", DAY).to_pylist() == segments


# --- 5. the machine's faults ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [OSError(errno.ENOSPC, "No space left on device"), OSError(errno.EIO, "Input/output error"), AssertionError()],
)
def test_a_failing_flac_write_fails_the_step_and_blames_no_file(tmp_path, tiny_model_dir, rel, monkeypatch, fault):
    import soundfile

    rel.write_small_day(tmp_path / "raw" / DAY, n=2)

    def broken_write(self, data):
        raise fault

    monkeypatch.setattr(soundfile.SoundFile, "write", broken_write)
    result = _materialize(tmp_path, tiny_model_dir)
    messages = rel.step_failure_messages(result)
    assert "resampled_audio" in messages, messages
    assert "16 kHz FLAC" in messages["resampled_audio"] and "not the recording's fault" in messages["resampled_audio"]
    reasons = _quarantine_reasons(tmp_path)
    assert all("Errno" not in r and "unexpectedly" not in r for r in reasons), reasons
    assert lake.read_partition(tmp_path / "lake", "resampled_audio", DAY) is None
    assert list((tmp_path / "resampled").rglob("*.flac")) == []


@pytest.mark.parametrize("fault", [MemoryError(), OSError(errno.EIO, "Input/output error")])
def test_unreadable_flac_for_the_machine_fails_scoring_and_blames_no_file(
    tmp_path, tiny_model_dir, rel, monkeypatch, fault
):
    from emo_assets.assets import emotion

    rel.write_small_day(tmp_path / "raw" / DAY, n=2)

    def broken_reader(path):
        raise fault

    monkeypatch.setattr(emotion, "FlacReader", broken_reader)
    result = _materialize(tmp_path, tiny_model_dir)
    messages = rel.step_failure_messages(result)
    failed = [k for k in messages if k.startswith("emotion")]
    assert failed and "not the recording's fault" in messages[failed[0]], messages
    assert not [r for r in _quarantine_reasons(tmp_path) if "unreadable" in r or "inference" in r]


def test_data_dir_that_is_a_file_is_one_clear_line(tmp_path, tiny_model_dir, rel, capsys):
    data_dir = tmp_path / "data"
    data_dir.write_text("not a folder")
    assert cli.main(_run(data_dir, tiny_model_dir)) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"emo: error: EMO_DATA_DIR={data_dir} is a file, not a directory; " + (
        "point EMO_DATA_DIR (or --data-dir) at a folder"
    )
    # and a Dagster run of the same directory fails its first step with the same line
    result = _materialize(data_dir, tiny_model_dir)
    assert "is a file, not a directory" in rel.step_failure_messages(result)["audio_files"]


def test_read_only_data_dir_is_one_clear_line(tmp_path, tiny_model_dir, monkeypatch, capsys):
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)  # root ignores chmod; a mount is simulated
    assert cli.main(_run(tmp_path / "data", tiny_model_dir)) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot be written (Read-only file system [EROFS])" in err and len(err.splitlines()) == 1


def test_machine_fault_classification():
    from emo_assets.lib.files import faults

    assert faults.is_machine_fault(OSError(errno.ENOSPC, "x"))
    assert faults.is_machine_fault(MemoryError())
    assert faults.is_machine_fault(OSError(errno.EACCES, "x"))
    assert not faults.is_machine_fault(OSError(errno.EACCES, "x"), own_file=False)  # a landed file's own mode
    assert not faults.is_machine_fault(OSError(errno.ENOENT, "x"))
    assert not faults.is_machine_fault(ValueError("bad bytes"))


# --- 7. destructive by surprise ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_a_day_whose_recordings_are_gone_is_refused_unless_allowed(tmp_path, tiny_model_dir, rel, capsys, how):
    data_dir = tmp_path / "data"
    day_dir = data_dir / "raw" / DAY
    rel.write_small_day(day_dir, n=2)
    assert cli.main(_run(data_dir, tiny_model_dir)) == 0
    lake_before = rel.lake_tables(data_dir)
    for f in day_dir.iterdir():
        f.unlink()
    if how == "deleted":
        day_dir.rmdir()
    capsys.readouterr()

    assert cli.main(_run(data_dir, tiny_model_dir)) == 2
    err = capsys.readouterr().err
    assert f"{day_dir} is {'missing' if how == 'deleted' else 'empty'}" in err
    assert "would delete 2 rows of audio_files" in err and "1 rows of quarantine" in err and "--allow-empty" in err
    assert rel.lake_tables(data_dir).keys() == lake_before.keys()  # nothing deleted

    # Dagster runs: refused the same way, unless the run config says allow_empty
    refused = _materialize(data_dir, tiny_model_dir)
    assert "allow_empty" in rel.step_failure_messages(refused)["audio_files"]
    assert rel.lake_tables(data_dir).keys() == lake_before.keys()

    assert cli.main(_run(data_dir, tiny_model_dir, "--allow-empty")) == 0
    assert lake.read_partition(data_dir / "lake", "audio_files", DAY).num_rows == 0


def test_dagster_run_config_allows_an_empty_day(tmp_path, tiny_model_dir, rel):
    rel.write_small_day(tmp_path / "raw" / DAY, n=1)
    assert _materialize(tmp_path, tiny_model_dir).success
    for f in (tmp_path / "raw" / DAY).iterdir():
        f.unlink()
    allowed = _materialize(
        tmp_path, tiny_model_dir, run_config={"ops": {"audio_files": {"config": {"allow_empty": True}}}}
    )
    assert "audio_files" not in rel.step_failure_messages(allowed)
    assert lake.read_partition(tmp_path / "lake", "audio_files", DAY).num_rows == 0


def test_a_file_removed_between_stages_is_accounted_for(tmp_path, tiny_model_dir, rel, capsys):
    from emo_assets.assets.audio import audio_files

    data_dir = tmp_path / "data"
    paths = rel.write_small_day(data_dir / "raw" / DAY, n=2)
    first = _materialize(data_dir, tiny_model_dir, selection=[audio_files])
    assert first.success
    paths[0].unlink()  # removed after it landed, before it was decoded
    _materialize(data_dir, tiny_model_dir, selection=dg.AssetSelection.all() - dg.AssetSelection.assets(audio_files))
    lake_dir = data_dir / "lake"
    account = account_day(
        data_dir / "raw",
        DAY,
        lake.read_partition(lake_dir, "audio_files", DAY),
        lake.read_partition(lake_dir, "emotion_scores", DAY),
        lake.read_partition(lake_dir, "quarantine", DAY),
    )
    gone = f"{DAY}/{paths[0].name}"
    assert account.gone == (gone,)
    reasons = dict(
        zip(*lake.read_partition(lake_dir, "quarantine", DAY).select(["source_path", "reason"]).to_pydict().values())
    )
    assert reasons[gone] == "removed from the raw folder after it landed, before it was decoded"
    storage = StorageResource(data_dir=str(data_dir))

    class Model:
        model_id, is_random = "tiny", True

    cli.print_summary(storage, DAY, Model())
    out = capsys.readouterr().out
    assert f"removed from raw 1  ({gone})" in out
