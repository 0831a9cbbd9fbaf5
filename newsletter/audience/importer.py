"""CSV import and CSV/JSON Lines export of subscribers, streaming in constant memory.

Import format: UTF-8 (with or without BOM), CRLF or LF, a header row; an ``email`` column is
required (header names are case-insensitive), ``name`` and ``status`` are optional, every other
column becomes an attribute (empty cells are left out). Blank lines are skipped; duplicates
(same address, any case) are merged, later non-empty values winning. A bad row is rejected with
its line number and the import goes on; a bad file (unreadable, not UTF-8, no email column)
stops it with nothing written. The whole import is all or nothing (one store transaction, or
journalled chunks for a large file: see newsletter/store/sqlite_import.py).

Export writes ``email,name,status`` and one column per attribute, which imports back to the same
state. A CSV cell that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``,
``@``, tab or CR) is written with an apostrophe in front, which the import takes off again.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from newsletter.audience.attributes import attr_key
from newsletter.audience.addresses import (PLAIN_ADDRESS, clean_text, fast_key, has_control_chars,
                                           matched_key, parse_address)
from newsletter.errors import ValidationError
from newsletter.store.base import ImportRow, ImportSummary, Store
from newsletter.store.models import SubscriberStatus

RESERVED = ("email", "name", "status")
MAX_NAME = 200  # the web form's limit; longer names are cut (and counted as cleaned)
# OWASP's CSV injection rule: a cell starting with one of these is a formula to a spreadsheet.
# The export puts an apostrophe in front (and in front of a cell that already starts with
# apostrophes before one); the import takes exactly one off again, so the round trip is exact.
_QUOTED_FORMULA = re.compile(r"'+[=+\-@\t\r]")
_NEEDS_QUOTE = re.compile(r"'*[=+\-@\t\r]")
_STATUSES = {s.value for s in SubscriberStatus}
_PROGRESS_EVERY = 10_000


@dataclass(frozen=True)
class Reject:
    """A row that was not imported: where, what, why."""

    line: int
    email: str
    reason: str
    file: str | None = None  # set when not the file named on the command line (a zip member)


@dataclass(frozen=True)
class Header:
    email: int
    name: int | None
    status: int | None
    attributes: tuple[tuple[int, str], ...]
    width: int
    extra: int | None = None  # a column of JSON objects spread into attributes (service imports)


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
        _refuse_binary(raw, path)
        size = _size(raw)
        summary = ImportSummary(dry_run=dry_run)
        rows = read_rows(raw, path, summary, check_dns=check_dns, on_reject=on_reject,
                         on_progress=(lambda: on_progress(raw.tell(), size)) if on_progress else None)
        store.import_rows(rows, list_name=list_name, dry_run=dry_run, summary=summary)
        if on_progress:
            on_progress(size, size)
    return summary


def _refuse_binary(raw, path: Path) -> None:
    """A file that is not text at all (a spreadsheet, an archive, UTF-16) is said to be so, not
    reported as empty or as a header with odd column names."""
    try:
        head = raw.read(8192)
        raw.seek(0)
    except OSError as err:
        raise ValidationError(f"cannot read: {err.strerror or err}", file=path) from None
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValidationError("is UTF-16 text: save it as UTF-8 CSV and try again", file=path)
    # Text has next to no control characters; a stray one in a cell is cleaned like any other.
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 13))
    magic = head.startswith((b"PK\x03\x04", b"\x1f\x8b", b"\xd0\xcf\x11\xe0", b"%PDF", b"\x89PNG", b"\x7fELF"))
    if magic or controls > len(head) // 100:
        kind = {b"PK\x03\x04": " (a zip file: .xlsx, .ods or .zip?)",
                b"\xd0\xcf\x11\xe0": " (an old Excel .xls?)"}.get(head[:4], "")
        kind = kind or {b"\x1f\x8b": " (gzip)"}.get(head[:2], "")
        raise ValidationError(f"is not a text file{kind}: expected a UTF-8 CSV with a header row "
                              "(export it as CSV from the spreadsheet)", file=path)
@dataclass
class ImportResult:
    """A service import: the counts, what each file's columns became, consent records kept."""

    summary: ImportSummary
    reports: list = None  # newsletter.audience.formats.FormatReport, one per file read
    consent_records: int = 0
    skipped_files: list = None  # zip members left out, with why


