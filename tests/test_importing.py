"""Parsing of every supported upload format, and the exact errors for bad input."""

from __future__ import annotations

import io
import json
import zipfile

from tests.conftest import shared_file
from trackers.importing import Limits, parse_file, split_sentences


def errors_of(result):
    return [str(e) for e in result.errors]


def test_csv_keeps_other_columns_as_metadata_and_label_as_known_label():
    data = b"text,label,customer,id\nI want a refund,refund,c-1,m1\nWhere is my card?,card_arrival,c-2,m2\n"
    result = parse_file("msgs.csv", data)
    assert result.errors == [] and result.rows == 2
    first = result.documents[0]
    assert first.external_id == "m1"
    assert first.metadata == {"customer": "c-1"}
    assert [(s.text, s.label) for s in first.segments] == [("I want a refund", "refund")]


def test_csv_without_text_column_names_the_columns_found():
    result = parse_file("calls.csv", b"body,label\nhello,ham\n")
    assert result.fatal
    assert errors_of(result) == [
        "calls.csv, line 1, field 'text': has no 'text' column (columns found: 'body', 'label')"
    ]


def test_csv_reports_the_physical_line_of_a_bad_row_after_a_multiline_field():
    data = b'text,label\n"two\nlines",ham\n,spam\nok,ham\n'
    result = parse_file("m.csv", data)
    assert errors_of(result) == ["m.csv, line 4, field 'text': is empty"]
    assert len(result.documents) == 2


def test_wrong_encoding_names_file_line_and_byte():
    data = "text\ncaf\xe9 au lait\n".encode("latin-1")
    result = parse_file("latin.csv", data)
    assert result.fatal
    assert errors_of(result) == [
        "latin.csv, line 2: is not UTF-8 text (byte 0xe9 at offset 8); save it as UTF-8 and upload again"
    ]


def test_empty_file_is_an_error():
    assert errors_of(parse_file("empty.csv", b"  \n")) == ["empty.csv: the file is empty"]


def test_header_only_csv_is_an_error():
    result = parse_file("h.csv", b"text,label\n")
    assert result.fatal and errors_of(result) == ["h.csv: has a header but no rows"]


def test_text_over_the_length_limit_names_the_limit():
    data = ("text\n" + "x" * 101 + "\nshort\n").encode()
    result = parse_file("long.csv", data, limits=Limits(max_chars=100))
    assert errors_of(result) == ["long.csv, line 2, field 'text': is 101 characters long; the limit is 100"]
    assert [d.segments[0].text for d in result.documents] == ["short"]


def test_malformed_json_line_names_line_and_column():
    data = b'{"text": "fine"}\n{"text": "broken"\n{"nope": 1}\n'
    result = parse_file("m.jsonl", data)
    assert errors_of(result) == [
        "m.jsonl, line 2: is not valid JSON: Expecting ',' delimiter (column 18)",
        "m.jsonl, line 3: has neither a 'text' nor a 'turns' field",
    ]
    assert len(result.documents) == 1 and result.rows == 3


def test_jsonl_calls_become_utterance_segments_with_speakers():
    call = {
        "id": "c1",
        "label": "media",
        "turns": [
            {"speaker": "customer", "text": "hi i would like to sign up"},
            {"speaker": "agent", "text": ""},
            {"speaker": "agent", "text": "Sure.", "start": 3.5},
        ],
    }
    result = parse_file("calls.jsonl", json.dumps(call).encode())
    (doc,) = result.documents
    assert doc.kind == "call" and doc.external_id == "c1" and doc.metadata == {"label": "media"}
    assert [(s.speaker, s.text, s.start) for s in doc.segments] == [
        ("customer", "hi i would like to sign up", None),
        ("agent", "Sure.", 3.5),
    ]


def test_jsonl_turn_with_wrong_type_names_the_field():
    data = json.dumps({"id": "c1", "turns": [{"speaker": "a", "text": 5}]}).encode()
    assert errors_of(parse_file("c.jsonl", data)) == [
        "c.jsonl, line 1, field 'turns[0].text': must be a string, got int"
    ]


def test_multidogo_file_parses():
    path = shared_file("multidogo", "dev.jsonl")
    result = parse_file(path.name, path.read_bytes())
    assert len(result.documents) > 8000
    assert all(d.kind == "call" and d.segments for d in result.documents)
    assert {s.speaker for s in result.documents[0].segments} <= {"customer", "agent"}


def test_transcript_lines_with_timestamps_and_continuations():
    text = b"[00:01] Dana: Hi Sam, thanks for joining.\nSam: Happy to be here\nand ready.\n\n[01:10] Dana: Great.\n"
    (doc,) = parse_file("2026-01-05_acme_renewal.txt", text).documents
    assert doc.kind == "call" and doc.title == "2026 01 05 acme renewal"
    assert [(s.speaker, s.text, s.start) for s in doc.segments] == [
        ("Dana", "Hi Sam, thanks for joining.", 1.0),
        ("Sam", "Happy to be here and ready.", None),
        ("Dana", "Great.", 70.0),
    ]


def test_transcript_without_speaker_lines_is_an_error():
    result = parse_file("notes.txt", b"just some notes\nwithout speakers\n")
    assert result.fatal
    assert errors_of(result) == [
        "notes.txt, line 1: expected 'Speaker: text' (a name, a colon, then what was said)"
    ]


def test_zip_of_transcripts_reports_bad_members_and_keeps_good_ones():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("calls/a.txt", "Rep: Hello there.\nCustomer: Hi.\n")
        zf.writestr("calls/b.txt", "no speaker here\n")
        zf.writestr("calls/c.txt", b"Rep: caf\xe9\n")
        zf.writestr("calls/readme.pdf", b"%PDF")
    result = parse_file("batch.zip", buf.getvalue())
    assert not result.fatal
    assert [d.external_id for d in result.documents] == ["calls/a.txt"]
    assert errors_of(result) == [
        "batch.zip/calls/b.txt, line 1: expected 'Speaker: text' (a name, a colon, then what was said)",
        "batch.zip/calls/c.txt, line 1: is not UTF-8 text (byte 0xe9 at offset 8); save it as UTF-8 and upload again",
    ]
    assert [str(e) for e in result.skipped] == [
        "batch.zip/calls/readme.pdf: skipped: not a .txt transcript (zip archives hold one transcript per .txt file)"
    ]


def test_not_a_zip_is_an_error():
    result = parse_file("x.zip", b"PK\x03\x04garbage")
    assert result.fatal and errors_of(result) == ["x.zip: is not a valid zip archive"]


def test_long_utterances_are_split_into_sentences_short_ones_are_not():
    long = "We looked at the numbers again. The price is too high for us! Can you do better? Maybe."
    assert split_sentences(long, 40) == [
        "We looked at the numbers again.",
        "The price is too high for us!",
        "Can you do better?",
        "Maybe.",
    ]
    assert split_sentences(long, 400) == [long]


def test_sms_spam_file_parses_completely():
    path = shared_file("sms_spam", "dev.csv")
    result = parse_file(path.name, path.read_bytes())
    assert result.errors == []
    assert len(result.documents) == result.rows == 3300
    assert {d.segments[0].label for d in result.documents} == {"ham", "spam"}
