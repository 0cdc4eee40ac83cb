"""SQL model assets: column lineage from sqlglot, published at definition."""

import dagster as dg

from emo_assets.assets.sql_models import build_sql_model_assets
from emo_assets.lib import schemas


def _lineage(tmp_path, sql: str) -> dict:
    (tmp_path / "m.sql").write_text(sql)
    (asset,) = build_sql_model_assets(tmp_path)
    lineage = asset.specs_by_key[asset.key].metadata.get("dagster/column_lineage")
    return {
        c: [(d.asset_key.to_user_string(), d.column_name) for d in deps] for c, deps in lineage.deps_by_column.items()
    }


def test_star_over_a_registry_table_is_expanded_column_by_column(tmp_path):
    lineage = _lineage(tmp_path, "select *, 1 as one from emotion_scores")
    assert list(lineage) == [*schemas.EMOTION_SCORES.names, "one"]
    assert lineage["confidence"] == [("emotion_scores", "confidence")]
    assert lineage["one"] == []


def test_a_model_sqlglot_cannot_trace_publishes_no_lineage(tmp_path):
    (tmp_path / "m.sql").write_text("select * from not_ours")
    (asset,) = build_sql_model_assets(tmp_path)
    assert "dagster/column_lineage" not in asset.specs_by_key[asset.key].metadata
    assert isinstance(asset, dg.AssetsDefinition)