def import_export(store: Store, path: str | Path, *, list_name: str, fmt: str = "auto",
                  dry_run: bool = False, check_dns: bool = False,
                  on_reject: Callable[[Reject], None] | None = None,
                  on_progress: Progress | None = None) -> ImportResult:
    """Import a CSV file or export ``.zip`` written by Mailchimp, Substack, Buttondown, listmonk
    or this program (``fmt``: one of ``import_formats.FORMATS``; ``auto`` reads the header).
    One store transaction for every file of a zip; consent evidence becomes consent records
    (written right after, idempotently: running the same import again completes them)."""
    import zipfile

    from newsletter.audience import formats
    from newsletter.store.consent import record_consent

    path = Path(path)
    if fmt not in formats.FORMATS:
        raise ValidationError(f"--from must be one of {', '.join(formats.FORMATS)}, not {fmt!r}")
    if store.get_list(list_name) is None:
        raise ValidationError(f"no such list {list_name!r} (create it with `newsletter lists "
                              f"create {list_name}`)")
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as err:
        raise ValidationError(f"cannot read: {err.strerror or err}", file=path) from None
    if not is_zip and fmt in ("auto", "csv") and _native(path, fmt):
        summary = import_csv(store, path, list_name=list_name, dry_run=dry_run, check_dns=check_dns,
                             on_reject=on_reject, on_progress=on_progress)
        return ImportResult(summary, [], 0, [])
    consents: list = []
    reports: list = []
    skipped: list = []
    summary = ImportSummary(dry_run=dry_run)
    with _sources(path, is_zip, skipped) as sources:
        plans = _plan_sources(sources, path, fmt, consents.append, reports, on_reject or (lambda r: None))
        service = "+".join(dict.fromkeys(r.fmt for r in reports))
        store.import_rows(_service_rows(plans, summary, check_dns), list_name=list_name,
                          dry_run=dry_run, summary=summary, source=f"import:{service}")
    if reports:
        label = f"{reports[0].fmt} export ({path.name})"
        kept = 0 if dry_run else record_consent(store, consents, label)
    else:
        kept = 0
    return ImportResult(summary, reports, kept, skipped)


def _native(path: Path, fmt: str) -> bool:
    """Whether ``path`` is in the importer's own format (``auto`` looks at the header)."""
    from newsletter.audience import formats

    if fmt == "csv":
        return True
    try:
        with open(path, "rb") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
            for fields in csv.reader(text):
                if any(f.strip() for f in fields):
                    return formats.detect(fields) == "csv"
    except ValidationError:
        return True  # nothing recognised: the native reader says which column is missing, and where
    except (UnicodeDecodeError, csv.Error, OSError):
        return True  # the native reader reports what is wrong, with the line
    return True


@contextmanager
def _sources(path: Path, is_zip: bool, skipped: list):
    """``(display name, binary stream, status from the file name)`` for each CSV to read."""
    import zipfile

    from newsletter.audience.formats import mailchimp_member_status

    if not is_zip:
        try:
            raw = open(path, "rb")
        except OSError as err:
            raise ValidationError(f"cannot read: {err.strerror or err}", file=path) from None
        with raw:
            yield [(str(path), raw, None)]
        return
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ValidationError(f"not a readable zip file: {err}", file=path) from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir() and m.filename.lower().endswith(".csv")
                   and not m.filename.startswith("__MACOSX/") and not m.filename.rsplit("/", 1)[-1].startswith(".")]
        if not members:
            raise ValidationError("the zip file holds no .csv file", file=path)
        out = []
        for m in sorted(members, key=lambda m: (_member_order(m.filename), m.filename)):
            status = mailchimp_member_status(m.filename)
            if status is None:
                skipped.append((m.filename, "contacts who never subscribed (no consent to mail them)"))
                continue
            out.append((f"{path}:{m.filename}", archive.open(m), status or None))
        try:
            yield out
        finally:
            for _, stream, _ in out:
                stream.close()


def _member_order(name: str) -> int:
    """Subscribed first, then unsubscribed and cleaned: an address in two files ends as the
    later (opted-out) one."""
    base = name.rsplit("/", 1)[-1].lower()
    return 0 if base.startswith("subscribed") else 1


def _plan_sources(sources, path: Path, fmt: str, on_consent, reports: list,
                  on_reject: Callable[[Reject], None]) -> list[tuple]:
    """Read each file's header and choose its mapping, before anything is written: a file that
    is not the export it should be stops the import with nothing done."""
    from dataclasses import replace

    from newsletter.audience import formats

    plans = []
    for name, raw, file_status in sources:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        reader = csv.reader(text, strict=True)
        where = name if name != str(path) else None
        reject = on_reject if where is None else (lambda r, w=where: on_reject(replace(r, file=w)))
        with _read_errors(name, reader):
            header_fields = next((f for f in reader if any(x.strip() for x in f)), None)
            if header_fields is None:
                raise ValidationError("is empty: expected a header row", file=name)
            chosen = formats.detect(header_fields) if fmt == "auto" else fmt
            if chosen == "csv":
                header = parse_header(header_fields, Path(name), reader.line_num)
                mapped = reader
                reports.append(formats.FormatReport("csv", name, ["the file's own columns"],
                                                    [n for _, n in header.attributes]))
            else:
                mapped = formats.MappedReader(reader, header_fields, chosen, file=name,
                                              file_status=file_status if chosen == "mailchimp" else None,
                                              on_consent=on_consent)
                reports.append(mapped.report)
                keys = mapped.header
                header = Header(0, 1, 2, tuple((i, k) for i, k in enumerate(keys) if 3 <= i < len(keys) - 1),
                                len(keys), extra=len(keys) - 1)
        plans.append((name, reader, mapped, header, reject))
    return plans


