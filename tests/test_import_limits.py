"""Bad and hostile files: every problem is a row error with its line and field, nothing is merged or lost."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from trackers.importing import Limits, parse_file


def errors_of(result):
    return [str(e) for e in result.errors]


def test_a_quote_left_open_at_the_end_is_an_error_naming_its_line_not_a_merged_row():
    data = b'id,text\na4,fine\na5,"Unclosed quote\na6,next row\n'
    result = parse_file("f.csv", data)
    # the rows before it are whole: not fatal, so "import the good rows" keeps them
    assert not result.fatal and [d.external_id for d in result.documents] == ["a4"]
    assert parse_file("f.csv", b'id,text\na5,"Unclosed quote\na6,next row\n').fatal  # nothing before it
    (error,) = result.errors
    assert error.line == 3 and "not closed before the end of the file" in error.message


def test_a_quote_left_open_mid_file_names_where_it_opened_and_where_it_broke():
    data = b'id,text\na4,fine\na5,"Unclosed quote\na6,"hello",x\na7,z\n'
    (error,) = parse_file("f.csv", data).errors
    assert error.line == 3 and "not closed before line 4" in error.message


def test_a_huge_csv_field_is_reported_at_its_own_line():
    data = b"id,text\na1,ok\na2," + b"x" * 10_000_000 + b"\na3,ok\n"
    result = parse_file("f.csv", data)
    assert errors_of(result) == [
        "f.csv, line 3, field 'text': is 10,000,000 characters long; the limit is 10,000"
    ]
    assert [d.external_id for d in result.documents] == ["a1", "a3"]


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\u0085", "\x1c", "\x0b"])
def test_jsonl_lines_end_at_newline_only(sep):
    data = (json.dumps({"id": "m1", "text": f"a{sep}b"}, ensure_ascii=False) + '\n{"text": }\n').encode()
    result = parse_file("f.jsonl", data)
    # the row is whole (one document, not two half-lines); whitespace inside a text folds to a space
    assert [d.segments[0].text for d in result.documents] == ["a b"]
    assert errors_of(result) == ["f.jsonl, line 2: is not valid JSON: Expecting value (column 10)"]


def test_deep_nesting_is_a_row_error_and_the_other_rows_import():
    deep = '{"text": "x", "m": ' + "[" * 100_000 + "]" * 100_000 + "}"
    shallow = '{"text": "y", "m": ' + "[" * 40 + "]" * 40 + "}"
    result = parse_file("f.jsonl", f'{deep}\n{shallow}\n{{"text": "fine"}}\n'.encode())
    assert errors_of(result) == [
        "f.jsonl, line 1: nests deeper than 32 levels",
        "f.jsonl, line 2: nests deeper than 32 levels",
    ]
    assert [d.segments[0].text for d in result.documents] == ["fine"]


def test_an_over_long_jsonl_line_is_refused_before_it_is_parsed():
    line = json.dumps({"text": "x", "pad": "y" * 2000})
    result = parse_file("f.jsonl", f'{line}\n{{"text": "ok"}}\n'.encode(), limits=Limits(max_line_chars=1000))
    assert errors_of(result) == [
        f"f.jsonl, line 1: is {len(line):,} characters long; the limit for one line is 1,000"
    ]


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        (
            '{"text": "bad \\ud800 here"}',
            "text",
            "contains a lone surrogate (U+D800) at character 5, which is not text",
        ),
        ('{"text": "nul \\u0000 here"}', "text", "contains a NUL character (\\u0000) at character 5"),
        (
            '{"text": "ok", "speaker": "a\\u0000"}',
            "speaker",
            "contains a NUL character (\\u0000) at character 2",
        ),
        (
            '{"text": "ok", "channel": {"k": "\\udfff"}}',
            "channel.k",
            "contains a lone surrogate (U+DFFF) at character 1, which is not text",
        ),
        ('{"text": "ok", "id": "' + "i" * 256 + '"}', "id", "is 256 characters long; the limit is 255"),
        ('{"text": "ok", "label": "' + "l" * 121 + '"}', "label", "is 121 characters long; the limit is 120"),
        (
            '{"turns": [{"speaker": "' + "s" * 121 + '", "text": "hi"}]}',
            "turns[0].speaker",
            "is 121 characters long; the limit is 120",
        ),
    ],
)
def test_unstorable_characters_and_over_long_fields_are_row_errors(row, field, message):
    result = parse_file("f.jsonl", f'{row}\n{{"text": "fine"}}\n'.encode())
    (error,) = result.errors
    assert (error.line, error.field, error.message) == (1, field, message)
    assert len(result.documents) == 1


def test_csv_nul_and_long_ids_are_row_errors():
    data = "id,text,channel\na1,nul \x00 here,x\n" + "b" * 300 + ",hi,x\na3,ok,bad\x00\na4,fine,x\n"
    result = parse_file("f.csv", data.encode())
    assert [(e.line, e.field) for e in result.errors] == [(2, "text"), (3, "id"), (4, "channel")]
    assert [d.external_id for d in result.documents] == ["a4"]


def test_a_transcript_whose_only_turn_is_too_long_stores_no_document():
    result = parse_file("call.txt", ("Dana: " + "w " * 6000 + "\n").encode())
    assert result.documents == [] and errors_of(result) == [
        "call.txt, line 1, field 'text': is 11,999 characters long; the limit is 10,000"
    ]


def _zip(entries, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_skipped_zip_entries_are_listed():
    data = _zip(
        {
            "calls/a.txt": "Rep: hello\n",
            "..\\..\\win.txt": "Rep: escape\n",
            "../up.txt": "Rep: escape\n",
            "/abs.txt": "Rep: escape\n",
            "__MACOSX/calls/._a.txt": "junk",
            ".hidden.txt": "Rep: hidden\n",
        }
    )
    result = parse_file("batch.zip", data)
    assert [d.external_id for d in result.documents] == ["calls/a.txt"] and result.errors == []
    reasons = {e.file.removeprefix("batch.zip/"): e.message for e in result.skipped}
    assert reasons == {
        "..\\..\\win.txt": "skipped: its name points outside the archive",
        "../up.txt": "skipped: its name points outside the archive",
        "/abs.txt": "skipped: its name points outside the archive",
        "__MACOSX/calls/._a.txt": "skipped: a hidden or system file",
        ".hidden.txt": "skipped: a hidden or system file",
    }


def test_a_zip_bomb_is_refused_before_any_member_is_read():
    # one 400 MB transcript of one repeated line compresses to well under 1 MB
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open("big.txt", "w", force_zip64=True) as fh,
    ):
        line = b"Rep: the same words again and again\n" * 10_000
        for _ in range(1100):
            fh.write(line)
    data = buf.getvalue()
    assert len(data) < 2_000_000
    result = parse_file("bomb.zip", data)
    assert result.fatal and result.documents == []
    assert errors_of(result) == ["bomb.zip: the zip archive expands to 396 MB; the limit is 200 MB"]


def test_members_too_big_or_too_compressed_are_row_errors():
    small = Limits(zip_max_member_bytes=1000, zip_max_ratio=50)
    data = _zip(
        {"a.txt": "Rep: " + "x " * 600 + "\n", "b.txt": "Rep: " + "y" * 900 + "\n", "c.txt": "Rep: fine\n"}
    )
    result = parse_file("z.zip", data, limits=small)
    assert [d.external_id for d in result.documents] == ["c.txt"]
    too_big, too_compressed = errors_of(result)
    assert too_big == "z.zip/a.txt: expands to 1.2 kB; the limit for one file is 1.0 kB"
    assert too_compressed.startswith("z.zip/b.txt: expands ") and too_compressed.endswith(
        " times (to 0.9 kB); the limit is 50 times"
    )


def test_too_many_members_are_refused():
    data = _zip({f"{i}.txt": "Rep: hi\n" for i in range(12)})
    result = parse_file("z.zip", data, limits=Limits(zip_max_members=10))
    assert result.fatal and errors_of(result) == ["z.zip: the zip archive holds 12 files; the limit is 10"]
