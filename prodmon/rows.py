"""Model rows without the ORM's query compiler, for the ingest hot path.

Building a queryset and compiling it costs 0.5-1.3 ms of CPU per statement;
the statement itself costs a few hundredths of that on a local PostgreSQL.
The hot path therefore writes its SQL by hand and uses these helpers to turn
rows into model instances (with the same converters the ORM applies) and
instances back into rows. Everything else keeps using the ORM.

Column lists, converters and prepared values come from the model's fields, so
a field added to a model is handled without touching the SQL here.
"""

from functools import cache

from django.db import connection, models
from django.utils import timezone


@cache
def _fields(model: type[models.Model]) -> tuple[models.Field, ...]:
    return tuple(model._meta.concrete_fields)


def table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def column(model: type[models.Model], name: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(name).column)


@cache
def _select_list(model: type[models.Model], alias: str) -> str:
    qn = connection.ops.quote_name
    return ", ".join(f"{alias}.{qn(f.column)}" for f in _fields(model))


def select_list(model: type[models.Model], alias: str) -> str:
    """`alias.col, ...` for every concrete field, in the order `load` expects."""
    return _select_list(model, alias)


@cache
def _converters(model: type[models.Model], vendor: str) -> tuple:
    out = []
    for field in _fields(model):
        expression = field.get_col(model._meta.db_table)
        funcs = connection.ops.get_db_converters(expression) + field.get_db_converters(connection)
        out.append((expression, tuple(funcs)))
    return tuple(out)


def load(model: type[models.Model], row, start: int = 0) -> models.Model:
    """A model instance from `row[start:start + n]`, selected by `select_list`."""
    fields = _fields(model)
    values = list(row[start : start + len(fields)])
    for i, (expression, funcs) in enumerate(_converters(model, connection.vendor)):
        value = values[i]
        for func in funcs:
            value = func(value, expression, connection)
        values[i] = value
    return model.from_db(connection.alias, [f.attname for f in fields], values)


def fetch(model: type[models.Model], sql: str, params, extra: int = 0):
    """Run `sql` (which selects `select_list(model, …)` first, then `extra`
    further columns) and return (instance, extras) for the first row, or None."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    n = len(_fields(model))
    return load(model, row), tuple(row[n : n + extra])


def fetch_all(model: type[models.Model], sql: str, params, extra: int = 0) -> list:
    """`fetch` for every row: [(instance, extras)]."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        found = cursor.fetchall()
    n = len(_fields(model))
    return [(load(model, row), tuple(row[n : n + extra])) for row in found]


def for_update(alias: str = "") -> str:
    """The row-lock clause where the database has one (PostgreSQL), else ''."""
    if not connection.features.has_select_for_update:
        return ""
    return f" FOR UPDATE OF {alias}" if alias else " FOR UPDATE"


def update(obj: models.Model, names) -> None:
    """UPDATE the named fields of `obj`'s row from its attributes."""
    meta = obj._meta
    qn = connection.ops.quote_name
    sets, params = [], []
    for name in names:
        field = meta.get_field(name)
        if getattr(field, "auto_now", False):
            setattr(obj, field.attname, timezone.now())
        sets.append(f"{qn(field.column)} = %s")
        params.append(field.get_db_prep_save(getattr(obj, field.attname), connection))
    if not sets:
        return
    params.append(obj.pk)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table(type(obj))} SET {', '.join(sets)} WHERE {qn(meta.pk.column)} = %s",  # noqa: S608
            params,
        )


def update_many(objs: list[models.Model], names) -> None:
    """`update` of the same fields of many rows of one model, in one statement."""
    if not objs or not names:
        return
    meta = objs[0]._meta
    qn = connection.ops.quote_name
    fields = [meta.get_field(name) for name in names]
    now = timezone.now()
    postgres = connection.vendor == "postgresql"

    def cast(field: models.Field) -> str:
        return f"CAST(%s AS {field.db_type(connection)})" if postgres else "%s"

    row_sql = "(" + ", ".join([cast(meta.pk), *(cast(f) for f in fields)]) + ")"
    params = []
    for obj in objs:
        params.append(obj.pk)
        for field in fields:
            if getattr(field, "auto_now", False):
                setattr(obj, field.attname, now)
            params.append(field.get_db_prep_save(getattr(obj, field.attname), connection))
    t, pk = table(type(objs[0])), qn(meta.pk.column)
    names_sql = ", ".join(["pk_", *(qn(f.column) for f in fields)])
    sets = ", ".join(f"{qn(f.column)} = v.{qn(f.column)}" for f in fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH v({names_sql}) AS (VALUES {', '.join([row_sql] * len(objs))}) "  # noqa: S608
            f"UPDATE {t} SET {sets} FROM v WHERE {t}.{pk} = v.pk_",
            params,
        )