@contextmanager
def _read_errors(name: str, reader):
    """Decoding and CSV errors as one-line ``ValidationError`` naming the file and line."""
    try:
        yield
    except UnicodeDecodeError:
        # (no line: the decoder reads ahead in blocks, so the reader's line is not the bad one)
        raise ValidationError("is not UTF-8 text (save it as UTF-8 and try again)", file=name) from None
    except csv.Error as err:
        raise ValidationError(f"malformed CSV: {err}", file=name, line=reader.line_num) from None
    except OSError as err:
        raise ValidationError(f"cannot read: {err}", file=name) from None


def _service_rows(plans: list[tuple], summary: ImportSummary, check_dns: bool) -> Iterator[ImportRow]:
    total = 0
    for name, reader, mapped, header, reject in plans:
        with _read_errors(name, reader):
            yield from _rows(mapped, header, summary, check_dns, reject, None)
        total += summary.rows  # _rows leaves this file's count in summary.rows
        summary.rows = total


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
        plain = None if check_dns else _plain_line(header)
        if plain is not None:
            yield from _plain_rows(text, reader.line_num, plain, header, summary, path,
                                   on_reject or (lambda r: None), on_progress)
        else:
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


def formula_safe(cell: str) -> str:
    """A CSV cell a spreadsheet will show as text, never run as a formula."""
    return "'" + cell if _NEEDS_QUOTE.match(cell) else cell


def unquote_formula(cell: str) -> str:
    """``formula_safe`` undone (a cell of our own export back to the stored value)."""
    return cell[1:] if _QUOTED_FORMULA.match(cell) else cell


def _read_header(reader, path: Path) -> Header:
    for fields in reader:
        if any(f.strip() for f in fields):
            return parse_header(fields, path, reader.line_num)
    raise ValidationError("is empty: expected a header row with an 'email' column", file=path)


def parse_header(fields: list[str], path: Path | None = None, line: int = 1) -> Header:
    """Column positions. ``email``, ``name`` and ``status`` are matched in any case; other
    columns are attributes, their names normalised (``attr_key``: ``City`` and ``city`` are one
    attribute, so both in one header is an error)."""
    names = [unquote_formula(f.strip().lstrip("\ufeff")) for f in fields]
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if not name:
            continue  # e.g. a trailing comma: a column without a name is ignored
        key = attr_key(name)
        if key in seen:
            first = names[seen[key]]
            also = "" if first == name else f" (as {first!r}: names are compared as {key!r})"
            raise ValidationError(f"column {name!r} appears twice in the header{also}", file=path,
                                  line=line)
        if has_control_chars(name):
            raise ValidationError(f"column name {name!r} contains control characters", file=path,
                                  line=line)
        seen[key] = index
    if "email" not in seen:
        found = ", ".join(repr(n) for n in names if n) or "nothing"
        raise ValidationError(f"no 'email' column in the header (found {found})", file=path,
                              line=line)
    attributes = tuple((i, key) for key, i in seen.items() if key not in RESERVED)
    return Header(seen["email"], seen.get("name"), seen.get("status"), attributes, len(names))


def _rows(reader, header: Header, summary: ImportSummary, check_dns: bool,
          on_reject: Callable[[Reject], None],
          on_progress: Callable[[], None] | None) -> Iterator[ImportRow]:
    """The hot loop: a million rows go through here, so it avoids calls and objects per row
    (plain tuples in ImportRow's field order; counters kept in locals)."""
    email_i, width = header.email, header.width
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
            row = _row(fields, header, line, simple, summary, check_dns, on_reject)
            if row is not None:
                yield row
        if on_progress is not None:  # everything read: what is left is the store's work
            summary.rows = rows
            on_progress()
    finally:
        summary.rows = rows


