"""N-gram caches as llama.cpp's ``common/ngram-cache`` keeps them, and drafting from them.

A cache maps an n-gram (up to ``NGRAM_MAX`` tokens) to how often each token followed it.
Files hold, per n-gram: its tokens (``NGRAM_MAX`` int32, unused ones -1), the number of
followers (int32), then (token, count) int32 pairs; little-endian, as llama.cpp writes.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

NGRAM_MAX = 4
NGRAM_STATIC = 2
"""The n-gram size of static caches (llama.cpp's LLAMA_NGRAM_STATIC)."""
NULL = -1

# How sure a lookup must be, by n-gram size - 1 (llama.cpp's draft_min_sample_size_* and
# draft_min_percent_*): the context cache is trusted more than the dynamic one.
LAX = ((2, 2, 1, 1), (66, 50, 50, 50))
STRICT = ((4, 3, 2, 2), (75, 66, 66, 66))

NgramCache = dict[tuple[int, ...], Counter[int]]


def update(cache: NgramCache, tokens: Sequence[int], start: int, n_min: int, n_max: int) -> None:
    """Count, for every token from ``start`` on, the n-grams (n_min..n_max) before it."""
    for i in range(max(start, n_min), len(tokens)):
        for n in range(n_min, min(n_max, i) + 1):
            cache.setdefault(tuple(tokens[i - n : i]), Counter())[tokens[i]] += 1


def save(cache: NgramCache, path: str | Path) -> None:
    with open(path, "wb") as file:
        for ngram, followers in cache.items():
            padded = [*ngram, *([NULL] * (NGRAM_MAX - len(ngram)))]
            file.write(struct.pack(f"<{NGRAM_MAX}i", *padded))
            file.write(struct.pack("<i", len(followers)))
            for token, count in followers.items():
                file.write(struct.pack("<2i", token, count))


def load(path: str | Path) -> NgramCache:
    data = Path(path).read_bytes()
    cache: NgramCache = {}
    offset = 0
    head = struct.Struct(f"<{NGRAM_MAX}ii")
    pair = struct.Struct("<2i")
    while offset < len(data):
        if offset + head.size > len(data):
            raise ValueError(f"{path}: truncated n-gram cache file")
        *ngram, n = head.unpack_from(data, offset)
        offset += head.size
        if n <= 0 or offset + n * pair.size > len(data):
            raise ValueError(f"{path}: not a llama.cpp n-gram cache file")
        key = tuple(t for t in ngram if t != NULL)
        followers = cache.setdefault(key, Counter())
        for token, count in pair.iter_unpack(data[offset : offset + n * pair.size]):
            followers[token] += count
        offset += n * pair.size
    return cache


def best(followers: Counter[int] | None, n: int, thresholds: tuple) -> int | None:
    """The most frequent follower, if it was seen often enough and often enough
    compared with the others."""
    if not followers:
        return None
    token, count = followers.most_common(1)[0]
    total = sum(followers.values())
    min_samples, min_percent = thresholds[0][n - 1], thresholds[1][n - 1]
    if total < min_samples or 100 * count < min_percent * total:
        return None
    return token


def draft(
    tokens: Sequence[int],
    n_max: int,
    context: NgramCache,
    dynamic: NgramCache,
    static: NgramCache,
    n_min: int,
) -> list[int]:
    """Tokens likely to follow ``tokens``: each from the longest n-gram of the context
    cache that is sure enough, else of the dynamic cache, else of the static one."""
    out: list[int] = []
    sequence = list(tokens[-NGRAM_MAX:])  # only the last n-gram is looked up
    while len(out) < n_max:
        found = None
        for cache, thresholds in ((context, LAX), (dynamic, STRICT)):
            for n in range(min(NGRAM_MAX, len(sequence)), n_min - 1, -1):
                found = best(cache.get(tuple(sequence[-n:])), n, thresholds)
                if found is not None:
                    break
            if found is not None:
                break
        if found is None and len(sequence) >= NGRAM_STATIC:
            found = best(static.get(tuple(sequence[-NGRAM_STATIC:])), NGRAM_STATIC, STRICT)
        if found is None:
            break
        out.append(found)
        sequence.append(found)
    return out
