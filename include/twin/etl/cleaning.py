"""Cleaning and normalisation of raw documents, one recipe per document kind.

Raw text is literal: the crawler stores the extractor's structured output as markdown (code fenced,
tables, lists), so cleaning never parses text as HTML. `<nav>` or `Map<String, Integer>` in a post is
text and stays. Only a raw document marked `metadata["content_format"] == "html"` is run through the
same extraction first.

Prose (articles, posts): mojibake repaired, unicode composed (NFC, so x² and ℝ stay), whole lines of
site chrome dropped (cookie banners, "Share this post": the whole short line must match, a sentence
that starts with "Subscribe" stays), URLs and emoji removed, whitespace collapsed but paragraphs kept.
Fenced code blocks and inline code are left as written. Code keeps its structure: only encoding
repair, NFC, line endings and trailing spaces are touched.

Every rule counts the characters it removed; `CleaningStats` carries them per document, with the
share of the text (non-whitespace characters) that cleaning lost beyond the URLs, emoji and PII it
removes by design.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import emoji
import ftfy

from twin.models import CleanedDocument, CleaningStats, DocumentKind, RawDocument, content_hash

# ftfy must not decode HTML entities: raw text is literal, "&lt;" in it was written by its author
# (or is an extraction leftover that the cleaned-documents suite must see).
_PROSE_FIXER = ftfy.TextFixerConfig(unescape_html=False, normalization="NFC")
# In code, quotes, full-width characters and ligatures can be meaningful (string literals).
_CODE_FIXER = ftfy.TextFixerConfig(unescape_html=False, uncurl_quotes=False, fix_character_width=False,
                                   fix_latin_ligatures=False, normalization="NFC")

# Rule names, as counted in CleaningStats.removed_chars and in the ETL report.
MARKUP, UNICODE, BOILERPLATE, URLS, EMOJI, WHITESPACE, PII = (
    "markup", "unicode", "boilerplate_lines", "urls", "emoji", "whitespace", "pii")

_TOKEN_RULES = (URLS, EMOJI, PII)

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# Whole lines of site chrome, compared after markdown decoration and end punctuation are stripped.
_CHROME_LINE = re.compile(
    r"share(?: (?:this|the) (?:post|article|story|page))?(?: (?:on|via) [\w .]{1,30})?"
    r"|(?:follow|find) (?:me|us)(?: on [\w .]{1,30})?"
    r"|(?:subscribe|sign up|join)(?: now| today| for free| here)?"
    r"(?: (?:to|for) (?:our|my|the) (?:free |weekly )?(?:newsletter|blog|mailing list|updates|feed|channel)s?)?"
    r"|(?:sign|log) ?(?:in|out)(?: to (?:comment|reply))?"
    r"|(?:originally )?published (?:on|in|at) [\w.-]{1,40}(?: on [\w ,]{1,20})?"
    r"|thanks for reading|click here|read more|continue reading|read the full (?:post|article|story)"
    r"|(?:copyright ?)?(?:©|\(c\)) ?(?:\d{4}(?: ?[-–] ?\d{4})?)?[^.]{0,60}(?:\. ?all rights reserved)?"
    r"|copyright \d{4}(?: ?[-–] ?\d{4})?[^.]{0,60}(?:\. ?all rights reserved)?"
    r"|all rights reserved"
    r"|advertisement|sponsored(?: content| post)?"
    r"|related (?:posts|articles|stories)|you (?:may|might) also like|recommended for you"
    r"|leave a (?:comment|reply)|\d+ (?:comments?|responses?)|no comments(?: yet)?"
    r"|\d+ ?(?:min|minute)s? read"
    r"|(?:previous|next|older|newer) (?:post|article|story)"
    r"|back to top|skip to (?:main )?content|toggle (?:navigation|menu)"
    r"|(?:accept|reject|decline)(?: all)?(?: cookies)?|cookie (?:settings|preferences|policy)"
    r"|manage (?:cookies|preferences|consent)",
    re.IGNORECASE,
)
_CHROME_MAX_CHARS = 120
# A cookie banner is one line about cookies that asks for consent; it may be a long one.
_COOKIE_BANNER = re.compile(r"\bcookies?\b.*\b(?:accept|consent|agree|privacy|cookie policy|by continuing)\b"
                            r"|\b(?:accept|consent|agree)\b.*\bcookies?\b", re.IGNORECASE)
_COOKIE_MAX_CHARS = 400
_DECORATION = re.compile(r"^(?:[#>*+\-]+ ?|\d+\. )*|[*_]+")
_END_PUNCTUATION = re.compile(r"[\s.!:…→»|]+$")
# A URL does not end with the punctuation of the sentence around it.
_URL = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"')\]`]*[^\s<>\"')\].,;:!?`]", re.IGNORECASE)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# Candidate phone numbers: digit groups with separators, optional +country and (area) code; a
# candidate is only replaced when it has 9-15 digits, so dates, years and versions stay.
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,5}){1,4}(?![\w-])")
_SPACES = re.compile(r"[ \t\f\v\u00a0\u2000-\u200b\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_WHITESPACE = re.compile(r"\s")


class Removed(Counter[str]):
    """Characters removed per rule."""

    def apply(self, rule: str, rule_fn: Callable[[str], str], text: str) -> str:
        result = rule_fn(text)
        if len(result) < len(text):
            self[rule] += len(text) - len(result)
        return result


def normalise_prose_unicode(text: str) -> str:
    return ftfy.fix_text(text, _PROSE_FIXER)


def is_chrome_line(line: str) -> bool:
    """A whole line that belongs to the page chrome, not to what the author wrote."""
    bare = _END_PUNCTUATION.sub("", _DECORATION.sub("", line.strip())).strip()
    if not bare:
        return False
    if len(bare) <= _CHROME_MAX_CHARS and _CHROME_LINE.fullmatch(_SPACES.sub(" ", bare)):
        return True
    return len(bare) <= _COOKIE_MAX_CHARS and bool(_COOKIE_BANNER.search(bare))


def remove_urls(text: str) -> str:
    return _URL.sub("", text)


def remove_emoji(text: str) -> str:
    return emoji.replace_emoji(text, replace="")


def split_code_blocks(text: str) -> list[tuple[bool, str]]:
    """(is_code, lines) segments: fenced code blocks (fences included) apart from the prose around
    them. An unclosed fence runs to the end, as in CommonMark."""
    segments: list[tuple[bool, list[str]]] = []
    fence: str | None = None
    for line in text.split("\n"):
        opening = _FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
            segments.append((True, [line]))
            continue
        if fence is not None:
            segments[-1][1].append(line)
            if line.strip().startswith(fence) and set(line.strip()) == {fence[0]}:
                fence = None
            continue
        if not segments or segments[-1][0]:
            segments.append((False, []))
        segments[-1][1].append(line)
    return [(is_code, "\n".join(lines)) for is_code, lines in segments]


def _outside_inline_code(line: str, fn: Callable[[str], str]) -> str:
    """Apply fn to the parts of a prose line that are not inline code."""
    parts, last = [], 0
    for match in _INLINE_CODE.finditer(line):
        parts += [fn(line[last:match.start()]), match.group(0)]
        last = match.end()
    return "".join([*parts, fn(line[last:])])


def prose_outside_code(text: str) -> str:
    """The prose of a cleaned text without its code blocks and inline code (what the markup check reads)."""
    return "\n".join(_INLINE_CODE.sub("", segment) for is_code, segment in split_code_blocks(text) if not is_code)


def _clean_prose_lines(prose: str, removed: Removed) -> str:
    lines = []
    for line in prose.split("\n"):
        if is_chrome_line(line):
            removed[BOILERPLATE] += len(line)
            continue
        line = removed.apply(URLS, lambda t: _outside_inline_code(t, remove_urls), line)
        line = removed.apply(EMOJI, lambda t: _outside_inline_code(t, remove_emoji), line)
        line = removed.apply(WHITESPACE, lambda t: _outside_inline_code(t, lambda s: _SPACES.sub(" ", s)).strip(),
                             line)
        lines.append(line)
    return "\n".join(lines)


def _join_blocks(segments: list[str], removed: Removed) -> str:
    return removed.apply(WHITESPACE, lambda t: _BLANK_LINES.sub("\n\n", t).strip("\n"), "\n".join(segments))


def clean_prose_counted(text: str, removed: Removed | None = None) -> tuple[str, Removed]:
    removed = removed if removed is not None else Removed()
    text = removed.apply(WHITESPACE, lambda t: t.replace("\r\n", "\n").replace("\r", "\n"), text)
    text = removed.apply(UNICODE, normalise_prose_unicode, text)
    segments = [_clean_code_lines(segment, removed) if is_code else _clean_prose_lines(segment, removed)
                for is_code, segment in split_code_blocks(text)]
    return _join_blocks(segments, removed), removed


def clean_prose(text: str) -> str:
    return clean_prose_counted(text)[0]


def _clean_code_lines(code: str, removed: Removed) -> str:
    return removed.apply(WHITESPACE, lambda t: "\n".join(line.rstrip() for line in t.split("\n")), code)


def clean_code_counted(text: str, removed: Removed | None = None) -> tuple[str, Removed]:
    removed = removed if removed is not None else Removed()
    text = removed.apply(WHITESPACE, lambda t: t.replace("\r\n", "\n").replace("\r", "\n"), text)
    text = removed.apply(UNICODE, lambda t: ftfy.fix_text(t, _CODE_FIXER), text)
    return removed.apply(WHITESPACE, lambda t: _clean_code_lines(t, Removed()).strip("\n"), text), removed


def clean_code(text: str) -> str:
    return clean_code_counted(text)[0]


def scrub_pii(text: str, removed: Removed | None = None) -> str:
    """Replace e-mail addresses and phone numbers with placeholders (counted: characters replaced)."""
    removed = removed if removed is not None else Removed()

    def email(match: re.Match[str]) -> str:
        removed[PII] += len(match.group(0))
        return "[EMAIL]"

    def phone(match: re.Match[str]) -> str:
        digits = sum(ch.isdigit() for ch in match.group(0))
        if not 9 <= digits <= 15:
            return match.group(0)
        removed[PII] += len(match.group(0))
        return "[PHONE]"

    return _PHONE.sub(phone, _EMAIL.sub(email, text))


CLEANERS: dict[DocumentKind, Callable[[str, Removed], tuple[str, Removed]]] = {
    DocumentKind.ARTICLE: clean_prose_counted,
    DocumentKind.POST: clean_prose_counted,
    DocumentKind.CODE: clean_code_counted,
}


def _text_chars(text: str) -> int:
    return len(text) - len(_WHITESPACE.findall(text))


def clean_text_counted(text: str, kind: DocumentKind, *, scrub: bool = False,
                       content_format: str | None = None) -> tuple[str, CleaningStats]:
    """The cleaned text and what each rule removed. HTML input is extracted first; the markup and the
    page around the main text count as removed by "markup", but the loss share is measured from the
    extracted text on, since markup is not text."""
    removed = Removed()
    if content_format == "html" and kind != DocumentKind.CODE:
        from twin.crawl.article import html_to_markdown  # the crawler's extraction, not a second one

        text = removed.apply(MARKUP, html_to_markdown, text)
    cleaned, _ = CLEANERS[kind](text, removed)
    if scrub:
        cleaned = scrub_pii(cleaned, removed)
    source = _text_chars(text)
    # URLs, emoji and PII go by design, token by token; what the share watches is text lost with them
    # (whole lines, a rule gone wrong).
    by_design = sum(removed[rule] for rule in _TOKEN_RULES)
    lost = max(0, source - _text_chars(cleaned) - by_design)
    return cleaned, CleaningStats(
        source_chars=len(text), cleaned_chars=len(cleaned), removed_chars=dict(sorted(removed.items())),
        loss_share=round(lost / source, 4) if source else 0.0,
    )


def clean_text(text: str, kind: DocumentKind, *, scrub: bool = False) -> str:
    return clean_text_counted(text, kind, scrub=scrub)[0]


def clean_document(raw: RawDocument, etl_run_id: str, *, scrub: bool = False) -> CleanedDocument:
    """The cleaned version of one raw document; same id, with both hashes for traceability."""
    text, stats = clean_text_counted(raw.content, raw.kind, scrub=scrub,
                                     content_format=raw.metadata.get("content_format"))
    title = " ".join(clean_prose(raw.title).split()) if raw.title else raw.title
    return CleanedDocument(
        id=raw.id, raw_id=raw.id, kind=raw.kind, url=raw.url, path=raw.path, author_id=raw.author_id,
        author_name=raw.author_name, title=title or None, content=text, metadata=raw.metadata,
        published_at=raw.published_at, content_hash=content_hash(text), raw_content_hash=raw.content_hash,
        etl_run_id=etl_run_id, cleaning=stats,
    )
