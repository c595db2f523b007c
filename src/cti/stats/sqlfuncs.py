"""The few SQL functions whose spelling differs between SQLite and PostgreSQL.

Everything else in the reports is plain SQLAlchemy Core; these compile per dialect so the same
statement runs on both.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import BigInteger, Integer, Text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


class epoch_seconds(FunctionElement[int]):
    """Whole seconds since 1970 of a stored UTC timestamp (floor)."""

    type = BigInteger()
    inherit_cache = True
    name = "epoch_seconds"


@compiles(epoch_seconds, "sqlite")
def _epoch_sqlite(element: epoch_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    # Timestamps are stored as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC (UTCDateTime). unixepoch()
    # (SQLite 3.38+) is about twice as fast as strftime('%s') over a year of rows.
    column = compiler.process(element.clauses, **kw)
    if sqlite3.sqlite_version_info >= (3, 38):
        return f"unixepoch({column})"
    return f"CAST(strftime('%s', {column}) AS INTEGER)"


@compiles(epoch_seconds, "postgresql")
def _epoch_pg(element: epoch_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(floor(extract(epoch FROM {compiler.process(element.clauses, **kw)})) AS BIGINT)"


class json_array_len(FunctionElement[int]):
    type = Integer()
    inherit_cache = True
    name = "json_array_len"


@compiles(json_array_len, "sqlite")
@compiles(json_array_len, "postgresql")
def _json_len(element: json_array_len, compiler: SQLCompiler, **kw: Any) -> str:
    # Same name on both (PostgreSQL's json type, SQLite's JSON1).
    return f"json_array_length({compiler.process(element.clauses, **kw)})"


class json_item_field(FunctionElement[str]):
    """`field` of the object at `index` of a JSON array column (-1: the last one)."""

    type = Text()
    # index and field are not part of SQLAlchemy's cache key: never share a compiled form.
    inherit_cache = False
    name = "json_item_field"

    def __init__(self, column: Any, index: int, field: str) -> None:
        self.index = int(index)
        self.field = field
        super().__init__(column)


@compiles(json_item_field, "sqlite")
def _item_sqlite(element: json_item_field, compiler: SQLCompiler, **kw: Any) -> str:
    where = "#-1" if element.index == -1 else str(element.index)
    return f"json_extract({compiler.process(element.clauses, **kw)}, '$[{where}].{element.field}')"


@compiles(json_item_field, "postgresql")
def _item_pg(element: json_item_field, compiler: SQLCompiler, **kw: Any) -> str:
    return f"(({compiler.process(element.clauses, **kw)}) -> {element.index} ->> '{element.field}')"


class json_field(FunctionElement[str]):
    """`field` of a JSON object value (one element of an unnested array)."""

    type = Text()
    inherit_cache = False
    name = "json_field"

    def __init__(self, value: Any, field: str) -> None:
        self.field = field
        super().__init__(value)


@compiles(json_field, "sqlite")
def _field_sqlite(element: json_field, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_extract({compiler.process(element.clauses, **kw)}, '$.{element.field}')"


@compiles(json_field, "postgresql")
def _field_pg(element: json_field, compiler: SQLCompiler, **kw: Any) -> str:
    return f"(({compiler.process(element.clauses, **kw)}) ->> '{element.field}')"