def _row(fields: list[str], header: Header, line: int, simple: bool, summary: ImportSummary,
         check_dns: bool, on_reject: Callable[[Reject], None]) -> ImportRow | None:
    """One record of ``header.width`` fields: the row to import, or None (rejected, counted)."""
    email = fields[header.email].strip()
    if email[:1] == "'":
        email = unquote_formula(email)
    key = None if check_dns else fast_key(email)
    if key is None:
        try:
            address = parse_address(email, check_dns=check_dns)
        except ValidationError as err:
            summary.rejected += 1
            on_reject(Reject(line, email, err.message))
            return None
        email, key = address.email, address.key
    name = fields[header.name] if header.name is not None else ""
    if (simple and name.isascii() and name.isprintable() and len(name) <= MAX_NAME
            and "=?" not in name and name[:1] != "'"):
        # plain email,name rows (isprintable is False for every control character)
        return (key, line, email, name.strip(), "{}", "active")
    return _full_row(fields, header, line, email, key, name, summary, on_reject)


# A whole line of a plain ``email,name`` (or ``email``) file that needs no CSV parsing and no
# cleaning: an address of the fast path's shape (``addresses.PLAIN_ADDRESS``) not starting with
# an apostrophe, then a name of printable ASCII without a quote, a comma or a leading
# apostrophe (no quoting, no second field, no formula quote), then the line's end. Every other
# line goes through the csv module and ``_row``, exactly as in a file of any other shape.
_END = r"(?:\r\n|\n|\r)?"
_PLAIN_NAME = r"((?!')[ !#-+\--~]*+)"  # printable ASCII but '"' and ','; no leading "'"
_PLAIN_LINES = {
    (0, 1, 2): re.compile(rf"((?!'){PLAIN_ADDRESS}),{_PLAIN_NAME}{_END}").fullmatch,
    (0, None, 1): re.compile(rf"((?!'){PLAIN_ADDRESS}){_END}()").fullmatch,
}


def _plain_line(header: Header):
    """The whole-line pattern for a header of just ``email,name`` or ``email``, else None."""
    if header.status is not None or header.attributes or header.extra is not None:
        return None
    return _PLAIN_LINES.get((header.email, header.name, header.width))


def _plain_rows(text, line_num: int, plain, header: Header, summary: ImportSummary, path: Path,
                on_reject: Callable[[Reject], None],
                on_progress: Callable[[], None] | None) -> Iterator[ImportRow]:
    """``_rows`` for a plain ``email,name`` (or ``email``) file, line at a time: a line that
    ``plain`` matches whole is one row needing no CSV parsing and no cleaning (only the
    address's length and label rules, ``matched_key``); any other line is handed, with as many
    following lines as its record spans, to a csv reader and ``_row``: the same rows, rejects
    and line numbers as ``_rows``, at about half the cost per plain row."""
    pending: list[str] = []
    lines = iter(text)

    def source() -> Iterator[str]:  # the csv reader's lines: a handed-over one, then the file's
        while True:
            while pending:
                yield pending.pop()
            line = next(lines, None)
            if line is None:
                return
            yield line

    reader = csv.reader(source(), strict=True)
    width, rows = header.width, 0
    try:
        for text_line in lines:
            line_num += 1
            match = plain(text_line)
            if match is not None:
                email, name = match.groups()
                key = matched_key(email)
                if key is not None and len(name) <= MAX_NAME and "=?" not in name:
                    rows += 1
                    if on_progress is not None and rows % _PROGRESS_EVERY == 0:
                        summary.rows = rows
                        on_progress()
                    yield (key, line_num, email, name.strip(), "{}", "active")
                    continue
            line, before = line_num, reader.line_num
            pending.append(text_line)
            try:
                fields = next(reader)
            except csv.Error as err:
                raise ValidationError(f"malformed CSV: {err}", file=path,
                                      line=line + reader.line_num - before - 1) from None
            line_num += reader.line_num - before - 1  # the lines a quoted field spanned
            if len(fields) != width:
                fields = _odd_row(fields, width, header.email, line, summary, on_reject)
                if fields is None:  # a blank line
                    continue
            rows += 1
            if on_progress is not None and rows % _PROGRESS_EVERY == 0:
                summary.rows = rows
                on_progress()
            if not fields:  # rejected
                continue
            row = _row(fields, header, line, True, summary, False, on_reject)
            if row is not None:
                yield row
        if on_progress is not None:
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
    name, cleaned = clean_text(unquote_formula(name))
    if len(name) > MAX_NAME:
        name, cleaned = name[:MAX_NAME].rstrip(), True
    attributes = {}
    for index, attr in header.attributes:
        value, changed = clean_text(unquote_formula(_get(fields, index)))
        cleaned |= changed
        if value:
            attributes[attr] = value
    if header.extra is not None and _get(fields, header.extra):
        for attr, raw in json.loads(fields[header.extra]).items():
            value, changed = clean_text(raw)
            cleaned |= changed
            if value and attr not in attributes:
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
        writer.writerow([*RESERVED, *map(formula_safe, keys)])
        emit = lambda s: writer.writerow([formula_safe(s.email), formula_safe(s.name), s.status.value,
                                          *(formula_safe(s.attributes.get(k, "")) for k in keys)])
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