def insert(model: type[models.Model], conflict: tuple[str, ...] = (), **values):
    """INSERT a row, every field not given taking its default (auto_now and
    auto_now_add: now). Returns the instance, or None when `conflict` names
    the unique columns and a row with them exists already."""
    qn = connection.ops.quote_name
    now = timezone.now()
    obj = model()
    cols, params = [], []
    for field in _fields(model):
        if field.primary_key or field.generated:
            continue  # the database computes generated columns
        if field.name in values:
            setattr(obj, field.name, values[field.name])
        elif field.attname in values:
            setattr(obj, field.attname, values[field.attname])
        elif getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            setattr(obj, field.attname, now)
        cols.append(qn(field.column))
        params.append(field.get_db_prep_save(getattr(obj, field.attname), connection))
    on_conflict = ""
    if conflict:
        targets = ", ".join(qn(model._meta.get_field(n).column) for n in conflict)
        on_conflict = f" ON CONFLICT ({targets}) DO NOTHING"
    sql = (
        f"INSERT INTO {table(model)} ({', '.join(cols)}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(cols))}){on_conflict} "
        f"RETURNING {qn(model._meta.pk.column)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    obj.pk = row[0]
    for field in _fields(model):
        if field.generated:  # read back on first access, as after Model.save()
            obj.__dict__.pop(field.attname, None)
    obj._state.adding = False
    obj._state.db = connection.alias
    return obj


def _built(model: type[models.Model], rows_values: list[dict]):
    """(fields, instances, params) of rows to INSERT: every field not given
    takes its default (auto_now and auto_now_add: now)."""
    now = timezone.now()
    fields = [f for f in _fields(model) if not (f.primary_key or f.generated)]
    objs, params = [], []
    for values in rows_values:
        obj = model()
        for field in fields:
            if field.name in values:
                setattr(obj, field.name, values[field.name])
            elif field.attname in values:
                setattr(obj, field.attname, values[field.attname])
            elif getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
                setattr(obj, field.attname, now)
            params.append(field.get_db_prep_save(getattr(obj, field.attname), connection))
        objs.append(obj)
    return fields, objs, params


def insert_many(model: type[models.Model], conflict: tuple[str, ...], rows_values: list[dict]):
    """`insert` of many rows in one statement, ON CONFLICT (`conflict`) DO
    NOTHING. Returns, per row, its instance, or None where a row with the
    same `conflict` values existed (or came earlier in `rows_values`)."""
    if not rows_values:
        return []
    qn = connection.ops.quote_name
    fields, objs, params = _built(model, rows_values)
    conflict_fields = [model._meta.get_field(n) for n in conflict]
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    targets = ", ".join(qn(f.column) for f in conflict_fields)
    returning = ", ".join([qn(model._meta.pk.column), *(qn(f.column) for f in conflict_fields)])
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table(model)} ({', '.join(qn(f.column) for f in fields)}) "  # noqa: S608
            f"VALUES {', '.join([row_sql] * len(objs))} ON CONFLICT ({targets}) DO NOTHING "
            f"RETURNING {returning}",
            params,
        )
        inserted = {tuple(row[1:]): row[0] for row in cursor.fetchall()}
    out = []
    for obj in objs:
        key = tuple(
            f.get_db_prep_save(getattr(obj, f.attname), connection) for f in conflict_fields
        )
        pk = inserted.pop(key, None)
        if pk is None:
            out.append(None)
            continue
        obj.pk = pk
        for field in _fields(model):
            if field.generated:
                obj.__dict__.pop(field.attname, None)
        obj._state.adding = False
        obj._state.db = connection.alias
        out.append(obj)
    return out


def insert_rows(model: type[models.Model], rows_values: list[dict]) -> None:
    """INSERT many rows in one statement; a row that hits a unique constraint
    is skipped (ON CONFLICT DO NOTHING), as bulk_create(ignore_conflicts=True)."""
    if not rows_values:
        return
    qn = connection.ops.quote_name
    fields, _, params = _built(model, rows_values)
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table(model)} ({', '.join(qn(f.column) for f in fields)}) "  # noqa: S608
            f"VALUES {', '.join([row_sql] * len(rows_values))} ON CONFLICT DO NOTHING",
            params,
        )
