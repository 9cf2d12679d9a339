"""`flowmetal db export`: runs, journals and schedule fires as CSV or newline-delimited JSON,
for analysis elsewhere (Datasette, pandas, jq, a spreadsheet).

Every table is read from one snapshot of the store (store.copy.reading: sqlite-utils on
SQLite, a server-side cursor in a REPEATABLE READ transaction on PostgreSQL), streamed,
so a large journal never has to fit in memory. Values are written as they are stored:
times are epoch seconds, JSON columns (args, result, error, data...) stay JSON text,
secrets stay masked (`***`) as the journal holds them, and a large result is the
`{"$blob": hash}` reference the journal holds. The columns are the same on both stores
(SQLite's derived journal `key` is left out), in one fixed order.
"""

import csv
import json

from flowmetal.store.copy import columns, reading

FORMATS = ("csv", "ndjson")
EXPORTS = {  # table: (columns first, ORDER BY)
    "runs": (("id", "num"), "num"),
    "journal": (("run_id", "seq"), "run_id, seq"),
    "fires": (("schedule", "nominal"), "schedule, nominal"),
}
LEFT_OUT = {"journal": {"key"}}


def export_columns(store, table):
    """The exported columns of `table`: its leading columns, then the rest in the store's order."""
    lead, _ = EXPORTS[table]
    rest = [c for c in columns(store, table) if c not in lead and c not in LEFT_OUT.get(table, ())]
    return [*lead, *rest]


def file_name(table, fmt):
    return f"{table}.{'csv' if fmt == 'csv' else 'ndjson'}"


def export(store, tables, fmt, open_out):
    """Write each of `tables` in format `fmt` to the text file `open_out(table)` gives (the
    caller closes it). Returns {table: rows written}."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: one of {', '.join(FORMATS)}")
    written = {}
    with reading(store) as rows:
        for table in tables:
            cols = export_columns(store, table)
            out = open_out(table)
            try:
                written[table] = _write(out, fmt, cols, rows(table, cols, EXPORTS[table][1]))
            finally:
                out.flush()
    return written


def _write(out, fmt, cols, rows):
    n = 0
    if fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(cols)
        for row in rows:
            w.writerow([_csv_value(row[c]) for c in cols])
            n += 1
    else:
        for row in rows:
            out.write(json.dumps({c: row[c] for c in cols}, ensure_ascii=False, allow_nan=False) + "\n")
            n += 1
    return n


def _csv_value(value):
    if isinstance(value, float):
        return repr(value)  # (exact: float(text) gives the stored value back)
    return value  # (None: an empty field)
