"""Canonical JSON: one spelling per value, so digests compare calls across replays."""

import hashlib
import json


def canonical(value):
    """Compact JSON with sorted keys; raises TypeError for non-JSON values."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digest(text):
    """Short stable digest of a canonical string (or bytes)."""
    if isinstance(text, str):
        text = text.encode("utf-8")
    return hashlib.sha256(text).hexdigest()[:16]


def content_hash(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def loads(text):
    return None if text is None else json.loads(text)


def short(value, width=60):
    """A one-line preview of a JSON value for tables."""
    text = value if isinstance(value, str) else canonical(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"
