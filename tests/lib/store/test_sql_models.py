import datetime as dt
from pathlib import Path

import duckdb
import pytest

from emo_assets.lib.store.sql_models import (
    SqlModel,
    SqlModelError,
    column_origins,
    discover_sql_models,
    materialize_sql_model,
    model_comment,
    validate_sql_model,
)
from tests.helpers import REPO

SQL_DIR = REPO / "dbt_like_sql"
EMOTIONS = ("angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown")


def model_from(tmp_path: Path, sql: str, name: str = "m") -> SqlModel:
    (tmp_path / f"{name}.sql").write_text(sql)
    (model,) = [m for m in discover_sql_models(tmp_path) if m.name == name]
    return model


# --- discovery --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "upstream"),
    [
        ("select * from emotion_scores", ("emotion_scores",)),
        ("select * from Audio_Files a join main.emotion_scores s using (audio_id)", ("audio_files", "emotion_scores")),
        ("select * from a where id in (select id from b) and exists (select 1 from c)", ("a", "b", "c")),
        ("select (select max(x) from d) as m, * from (select * from e) sub", ("d", "e")),
        (
            "with recent as (select * from emotion_scores), top as (select * from recent) "
            "select * from top join audio_files using (audio_id)",
            ("audio_files", "emotion_scores"),
        ),
        ("with x as (select 1) select * from x union all select * from y", ("y",)),
        ("select * from range(10) r, read_csv('x.csv')", ()),
        ("select 1", ()),
    ],
)
def test_upstream_tables(tmp_path, sql, upstream):
    assert model_from(tmp_path, sql).upstream_tables == upstream


def test_discovery_is_sorted_and_ignores_other_files(tmp_path):
    (tmp_path / "zeta.sql").write_text("select * from a")
    (tmp_path / "alpha.sql").write_text("select * from b")
    (tmp_path / "notes.md").write_text("not sql")
    models = discover_sql_models(tmp_path)
    assert [m.name for m in models] == ["alpha", "zeta"]
    assert models[0].path == tmp_path / "alpha.sql" and models[0].sql == "select * from b"


def test_unparseable_file_is_still_a_model(tmp_path):
    (tmp_path / "broken.sql").write_text("select from from where (")
    (tmp_path / "fine.sql").write_text("select * from t")
    broken, fine = discover_sql_models(tmp_path)
    assert broken.name == "broken" and broken.upstream_tables == () and broken.parse_error
    assert fine.parse_error is None and fine.upstream_tables == ("t",)
    with pytest.raises(SqlModelError, match="broken.sql"):
        validate_sql_model(broken)


@pytest.mark.parametrize("file_name", ["2024_report.sql", "daily-summary.sql", "my model.sql"])
def test_invalid_file_name_is_refused(tmp_path, file_name):
    (tmp_path / file_name).write_text("select 1")
    with pytest.raises(SqlModelError, match=file_name.removesuffix(".sql")):
        discover_sql_models(tmp_path)


def test_names_differing_only_in_case_are_refused(tmp_path):
    (tmp_path / "Report.sql").write_text("select 1")
    (tmp_path / "report.sql").write_text("select 2")
    with pytest.raises(SqlModelError, match="same DuckDB table"):
        discover_sql_models(tmp_path)


def test_project_sql_models_are_valid():
    models = {m.name: m for m in discover_sql_models(SQL_DIR)}
    assert models["daily_emotion_summary"].upstream_tables == ("audio_files", "emotion_scores")
    assert models["cluster_profiles"].upstream_tables == ("emotion_clusters", "emotion_scores")
    for model in models.values():
        validate_sql_model(model)


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "select 1",
        "select 1;",
        "with a as (select 1 as x) select x from a",
        "select 1 union all select 2",
        "(select 1) except (select 2)",
        "from t select a -- trailing comment",
        "select * from range(3)",
    ],
)
def test_queries_are_accepted(tmp_path, sql):
    validate_sql_model(model_from(tmp_path, sql))


