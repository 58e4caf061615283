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

from trackers.text import nonfinite_problem, problem

FORMATS = ("auto", "csv", "jsonl", "transcript", "zip")
# csv's own 128 KiB field limit would stop the reader with no line to report; the upload size caps
# fields instead, and the text length check names the row.
csv.field_size_limit(2**31 - 1)
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
    skipped: list[RowError] = field(default_factory=list)  # entries passed over on purpose (zip)

    def extend(self, other: ParseResult) -> None:
        self.documents += other.documents
        self.errors += other.errors
        self.rows += other.rows
        self.skipped += other.skipped
        self.fatal = self.fatal or other.fatal


@dataclass(frozen=True)
class Limits:
    max_chars: int = 10_000
    split_chars: int = 300
    max_id_chars: int = 255  # a document id (the database column's width)
    max_field_chars: int = 120  # a speaker, a label, a kind
    max_line_chars: int = 5_000_000  # one JSONL line
    max_depth: int = 32  # nesting of one JSON row
    zip_max_members: int = 10_000
    zip_max_member_bytes: int = 20_000_000  # one transcript, uncompressed
    zip_max_total_bytes: int = 200_000_000  # the whole archive, uncompressed
    zip_max_ratio: int = 100  # uncompressed / compressed size of one member


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


def _check_chars(text: str, field_name: str) -> str:
    """Refuse what no database column can hold: NUL characters and lone UTF-16 surrogates."""
    why = problem(text)
    if why:
        raise _RowProblem(why, field_name)
    return text


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
    return _check_chars(text, field_name)


def _short(value: Any, field_name: str, limit: int) -> str:
    """An optional short field (id, title, speaker, label, kind): stripped, checked, within ``limit``."""
    text = "" if value is None else str(value).strip()
    if len(text) > limit:
        raise _RowProblem(f"is {len(text):,} characters long; the limit is {limit:,}", field_name)
    return _check_chars(text, field_name)


