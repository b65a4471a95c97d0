"""A strict NDEF message parser with a reason for every rejection.

Record header (NFC Forum NDEF 1.0): flags MB, ME, CF, SR, IL and a 3-bit TNF, then the
type length, the payload length (1 byte with SR, else 4 bytes big-endian), the id length
(with IL), type, id and payload. Chunked records (CF) are reassembled: the first chunk
carries the type, later ones have TNF 0x06 "unchanged" and an empty type.

Well-known types decoded: URI "U" (NFC Forum URI RTD prefix table), Text "T" (UTF-8 or
UTF-16, IANA language code), Smart Poster "Sp" (a nested message with one URI record and
optional titles). MIME (TNF 2) payloads are given as text when they are UTF-8, always as
hex too. Nothing here raises: malformed input yields `NdefError(reason)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TNF_EMPTY, TNF_WELL_KNOWN, TNF_MIME, TNF_URI, TNF_EXTERNAL, TNF_UNKNOWN, TNF_UNCHANGED = range(7)

URI_PREFIXES = (
    "",
    "http://www.",
    "https://www.",
    "http://",
    "https://",
    "tel:",
    "mailto:",
    "ftp://anonymous:anonymous@",
    "ftp://ftp.",
    "ftps://",
    "sftp://",
    "smb://",
    "nfs://",
    "ftp://",
    "dav://",
    "news:",
    "telnet://",
    "imap:",
    "rtsp://",
    "urn:",
    "pop:",
    "sip:",
    "sips:",
    "tftp:",
    "btspp://",
    "btl2cap://",
    "btgoep://",
    "tcpobex://",
    "irdaobex://",
    "file://",
    "urn:epc:id:",
    "urn:epc:tag:",
    "urn:epc:pat:",
    "urn:epc:raw:",
    "urn:epc:",
    "urn:nfc:",
)

MAX_DEPTH = 4  # smart posters nest messages; a hostile tag must not recurse forever


class NdefError(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason if not detail else f"{reason}: {detail}")
        self.reason = reason


@dataclass(slots=True)
class RawRecord:
    tnf: int
    type: bytes
    id: bytes
    payload: bytes = b""
    chunks: list[bytes] = field(default_factory=list)


def split_records(data: bytes) -> list[RawRecord]:
    """The records of one NDEF message, chunks reassembled, or NdefError."""
    if not data:
        raise NdefError("message_empty")
    records: list[RawRecord] = []
    i, n = 0, len(data)
    chunked: RawRecord | None = None
    ended = False
    while i < n:
        if ended:
            raise NdefError("trailing_bytes", f"{n - i} bytes after the ME record")
        flags = data[i]
        mb, me, cf, sr, il = (
            (flags >> 7) & 1,
            (flags >> 6) & 1,
            (flags >> 5) & 1,
            (flags >> 4) & 1,
            (flags >> 3) & 1,
        )
        tnf = flags & 0x07
        if i == 0 and not mb:
            raise NdefError("missing_message_begin", "first record lacks MB")
        if i > 0 and mb:
            raise NdefError("unexpected_message_begin", f"MB set on a later record at byte {i}")
        if tnf == 7:
            raise NdefError("tnf_reserved", f"TNF 7 at byte {i}")
        header = 2 + (1 if sr else 4) + (1 if il else 0)
        if i + header > n:
            raise NdefError("truncated_header", f"record header at byte {i}")
        type_len = data[i + 1]
        j = i + 2
        if sr:
            payload_len = data[j]
            j += 1
        else:
            payload_len = int.from_bytes(data[j : j + 4], "big")
            j += 4
        id_len = 0
        if il:
            id_len = data[j]
            j += 1
        end = j + type_len + id_len + payload_len
        if end > n:
            raise NdefError("truncated_record", f"record at byte {i} needs {end - n} more bytes")
        rtype = data[j : j + type_len]
        rid = data[j + type_len : j + type_len + id_len]
        payload = data[j + type_len + id_len : end]
        if tnf == TNF_EMPTY and (type_len or id_len or payload_len):
            raise NdefError("empty_record_not_empty", f"TNF 0 with content at byte {i}")
        if chunked is not None:  # a continuation chunk
            if tnf != TNF_UNCHANGED or type_len or il:
                raise NdefError(
                    "bad_chunk", f"middle/last chunk at byte {i} must be TNF 6, no type or id"
                )
            chunked.chunks.append(payload)
            if not cf:
                chunked.payload = b"".join(chunked.chunks)
                records.append(chunked)
                chunked = None
        else:
            if tnf == TNF_UNCHANGED:
                raise NdefError(
                    "unchanged_without_chunk", f"TNF 6 outside a chunked record at byte {i}"
                )
            if tnf in (TNF_WELL_KNOWN, TNF_MIME, TNF_URI, TNF_EXTERNAL) and not type_len:
                raise NdefError("missing_type", f"TNF {tnf} needs a type at byte {i}")
            if tnf == TNF_UNKNOWN and type_len:
                raise NdefError("unknown_with_type", f"TNF 5 must have no type at byte {i}")
            record = RawRecord(tnf, rtype, rid, payload)
            if cf:
                if me:
                    raise NdefError("bad_chunk", "a chunked record cannot end the message")
                record.chunks = [payload]
                chunked = record
            else:
                records.append(record)
        if me:
            ended = True
        i = end
    if chunked is not None:
        raise NdefError("unterminated_chunk", "the message ends inside a chunked record")
    if not ended:
        raise NdefError("missing_message_end", "no record has ME set")
    return records


def _text(payload: bytes) -> tuple[str, str]:
    if not payload:
        raise NdefError("text_empty", "a Text record needs a status byte")
    status = payload[0]
    if status & 0x40:
        raise NdefError("text_reserved_bit", "bit 6 of the status byte must be 0")
    lang_len = status & 0x3F
    if 1 + lang_len > len(payload):
        raise NdefError("text_truncated", "language code longer than the payload")
    try:
        language = payload[1 : 1 + lang_len].decode("ascii")
        body = payload[1 + lang_len :]
        if status & 0x80:  # UTF-16; big-endian unless a BOM says otherwise
            if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
                text = body.decode("utf-16")
            else:
                text = body.decode("utf-16-be")
        else:
            text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise NdefError("text_encoding", "text is not valid UTF-8/UTF-16") from None
    return text, language


def _uri(payload: bytes) -> str:
    if not payload:
        raise NdefError("uri_empty", "a URI record needs a prefix byte")
    if payload[0] >= len(URI_PREFIXES):
        raise NdefError("uri_prefix_reserved", f"prefix code 0x{payload[0]:02x}")
    try:
        return URI_PREFIXES[payload[0]] + payload[1:].decode("utf-8")
    except UnicodeDecodeError:
        raise NdefError("uri_encoding", "URI is not valid UTF-8") from None


def describe(record: RawRecord, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": record.type.decode("latin-1"),
        "tnf": record.tnf,
        "id": record.id.decode("latin-1"),
    }
    if record.tnf == TNF_WELL_KNOWN and record.type == b"U":
        out["uri"] = _uri(record.payload)
    elif record.tnf == TNF_WELL_KNOWN and record.type == b"T":
        out["text"], out["language"] = _text(record.payload)
    elif record.tnf == TNF_WELL_KNOWN and record.type == b"Sp":
        if depth >= MAX_DEPTH:
            raise NdefError("too_deep", "smart posters nested too deep")
        inner = [describe(r, depth + 1) for r in split_records(record.payload)]
        # Only well-known "U"/"T" records count (a MIME type "T" is something else).
        uris = [r["uri"] for r in inner if r["tnf"] == TNF_WELL_KNOWN and r["type"] == "U"]
        if len(uris) != 1:
            raise NdefError(
                "smart_poster_uri", f"a smart poster needs exactly one URI, has {len(uris)}"
            )
        out["uri"] = uris[0]
        titles = [
            {"text": r["text"], "language": r["language"]}
            for r in inner
            if r["tnf"] == TNF_WELL_KNOWN and r["type"] == "T"
        ]
        out["title"] = titles[0]["text"] if titles else None
        out["titles"] = titles
        out["records"] = inner
    elif record.tnf == TNF_MIME:
        out["mime"] = out["type"]
        out["payload_hex"] = record.payload.hex()
        try:
            out["payload"] = record.payload.decode("utf-8")
        except UnicodeDecodeError:
            out["payload"] = None
    elif record.tnf == TNF_URI:
        out["uri"] = out["type"]
        out["payload_hex"] = record.payload.hex()
    else:
        out["payload_hex"] = record.payload.hex()
    return out


def parse_message(data: bytes) -> dict[str, Any]:
    """{"records": [...]} or {"records": [], "error": reason, "detail": text}."""
    try:
        return {"records": [describe(r) for r in split_records(data)]}
    except NdefError as exc:
        return {"records": [], "error": exc.reason, "detail": str(exc)}


def parse_hex_line(line: str) -> dict[str, Any]:
    """One input line → one result (a blank line is an empty message: `message_empty`)."""
    text = "".join(line.split())
    try:
        data = bytes.fromhex(text)
    except ValueError:
        return {"records": [], "error": "not_hex", "detail": "input is not hexadecimal"}
    return parse_message(data)
