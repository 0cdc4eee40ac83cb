import datetime as dt

import duckdb
import pyarrow as pa
import pytest

from emo_assets.lib.analytics.assign import reassign_every_day, write_day


def day_rows(day: str, version: str, n: int = 2) -> pa.Table:
    return pa.table(
        {
            "audio_id": [f"{day}-{i}" for i in range(n)],
            "date": pa.array([dt.date.fromisoformat(day)] * n),
            "model_version": [version] * n,
        }
    )


def table(path, name: str = "t") -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(
            f"SELECT CAST(date AS VARCHAR), model_version, count(*) FROM {name} GROUP BY 1, 2 ORDER BY 1"
        ).fetchall()
    finally:
        con.close()


def test_reassign_replaces_every_day_at_once_and_drops_days_without_lake_rows(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    for day in ("2026-11-28", "2026-11-29", "2026-11-30"):
        write_day(path, "t", day, day_rows(day, "v1"))
    result = reassign_every_day(path, "t", lambda day: None if day == "2026-11-29" else day_rows(day, "v2", 3))
    assert result.days == ("2026-11-28", "2026-11-30") and result.dropped_days == ("2026-11-29",)
    assert result.row_count == 6
    assert table(path) == [("2026-11-28", "v2", 3), ("2026-11-30", "v2", 3)]


def test_reassign_of_a_table_not_there_yet_does_nothing(tmp_path):
    result = reassign_every_day(tmp_path / "warehouse.duckdb", "t", lambda day: pytest.fail("no day to build"))
    assert result.days == () and result.row_count == 0


def test_a_failed_reassignment_leaves_the_old_version(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    write_day(path, "t", "2026-11-28", day_rows("2026-11-28", "v1"))

    def broken(day):
        raise RuntimeError("lake unreadable")

    with pytest.raises(RuntimeError, match="lake unreadable"):
        reassign_every_day(path, "t", broken)
    assert table(path) == [("2026-11-28", "v1", 2)]


def test_a_table_from_before_versions_asks_for_a_refit(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t (audio_id VARCHAR, date DATE)")
    con.close()
    with pytest.raises(RuntimeError, match=r"(?s)predates model versions.*--refit-models"):
        write_day(path, "t", "2026-11-28", day_rows("2026-11-28", "v1"))
    reassign_every_day(path, "t", lambda day: day_rows(day, "v2"))  # the refit upgrades it (no days: untouched)


def test_parallel_fit_or_keep_fits_once_and_everyone_gets_that_version(tmp_path):
    """Five runs reach the model at once: one fits (slowly), four wait for the lock and keep it."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from emo_assets.lib.analytics.assign import assign_day, fit_or_keep
    from emo_assets.lib.analytics.fitted import load_fitted, make_fitted

    path = tmp_path / "models" / "m.pkl"
    warehouse_path = tmp_path / "warehouse.duckdb"
    fits = []
    barrier = threading.Barrier(5)

    def fit():
        fits.append(1)
        time.sleep(0.3)
        return make_fitted("m", {"fit": len(fits)}, "fit")

    def rows_for_day(fitted, day):
        return day_rows(day, fitted.model_version)

    def run(i):
        barrier.wait()
        fitted, _ = fit_or_keep(
            path, lambda p: load_fitted(p, dict, "m"), fit, False, warehouse_path, "t", rows_for_day
        )
        day = f"2026-11-{20 + i}"
        return assign_day(path, lambda p: load_fitted(p, dict, "m"), warehouse_path, "t", day, rows_for_day)[0]

    with ThreadPoolExecutor(5) as pool:
        versions = {f.model_version for f in pool.map(run, range(5))}
    assert len(fits) == 1 and len(versions) == 1
    assert {v for _, v, _ in table(warehouse_path)} == versions and len(table(warehouse_path)) == 5

    refit, reassigned = fit_or_keep(
        path, lambda p: load_fitted(p, dict, "m"), fit, True, warehouse_path, "t", rows_for_day
    )
    assert len(fits) == 2 and reassigned.days == tuple(f"2026-11-{20 + i}" for i in range(5))
    assert {v for _, v, _ in table(warehouse_path)} == {refit.model_version} != versions
