"""Turning a stream of byte chunks into what `stream`/`generate` return: pieces cut at the byte
budget and at the first stop string, never splitting a UTF-8 character in `str` output."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Union

Text = Union[str, bytes]

__all__ = ["Text", "as_bytes", "emit"]


def as_bytes(text: Text | bytearray | memoryview) -> bytes:
    """UTF-8 bytes of a `str`, or the bytes themselves; anything else is a TypeError."""
    if isinstance(text, str):
        return text.encode("utf-8")
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text)
    raise TypeError(f"expected str or bytes, got {type(text).__name__}")


def emit(chunks: Iterator[bytes], max_new_bytes: int, stops: Sequence[bytes], as_str: bool) -> Iterator[Text]:
    """Output pieces from byte chunks: cut at `max_new_bytes` and at the first stop string (not
    included); bytes that may begin a stop string are held back, and so are partial UTF-8
    characters for `str` output. The producer is closed as soon as the output is complete, so
    it never spends a model call on a byte nobody reads."""
    out = bytearray()
    emitted = 0
    hold = max((len(s) for s in stops), default=1) - 1
    done = max_new_bytes == 0
    while not done:
        chunk = next(chunks, None)
        if chunk is None:
            break
        for b in chunk:
            out.append(b)
            hit = _find_stop(out, stops)
            if hit is not None:
                del out[hit:]
                done = True
                break
            if len(out) >= max_new_bytes:
                done = True
                break
        if done:
            break
        ready = _safe_end(out, emitted, len(out) - hold if stops else len(out), as_str)
        if ready > emitted:
            yield _piece(out[emitted:ready], as_str)
            emitted = ready
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
    if len(out) > emitted:
        yield _piece(out[emitted:], as_str)


def _find_stop(out: bytearray, stops: Sequence[bytes]) -> int | None:
    for s in stops:
        if s and out.endswith(s):
            return len(out) - len(s)
    return None


def _safe_end(out: bytearray, start: int, limit: int, as_str: bool) -> int:
    """End of the longest piece out[start:end] that can be emitted now (whole characters)."""
    end = max(start, min(limit, len(out)))
    if not as_str:
        return end
    while end > start:
        try:
            bytes(out[start:end]).decode("utf-8")
            return end
        except UnicodeDecodeError:
            end -= 1
    return start


def _piece(b: bytearray, as_str: bool) -> Text:
    return bytes(b).decode("utf-8", errors="replace") if as_str else bytes(b)