@pytest.mark.parametrize(
    "sql",
    [
        "drop table emotion_scores",
        "delete from emotion_scores",
        "insert into t values (1)",
        "update t set a = 1",
        "create table t as select 1",
        "create view v as select 1",
        "copy emotion_scores to 'out.csv'",
        "attach 'other.duckdb' as other",
        "detach other",
        "install httpfs",
        "load httpfs",
        "pragma database_list",
        "set threads = 1",
        "export database 'backup'",
        "call pragma_version()",
        "select 1; drop table x",
        "select 1; select 2",
        "-- nothing but a comment",
        "",
        "select * from read_csv('calls.csv')",
        "select * from read_csv_auto('calls.csv')",
        "select * from read_parquet('lake/*.parquet')",
        "select * from parquet_scan('lake/x.parquet')",
        "select * from read_json('x.json')",
        "select * from read_ndjson_auto('x.json')",
        "select * from glob('data/*')",
        "select content from read_text('secret.txt')",
        "select * from read_blob('x.bin')",
        "select * from sniff_csv('x.csv')",
        "select * from sqlite_scan('x.db', 't')",
        "select * from query('select 1')",
        "select getenv('HOME')",
        "select * from 'calls.csv'",
        'select * from "https://example.com/x.parquet"',
        "select * from t where id in (select id from read_parquet('x.parquet'))",
        "with a as (select * from read_csv('x.csv')) select * from a",
        "select * from m",  # reads its own table
    ],
)
def test_refusals_name_the_file(tmp_path, sql):
    model = model_from(tmp_path, sql)
    with pytest.raises(SqlModelError, match="m.sql"):
        validate_sql_model(model)


def test_multiple_statements_message(tmp_path):
    with pytest.raises(SqlModelError, match="2 statements"):
        validate_sql_model(model_from(tmp_path, "select 1; drop table x"))


# --- materialize ------------------------------------------------------------------------------


@pytest.fixture
def con():
    connection = duckdb.connect(":memory:")
    yield connection
    connection.close()


def test_materialize_creates_the_table(tmp_path, con):
    con.execute("create table t as select * from range(5) r(i)")
    model = model_from(tmp_path, "-- evens\nselect i from t where i % 2 = 0;  -- done\n", "evens")
    assert materialize_sql_model(con, model) == 3
    assert materialize_sql_model(con, model) == 3  # re-runs replace the table
    assert con.execute("select list(i order by i) from evens").fetchone()[0] == [0, 2, 4]


def test_materialize_comments_the_table_and_its_columns(tmp_path, con):
    con.execute("create table t as select * from range(5) r(i)")
    con.execute("comment on column t.i is 'a counter, 0..4'")
    sql = (
        "-- Even counters.\n-- Second line.\n\nwith x as (select i as n from t)\n"
        "select n as i, n * 2 as double, count(*) over () as total from x where n % 2 = 0"
    )
    model = model_from(tmp_path, sql, "evens")
    assert model_comment(model) == "Even counters. Second line."
    materialize_sql_model(con, model)
    assert con.execute("select comment from duckdb_tables() where table_name = 'evens'").fetchone()[0] == (
        "Even counters. Second line."
    )
    comments = dict(
        con.execute("select column_name, comment from duckdb_columns() where table_name = 'evens'").fetchall()
    )
    assert comments == {
        "i": "a counter, 0..4 (from t.i)",  # carried through a CTE and a rename: the source's comment
        "double": "computed in evens.sql: x.n * 2 (from t.i)",
        "total": "computed in evens.sql: COUNT(*) OVER ()",
    }


def test_column_origins_trace_through_ctes_and_joins():
    (model,) = [m for m in discover_sql_models(SQL_DIR) if m.name == "daily_emotion_summary"]
    origins = {o.name: o for o in column_origins(model)}
    assert origins["date"].sources == (("audio_files", "date"),) and origins["date"].passthrough
    assert origins["hours"].sources == (("audio_files", "duration_s"),) and not origins["hours"].passthrough
    assert origins["files"].sources == ()


