"""The `emo` command end to end, in a temporary data directory."""

import subprocess
import sys

import duckdb

from emo_assets.cli import main
from emo_assets.lib.audio.sample_day import NO_SPEECH_SAMPLE, SAMPLE_DAY, SPOKEN
from emo_assets.lib.schemas import NO_SPEECH


def test_demo_runs_a_sample_day_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["demo", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "RANDOM weights" in out and "meaningless" in out
    assert "sentences spoken by espeak-ng" in out
    assert f"processed        {len(SPOKEN)}" in out
    assert "quarantined      2" in out  # the broken upload, and the line with no speech
    assert "unaccounted      0" in out
    assert "SELECT * FROM daily_emotion_summary" in out
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    models = con.execute("SELECT DISTINCT model_id FROM emotion_scores").fetchall()
    summary_files = con.execute("SELECT files FROM daily_emotion_summary").fetchall()
    sides = con.execute("SELECT channel, count(*) FROM emotion_scores GROUP BY ALL ORDER BY ALL").fetchall()
    turns = con.execute("SELECT count(*) FROM emotion_segments WHERE speech_share IS NULL").fetchone()
    no_speech = con.execute("SELECT source_path, reason FROM quarantine WHERE reason = ?", [NO_SPEECH]).fetchall()
    con.close()
    assert models == [("random-tiny-seed0",)]
    assert summary_files == [(len(SPOKEN),)]  # a two-channel call counts once
    calls = sum(rec.speech == "call" for rec in SAMPLE_DAY)
    assert calls >= 2 and sides == [("agent", calls), ("customer", calls), ("mono", len(SPOKEN) - calls)]
    assert turns == (0,)  # every segment is a speech turn (the default), none a fixed window
    assert [p.split("/", 1)[1] for p, _ in no_speech] == [NO_SPEECH_SAMPLE]
    # the run is recorded in the data directory's Dagster instance, for `make ui`
    assert any((tmp_path / "dagster_home").iterdir())


def test_run_refuses_an_invalid_date_without_creating_anything(tmp_path, capsys):
    assert main(["run", "--date", "2026-13-45", "--data-dir", str(tmp_path)]) == 2
    assert "invalid date '2026-13-45'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_run_with_a_missing_model_directory_says_what_to_do(tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    code = main(["run", "--date", "2026-11-20", "--data-dir", str(tmp_path / "data"), "--model", str(missing)])
    err = capsys.readouterr().err
    assert code == 2
    assert "EMO_MODEL" in err
    assert not (tmp_path / "data" / "lake").exists()


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "emo_assets.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("run", "demo", "make-test-model"):
        assert command in out.stdout


def test_run_with_a_bad_setting_names_the_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EMO_WINDOW_S", "long")
    assert main(["run", "--date", "2026-11-20", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emo: error: EMO_WINDOW_S='long'") and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_failed_run_says_failed_first_with_the_step_and_the_reason(tmp_path, tiny_model_dir, capsys, monkeypatch):
    """The warehouse held by another process: the first warehouse step fails; the summary says so
    before any count, names the step and the holder, and the exit code is non-zero."""
    import re

    from emo_assets.lib.store import warehouse
    from tests.helpers import DAY, write_small_day

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setattr(warehouse, "WRITE_WAIT_S", 1.0)
    write_small_day(tmp_path / "raw" / DAY)
    duckdb.connect(str(tmp_path / "warehouse.duckdb")).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.read()",
            str(tmp_path / "warehouse.duckdb"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        code = main(
            ["run", "--date", DAY, "--data-dir", str(tmp_path), "--model", str(tiny_model_dir), "--device", "cpu"]
        )
    finally:
        holder.communicate("")
    out, err = capsys.readouterr()
    assert code == 1
    summary = out[out.rindex("\n\nFAILED") + 2 :].splitlines()
    first = summary[0]
    assert re.match(r"FAILED step \w+: .*warehouse\.duckdb is held by another process", first), first
    assert f"PID {holder.pid}" in first and "warehouse_read.duckdb" in first and "read-only mode" not in first
    header = next(line for line in summary if line.startswith("Summary for"))
    assert "FAILED" in header
    assert summary.index(header) > 0  # the failure comes before the counts
    assert "FAILED at step" in err


def test_the_readme_usage_of_emo_run_lists_every_option(capsys):
    """The README's `emo run` usage line names every option `emo run --help` has."""
    import re

    import pytest

    from tests.helpers import REPO

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    options = set(re.findall(r"--[a-z][a-z-]+", capsys.readouterr().out)) - {"--help"}
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    usage = readme[readme.index("## Command line") :]
    usage = usage[: usage.index("emo demo")]
    assert "--segments" in options and "[--segments turns|windows]" in usage
    assert options == set(re.findall(r"--[a-z][a-z-]+", usage))
