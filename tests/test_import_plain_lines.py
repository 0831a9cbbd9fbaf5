"""The importer's line-at-a-time road for plain ``email,name`` and ``email`` files
(``importer._plain_rows``) gives exactly what the general CSV road (``importer._rows``) gives:
the same rows, rejects, line numbers, counts and one-line errors, whatever mix of plain and
unusual lines (quoted or multi-line fields, formula quotes, control characters, encoded words,
non-ASCII, wrong field counts, blank lines, CR/LF/CRLF endings, a BOM) the file holds."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import pytest

from newsletter.audience import importer
from newsletter.errors import ValidationError
from newsletter.store.base import ImportSummary

ADDRESSES = ["a@b.com", "Ann@Example.ORG", "x-y@ex-ample.com", "bad@", "b@c.test", "'=x@y.com",
             "'ab@c.com", " sp@c.com ", "o'neil@c.com", "a@xn--bcher-kva.example", "ü@x.com",
             "a@bücher.de", "a.b.c@d.e.fg", "-a@-b.com", "a@b-.com", "z" * 70 + "@b.com",
             "a@" + "b" * 64 + ".com", "", "A@B.COM"]
NAMES = ["Ann", "", " Ann ", "O'Brien", "'=cmd", "=?utf-8?q?=0Aevil?=", "A\tB", '"Quoted"',
         '"multi\nline"', '"multi\r\nline, two"', "a,b", "Ä", "x" * 201, "back\\slash", "\x7f",
         "  ", "'plain"]


def _file(rnd: random.Random, width: int) -> str:
    lines = ["email,name" if width == 2 else "Email"]
    for _ in range(rnd.randint(0, 12)):
        address = rnd.choice(ADDRESSES)
        roll = rnd.random()
        if roll < 0.1:
            lines.append("")
        elif width == 1:
            lines.append(address + (",x" if roll > 0.95 else ""))
        elif roll < 0.2:
            lines.append(address)  # a short row
        elif roll < 0.25:
            lines.append(f"{address},x,extra")  # a long one
        else:
            lines.append(f"{address},{rnd.choice(NAMES)}")
    end = rnd.choice(["\n", "\r\n", "\r"])
    text = end.join(lines) + (end if rnd.random() < 0.7 else "")
    if rnd.random() < 0.05:
        text += 'a@b.com,"unterminated\n'
    return ("\ufeff" if rnd.random() < 0.2 else "") + text


def _general(data: bytes):
    """The general road, by hand: the header read, then ``_rows`` on the csv reader."""
    summary, rejects = ImportSummary(), []
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
    reader = csv.reader(text, strict=True)
    try:
        header = importer._read_header(reader, Path("in.csv"))
        rows = list(importer._rows(reader, header, summary, False, rejects.append, None))
    except csv.Error as err:
        return ("error", f"malformed CSV: {err}", reader.line_num)
    return rows, rejects, summary.as_dict()


def _plain(data: bytes):
    summary, rejects = ImportSummary(), []
    try:
        rows = list(importer.read_rows(io.BytesIO(data), Path("in.csv"), summary,
                                       on_reject=rejects.append))
    except ValidationError as err:
        return ("error", err.message, err.line)
    return rows, rejects, summary.as_dict()


@pytest.mark.parametrize("seed", range(4))
def test_plain_lines_read_as_the_general_road_reads_them(seed):
    rnd = random.Random(seed)
    plain_rows = 0
    for _ in range(600):
        data = _file(rnd, rnd.choice([1, 2])).encode()
        expected, got = _general(data), _plain(data)
        assert got == expected, data
        if got[0] != "error":
            plain_rows += len(got[0])
    assert plain_rows > 500  # the mix really held rows (not only errors)


def test_a_multi_line_field_keeps_the_following_line_numbers(tmp_path):
    data = ('email,name\r\na@example.com,Ann\r\nb@example.com,"Bob\r\nSmith"\r\n\r\n'
            'bad@,Carl\r\nd@example.com,Dee\r\n').encode()
    rejects: list = []
    rows = list(importer.read_rows(io.BytesIO(data), Path("in.csv"), ImportSummary(),
                                   on_reject=rejects.append))
    assert [(r[1], r[0], r[3]) for r in rows] == [
        (2, "a@example.com", "Ann"), (3, "b@example.com", "Bob Smith"), (7, "d@example.com", "Dee")]
    assert [(r.line, r.email) for r in rejects] == [(6, "bad@")]


def test_a_broken_quote_after_plain_lines_names_its_line():
    data = b'email,name\na@example.com,Ann\nb@example.com,"Bob\nc@example.com,Cy\n'
    with pytest.raises(ValidationError) as err:
        list(importer.read_rows(io.BytesIO(data), Path("in.csv"), ImportSummary()))
    assert "malformed CSV" in err.value.message and err.value.line == 4
    assert _general(data) == ("error", err.value.message, 4)


def test_the_plain_road_is_taken_only_for_plain_headers():
    header = importer.parse_header
    assert importer._plain_line(header(["email", "name"])) is not None
    assert importer._plain_line(header(["EMAIL"])) is not None
    for fields in (["name", "email"], ["email", "name", "status"], ["email", "name", "city"],
                   ["email", "name", ""]):
        assert importer._plain_line(header(fields)) is None