def test_a_model_without_a_leading_comment_says_so(tmp_path, con):
    con.execute("create table t as select 1 as a")
    materialize_sql_model(con, model_from(tmp_path, "select a from t", "plain"))
    comment = con.execute("select comment from duckdb_tables() where table_name = 'plain'").fetchone()[0]
    assert comment == "built by plain.sql (the file has no leading -- comment)"


def test_syntax_error_names_the_file(tmp_path, con):
    model = model_from(tmp_path, "select from from", "typo")
    with pytest.raises(SqlModelError, match="typo.sql"):
        materialize_sql_model(con, model)


def test_missing_table_names_the_file_and_keeps_the_old_table(tmp_path, con):
    con.execute("create table t as select 1 as a")
    good = model_from(tmp_path, "select a from t", "report")
    materialize_sql_model(con, good)
    bad = SqlModel("report", good.path, "select a from no_such_table", ("no_such_table",))
    with pytest.raises(SqlModelError, match=r"(?s)report\.sql.*no_such_table"):
        materialize_sql_model(con, bad)
    assert con.execute("select a from report").fetchall() == [(1,)]
    con.execute("select 1")  # the connection is usable: no transaction left open


# --- the project's SQL files on hand-built tables ----------------------------------------------

D1, D2 = dt.date(2024, 5, 1), dt.date(2024, 5, 2)


def score_row(audio_id, date, emotion, confidence, model_id="tiny"):
    scores = [0.0] * 9
    scores[EMOTIONS.index(emotion)] = confidence
    rest = (1.0 - confidence) / 8
    scores = [s if s else rest for s in scores]
    return (audio_id, date, model_id, emotion, confidence, *scores)


@pytest.fixture
def warehouse(con):
    cols = ", ".join(f"{e} FLOAT" for e in EMOTIONS)
    con.execute(
        "create table emotion_scores(audio_id VARCHAR, date DATE, model_id VARCHAR, "
        f"emotion VARCHAR, confidence FLOAT, {cols})"
    )
    con.executemany(
        f"insert into emotion_scores values ({', '.join(['?'] * 14)})",
        [
            score_row("a", D1, "happy", 0.8),
            score_row("b", D1, "angry", 0.6),
            score_row("c", D1, "happy", 0.4),
            score_row("d", D2, "sad", 0.5),
            score_row("e", D2, "neutral", 0.9),
        ],
    )
    # d is a two-channel call: its customer's row counts, the agent's rows (here and on a) never do
    con.execute("alter table emotion_scores add column channel VARCHAR default 'mono'")
    con.execute("update emotion_scores set channel = 'customer' where audio_id = 'd'")
    con.executemany(
        f"insert into emotion_scores values ({', '.join(['?'] * 15)})",
        [(*score_row("a", D1, "angry", 0.99), "agent"), (*score_row("d", D2, "happy", 0.7), "agent")],
    )
    con.execute(
        "create table audio_files(audio_id VARCHAR, source_path VARCHAR, size_bytes BIGINT, "
        "format VARCHAR, sample_rate INTEGER, channels INTEGER, duration_s DOUBLE, "
        "ingested_at TIMESTAMP, date DATE)"
    )
    files = [
        ("a", "raw/a.wav", 60.0, D1),
        ("a", "raw/copy_of_a.wav", 60.0, D1),  # byte-identical copy: same audio_id, own row
        ("b", "raw/b.wav", 1800.0, D1),
        ("c", "raw/c.wav", 1740.0, D1),
        ("d", "raw/d.wav", 3600.0, D2),
        ("e", "raw/e.wav", 3600.0, D2),
        ("f", "raw/f.wav", 99.0, D2),  # landed but not scored yet
    ]
    con.executemany(
        "insert into audio_files values (?, ?, 1000, 'wav', 16000, 1, ?, '2024-05-01 00:00', ?)",
        files,
    )
    con.execute(
        "create table emotion_clusters(audio_id VARCHAR, date DATE, cluster_id INTEGER, "
        "pca_x FLOAT, pca_y FLOAT, distance FLOAT, model_version VARCHAR)"
    )
    con.executemany(
        "insert into emotion_clusters values (?, ?, ?, 0, 0, ?, 'v1')",
        [
            ("a", D1, 0, 0.1),
            ("c", D1, 0, 0.3),
            ("b", D1, 1, 0.2),
            ("d", D2, 1, 0.4),
            ("e", D2, 0, 0.2),
            ("zz", D2, 2, 0.5),
        ],  # zz: clustered, no scores
    )
    return con


