"""Chunking by document kind, with sizes counted by the embedding model's own tokenizer.

- articles: sentence-aware windows of at most `max_tokens`, consecutive windows share about
  `overlap_tokens` of whole sentences so that an idea cut at a border is still found;
- code: the whole file when it fits, else top-level definitions packed together, else line windows;
- posts: whole when they fit, else short sentence windows.
Units longer than a window (a huge sentence, a minified line) fall back to plain token windows.
Chunk texts are slices of the document, so paragraphs and code indentation survive.

Contextual headers (opt-in; on the labelled hard set they lowered hit@1, so off): each chunk's text starts with the
document title and the section heading it falls under ("Title › Heading"), so that a passage that
never repeats its topic is still found by it, in BM25 and in the embedding alike. The header's
tokens count against the chunk size.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Protocol

from twin.models import Chunk, CleanedDocument, DocumentKind, content_hash, stable_id

Span = tuple[int, int]  # [start, end) character offsets into the document text

# A sentence ends at . ! ? (optionally closed by a quote or bracket) followed by space; blank lines end one too.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+|\n\s*\n")
_LINE = re.compile(r"[^\n]*\n|[^\n]+$")
# A top-level definition (or its decorator) in the common languages starts a new code block.
_CODE_BLOCK_START = re.compile(
    r"^(@|def |async def |class |function |async function |func |fn |pub |impl |struct |enum |interface |"
    r"type |export |public |private |protected |static |module |package |const \w+ = |#{1,3} )",
    re.MULTILINE,
)


class Tokenizer(Protocol):
    def count_tokens(self, text: str) -> int: ...

    def token_spans(self, text: str) -> list[Span]: ...


# A section heading as cleaning leaves it: a short line of its own between blank lines, capitalised,
# without sentence punctuation or code characters; a Markdown heading ("## Results") too.
_HEADING = re.compile(r"(?:^|\n[ \t]*\n)[ \t]*(?:#{1,6}[ \t]+)?"
                      r"([A-Z0-9][^\n.!?;:=(){}\[\]<>`|\\/_*#]{1,80}[^\n.!?;:,=(){}\[\]<>`|\\/_*#\s])"
                      r"[ \t]*(?=\n[ \t]*\n|\Z)")
HEADER_SEPARATOR = " › "


def section_headings(text: str) -> list[tuple[int, str]]:
    """(offset, heading) of each section heading in a cleaned text, in order."""
    return [(m.start(1), m.group(1).strip()) for m in _HEADING.finditer(text) if len(m.group(1).split()) <= 12]


@dataclass(frozen=True)
class ChunkSizes:
    max_tokens: int = 256
    overlap_tokens: int = 32
    post_max_tokens: int = 128  # long posts are cut into windows this short
    contextual_headers: bool = False  # prefix article and post chunks with "Title › Section" (measured: hurt)

    def __post_init__(self) -> None:
        if self.overlap_tokens >= self.max_tokens:
            raise ValueError(f"overlap ({self.overlap_tokens}) must be smaller than the chunk size ({self.max_tokens})")


class ModelTokenizer:
    """Adapts a Hugging Face fast tokenizer (the embedding model's) to the `Tokenizer` protocol."""

    def __init__(self, hf_tokenizer: object) -> None:
        self._tok = hf_tokenizer

    def count_tokens(self, text: str) -> int:
        # verbose=False: whole documents are longer than the model's window, which is the point here.
        return len(self._tok(text, add_special_tokens=False, verbose=False)["input_ids"])  # type: ignore[operator]

    def token_spans(self, text: str) -> list[Span]:
        enc = self._tok(text, add_special_tokens=False, return_offsets_mapping=True,  # type: ignore[operator]
                        verbose=False)
        return [(int(a), int(b)) for a, b in enc["offset_mapping"]]


def _regex_pieces(text: str, span: Span, pattern: re.Pattern[str]) -> list[Span]:
    """Split a span at the separator matches of `pattern`, dropping empty pieces and outer whitespace."""
    start, end = span
    pieces, cursor = [], start
    for match in pattern.finditer(text, start, end):
        pieces.append((cursor, match.start()))
        cursor = match.end()
    pieces.append((cursor, end))
    return [s for s in (_strip(text, p) for p in pieces) if s[1] > s[0]]


def _strip(text: str, span: Span) -> Span:
    start, end = span
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def sentences(text: str, span: Span) -> list[Span]:
    return _regex_pieces(text, span, _SENTENCE_END)


def lines(text: str, span: Span) -> list[Span]:
    found = [(span[0] + m.start(), span[0] + m.end()) for m in _LINE.finditer(text[span[0]:span[1]])]
    return [s for s in (_strip(text, p) for p in found) if s[1] > s[0]]


def code_blocks(text: str, span: Span) -> list[Span]:
    """Top-level definitions: a block starts at an unindented line that opens a definition."""
    starts = [span[0]]
    for line_start, _ in lines(text, span):
        at_column_zero = line_start == 0 or text[line_start - 1] == "\n"
        if at_column_zero and line_start > span[0] and _CODE_BLOCK_START.match(text, line_start):
            starts.append(line_start)
    bounds = [*starts, span[1]]
    blocks = [_strip(text, (a, b)) for a, b in pairwise(bounds)]
    return [b for b in blocks if b[1] > b[0]]


Splitter = Callable[[str, Span], list[Span]]


@dataclass
class _Unit:
    span: Span
    tokens: int


class Chunker:
    def __init__(self, tokenizer: Tokenizer, sizes: ChunkSizes) -> None:
        self.tokenizer = tokenizer
        self.sizes = sizes

    def windows(self, text: str, kind: DocumentKind) -> list[Span]:
        whole = _strip(text, (0, len(text)))
        if whole[1] == whole[0]:
            return []
        if kind is DocumentKind.CODE:
            return self._pack(text, whole, [code_blocks, lines], self.sizes.max_tokens, fits_whole=True)
        if kind is DocumentKind.POST:
            if self._count(text, whole) <= self.sizes.max_tokens:
                return [whole]
            return self._pack(text, whole, [sentences], self.sizes.post_max_tokens)
        return self._pack(text, whole, [sentences], self.sizes.max_tokens)

    def chunk(self, doc: CleanedDocument) -> list[Chunk]:
        chunks = []
        use_headers = self.sizes.contextual_headers and doc.kind is not DocumentKind.CODE
        headings = section_headings(doc.content) if use_headers else []
        # Leave room for the header: the longest one this document can get, counted once.
        reserve = 0
        if use_headers:
            longest = max([self._header(doc.title, h) for _, h in headings] or [self._header(doc.title, None)],
                          key=len)
            reserve = self.tokenizer.count_tokens(longest) + 2
        for index, (start, end) in enumerate(self._windows_within(doc.content, doc.kind, reserve)):
            text = doc.content[start:end]
            if use_headers:
                section = next((h for offset, h in reversed(headings) if offset <= start), None)
                header = self._header(doc.title, section if section != text.strip() else None)
                text = f"{header}\n\n{text}" if header else text
            chunks.append(Chunk(
                id=stable_id(doc.id, str(index), content_hash(text)),
                document_id=doc.id, chunk_index=index, kind=doc.kind,
                author_id=doc.author_id, author_name=doc.author_name,
                url=doc.url, path=doc.path, title=doc.title, text=text,
                token_count=self.tokenizer.count_tokens(text),
                published_at=doc.published_at, document_hash=doc.content_hash,
            ))
        return chunks

    @staticmethod
    def _header(title: str | None, section: str | None) -> str:
        parts = [p.strip() for p in (title, section) if p and p.strip()]
        return HEADER_SEPARATOR.join(dict.fromkeys(parts))  # a heading equal to the title once

    def _windows_within(self, text: str, kind: DocumentKind, reserve: int) -> list[Span]:
        """Windows whose text plus a header of `reserve` tokens still fits the chunk size."""
        if reserve <= 0:
            return self.windows(text, kind)
        room = max(16, self.sizes.max_tokens - reserve)
        inner = Chunker(self.tokenizer, ChunkSizes(
            max_tokens=room, overlap_tokens=min(self.sizes.overlap_tokens, room // 2),
            post_max_tokens=max(8, min(self.sizes.post_max_tokens, room)), contextual_headers=False))
        return inner.windows(text, kind)

    # --- packing -------------------------------------------------------------------------------
    def _count(self, text: str, span: Span) -> int:
        return self.tokenizer.count_tokens(text[span[0]:span[1]])

    def _units(self, text: str, span: Span, splitters: Sequence[Splitter], limit: int) -> list[_Unit]:
        """Cut a span into units no longer than `limit`, trying each finer splitter in turn."""
        tokens = self._count(text, span)
        if tokens <= limit:
            return [_Unit(span, tokens)]
        if not splitters:
            return [_Unit(s, self._count(text, s)) for s in self._token_windows(text, span, limit)]
        pieces = splitters[0](text, span)
        if len(pieces) <= 1:  # this splitter cannot cut it: go finer
            return self._units(text, span, splitters[1:], limit)
        return [u for piece in pieces for u in self._units(text, piece, splitters[1:], limit)]

    def _token_windows(self, text: str, span: Span, limit: int) -> list[Span]:
        offsets = [(span[0] + a, span[0] + b) for a, b in self.tokenizer.token_spans(text[span[0]:span[1]])]
        step = max(1, limit - self.sizes.overlap_tokens)
        windows = []
        for first in range(0, len(offsets), step):
            last = min(first + limit, len(offsets)) - 1
            windows.append((offsets[first][0], offsets[last][1]))
            if last == len(offsets) - 1:
                break
        return windows

    def _pack(self, text: str, span: Span, splitters: Sequence[Splitter], limit: int,
              fits_whole: bool = False) -> list[Span]:
        """Greedy packing of units into windows; a new window repeats the previous one's tail units
        that fit in the overlap budget."""
        if fits_whole and self._count(text, span) <= limit:
            return [span]
        units = self._units(text, span, splitters, limit)
        windows: list[Span] = []
        current: list[_Unit] = []
        for unit in units:
            if current and sum(u.tokens for u in current) + unit.tokens > limit:
                windows.append((current[0].span[0], current[-1].span[1]))
                current = self._overlap_tail(current, limit - unit.tokens)
            current.append(unit)
        if current:
            windows.append((current[0].span[0], current[-1].span[1]))
        return windows

    def _overlap_tail(self, window: list[_Unit], room: int) -> list[_Unit]:
        budget = min(self.sizes.overlap_tokens, room)
        tail: list[_Unit] = []
        for unit in reversed(window[1:]):  # never the whole window again: the next one must move on
            if sum(u.tokens for u in tail) + unit.tokens > budget:
                break
            tail.insert(0, unit)
        return tail
