"""Metadata shown in the Dagster UI for a materialized table."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa

from emo_assets.lib import schemas
from emo_assets.lib.privacy.run_history import PREFIX as ID_SHOWN

COLUMN_SCHEMA = "dagster/column_schema"
COLUMN_LINEAGE = "dagster/column_lineage"


def _type_name(arrow_type: pa.DataType) -> str:
    if pa.types.is_fixed_size_list(arrow_type):
        return f"{_type_name(arrow_type.value_type)}[D]"  # D: the model's embedding width
    return str(arrow_type)


def column_schema(table: str) -> dg.TableSchema:
    """The registry's columns of ``table`` (schemas.TABLES) with their descriptions."""
    entry = schemas.TABLES[table]
    arrow = entry.arrow_schema(1)  # any width: an embedding is shown as FLOAT[D]
    return dg.TableSchema(
        columns=[dg.TableColumn(f.name, _type_name(f.type), description=entry.columns[f.name]) for f in arrow]
    )


def table_definition_metadata(table: str) -> dict:
    """What a table asset publishes at definition: its column schema, from the registry."""
    return {COLUMN_SCHEMA: column_schema(table)}


def table_description(table: str) -> str:
    """The registry's description of ``table`` as a sentence."""
    text = schemas.TABLES[table].description
    return text[0].upper() + text[1:] + "."


def _cell(value) -> str:
    text = "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", "\\n")[:60]


# Run history is kept by Dagster, apart from the data: a preview names a recording no more than it
# must (an audio_id cut to its first characters, no file name), and an erasure rewrites even that
# (lib/privacy/run_history.py).
HIDDEN = ("source_path", "path")  # file names; a FLAC path holds the audio_id


def _preview_cell(column: str, value) -> str:
    if column == "audio_id" and isinstance(value, str):
        return value[:ID_SHOWN] + "…"
    return _cell(value)


def preview(table: pa.Table, columns: list[str] | None = None, rows: int = 10) -> dg.MetadataValue:
    """A markdown table of the first ``rows`` rows, without file names and with ``audio_id`` cut short."""
    columns = columns or [
        f.name for f in table.schema if not pa.types.is_fixed_size_list(f.type) and f.name not in HIDDEN
    ]
    head = table.select(columns).slice(0, rows).to_pylist()
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_preview_cell(c, r[c]) for c in columns) + " |" for r in head]
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
