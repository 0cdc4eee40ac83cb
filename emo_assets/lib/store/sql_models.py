"""Analysts' SQL models: one ``dbt_like_sql/<name>.sql`` file -> one DuckDB table ``<name>``.

A model is a single read-only query (SELECT, WITH ... SELECT, UNION / INTERSECT / EXCEPT). Its
upstream tables are parsed from the SQL with sqlglot (DuckDB dialect): every table the query reads,
minus the names of its own CTEs, lower-cased, sorted, unique. A schema- or database-qualified name
keeps only the table name (``main.emotion_scores`` -> ``emotion_scores``), because every table of
the warehouse lives in one schema.

Queries may not reach outside the warehouse. :func:`validate_sql_model` refuses any function whose
name is in ``FORBIDDEN_FUNCTIONS``, starts with ``read_`` or ends with ``_scan`` (file, network
and foreign-database readers, ``query``/``query_table`` which run SQL from a string, ``getenv``),
and any table name that looks like a file or URL (``FROM 'calls.csv'``), which DuckDB would
otherwise read through a replacement scan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.lineage import lineage
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import traverse_scope
from sqlglot.tokens import TokenType

from emo_assets.lib.store.changes import record_change

DIALECT = "duckdb"

FORBIDDEN_FUNCTIONS = frozenset(
    {
        # files
        "read_csv",
        "read_csv_auto",
        "csv_scan",
        "sniff_csv",
        "read_parquet",
        "parquet_scan",
        "parquet_metadata",
        "parquet_schema",
        "parquet_file_metadata",
        "parquet_kv_metadata",
        "parquet_bloom_probe",
        "read_json",
        "read_json_auto",
        "read_json_objects",
        "read_json_objects_auto",
        "read_ndjson",
        "read_ndjson_auto",
        "read_ndjson_objects",
        "json_scan",
        "read_text",
        "read_blob",
        "glob",
        "read_xlsx",
        "st_read",
        "st_read_meta",
        "iceberg_scan",
        "iceberg_metadata",
        "iceberg_snapshots",
        "delta_scan",
        # other databases
        "sqlite_scan",
        "sqlite_attach",
        "postgres_scan",
        "postgres_query",
        "postgres_attach",
        "mysql_scan",
        "mysql_query",
        # SQL from a string, environment, credentials
        "query",
        "query_table",
        "getenv",
        "duckdb_secrets",
        "which_secret",
    }
)
_FORBIDDEN_PREFIXES = ("read_",)
_FORBIDDEN_SUFFIXES = ("_scan",)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATH_LIKE = re.compile(r"[./\\:]")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_QUERY_TYPES = (exp.Select, exp.SetOperation)


class SqlModelError(Exception):
    """A SQL model file that cannot be materialized; the message names the file."""


@dataclass(frozen=True)
class SqlModel:
    """One SQL model file. ``parse_error`` is set when sqlglot could not parse it."""

    name: str
    path: Path
    sql: str
    upstream_tables: tuple[str, ...]
    parse_error: str | None = None


def discover_sql_models(sql_dir: Path) -> list[SqlModel]:
    """Scan ``sql_dir/*.sql`` once, sorted by file name.

    Raises ``SqlModelError`` for a file name that is not a valid identifier or two names that
    differ only in case (DuckDB table names are case-insensitive). A file that cannot be read or
    parsed still becomes a model, with no upstreams and ``parse_error`` set, so that only its own
    asset fails.
    """
    models: list[SqlModel] = []
    seen: dict[str, Path] = {}
    for path in sorted(Path(sql_dir).glob("*.sql")):
        name = path.stem
        if not _IDENTIFIER.fullmatch(name):
            raise SqlModelError(
                f"{path}: '{name}' is not a valid table name; rename the file to letters, digits "
                "and underscores, not starting with a digit"
            )
        if name.lower() in seen:
            raise SqlModelError(f"{path} and {seen[name.lower()]} name the same DuckDB table; rename one of them")
        seen[name.lower()] = path
        try:
            sql = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            models.append(SqlModel(name, path, "", (), f"cannot read file: {e}"))
            continue
        try:
            upstream = _upstream_tables(_parse(sql))
        except SqlglotError as e:
            models.append(SqlModel(name, path, sql, (), _describe(e)))
            continue
        models.append(SqlModel(name, path, sql, upstream))
    return models


def _parse(sql: str) -> list[exp.Expression]:
    """Statements in ``sql``; empty ones (``;;`` or a comment after the last ``;``) are dropped."""
    return [s for s in sqlglot.parse(sql, dialect=DIALECT) if s is not None and not isinstance(s, exp.Semicolon)]


def _describe(error: SqlglotError) -> str:
    """A one-line parse error: position and description, without the highlighted excerpt."""
    details = getattr(error, "errors", None)
    if details:
        first = details[0]
        return f"line {first.get('line')}, column {first.get('col')}: {first.get('description')}"
    return _ANSI.sub("", str(error))


def _upstream_tables(statements: list[exp.Expression]) -> tuple[str, ...]:
    names: set[str] = set()
    for statement in statements:
        names |= _tables_read(statement)
    return tuple(sorted(names))


def _tables_read(statement: exp.Expression) -> set[str]:
    """Real table names read by one statement; CTE references are resolved through scopes."""
    tables = [t for t in statement.find_all(exp.Table) if _is_named_table(t)]
    cte_refs: set[int] = set()
    try:
        for scope in traverse_scope(statement):
            for t in scope.tables:
                qualified = t.args.get("db") or t.args.get("catalog")
                if not qualified and t.name in scope.cte_sources:
                    cte_refs.add(id(t))
    except SqlglotError:
        # Scope building failed: fall back to excluding every CTE name everywhere.
        cte_names = {c.alias_or_name for c in statement.find_all(exp.CTE)}
        cte_refs = {id(t) for t in tables if not t.args.get("db") and t.name in cte_names}
    return {t.name.lower() for t in tables if id(t) not in cte_refs}


def _is_named_table(table: exp.Table) -> bool:
    """A table reference by name, not a table function or a file path."""
    return isinstance(table.this, exp.Identifier) and not _PATH_LIKE.search(table.name)


def _function_name(func: exp.Func) -> str:
    if isinstance(func, exp.Anonymous):
        return str(func.name).lower()
    return func.sql_name().lower()


def _is_forbidden_function(name: str) -> bool:
    return name in FORBIDDEN_FUNCTIONS or name.startswith(_FORBIDDEN_PREFIXES) or name.endswith(_FORBIDDEN_SUFFIXES)


def validate_sql_model(model: SqlModel) -> None:
    """Raise ``SqlModelError`` naming the file unless it is exactly one read-only query.

    Refused: parse errors; zero or several statements; any statement that is not a query (DROP,
    DELETE, INSERT, UPDATE, CREATE, COPY, ATTACH, DETACH, INSTALL, LOAD, PRAGMA, SET, EXPORT, CALL,
    ...); a data-modifying statement nested anywhere in the query; forbidden functions and
    file-path table names (see the module docstring); a query that reads its own table.
    """
    where = str(model.path)
    if model.parse_error is not None:
        raise SqlModelError(f"{where}: cannot parse SQL: {model.parse_error}")
    try:
        statements = _parse(model.sql)
    except SqlglotError as e:
        raise SqlModelError(f"{where}: cannot parse SQL: {_describe(e)}") from e
    if not statements:
        raise SqlModelError(f"{where}: no SQL statement; write one SELECT query")
    if len(statements) > 1:
        kinds = ", ".join(s.key.upper() for s in statements)
        raise SqlModelError(f"{where}: {len(statements)} statements ({kinds}); a model is exactly one SELECT query")
    query = statements[0]
    while isinstance(query, exp.Subquery):
        query = query.this
    if not isinstance(query, _QUERY_TYPES):
        raise SqlModelError(
            f"{where}: {statements[0].key.upper()} is not allowed; a model is one SELECT query "
            "and its table is created for you"
        )
    for node in query.walk():
        if isinstance(node, (exp.DML, exp.Create, exp.Drop, exp.Command, exp.Copy, exp.Attach)):
            raise SqlModelError(f"{where}: {node.key.upper()} inside the query is not allowed")
        if isinstance(node, exp.Func):
            name = _function_name(node)
            if _is_forbidden_function(name):
                raise SqlModelError(
                    f"{where}: function {name}() reads outside the warehouse; load that data "
                    "through an asset and query its table instead"
                )
        if isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
            if _PATH_LIKE.search(node.name):
                raise SqlModelError(
                    f"{where}: table '{node.name}' looks like a file path; load files through an "
                    "asset and query its table instead"
                )
    if model.name.lower() in model.upstream_tables:
        raise SqlModelError(f"{where}: the query reads its own table '{model.name}'")


def _query_text(sql: str) -> str:
    """The query text without trailing semicolons and comments, as the analyst wrote it."""
    tokens = [t for t in sqlglot.tokenize(sql, read=DIALECT) if t.token_type != TokenType.SEMICOLON]
    return sql[: tokens[-1].end + 1] if tokens else sql


def materialize_sql_model(con: duckdb.DuckDBPyConnection, model: SqlModel) -> int:
    """Validate ``model`` and replace table ``<name>`` with its result in one transaction, commented:
    the table from the file's leading ``--`` lines, the columns as :func:`column_comments` says.

    Returns the row count. Raises ``SqlModelError`` naming the file for an invalid model or any
    DuckDB error (missing table, bad column, ...); the previous table is then left unchanged.
    """
    validate_sql_model(model)
    body = _query_text(model.sql)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f'CREATE OR REPLACE TABLE "{model.name}" AS\n{body}\n')
        row = con.execute(f'SELECT count(*) FROM "{model.name}"').fetchone()
        _comment_model(con, model)
        record_change(con, model.name)
        con.execute("COMMIT")
    except duckdb.Error as e:
        _rollback(con)
        raise SqlModelError(f"{model.path}: DuckDB could not build '{model.name}': {e}") from e
    except BaseException:
        _rollback(con)
        raise
    return int(row[0])


@dataclass(frozen=True)
class ColumnOrigin:
    """Where one output column of a model comes from, as sqlglot's lineage derives it.

    ``sources`` are the (table, column) pairs of real tables it is computed from; ``passthrough``
    is True when it is one source column carried through unchanged (renames and CTEs allowed);
    ``expression`` is the SQL that makes it (``AVG(scored.confidence)``).
    """

    name: str
    sources: tuple[tuple[str, str], ...]
    passthrough: bool
    expression: str


def model_comment(model: SqlModel) -> str | None:
    """The model's description: the ``--`` comment lines at the top of its file, joined."""
    lines = []
    for line in model.sql.splitlines():
        stripped = line.strip()
        if stripped.startswith("--"):
            lines.append(stripped[2:].strip())
        elif stripped:
            break
    return " ".join(line for line in lines if line) or None


def column_origins(model: SqlModel, schema: dict[str, dict[str, str]] | None = None) -> list[ColumnOrigin]:
    """One :class:`ColumnOrigin` per output column of a valid model, in order (sqlglot's lineage).

    ``schema`` (table -> column -> type) lets sqlglot expand ``SELECT *``. Raises ``SqlModelError``
    when the model is invalid or sqlglot cannot trace a column.
    """
    validate_sql_model(model)
    query = _parse(model.sql)[0]
    if schema:
        try:
            query = qualify(query, schema=schema, dialect=DIALECT, validate_qualify_columns=False, identify=False)
        except SqlglotError as e:
            raise SqlModelError(f"{model.path}: cannot resolve the query's columns: {_describe(e)}") from e
    origins = []
    for name in query.named_selects:
        try:
            root = lineage(name, query, schema=schema, dialect=DIALECT)
        except SqlglotError as e:
            raise SqlModelError(f"{model.path}: cannot trace column '{name}': {_describe(e)}") from e
        nodes = list(root.walk())
        leaves = [n for n in nodes if not n.downstream and isinstance(n.expression, exp.Table)]
        sources = tuple(
            sorted({(leaf.expression.name.lower(), leaf.name.split(".")[-1].strip('"')) for leaf in leaves})
        )
        if name == "*" or any(column == "*" for _, column in sources):
            raise SqlModelError(f"{model.path}: cannot trace '{name}': a '*' over a table whose columns are unknown")
        # The first step of the chain that does more than carry a column is where it is computed.
        computed = [_unaliased(n.expression) for n in nodes if not _is_carried(n.expression)]
        computed = [e for e in computed if not isinstance(e, exp.Table)]
        passthrough = len(sources) == 1 and not computed
        expression = (computed[0] if computed else _unaliased(root.expression)).sql(dialect=DIALECT)
        origins.append(ColumnOrigin(name, sources, passthrough, expression))
    return origins


def _unaliased(expression: exp.Expression) -> exp.Expression:
    return expression.this if isinstance(expression, exp.Alias) else expression


def _is_carried(expression: exp.Expression) -> bool:
    return isinstance(_unaliased(expression), (exp.Column, exp.Table))


def column_comments(con: duckdb.DuckDBPyConnection, model: SqlModel) -> dict[str, str]:
    """A comment per output column of the built table: a column carried through unchanged from a
    commented column takes that comment; any other says how it is computed and from which
    columns; when sqlglot cannot trace the query, each column says so and why."""
    rows = con.execute(
        "SELECT table_name, column_name, data_type, comment FROM duckdb_columns() WHERE schema_name = current_schema()"
    ).fetchall()
    known = {(t.lower(), c): comment for t, c, _, comment in rows if comment is not None}
    schema: dict[str, dict[str, str]] = {}
    for t, c, data_type, _ in rows:
        if t.lower() != model.name.lower():
            schema.setdefault(t.lower(), {})[c] = data_type
    try:
        origins = column_origins(model, schema)
    except SqlModelError as e:
        # the table is built; say on each column why it has no derived description
        reason = str(e).removeprefix(f"{model.path}: ")
        columns = [c for t, c, _, _ in rows if t.lower() == model.name.lower()]
        return {c: f"computed in {model.path.name}; sqlglot could not trace it ({reason})" for c in columns}
    comments = {}
    for origin in origins:
        if origin.passthrough and origin.sources[0] in known:
            table, column = origin.sources[0]
            comments[origin.name] = f"{known[origin.sources[0]]} (from {table}.{column})"
        elif origin.passthrough:
            table, column = origin.sources[0]
            comments[origin.name] = f"{table}.{column} unchanged ({table}.{column} has no comment)"
        elif origin.sources:
            names = ", ".join(f"{t}.{c}" for t, c in origin.sources)
            comments[origin.name] = f"computed in {model.path.name}: {origin.expression} (from {names})"
        else:
            comments[origin.name] = f"computed in {model.path.name}: {origin.expression}"
    return comments


def _comment_model(con: duckdb.DuckDBPyConnection, model: SqlModel) -> None:
    description = model_comment(model) or f"built by {model.path.name} (the file has no leading -- comment)"
    con.execute(f'COMMENT ON TABLE "{model.name}" IS {_sql_string(description)}')
    for column, text in column_comments(con, model).items():
        con.execute(f'COMMENT ON COLUMN "{model.name}"."{column}" IS {_sql_string(text)}')


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back if a transaction is still open (a failed COMMIT has already ended it)."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass
