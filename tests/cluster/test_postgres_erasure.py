"""`emo erase` reaches Dagster's run history in Postgres: a day run by `emo run` on the cluster's
instance (DAGSTER_HOME: Postgres) names a recording in its event log (table previews); after the
erasure no text column of any table of the instance's database holds it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import sqlalchemy

from emo_assets.lib.store import lake
from tests.cluster.services import emo_run, finish, lake_env
from tests.helpers import DAY, EMO, write_small_day

pytestmark = pytest.mark.cluster


def _rows_naming(pg_url: str, text: str) -> dict[str, int]:
    """Rows of each table of the database with a text column holding ``text``."""
    engine = sqlalchemy.create_engine(pg_url)
    try:
        with engine.connect() as con:
            metadata = sqlalchemy.MetaData()
            metadata.reflect(bind=con)
            found = {}
            for table in metadata.sorted_tables:
                texts = [c for c in table.columns if isinstance(c.type, sqlalchemy.String)]
                if texts:
                    hit = sqlalchemy.or_(*[c.contains(text, autoescape=True) for c in texts])
                    n = con.execute(sqlalchemy.select(sqlalchemy.func.count()).select_from(table).where(hit)).scalar()
                    if n:
                        found[table.name] = n
            return found
    finally:
        engine.dispose()


def test_an_erased_recording_leaves_no_row_in_dagster_on_postgres(cluster_env, tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    write_small_day(data / "raw" / DAY)
    env = {**lake_env(cluster_env, None), "DAGSTER_HOME": cluster_env["DAGSTER_HOME"]}
    code, out, err = finish(emo_run(data, tiny_model_dir, env))
    assert code == 0, err[-3000:]
    victim = lake.read_partition(data / "lake", "audio_files", DAY).column("audio_id")[0].as_py()
    before = _rows_naming(cluster_env["EMO_PG_URL"], victim[:12])
    assert before.get("event_logs"), before  # the run's previews name it: the check below means something

    done = subprocess.run(
        [EMO, "erase", victim, "--data-dir", str(data)], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "run_history_records" in done.stdout
    assert _rows_naming(cluster_env["EMO_PG_URL"], victim[:12]) == {}
    # the database password reached the instance through the environment, and is nowhere in its storage
    password = cluster_env["DAGSTER_PG_PASSWORD"]
    assert password not in (Path(cluster_env["DAGSTER_HOME"]) / "dagster.yaml").read_text()
    assert password not in done.stdout + done.stderr + out + err
    assert _rows_naming(cluster_env["EMO_PG_URL"], password) == {}
