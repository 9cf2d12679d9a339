"""How the gate stores a result in the journal, and reads it back.

Results are recorded as canonical JSON. A result larger than BLOB_THRESHOLD is
moved to the blob table (stored once by content hash); a dict result moves each
large field to a blob of its own and keeps the small ones in the entry, so the
same body fetched twice is stored once although its headers and duration
differ. Secrets are masked (their spans kept, see doc/effects.md, "Secrets").
"""

import math

from flowmetal.codec import canonical, loads
from flowmetal.engine.effects.secrets import mask_spans

# Results whose JSON is larger than this are stored once in the blob table and
# referenced from the journal entry (see doc/effects.md).
BLOB_THRESHOLD = 64 * 1024
# Fields of a blobbed dict result whose JSON is at least this long get a blob of their own.
BLOB_FIELD = 1024


def _marker_like(value):
    """A dict whose keys all start with "$" could be read back as an encoding marker."""
    return isinstance(value, dict) and bool(value) and all(k.startswith("$") for k in value)


def decode_result(store, text):
    """The value of a journal result as stored (masked; resolving blob references)."""
    value = loads(text)
    if not _marker_like(value):
        return value
    if set(value) == {"$blob"}:
        return loads(store.get_blob(value["$blob"]))
    if set(value) == {"$value"}:
        return value["$value"]
    if set(value) == {"$parts", "$value"}:
        whole = dict(value["$value"])
        for key, digest_ in value["$parts"].items():
            whole[key] = loads(store.get_blob(digest_))
        return {key: whole[key] for key in sorted(whole)}
    return value


def encode_result(store, clock, secret_names, result):
    """(journal text of a result, secret spans): its canonical JSON, or a reference to blobs.

    Encodings are dicts whose keys all start with "$": {"$blob": hash} (the
    whole result), {"$parts": {field: hash}, "$value": small fields}, and
    {"$value": v} for a result that would otherwise look like one of them.
    """
    if type(result) is int:
        return str(result), None  # the hot path of now(): what canonical() gives, faster
    if type(result) is float and math.isfinite(result):
        return repr(result), None  # and of random()
    if result is None:
        return "null", None
    value, spans = mask_spans(result, secret_names)
    text = canonical(value)
    if len(text) <= BLOB_THRESHOLD:
        return (canonical({"$value": value}) if _marker_like(value) else text), spans
    if isinstance(value, dict):
        parts, small = {}, {}
        for key, field in value.items():
            field_text = canonical(field)
            if len(field_text) >= BLOB_FIELD:
                parts[key] = store.put_blob(field_text, clock.now())
            else:
                small[key] = field
        doc = canonical({"$parts": parts, "$value": small})
        if len(doc) <= BLOB_THRESHOLD:
            return doc, spans
    return canonical({"$blob": store.put_blob(text, clock.now())}), spans
