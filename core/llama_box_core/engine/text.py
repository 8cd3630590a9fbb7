"""Turning a stream of token bytes into text that is safe to send: whole UTF-8
characters only, and nothing that might still turn out to be the start of a stop string."""

from __future__ import annotations

import codecs


class TextAssembler:
    def __init__(self, stop: list[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = [s for s in stop if s]
        self._longest_stop = max((len(s) for s in self._stop), default=0)
        self.text = ""
        self._sent = 0

    def feed(self, piece: bytes) -> tuple[str, str | None]:
        """Add a token's bytes; return (text now safe to send, stop string hit or None).

        On a hit, the returned text ends just before the stop string and ``text`` is
        truncated there.
        """
        self.text += self._decoder.decode(piece)
        if not self._stop:
            return self._release(len(self.text)), None
        # A stop string can only end inside the new text, so search from just before it.
        search_from = max(0, self._sent - self._longest_stop)
        hit: tuple[int, str] | None = None
        for word in self._stop:
            at = self.text.find(word, search_from)
            if at != -1 and (hit is None or at < hit[0]):
                hit = (at, word)
        if hit is not None:
            self.text = self.text[: hit[0]]
            return self._release(len(self.text)), hit[1]
        return self._release(len(self.text) - self._partial_stop_length()), None

    def flush(self) -> str:
        """Everything not yet sent, including held-back partial stop strings."""
        self.text += self._decoder.decode(b"", final=True)
        return self._release(len(self.text))

    def _partial_stop_length(self) -> int:
        """Length of the longest suffix of the text that begins some stop string."""
        tail = self.text[-self._longest_stop :]
        for length in range(min(len(tail), self._longest_stop), 0, -1):
            suffix = tail[-length:]
            if any(word.startswith(suffix) for word in self._stop):
                return length
        return 0

    def _release(self, upto: int) -> str:
        upto = max(upto, self._sent)
        released = self.text[self._sent : upto]
        self._sent = upto
        return released
