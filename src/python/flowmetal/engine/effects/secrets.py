"""Secrets in values: masking for storage, refilling for the program, markers for child runs.

A run's secrets are the values `secret(NAME)` returned (and those its parent
passed it by name). Nothing stored holds them (doc/effects.md, "Secrets"):

- `mask_spans(value, secrets)` replaces each occurrence by "***" and returns
  where: spans [path, offset, NAME] into the masked value. The gate stores the
  masked value and the spans (the entry's data), and `refill` puts the values
  back on replay, so the program sees exactly what it saw live.
- `to_markers(value, secrets)` writes a value for another run (spawn
  arguments, continue_as_new): a string holding secrets becomes
  {"$secret": NAME} (the whole string) or {"$secret": [[offset, NAME], ...],
  "$text": masked}; `from_markers` resolves them in the receiving run from
  its own environment. Secrets pass between runs by name, never by value.
- `safe_cut(data, cut, secrets)`: a cut position in bytes that splits no secret.
"""

import re

MASK = "***"
_patterns = {}


def _pattern(values):
    key = tuple(values)
    pattern = _patterns.get(key)
    if pattern is None:
        if len(_patterns) > 256:
            _patterns.clear()
        ordered = sorted((v for v in values if v), key=len, reverse=True)  # the longest wins an overlap
        pattern = _patterns[key] = re.compile("|".join(map(re.escape, ordered))) if ordered else None
    return pattern


def mask(value, secrets):
    """`value` (a string, or JSON containing strings) with every secret replaced by ***."""
    if not secrets:
        return value
    if isinstance(value, str):
        pattern = _pattern(secrets)
        return pattern.sub(MASK, value) if pattern else value
    if isinstance(value, list):
        return [mask(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: mask(v, secrets) for k, v in value.items()}
    return value


def _mask_text(text, pattern, names):
    """(masked text, [(offset in the masked text, NAME)])."""
    out, spans, last, shift = [], [], 0, 0
    for m in pattern.finditer(text):
        out.append(text[last:m.start()])
        spans.append((m.start() + shift, names[m.group()]))
        out.append(MASK)
        shift += len(MASK) - (m.end() - m.start())
        last = m.end()
    if not spans:
        return text, spans
    out.append(text[last:])
    return "".join(out), spans


def mask_spans(value, names):
    """(masked value, spans): `names` maps each secret value to its NAME."""
    if not names:
        return value, []
    pattern = _pattern(names)
    spans = []

    def walk(v, path):
        if isinstance(v, str):
            masked, found = _mask_text(v, pattern, names)
            spans.extend([list(path), offset, name] for offset, name in found)
            return masked
        if isinstance(v, list):
            return [walk(x, path + (i,)) for i, x in enumerate(v)]
        if isinstance(v, dict):
            return {k: walk(x, path + (k,)) for k, x in v.items()}
        return v

    return walk(value, ()), spans


def refill(value, spans, lookup):
    """The value with each span's *** replaced by `lookup(NAME)` (the inverse of mask_spans)."""
    if not spans:
        return value
    by_path = {}
    for path, offset, name in spans:
        by_path.setdefault(tuple(path), []).append((offset, name))

    def fill(text, found):
        for offset, name in sorted(found, reverse=True):
            text = text[:offset] + lookup(name) + text[offset + len(MASK):]
        return text

    def walk(v, path):
        if isinstance(v, str):
            found = by_path.get(path)
            return fill(v, found) if found else v
        if isinstance(v, list):
            return [walk(x, path + (i,)) for i, x in enumerate(v)]
        if isinstance(v, dict):
            return {k: walk(x, path + (k,)) for k, x in v.items()}
        return v

    return walk(value, ())


def to_markers(value, names):
    """`value` as another run may store it: secrets replaced by markers naming them."""
    pattern = _pattern(names) if names else None

    def walk(v):
        if isinstance(v, str) and pattern is not None:
            masked, found = _mask_text(v, pattern, names)
            if not found:
                return v
            if masked == MASK:
                return {"$secret": found[0][1]}
            return {"$secret": [list(f) for f in found], "$text": masked}
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            if v and all(isinstance(k, str) and k.startswith("$") for k in v):
                return {"$value": {k: walk(x) for k, x in v.items()}}  # not to be read as a marker
            return {k: walk(x) for k, x in v.items()}
        return v

    return walk(value)


def from_markers(value, resolve):
    """The inverse of to_markers; `resolve(NAME)` reads the secret (and makes it one of the run's)."""
    if isinstance(value, list):
        return [from_markers(x, resolve) for x in value]
    if isinstance(value, dict):
        keys = set(value)
        if keys == {"$secret"} and isinstance(value["$secret"], str):
            return resolve(value["$secret"])
        if keys == {"$secret", "$text"}:
            return refill(value["$text"], [[[], offset, name] for offset, name in value["$secret"]], resolve)
        if keys == {"$value"} and isinstance(value["$value"], dict):
            return {k: from_markers(x, resolve) for k, x in value["$value"].items()}
        return {k: from_markers(x, resolve) for k, x in value.items()}
    return value


def has_markers(text):
    return text is not None and '"$secret"' in text


def safe_cut(data, cut, secrets):
    """A position <= cut in `data` (bytes) that is not inside an occurrence of a secret."""
    while True:
        moved = _cut_once(data, cut, secrets)
        if moved == cut:
            return cut
        cut = moved


def _cut_once(data, cut, secrets):
    best = cut
    for s in secrets:
        raw = s.encode("utf-8") if isinstance(s, str) else s
        if not raw:
            continue
        start = data.find(raw, max(0, cut - len(raw) + 1), cut + len(raw) - 1)
        while start != -1 and start < cut:
            if start + len(raw) > cut:
                best = min(best, start)
            start = data.find(raw, start + 1, cut + len(raw) - 1)
    return best