def records(con, table: str) -> list[dict]:
    cursor = con.execute(f"select * from {table}")
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def project_model(name: str) -> SqlModel:
    (model,) = [m for m in discover_sql_models(SQL_DIR) if m.name == name]
    return model


def test_daily_emotion_summary_values(warehouse):
    assert materialize_sql_model(warehouse, project_model("daily_emotion_summary")) == 2
    rows = records(warehouse, "daily_emotion_summary")
    d1, d2 = rows
    assert d1["date"] == D1 and d1["model_id"] == "tiny"
    assert d1["files"] == 4  # a twice, b, c
    assert d1["hours"] == pytest.approx((60 + 60 + 1800 + 1740) / 3600)
    assert d1["mean_confidence"] == pytest.approx((0.8 + 0.8 + 0.6 + 0.4) / 4)
    assert d1["share_happy"] == pytest.approx(0.75) and d1["share_angry"] == pytest.approx(0.25)
    assert d2["files"] == 2 and d2["hours"] == pytest.approx(2.0)
    assert d2["share_sad"] == pytest.approx(0.5) and d2["share_neutral"] == pytest.approx(0.5)
    for row in rows:
        assert sum(row[f"share_{e}"] for e in EMOTIONS) == pytest.approx(1.0)


def test_cluster_profiles_values(warehouse):
    assert materialize_sql_model(warehouse, project_model("cluster_profiles")) == 3
    rows = records(warehouse, "cluster_profiles")
    c0, c1, c2 = rows
    assert [r["cluster_id"] for r in rows] == [0, 1, 2]
    assert (c0["recordings"], c1["recordings"], c2["recordings"]) == (3, 2, 1)
    # cluster 0: a happy 0.8, c happy 0.4, e neutral 0.9
    assert c0["mean_happy"] == pytest.approx((0.8 + 0.4 + 0.1 / 8) / 3, abs=1e-6)
    assert c0["dominant_emotion"] == "happy"
    assert c0["mean_distance"] == pytest.approx(0.2, abs=1e-6)
    assert (c0["first_date"], c0["last_date"]) == (D1, D2)
    # cluster 1: b angry 0.6, d sad 0.5
    assert c1["dominant_emotion"] == "angry"
    assert c1["mean_sad"] == pytest.approx((0.5 + 0.4 / 8) / 2, abs=1e-6)
    # cluster 2 has no scores: counted, no means, no dominant emotion
    assert c2["mean_angry"] is None and c2["dominant_emotion"] is None
    for row in (c0, c1):
        assert sum(row[f"mean_{e}"] for e in EMOTIONS) == pytest.approx(1.0, abs=1e-5)


def test_star_models_are_traced_through_the_warehouse_columns(tmp_path, con):
    con.execute("create table t as select 1 as a, 2 as b")
    con.execute("comment on column t.a is 'the a'")
    materialize_sql_model(con, model_from(tmp_path, "select *, a + b as s from t", "star"))
    comments = dict(
        con.execute("select column_name, comment from duckdb_columns() where table_name = 'star'").fetchall()
    )
    assert comments == {
        "a": "the a (from t.a)",
        "b": "t.b unchanged (t.b has no comment)",
        "s": "computed in star.sql: t.a + t.b (from t.a, t.b)",
    }
