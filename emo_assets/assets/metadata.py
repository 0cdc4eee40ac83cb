"""Metadata shown in the Dagster UI for a materialized table."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa


def _cell(value) -> str:
    text = "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", "\\n")[:60]


def preview(table: pa.Table, columns: list[str] | None = None, rows: int = 10) -> dg.MetadataValue:
    """A markdown table of the first ``rows`` rows."""
    columns = columns or [f.name for f in table.schema if not pa.types.is_fixed_size_list(f.type)]
    head = table.select(columns).slice(0, rows).to_pylist()
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r[c]) for c in columns) + " |" for r in head]
    if table.num_rows > rows:
        lines.append(f"\n{table.num_rows - rows} more rows")
    return dg.MetadataValue.md("\n".join(lines))


def table_metadata(table: pa.Table, path, **extra) -> dict:
    return {
        "row_count": dg.MetadataValue.int(table.num_rows),
        "path": dg.MetadataValue.path(str(path)),
        "preview": preview(table),
        **extra,
    }
