"""`emo sql` and every query of the README, run the documented way on a real day's warehouse."""

from __future__ import annotations

import re
import subprocess
import sys

import duckdb
import pytest

from emo_assets.cli import main
from tests.helpers import REPO, emo_env

README = (REPO / "README.md").read_text(encoding="utf-8")
SQL_BLOCKS = re.findall(r"```sql\n(.*?)```", README, flags=re.S)
PYTHON_BLOCKS = [b for b in re.findall(r"```python\n(.*?)```", README, flags=re.S) if "warehouse_read" in b]
TOP_LEFT = "┌"  # one per result table printed


def statements(block: str) -> list[str]:
    return [s.query for s in duckdb.connect().extract_statements(block)]


def test_the_readme_has_queries_to_run():
    assert SQL_BLOCKS and sum(len(statements(b)) for b in SQL_BLOCKS) >= 5
    assert PYTHON_BLOCKS


@pytest.mark.parametrize("block", SQL_BLOCKS, ids=lambda b: f"{len(statements(b))}-statements")
def test_every_readme_query_runs_through_emo_sql_and_finds_rows(reference_day, capsys, block):
    data_dir, _, _ = reference_day
    assert main(["sql", "--data-dir", str(data_dir), block]) == 0
    out = capsys.readouterr().out
    assert out.count(TOP_LEFT) == len(statements(block))
    assert "0 rows" not in out  # each query of the README finds something on a real day


def test_readme_python_route_gives_a_pandas_frame(reference_day, tmp_path, monkeypatch, capsys):
    data_dir, _, _ = reference_day
    (tmp_path / "data").symlink_to(data_dir)  # the README's relative path, data/warehouse_read.duckdb
    monkeypatch.chdir(tmp_path)
    for block in PYTHON_BLOCKS:
        scope: dict = {}
        exec(compile(block, "README.md", "exec"), scope)
        assert type(scope["scores"]).__name__ == "DataFrame" and len(scope["scores"]) == 3
        scope["con"].close()
    printed = capsys.readouterr().out  # the README's groupby: one count per emotion, 3 in all
    assert printed.startswith("emotion") and sum(int(line.split()[-1]) for line in printed.splitlines()[1:-1]) == 3


def test_unknown_audio_id_is_an_error_not_zero_rows(reference_day, capsys):
    data_dir, _, _ = reference_day
    assert main(["sql", "--data-dir", str(data_dir), "SELECT * FROM similar_audio('not-an-id', 3)"]) == 1
    err = capsys.readouterr().err
    assert "no recording with audio_id 'not-an-id' has an embedding" in err


def test_a_script_on_stdin_through_the_console_script(reference_day):
    data_dir, _, _ = reference_day
    script = "SELECT count(*) AS n FROM emotion_scores;\nSELECT source_path FROM quarantine;\n"
    done = subprocess.run(
        [sys.executable, "-m", "emo_assets.cli", "sql", "--data-dir", str(data_dir)],
        input=script,
        capture_output=True,
        text=True,
        env=emo_env(PYTHONPATH=str(REPO)),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"│\s+3\s+│", done.stdout) and "notes.wav" in done.stdout


def test_the_shell_refuses_to_write_and_never_touches_the_pipelines_file(reference_day, capsys):
    data_dir, _, _ = reference_day
    before = (data_dir / "warehouse.duckdb").stat().st_mtime_ns
    assert main(["sql", "--data-dir", str(data_dir), "DELETE FROM emotion_clusters"]) == 1
    assert "read-only" in capsys.readouterr().err
    assert (data_dir / "warehouse.duckdb").stat().st_mtime_ns == before


def test_without_a_warehouse_it_says_what_to_run(tmp_path, capsys):
    assert main(["sql", "--data-dir", str(tmp_path), "SELECT 1"]) == 2
    assert "emo demo" in capsys.readouterr().err
