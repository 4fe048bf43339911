"""The last gate: no string value of the input's tags may occur in a result, for metadata
that hides in the coded data itself (an AAC encoder's name in a data element, which no
remux removes).

Rules:
- the values searched for are the input's tag values of 6 characters or more that are not
  numbers nor structural fields (brands, languages, durations), found in the container, its
  streams and its chapters;
- each is searched as UTF-8 and as UTF-16 in both byte orders, ignoring ASCII case (the tag
  says "FAAC 1.24", the stream "libfaac 1.24");
- a search is fed in pieces and keeps, per channel, the tail of what it saw, so a value cut
  across two pieces of the same channel is still found;
- what is searched (video.py): everything the result holds that came from the input except
  the coded slices of H.264 and HEVC pictures, raw samples and a FLAC (encoded again:
  nothing comes from the input but its samples): codec configuration records, every
  compressed audio packet, every non-slice unit of H.264/HEVC (parameter sets, and any unit
  of a type nobody expected), and every packet of other video codecs. Coded slices are
  entropy-coded picture data: a readable string cannot sit there and still decode, and no
  camera or app is known to put one there. They are also ~98% of a video's bytes, and
  searching them was most of the cost of stripping (measured on a 500 MB MP4 with 10 values:
  2.5 s of 5.7 s, against 0.6 s for the whole of mat2's remux of the same file).

The scan costs ~0.1 s per pattern on 500 MB (CPython's substring search); `search_patterns`
keeps the number of patterns down.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

WINDOW = 1 << 20
# What the muxers themselves write under +bitexact: finding these in a result says nothing.
MUXER_VALUES = frozenset({"videohandler", "soundhandler", "datahandler", "lavf", "lavc"})
STRUCTURAL_KEYS = frozenset(
    {"major_brand", "minor_version", "compatible_brands", "language", "vendor_id"}
    | {"DURATION", "duration"}  # Matroska's per-track duration, rewritten by us
)


def tag_values(tag_sets: Iterable[Mapping[str, object]]) -> set[str]:
    """String values of tags worth searching for in a result: 6+ characters, not numbers,
    not the structural fields."""
    values = set()
    for tags in tag_sets:
        for key, value in tags.items():
            text = str(value).strip()
            if key in STRUCTURAL_KEYS or text.lower() in MUXER_VALUES:
                continue
            if len(text) >= 6 and not text.replace(".", "").isdigit():
                values.add(text)
    return values


def search_patterns(values: set[str]) -> set[bytes]:
    """The byte strings a search looks for: UTF-8, and UTF-16 in both byte orders, each
    lowered as bytes (ASCII letters only), exactly as the windows it searches are. (Lowering
    the text before encoding it missed UTF-16 Arabic or CJK values, whose code units hold
    bytes in A-Z, and upper-case non-ASCII values.) For text whose characters are all below
    U+0100 the big-endian form is a zero byte and then the little-endian form minus its
    last (zero) byte, so that shorter string finds both orders with one search. Measured on
    a 500 MB MP4 with 10 values, 30 patterns took 2.8 s and these 20 took 2.1 s."""
    patterns = set()
    for value in values:
        patterns.add(value.encode("utf-8").lower())
        if all(ord(c) < 0x100 for c in value):
            patterns.add(value.encode("utf-16-le").lower()[:-1])
        else:
            patterns |= {value.encode("utf-16-le").lower(), value.encode("utf-16-be").lower()}
    return patterns


class Search:
    """A search for the values of `search_patterns` in data fed piece by piece, on one or
    more channels (a channel is one run of adjacent bytes: a file, or one stream's
    packets). `found` turns True at the first match and stays so."""

    def __init__(self, values: set[str]) -> None:
        self._patterns = tuple(search_patterns(values))
        self._overlap = max((len(p) for p in self._patterns), default=1) - 1
        self._tails: dict[object, bytes] = {}
        self.found = False

    @property
    def empty(self) -> bool:
        """True when there is nothing to look for."""
        return not self._patterns

    def feed(self, data: bytes | memoryview, channel: object = None) -> bool:
        """Searches the next piece of `channel`; returns `found`."""
        if self.found or not self._patterns or not data:
            return self.found
        tail = self._tails.get(channel, b"")
        for start in range(0, len(data), WINDOW):
            window = tail + bytes(data[start : start + WINDOW]).lower()
            if any(p in window for p in self._patterns):
                self.found = True
                return True
            tail = window[-self._overlap :] if self._overlap else b""
        self._tails[channel] = tail
        return False
