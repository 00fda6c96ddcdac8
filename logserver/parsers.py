"""A JSON parser that bounds what a request can cost: size after gzip, depth,
and non-standard constants."""

import json
import zlib

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from logserver.errors import PayloadTooLarge

MAX_JSON_DEPTH = 32


def decode_body(raw: bytes, content_encoding: str, limit: int) -> bytes:
    """Undo Content-Encoding (identity or gzip), never inflating past `limit`."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding != "gzip":
        raise ParseError(f"unsupported Content-Encoding {content_encoding!r}; use gzip")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise ParseError(f"body is not valid gzip: {exc}") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"gzip body inflates past the limit of {limit} bytes")
    if not inflater.eof:
        raise ParseError("gzip body is truncated")
    return out


def _depth(value, limit: int) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json_bytes(body: bytes):
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"body is not UTF-8 at byte {exc.start}") from exc
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from exc
    except ValueError as exc:
        raise ParseError(f"body is not valid JSON: {exc}") from exc
    if _depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return data


class BoundedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        limit = settings.INGEST_MAX_BODY_BYTES
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        encoding = request.META.get("HTTP_CONTENT_ENCODING", "") if request is not None else ""
        return parse_json_bytes(decode_body(raw, encoding, limit))
