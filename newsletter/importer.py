"""CSV import and CSV/JSON Lines export of subscribers, streaming in constant memory.

Import format: UTF-8 (with or without BOM), CRLF or LF, a header row; an ``email`` column is
required (header names are case-insensitive), ``name`` and ``status`` are optional, every other
column becomes an attribute (empty cells are left out). Blank lines are skipped; duplicates
(same address, any case) are merged, later non-empty values winning. A bad row is rejected with
its line number and the import goes on; a bad file (unreadable, not UTF-8, no email column)
stops it with nothing written. The whole import is all or nothing (one store transaction, or
journalled chunks for a large file: see newsletter/store/sqlite_import.py).

Export writes ``email,name,status`` and one column per attribute, which imports back to the same
state.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from newsletter.addresses import clean_text, fast_key, has_control_chars, parse_address
from newsletter.errors import ValidationError
from newsletter.store.base import ImportRow, ImportSummary, Store
from newsletter.store.models import SubscriberStatus

RESERVED = ("email", "name", "status")
_STATUSES = {s.value for s in SubscriberStatus}
_PROGRESS_EVERY = 10_000


@dataclass(frozen=True)
class Reject:
    """A row that was not imported: where, what, why."""

    line: int
    email: str
    reason: str


@dataclass(frozen=True)
class Header:
    email: int
    name: int | None
    status: int | None
    attributes: tuple[tuple[int, str], ...]
    width: int


Progress = Callable[[int, int], None]  # (done, total): bytes for imports, rows for exports


def import_csv(store: Store, path: str | Path, *, list_name: str, dry_run: bool = False,
               check_dns: bool = False, on_reject: Callable[[Reject], None] | None = None,
               on_progress: Progress | None = None) -> ImportSummary:
    """Import ``path`` into ``list_name``. Raises ``ValidationError`` (naming the file and line)
    for an unreadable file, non-UTF-8 text or a missing email column; nothing is written then.
    ``on_reject`` hears about every rejected row; ``on_progress(bytes_read, file_size)``."""
    path = Path(path)
    if store.get_list(list_name) is None:
        raise ValidationError(f"no such list {list_name!r} (create it with `newsletter lists "
                              f"create {list_name}`)")
    try:
        raw = open(path, "rb")
    except OSError as err:
        raise ValidationError(f"cannot read: {err.strerror or err}", file=path) from None
    with raw:
        size = _size(raw)
        summary = ImportSummary(dry_run=dry_run)
        rows = read_rows(raw, path, summary, check_dns=check_dns, on_reject=on_reject,
                         on_progress=(lambda: on_progress(raw.tell(), size)) if on_progress else None)
        store.import_rows(rows, list_name=list_name, dry_run=dry_run, summary=summary)
        if on_progress:
            on_progress(size, size)
    return summary


def _size(raw) -> int:
    try:
        return max(Path(raw.name).stat().st_size, 1)
    except (OSError, TypeError):
        return 1


def read_rows(raw, path: Path, summary: ImportSummary, *, check_dns: bool = False,
              on_reject: Callable[[Reject], None] | None = None,
              on_progress: Callable[[], None] | None = None) -> Iterator[ImportRow]:
    """Parse and validate the CSV in binary stream ``raw``, yielding good rows and counting
    rows, rejects and cleaned fields in ``summary``."""
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
    reader = csv.reader(text, strict=True)
    try:
        header = _read_header(reader, path)
        yield from _rows(reader, header, summary, check_dns, on_reject or (lambda r: None),
                         on_progress)
    except UnicodeDecodeError:
        raise ValidationError("is not UTF-8 text (save it as UTF-8 and try again)", file=path,
                              line=_first_bad_line(path)) from None
    except csv.Error as err:
        raise ValidationError(f"malformed CSV: {err}", file=path, line=reader.line_num) from None
    except OSError as err:
        raise ValidationError(f"cannot read: {err}", file=path) from None


def _first_bad_line(path: Path) -> int | None:
    """The first line that is not UTF-8 (the decoder works in chunks, so find it again)."""
    try:
        with open(path, "rb") as fh:
            for number, line in enumerate(fh, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    return number
    except OSError:
        return None
    return None


def _read_header(reader, path: Path) -> Header:
    for fields in reader:
        if any(f.strip() for f in fields):
            return parse_header(fields, path, reader.line_num)
    raise ValidationError("is empty: expected a header row with an 'email' column", file=path)


def parse_header(fields: list[str], path: Path | None = None, line: int = 1) -> Header:
    """Column positions. ``email``, ``name`` and ``status`` are matched in any case; other
    columns are attributes named exactly as written (so ``City`` and ``city`` may coexist)."""
    names = [f.strip().lstrip("\ufeff") for f in fields]
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if not name:
            continue  # e.g. a trailing comma: a column without a name is ignored
        key = name.lower() if name.lower() in RESERVED else name
        if key in seen:
            raise ValidationError(f"column {name!r} appears twice in the header", file=path, line=line)
        if has_control_chars(name):
            raise ValidationError(f"column name {name!r} contains control characters", file=path,
                                  line=line)
        seen[key] = index
    if "email" not in seen:
        found = ", ".join(repr(n) for n in names if n) or "nothing"
        raise ValidationError(f"no 'email' column in the header (found {found})", file=path,
                              line=line)
    attributes = tuple((i, names[i]) for key, i in seen.items() if key not in RESERVED)
    return Header(seen["email"], seen.get("name"), seen.get("status"), attributes, len(names))


def _rows(reader, header: Header, summary: ImportSummary, check_dns: bool,
          on_reject: Callable[[Reject], None],
          on_progress: Callable[[], None] | None) -> Iterator[ImportRow]:
    """The hot loop: a million rows go through here, so it avoids calls and objects per row
    (plain tuples in ImportRow's field order; counters kept in locals)."""
    email_i, width = header.email, header.width
    name_i = header.name if header.name is not None else width  # width: an always-empty column
    simple = header.status is None and not header.attributes
    previous_end, rows = reader.line_num, 0
    try:
        for fields in reader:
            line, previous_end = previous_end + 1, reader.line_num
            if len(fields) != width:
                fields = _odd_row(fields, width, email_i, line, summary, on_reject)
                if fields is None:  # a blank line
                    continue
            rows += 1
            if not fields:  # rejected
                continue
            if on_progress is not None and rows % _PROGRESS_EVERY == 0:
                summary.rows = rows
                on_progress()
            email = fields[email_i].strip()
            key = None if check_dns else fast_key(email)
            if key is None:
                try:
                    address = parse_address(email, check_dns=check_dns)
                except ValidationError as err:
                    summary.rejected += 1
                    on_reject(Reject(line, email, err.message))
                    continue
                email, key = address.email, address.key
            name = fields[name_i] if name_i < width else ""
            if simple and name.isascii() and name.isprintable():
                # plain email,name rows (isprintable is False for every control character)
                yield (key, line, email, name.strip(), "{}", "active")
                continue
            row = _full_row(fields, header, line, email, key, name, summary, on_reject)
            if row is not None:
                yield row
        if on_progress is not None:  # everything read: what is left is the store's work
            summary.rows = rows
            on_progress()
    finally:
        summary.rows = rows


def _odd_row(fields: list[str], width: int, email_i: int, line: int, summary: ImportSummary,
             on_reject: Callable[[Reject], None]) -> list[str] | None:
    """A row whose field count differs from the header's: a blank line (None), a short row
    (padded: trailing empty cells are often left out) or a long one (rejected: [])."""
    if len(fields) <= 1 and not (fields and fields[0].strip()):
        return None
    if len(fields) < width and len(fields) > email_i:
        return fields + [""] * (width - len(fields))
    summary.rejected += 1
    email = _get(fields, email_i).strip()
    on_reject(Reject(line, email, f"{email!r}: the row has {len(fields)} fields, the header "
                                  f"{width}"))
    return []


def _get(fields: list[str], index: int | None) -> str:
    return fields[index] if index is not None and index < len(fields) else ""


def _full_row(fields: list[str], header: Header, line: int, email: str, key: str, name: str,
              summary: ImportSummary, on_reject: Callable[[Reject], None]) -> ImportRow | None:
    status = _get(fields, header.status).strip().lower() or "active"
    if status not in _STATUSES:
        summary.rejected += 1
        on_reject(Reject(line, email, f"{email!r}: status {status!r} is not one of "
                                      f"{', '.join(sorted(_STATUSES))}"))
        return None
    name, cleaned = clean_text(name)
    attributes = {}
    for index, attr in header.attributes:
        value, changed = clean_text(_get(fields, index))
        cleaned |= changed
        if value:
            attributes[attr] = value
    if cleaned:
        summary.cleaned += 1
    attrs = json.dumps(attributes, ensure_ascii=False, sort_keys=True) if attributes else "{}"
    return ImportRow(key, line, email, name, attrs, status)


# -- export ------------------------------------------------------------------------------------
def export_subscribers(store: Store, out: TextIO, *, fmt: str = "csv", list_name: str | None = None,
                       status: SubscriberStatus | None = None,
                       on_progress: Progress | None = None) -> int:
    """Write subscribers to ``out`` as ``csv`` or ``jsonl``, streaming; returns the count."""
    if fmt not in ("csv", "jsonl"):
        raise ValidationError(f"unknown export format {fmt!r} (csv or jsonl)")
    total = store.count_subscribers(list_name=list_name, status=status) if on_progress else 0
    subscribers = store.iter_subscribers(list_name=list_name, status=status)
    if fmt == "csv":
        keys = sorted({k for s in store.iter_subscribers(list_name=list_name, status=status)
                       for k in s.attributes})
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*RESERVED, *keys])
        emit = lambda s: writer.writerow([s.email, s.name, s.status.value,
                                          *(s.attributes.get(k, "") for k in keys)])
    else:
        emit = lambda s: out.write(json.dumps(_json_record(s), ensure_ascii=False) + "\n")
    count = 0
    for count, subscriber in enumerate(subscribers, start=1):
        emit(subscriber)
        if on_progress and count % _PROGRESS_EVERY == 0:
            on_progress(count, total)
    if on_progress:
        on_progress(count, total)
    return count


def _json_record(s) -> dict:
    return {"email": s.email, "name": s.name, "status": s.status.value,
            "attributes": s.attributes, "source": s.source, "created_at": s.created_at,
            "confirmed_at": s.confirmed_at, "unsubscribed_at": s.unsubscribed_at}


def write_rejects(rejects_path: Path) -> tuple[Callable[[Reject], None], Callable[[bool], None]]:
    """A reject sink writing CSV (line,email,reason) to a temporary file beside
    ``rejects_path``, and ``finish(ok)``: rename into place on success, remove on failure."""
    tmp = rejects_path.with_name(rejects_path.name + ".part")
    try:
        fh = open(tmp, "w", encoding="utf-8", newline="")
    except OSError as err:
        raise ValidationError(f"cannot write: {err.strerror or err}", file=rejects_path) from None
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(["line", "email", "reason"])

    def sink(reject: Reject) -> None:
        writer.writerow([reject.line, reject.email, reject.reason])

    def finish(ok: bool) -> None:
        fh.close()
        if ok:
            tmp.replace(rejects_path)
        else:
            tmp.unlink(missing_ok=True)

    return sink, finish
