"""Parse uploaded corpus files into documents and segments, with precise per-row errors.

Pure Python: no Django models here. ``parse_file`` returns every document it could read and
every problem it found (file, line, field, message), so the caller can decide between
rejecting the whole file and importing the good rows.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

FORMATS = ("auto", "csv", "jsonl", "transcript", "zip")
CSV_RESERVED = {"text", "label", "id", "external_id", "title", "speaker", "timestamp"}
_SPEAKER_LINE = re.compile(
    r"^\s*(?:[\[(](?P<ts>\d{1,2}:\d{2}(?::\d{2})?(?:\.\d+)?)[\])]\s*)?(?P<speaker>[^:\n]{1,60}?)\s*:\s+(?P<text>.*\S)\s*$"
)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


@dataclass
class RowError:
    file: str
    line: int | None
    message: str
    field: str | None = None

    def __str__(self) -> str:
        where = self.file + (f", line {self.line}" if self.line else "")
        where += f", field '{self.field}'" if self.field else ""
        return f"{where}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "text": str(self)}


@dataclass
class ParsedSegment:
    text: str
    speaker: str = ""
    start: float | None = None
    end: float | None = None
    label: str = ""


@dataclass
class ParsedDocument:
    external_id: str
    title: str
    kind: str
    source: str  # "file, line N" for messages to the user
    metadata: dict[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None
    segments: list[ParsedSegment] = field(default_factory=list)


@dataclass
class ParseResult:
    documents: list[ParsedDocument] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    fatal: bool = False  # the file as a whole is unreadable: nothing can be imported from it
    rows: int = 0

    def extend(self, other: ParseResult) -> None:
        self.documents += other.documents
        self.errors += other.errors
        self.rows += other.rows
        self.fatal = self.fatal or other.fatal


@dataclass(frozen=True)
class Limits:
    max_chars: int = 10_000
    split_chars: int = 300


class _RowProblem(ValueError):
    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def split_sentences(text: str, split_chars: int) -> list[str]:
    """Split an utterance longer than ``split_chars`` into sentences; short ones stay whole."""
    text = " ".join(text.split())
    if len(text) <= split_chars:
        return [text] if text else []
    parts = [p.strip() for p in _SENTENCE_END.split(text) if p.strip()]
    return parts or [text]


def _clean_text(value: Any, limits: Limits, field_name: str = "text") -> str:
    if value is None:
        raise _RowProblem("is missing", field_name)
    if not isinstance(value, str):
        raise _RowProblem(f"must be a string, got {type(value).__name__}", field_name)
    text = value.strip()
    if not text:
        raise _RowProblem("is empty", field_name)
    if len(text) > limits.max_chars:
        raise _RowProblem(f"is {len(text):,} characters long; the limit is {limits.max_chars:,}", field_name)
    return text


def _segments(text: str, limits: Limits, **kw: Any) -> list[ParsedSegment]:
    return [ParsedSegment(text=s, **kw) for s in split_sentences(text, limits.split_chars)]


def _parse_time(value: Any, field_name: str) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise _RowProblem(f"'{value}' is not an ISO 8601 date-time", field_name) from None


def _parse_seconds(value: Any, field_name: str) -> float | None:
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parts = [float(p) for p in value.split(":")]
        except ValueError:
            pass
        else:
            secs = 0.0
            for p in parts:
                secs = secs * 60 + p
            return secs
    raise _RowProblem(f"'{value}' is not a number of seconds or hh:mm:ss", field_name)


def decode(data: bytes, name: str) -> tuple[str | None, RowError | None]:
    """UTF-8 (with or without BOM) or a clear error naming the line and byte offset."""
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, RowError(
            name,
            line,
            f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); save it as UTF-8 and upload again",
        )


def detect_format(name: str, data: bytes) -> str:
    suffix = PurePosixPath(name.lower()).suffix
    if suffix == ".csv" or suffix == ".tsv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".zip" or data[:4] == b"PK\x03\x04":
        return "zip"
    if suffix == ".txt":
        return "transcript"
    head = data[:2048].lstrip()
    return "jsonl" if head.startswith(b"{") else "transcript"


def parse_file(name: str, data: bytes, fmt: str = "auto", limits: Limits = Limits()) -> ParseResult:
    """Parse one uploaded file of any supported format."""
    if fmt not in FORMATS:
        return ParseResult(
            errors=[RowError(name, None, f"unknown format '{fmt}'; expected one of {', '.join(FORMATS)}")],
            fatal=True,
        )
    if not data.strip():
        return ParseResult(errors=[RowError(name, None, "the file is empty")], fatal=True)
    if fmt == "auto":
        fmt = detect_format(name, data)
    if fmt == "zip":
        return parse_zip(name, data, limits)
    text, err = decode(data, name)
    if err:
        return ParseResult(errors=[err], fatal=True)
    assert text is not None
    if fmt == "csv":
        return parse_csv(name, text, limits)
    if fmt == "jsonl":
        return parse_jsonl(name, text, limits)
    return parse_transcript(name, text, limits)


def parse_csv(name: str, text: str, limits: Limits) -> ParseResult:
    result = ParseResult()
    sample = text[:4096]
    delimiter = "\t" if name.lower().endswith(".tsv") or (sample.count("\t") > sample.count(",")) else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
    except csv.Error as exc:
        return ParseResult(errors=[RowError(name, 1, f"unreadable CSV header: {exc}")], fatal=True)
    if "text" not in header:
        found = ", ".join(f"'{h}'" for h in header) or "none"
        return ParseResult(
            errors=[RowError(name, 1, f"has no 'text' column (columns found: {found})", "text")], fatal=True
        )
    reader.fieldnames = header
    line = 1
    try:
        for row in reader:
            start_line, line = line + 1, reader.line_num
            result.rows += 1
            if None in row:
                result.errors.append(
                    RowError(
                        name,
                        start_line,
                        f"has {len(header) + len(row[None])} fields; the header has {len(header)}",
                    )
                )
                continue
            try:
                body = _clean_text(row.get("text"), limits)
                label = (row.get("label") or "").strip()
                ext = (row.get("external_id") or row.get("id") or "").strip()
                doc = ParsedDocument(
                    external_id=ext,
                    title=(row.get("title") or "").strip() or body[:80],
                    kind="message",
                    source=f"{name}, line {start_line}",
                    metadata={k: v for k, v in row.items() if k not in CSV_RESERVED and v not in (None, "")},
                    occurred_at=_parse_time(row.get("timestamp"), "timestamp"),
                    segments=_segments(body, limits, speaker=(row.get("speaker") or "").strip(), label=label),
                )
            except _RowProblem as exc:
                result.errors.append(RowError(name, start_line, str(exc), exc.field))
                continue
            result.documents.append(doc)
    except csv.Error as exc:
        result.errors.append(RowError(name, reader.line_num, f"malformed CSV: {exc}"))
        result.fatal = True
    if result.rows == 0 and not result.errors:
        result.errors.append(RowError(name, None, "has a header but no rows"))
        result.fatal = True
    return result


def _call_from_json(obj: dict[str, Any], name: str, line: int, limits: Limits) -> ParsedDocument:
    turns = obj["turns"]
    if not isinstance(turns, list) or not turns:
        raise _RowProblem('must be a non-empty list of {"speaker", "text"} objects', "turns")
    segments: list[ParsedSegment] = []
    for i, turn in enumerate(turns):
        where = f"turns[{i}]"
        if not isinstance(turn, dict):
            raise _RowProblem("must be an object", where)
        if isinstance(turn.get("text"), str) and not turn["text"].strip():
            continue  # an empty utterance is silence in a transcript, not a broken row
        body = _clean_text(turn.get("text"), limits, f"{where}.text")
        speaker = str(turn.get("speaker") or "").strip()
        start = _parse_seconds(turn.get("start"), f"{where}.start")
        end = _parse_seconds(turn.get("end"), f"{where}.end")
        segments += _segments(
            body, limits, speaker=speaker, start=start, end=end, label=str(turn.get("label") or "")
        )
    if not segments:
        raise _RowProblem("every turn is empty", "turns")
    ext = str(obj.get("id") or obj.get("external_id") or "").strip()
    meta = {
        k: v for k, v in obj.items() if k not in {"id", "external_id", "title", "turns", "timestamp", "kind"}
    }
    return ParsedDocument(
        external_id=ext,
        title=str(obj.get("title") or ext or f"Call on line {line}"),
        kind=str(obj.get("kind") or "call"),
        source=f"{name}, line {line}",
        metadata=meta,
        occurred_at=_parse_time(obj.get("timestamp"), "timestamp"),
        segments=segments,
    )


def parse_jsonl(name: str, text: str, limits: Limits) -> ParseResult:
    result = ParseResult()
    for line_no, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        result.rows += 1
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            result.errors.append(
                RowError(name, line_no, f"is not valid JSON: {exc.msg} (column {exc.colno})")
            )
            continue
        try:
            if not isinstance(obj, dict):
                raise _RowProblem(f"must be a JSON object, got {type(obj).__name__}")
            if "turns" in obj:
                doc = _call_from_json(obj, name, line_no, limits)
            elif "text" in obj:
                body = _clean_text(obj.get("text"), limits)
                ext = str(obj.get("id") or obj.get("external_id") or "").strip()
                reserved = {"id", "external_id", "title", "text", "speaker", "label", "timestamp", "kind"}
                doc = ParsedDocument(
                    external_id=ext,
                    title=str(obj.get("title") or body[:80]),
                    kind=str(obj.get("kind") or "message"),
                    source=f"{name}, line {line_no}",
                    metadata={k: v for k, v in obj.items() if k not in reserved},
                    occurred_at=_parse_time(obj.get("timestamp"), "timestamp"),
                    segments=_segments(
                        body, limits, speaker=str(obj.get("speaker") or ""), label=str(obj.get("label") or "")
                    ),
                )
            else:
                raise _RowProblem("has neither a 'text' nor a 'turns' field")
        except _RowProblem as exc:
            result.errors.append(RowError(name, line_no, str(exc), exc.field))
            continue
        result.documents.append(doc)
    return result


def parse_transcript(name: str, text: str, limits: Limits, external_id: str | None = None) -> ParseResult:
    """One call per file: ``Speaker: text`` lines, optional ``[hh:mm:ss]`` prefix; other lines continue a turn."""
    result = ParseResult(rows=1)
    turns: list[tuple[int, str, float | None, list[str]]] = []
    for line_no, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        m = _SPEAKER_LINE.match(raw)
        if m:
            ts = _parse_seconds(m["ts"], "time") if m["ts"] else None
            turns.append((line_no, m["speaker"].strip(), ts, [m["text"]]))
        elif turns:
            turns[-1][3].append(raw.strip())
        else:
            result.errors.append(
                RowError(name, line_no, "expected 'Speaker: text' (a name, a colon, then what was said)")
            )
            result.fatal = True
            return result
    if not turns:
        result.errors.append(RowError(name, None, "has no 'Speaker: text' lines"))
        result.fatal = True
        return result
    segments: list[ParsedSegment] = []
    for i, (line_no, speaker, ts, parts) in enumerate(turns):
        try:
            body = _clean_text(" ".join(parts), limits)
        except _RowProblem as exc:
            result.errors.append(RowError(name, line_no, str(exc), exc.field))
            continue
        end = turns[i + 1][2] if i + 1 < len(turns) else None
        segments += _segments(body, limits, speaker=speaker, start=ts, end=end)
    stem = PurePosixPath(name).stem
    result.documents.append(
        ParsedDocument(
            external_id=external_id or stem,
            title=stem.replace("_", " ").replace("-", " ").strip() or stem,
            kind="call",
            source=name,
            segments=segments,
        )
    )
    return result


def parse_zip(name: str, data: bytes, limits: Limits) -> ParseResult:
    result = ParseResult()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return ParseResult(errors=[RowError(name, None, "is not a valid zip archive")], fatal=True)
    members = [
        i
        for i in archive.infolist()
        if not i.is_dir()
        and not PurePosixPath(i.filename).name.startswith(".")
        and "__MACOSX" not in i.filename
    ]
    if not members:
        return ParseResult(errors=[RowError(name, None, "the zip archive holds no files")], fatal=True)
    for info in sorted(members, key=lambda i: i.filename):
        member = f"{name}/{info.filename}"
        if not info.filename.lower().endswith(".txt"):
            result.errors.append(
                RowError(
                    member, None, "is not a .txt transcript; zip archives hold one transcript per .txt file"
                )
            )
            continue
        raw = archive.read(info)
        if not raw.strip():
            result.rows += 1
            result.errors.append(RowError(member, None, "the file is empty"))
            continue
        text, err = decode(raw, member)
        if err:
            result.rows += 1
            result.errors.append(err)
            continue
        assert text is not None
        part = parse_transcript(member, text, limits, external_id=info.filename)
        part.fatal = False  # one unreadable transcript is a bad row of the archive
        result.extend(part)
    return result