def _check_metadata(value: Any, field_name: str = "metadata") -> Any:
    """Every key and string in a row's extra fields, checked like text (iteratively: no recursion)."""
    stack = [(value, field_name)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            _check_chars(item, where)
        elif isinstance(item, float) and (why := nonfinite_problem(item)):
            raise _RowProblem(why, where)
        elif isinstance(item, dict):
            for k, v in item.items():
                _check_chars(str(k), where)
                stack.append((v, f"{k}" if where == "metadata" else f"{where}.{k}"))
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return value


def _depth(value: Any) -> int:
    """How deeply a parsed JSON value nests (iteratively)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


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
    # strict: a quote left open is an error, never a field that swallows the rows after it.
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
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
                label = _short(row.get("label"), "label", limits.max_field_chars)
                id_field = "external_id" if row.get("external_id") else "id"
                ext = _short(row.get(id_field), id_field, limits.max_id_chars)
                speaker = _short(row.get("speaker"), "speaker", limits.max_field_chars)
                doc = ParsedDocument(
                    external_id=ext,
                    title=_short(row.get("title"), "title", 100_000)[:255] or body[:80],
                    kind="message",
                    source=f"{name}, line {start_line}",
                    metadata=_check_metadata(
                        {k: v for k, v in row.items() if k not in CSV_RESERVED and v not in (None, "")}
                    ),
                    occurred_at=_parse_time(row.get("timestamp"), "timestamp"),
                    segments=_segments(body, limits, speaker=speaker, label=label),
                )
            except _RowProblem as exc:
                result.errors.append(RowError(name, start_line, str(exc), exc.field))
                continue
            result.documents.append(doc)
    except csv.Error as exc:
        # The row that failed began after the last one read; with a quote left open, csv reads on
        # to where the quoting finally breaks (or to the end of the file).
        start_line, end_line = line + 1, reader.reader.line_num
        if "unexpected end of data" in str(exc) or "expected after" in str(exc):
            where = "the end of the file" if "end of data" in str(exc) else f"line {end_line}"
            message = (
                f'a quoted field opened on this line is not closed before {where} (a " is missing, '
                'or a " inside a quoted field is not doubled as ""); nothing after it can be read'
            )
        else:
            message = f"malformed CSV: {exc}"
        result.errors.append(RowError(name, start_line, message))
        # The rows before it were read whole: with "import the good rows" they are imported, and the
        # error says where reading stopped. With none before it, the file gives nothing.
        result.fatal = not result.documents
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
        speaker = _short(turn.get("speaker"), f"{where}.speaker", limits.max_field_chars)
        start = _parse_seconds(turn.get("start"), f"{where}.start")
        end = _parse_seconds(turn.get("end"), f"{where}.end")
        label = _short(turn.get("label"), f"{where}.label", limits.max_field_chars)
        segments += _segments(body, limits, speaker=speaker, start=start, end=end, label=label)
    if not segments:
        raise _RowProblem("every turn is empty", "turns")
    ext = _document_id(obj, limits)
    meta = {
        k: v for k, v in obj.items() if k not in {"id", "external_id", "title", "turns", "timestamp", "kind"}
    }
    return ParsedDocument(
        external_id=ext,
        title=_short(obj.get("title"), "title", 100_000)[:255] or ext or f"Call on line {line}",
        kind=_short(obj.get("kind"), "kind", 16) or "call",
        source=f"{name}, line {line}",
        metadata=_check_metadata(meta),
        occurred_at=_parse_time(obj.get("timestamp"), "timestamp"),
        segments=segments,
    )


def _document_id(obj: dict[str, Any], limits: Limits) -> str:
    id_field = "external_id" if obj.get("external_id") not in (None, "") else "id"
    return _short(obj.get(id_field), id_field, limits.max_id_chars)


def parse_jsonl(name: str, text: str, limits: Limits) -> ParseResult:
    result = ParseResult()
    # Lines end at "\n" only: JSON strings may hold U+2028, U+0085 and other characters that
    # str.splitlines() would also split at.
    for line_no, raw in enumerate(text.split("\n"), start=1):
        raw = raw.removesuffix("\r")
        if not raw.strip():
            continue
        result.rows += 1
        if len(raw) > limits.max_line_chars:
            result.errors.append(
                RowError(
                    name,
                    line_no,
                    f"is {len(raw):,} characters long; the limit for one line is {limits.max_line_chars:,}",
                )
            )
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            result.errors.append(
                RowError(name, line_no, f"is not valid JSON: {exc.msg} (column {exc.colno})")
            )
            continue
        except RecursionError:
            result.errors.append(RowError(name, line_no, f"nests deeper than {limits.max_depth} levels"))
            continue
        try:
            if _depth(obj) > limits.max_depth:
                raise _RowProblem(f"nests deeper than {limits.max_depth} levels")
            if not isinstance(obj, dict):
                raise _RowProblem(f"must be a JSON object, got {type(obj).__name__}")
            if "turns" in obj:
                doc = _call_from_json(obj, name, line_no, limits)
            elif "text" in obj:
                body = _clean_text(obj.get("text"), limits)
                ext = _document_id(obj, limits)
                reserved = {"id", "external_id", "title", "text", "speaker", "label", "timestamp", "kind"}
                doc = ParsedDocument(
                    external_id=ext,
                    title=_short(obj.get("title"), "title", 100_000)[:255] or body[:80],
                    kind=_short(obj.get("kind"), "kind", 16) or "message",
                    source=f"{name}, line {line_no}",
                    metadata=_check_metadata({k: v for k, v in obj.items() if k not in reserved}),
                    occurred_at=_parse_time(obj.get("timestamp"), "timestamp"),
                    segments=_segments(
                        body,
                        limits,
                        speaker=_short(obj.get("speaker"), "speaker", limits.max_field_chars),
                        label=_short(obj.get("label"), "label", limits.max_field_chars),
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
        try:
            speaker = _short(speaker, "speaker", limits.max_field_chars)
        except _RowProblem as exc:
            result.errors.append(RowError(name, line_no, str(exc), exc.field))
            continue
        segments += _segments(body, limits, speaker=speaker, start=ts, end=end)
    if not segments:  # every turn had a problem (listed above): no empty document
        return result
    stem = PurePosixPath(name).stem
    if len(external_id or stem) > limits.max_id_chars:
        result.errors.append(
            RowError(
                name,
                None,
                f"its name is {len(external_id or stem):,} characters long; the limit for a "
                f"document id is {limits.max_id_chars:,}",
                "id",
            )
        )
        return result
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


def _size(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n / 1e3:,.1f} kB"


def _skip_reason(filename: str) -> str | None:
    """Why a zip entry is passed over, or None to read it."""
    path = PurePosixPath(filename.replace("\\", "/"))
    if filename.startswith(("/", "\\")) or ".." in path.parts or ":" in path.parts[0]:
        return "skipped: its name points outside the archive"
    if "__MACOSX" in path.parts or any(part.startswith(".") for part in path.parts):
        return "skipped: a hidden or system file"
    if not filename.lower().endswith(".txt"):
        return "skipped: not a .txt transcript (zip archives hold one transcript per .txt file)"
    return None


def parse_zip(name: str, data: bytes, limits: Limits) -> ParseResult:
    """Each .txt member is one call. Sizes are checked before a member is read, and again while it
    is read (a member's header can lie), so that a small archive cannot expand without bound."""
    result = ParseResult()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = [i for i in archive.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError):
        return ParseResult(errors=[RowError(name, None, "is not a valid zip archive")], fatal=True)

    def refuse(message: str) -> ParseResult:
        return ParseResult(errors=[RowError(name, None, message)], fatal=True)

    if len(infos) > limits.zip_max_members:
        return refuse(f"the zip archive holds {len(infos):,} files; the limit is {limits.zip_max_members:,}")
    declared = sum(i.file_size for i in infos)
    if declared > limits.zip_max_total_bytes:
        return refuse(
            f"the zip archive expands to {_size(declared)}; the limit is {_size(limits.zip_max_total_bytes)}"
        )
    total = 0
    for info in sorted(infos, key=lambda i: i.filename):
        member = f"{name}/{info.filename}"
        why = _skip_reason(info.filename)
        if why:
            result.skipped.append(RowError(member, None, why))
            continue
        if info.file_size > limits.zip_max_member_bytes:
            result.rows += 1
            result.errors.append(
                RowError(
                    member,
                    None,
                    f"expands to {_size(info.file_size)}; the limit for one file is "
                    f"{_size(limits.zip_max_member_bytes)}",
                )
            )
            continue
        if info.compress_size and info.file_size / info.compress_size > limits.zip_max_ratio:
            result.rows += 1
            ratio = info.file_size / info.compress_size
            result.errors.append(
                RowError(
                    member,
                    None,
                    f"expands {ratio:,.0f} times (to {_size(info.file_size)}); the limit is "
                    f"{limits.zip_max_ratio} times",
                )
            )
            continue
        try:
            with archive.open(info) as fh:
                raw = fh.read(limits.zip_max_member_bytes + 1)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, OSError, ValueError) as exc:
            result.rows += 1
            result.errors.append(
                RowError(member, None, f"cannot be read from the archive ({type(exc).__name__})")
            )
            continue
        total += len(raw)
        if len(raw) > limits.zip_max_member_bytes or total > limits.zip_max_total_bytes:
            return refuse(
                f"{info.filename} expands past what its entry in the archive declares; nothing was read"
            )
        if not raw.strip():
            result.rows += 1
            result.errors.append(RowError(member, None, "the file is empty"))
            continue
        text, err = decode(raw, member)
        del raw
        if err:
            result.rows += 1
            result.errors.append(err)
            continue
        assert text is not None
        part = parse_transcript(member, text, limits, external_id=info.filename)
        part.fatal = False  # one unreadable transcript is a bad row of the archive
        result.extend(part)
    if not result.documents and not result.errors:
        why = "; ".join(sorted({e.message for e in result.skipped})) or "no files"
        return ParseResult(
            errors=[RowError(name, None, f"the zip archive holds no transcript to import ({why})")],
            fatal=True,
            skipped=result.skipped,
        )
    return result
