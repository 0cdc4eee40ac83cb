"""Bad configuration fails once, clearly, before any file is touched; a bad analysts' SQL model fails
only its own asset; SQL that tries to write outside its table is refused; partition keys are validated."""

import os

import dagster as dg
import pytest

from emo_assets import cli
from emo_assets.assets import all_assets
from emo_assets.assets.sql_models import build_sql_model_assets
from emo_assets.lib.store import warehouse

DAY = "2026-11-20"


def _files_under(path) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)


def _broken_config_model(tmp_path, tiny_model_dir):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    for item in tiny_model_dir.iterdir():
        (broken / item.name).symlink_to(item)
    (broken / "config.yaml").unlink()
    (broken / "config.yaml").write_text("model: Emotion2vec\nmodel_conf: [unclosed\n")
    return broken


@pytest.mark.parametrize(
    "case, setting",
    [
        ("missing model directory", "EMO_MODEL"),
        ("broken config.yaml", "config.yaml"),
        ("wrong EMO_DEVICE", "EMO_DEVICE"),
        ("impossible date", "2026-13-45"),
    ],
)
def test_bad_setting_is_one_clear_error_before_any_file_is_touched(
    tmp_path, tiny_model_dir, rel, monkeypatch, capsys, case, setting
):
    data_dir = tmp_path / "data"
    rel.write_small_day(data_dir / "raw" / DAY, n=1)
    before = _files_under(data_dir)
    model, date = str(tiny_model_dir), DAY
    if case == "missing model directory":
        model = str(tmp_path / "no-such-model")
    elif case == "broken config.yaml":
        model = str(_broken_config_model(tmp_path, tiny_model_dir))
    elif case == "wrong EMO_DEVICE":
        monkeypatch.setenv("EMO_DEVICE", "tpu")
    else:
        date = "2026-13-45"
    argv = ["run", "--date", date, "--data-dir", str(data_dir), "--model", model]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("emo: error:") and setting in err
    assert "Traceback" not in err  # one error, not a traceback
    assert _files_under(data_dir) == before  # nothing written, no day folder, no lock, no instance
    assert not (data_dir / "raw" / "2026-13-45").exists()


def test_dagster_refuses_an_impossible_partition_key(tmp_path, tiny_model_dir, rel):
    with pytest.raises(dg.DagsterUnknownPartitionError):
        rel.materialize(tmp_path, tiny_model_dir, day="2026-13-45")
    assert _files_under(tmp_path) == []


BAD_SQL = {
    "syntax_error": ("SELEC count(*) FROM emotion_scores", "cannot parse SQL"),
    "missing_table": ("SELECT * FROM no_such_table", "no_such_table"),
    "drops_a_table": ("DROP TABLE emotion_scores", "DROP is not allowed"),
    "copies_out": ("COPY (SELECT * FROM emotion_scores) TO '{out}'", "not allowed"),
    "attaches": ("ATTACH '{other}' AS other", "not allowed"),
    "reads_a_file": ("SELECT * FROM read_csv('/etc/passwd')", "reads outside the warehouse"),
    "drop_inside": ("SELECT 1 AS x; DROP TABLE emotion_scores", "2 statements"),
}


def test_bad_sql_models_fail_alone_with_file_and_reason(tmp_path, tiny_model_dir, rel):
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    out, other = tmp_path / "exfiltrated.csv", tmp_path / "other.duckdb"
    for name, (sql, _) in BAD_SQL.items():
        (sql_dir / f"{name}.sql").write_text(sql.format(out=out, other=other) + "\n")
    (sql_dir / "good_model.sql").write_text("SELECT date, count(*) AS recordings FROM emotion_scores GROUP BY date\n")
    core = [a for a in all_assets() if "sql_models" not in a.group_names_by_key.values()]
    data_dir = tmp_path / "data"
    rel.write_small_day(data_dir / "raw" / DAY, n=2)

    result = rel.materialize(data_dir, tiny_model_dir, assets=[*core, *build_sql_model_assets(sql_dir)])

    failures = rel.step_failure_messages(result)
    assert sorted(failures) == sorted(BAD_SQL)
    for name, (_, reason) in BAD_SQL.items():
        assert f"{name}.sql" in failures[name] and reason in failures[name], (name, failures[name])
    assert "Catalog Error" in failures["missing_table"]  # DuckDB's own message
    materialized = {k.to_user_string() for e in result.get_asset_materialization_events() for k in [e.asset_key]}
    assert {
        "good_model",
        "emotion_scores",
        "emotion_clusters",
        "quarantine",
        "satisfaction_predictions",
    } <= materialized
    con = warehouse.open_read_copy(data_dir)
    try:
        assert con.execute("SELECT recordings FROM good_model").fetchall() == [(2,)]
        assert con.execute("SELECT count(*) FROM emotion_scores").fetchone() == (2,)
        tables = {t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    finally:
        con.close()
    assert not tables & set(BAD_SQL)
    assert not out.exists() and not other.exists()
