"""`emo sql`: SQL over the analysts' read copy of the warehouse, with the DuckDB this project pins.

The `duckdb` command is not part of a Python install, and the newest `duckdb-cli` on PyPI (1.5.6)
cannot open files written by duckdb 2.0.0 (storage version 69; it reads 64..68). So the shell is
the duckdb Python package we already depend on: it reads exactly the files the pipeline writes.

    emo sql                                  # interactive: statements end with ';', .tables, .quit
    emo sql "SELECT * FROM quarantine"       # one or more statements, results printed as tables
    emo sql < queries.sql                    # a script on stdin; stops at the first error (exit 1)

The connection is read-only and on ``warehouse_read.duckdb``, so it never blocks a running pipeline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROMPT, CONTINUE = "emo sql> ", "    ...> "
DOT_COMMANDS = {
    ".tables": "SELECT table_name, table_type FROM information_schema.tables ORDER BY table_name",
    ".macros": "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type = 'table_macro' "
    "AND NOT internal ORDER BY 1",
}


def _connect(data_dir: str | None):
    from emo_assets.definitions import resources_from_env
    from emo_assets.lib.store.warehouse import open_read_copy, read_copy_path

    storage = resources_from_env(data_dir=data_dir)["storage"]
    return open_read_copy(storage.root), read_copy_path(storage.warehouse_path)


class ReadOnlyError(Exception):
    pass


# Row changes: the read copy's tables are views over published files, and DuckDB would answer
# "Can only delete from base table"; the true reason is that the copy is read-only.
_ROW_CHANGES = ("INSERT", "UPDATE", "DELETE")


def run_statements(con, text: str, max_rows: int) -> None:
    """Run every statement of ``text`` in order; print each result as a table. Raises on the first error."""
    for statement in con.extract_statements(text):
        if statement.type.name in _ROW_CHANGES:
            raise ReadOnlyError(
                f"{statement.type.name} refused: the analysts' copy is read-only (a published version); "
                "the pipeline writes warehouse.duckdb"
            )
        query = statement.query  # runs from the statement to the next one: ';' and comments included
        query = query[: query.rindex(";")] if ";" in query else query  # `con.sql` refuses a ';' before a comment
        relation = con.sql(query)
        if relation is not None:
            relation.show(max_rows=max_rows, max_width=10_000)


def _interactive(con, path: Path, max_rows: int) -> int:
    import duckdb

    try:
        import readline  # noqa: F401 - line editing and history for input()
    except ImportError:  # not on every platform
        pass
    print(f"emo sql on {path} (read-only; DuckDB {duckdb.__version__}). End statements with ';'.")
    print("  .tables  .macros  .quit")
    buffer: list[str] = []
    while True:
        try:
            line = input(CONTINUE if buffer else PROMPT)
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:
            print()
            buffer = []
            continue
        stripped = line.strip()
        if not buffer and stripped in (".quit", ".exit"):
            return 0
        if not buffer and stripped in DOT_COMMANDS:
            con.sql(DOT_COMMANDS[stripped]).show(max_rows=max_rows)
            continue
        buffer.append(line)
        if not stripped.endswith(";"):
            continue
        text, buffer = "\n".join(buffer), []
        try:
            run_statements(con, text, max_rows)
        except (duckdb.Error, ReadOnlyError) as exc:
            print(f"Error: {exc}", file=sys.stderr)


def sql_cmd(args: argparse.Namespace) -> int:
    import duckdb

    try:
        con, path = _connect(args.data_dir)
    except FileNotFoundError as exc:
        print(f"emo: error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.sql is None and sys.stdin.isatty():
            return _interactive(con, path, args.max_rows)
        text = args.sql if args.sql is not None else sys.stdin.read()
        try:
            run_statements(con, text, args.max_rows)
        except (duckdb.Error, ReadOnlyError) as exc:
            print(f"emo sql: error: {exc}", file=sys.stderr)
            return 1
        return 0
    finally:
        con.close()


def add_sql_command(sub) -> None:
    p = sub.add_parser("sql", help="SQL over the analysts' read copy of the warehouse (read-only, never blocks a run)")
    p.add_argument("sql", nargs="?", help="statements to run (default: an interactive shell, or a script on stdin)")
    p.add_argument("--data-dir", help="data directory (default: EMO_DATA_DIR or ./data)")
    p.add_argument("--max-rows", type=int, default=200, help="rows shown per result (default 200)")
    p.set_defaults(handler=sql_cmd)
