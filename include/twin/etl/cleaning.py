"""Cleaning and normalisation of raw documents, one recipe per document kind.

Prose (articles, posts) is reduced to plain text: mojibake repaired, unicode normalised (NFKC), markup
and boilerplate lines dropped, URLs and emoji removed, whitespace collapsed but paragraphs kept. Code
keeps its structure: only encoding repair, NFC, line endings and trailing spaces are touched.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

import emoji
import ftfy
import lxml.html
from lxml import etree

from twin.models import CleanedDocument, DocumentKind, RawDocument, content_hash

# ftfy must not decode HTML entities itself: markup handling decodes them exactly once, so escaped
# markup in the source ("&lt;div&gt;") stays visible to the "no markup left" expectation.
_PROSE_FIXER = ftfy.TextFixerConfig(unescape_html=False, normalization="NFKC")
# In code, quotes, full-width characters and ligatures can be meaningful (string literals).
_CODE_FIXER = ftfy.TextFixerConfig(unescape_html=False, uncurl_quotes=False, fix_character_width=False,
                                   fix_latin_ligatures=False, normalization="NFC")

_MARKUP_HINT = re.compile(r"<[a-zA-Z!/][^>]*>|&(?:[a-zA-Z]{2,8}|#\d{1,6}|#x[0-9a-fA-F]{1,6});")
# Elements whose text is never part of the article itself.
_BOILERPLATE_TAGS = ("script", "style", "noscript", "nav", "footer", "header", "aside", "form", "iframe",
                     "svg", "button", "template")
_BLOCK_TAGS = frozenset({"p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "pre",
                         "blockquote", "section", "article", "tr", "table", "hr", "figure", "figcaption"})
# Short lines that belong to the page chrome, not to what the author wrote.
_BOILERPLATE_LINE = re.compile(
    r"^\W*(share (this|on)\b|follow (me|us)\b|subscribe\b|sign up\b|sign in\b|log ?in\b|"
    r"(originally )?published (at|on|in)\b|thanks for reading\b|click here\b|read more\b|"
    r"continue reading\b|all rights reserved\b|copyright\b|©|we use cookies\b|accept cookies\b|"
    r"advertisement\b|sponsored\b|related (posts|articles)\b|leave a (comment|reply)\b|"
    r"\d+\s*(min|minute)s? read\b)",
    re.IGNORECASE,
)
_BOILERPLATE_MAX_CHARS = 120
# A URL does not end with the punctuation of the sentence around it.
_URL = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"')\]]*[^\s<>\"')\].,;:!?]", re.IGNORECASE)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# Candidate phone numbers: digit groups with separators, optional +country and (area) code; a
# candidate is only replaced when it has 9-15 digits, so dates, years and versions stay.
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,5}){1,4}(?![\w-])")
_SPACES = re.compile(r"[ \t\f\v\u00a0\u2000-\u200b\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalise_prose_unicode(text: str) -> str:
    return ftfy.fix_text(text, _PROSE_FIXER)


def strip_markup(text: str) -> str:
    """Turn leftover HTML into text, dropping page chrome; plain text passes through untouched."""
    if not _MARKUP_HINT.search(text):
        return text
    try:
        root = lxml.html.fragment_fromstring(text, create_parent="div")
    except (etree.ParserError, ValueError):
        return text
    for element in root.iter(*_BOILERPLATE_TAGS):
        element.drop_tree()
    for comment in root.iter(etree.Comment):
        comment.drop_tree()
    for element in root.iter():
        if isinstance(element.tag, str) and element.tag in _BLOCK_TAGS:
            element.tail = "\n\n" + (element.tail or "")  # paragraphs stay paragraphs
    return root.text_content()


def drop_boilerplate_lines(text: str) -> str:
    return "\n".join(
        line for line in text.split("\n")
        if not (len(line.strip()) <= _BOILERPLATE_MAX_CHARS and _BOILERPLATE_LINE.match(line.strip()))
    )


def remove_urls(text: str) -> str:
    return _URL.sub("", text)


def remove_emoji(text: str) -> str:
    return emoji.replace_emoji(text, replace="")


def collapse_whitespace(text: str) -> str:
    lines = [_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def scrub_pii(text: str) -> str:
    """Replace e-mail addresses and phone numbers with placeholders."""
    text = _EMAIL.sub("[EMAIL]", text)

    def phone(match: re.Match[str]) -> str:
        digits = sum(ch.isdigit() for ch in match.group(0))
        return "[PHONE]" if 9 <= digits <= 15 else match.group(0)

    return _PHONE.sub(phone, text)


def clean_prose(text: str) -> str:
    text = normalise_prose_unicode(text)
    text = strip_markup(text)
    text = unicodedata.normalize("NFKC", text)  # entities decoded by the markup step, e.g. &nbsp;
    text = remove_urls(text)
    text = remove_emoji(text)
    text = drop_boilerplate_lines(collapse_whitespace(text))
    return collapse_whitespace(text)


def clean_code(text: str) -> str:
    text = ftfy.fix_text(text, _CODE_FIXER)
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return "\n".join(lines).strip("\n")


CLEANERS: dict[DocumentKind, Callable[[str], str]] = {
    DocumentKind.ARTICLE: clean_prose,
    DocumentKind.POST: clean_prose,
    DocumentKind.CODE: clean_code,
}


def clean_text(text: str, kind: DocumentKind, *, scrub: bool = False) -> str:
    cleaned = CLEANERS[kind](text)
    return scrub_pii(cleaned) if scrub else cleaned


def clean_document(raw: RawDocument, etl_run_id: str, *, scrub: bool = False) -> CleanedDocument:
    """The cleaned version of one raw document; same id, with both hashes for traceability."""
    text = clean_text(raw.content, raw.kind, scrub=scrub)
    title = clean_prose(raw.title) if raw.title else raw.title
    return CleanedDocument(
        id=raw.id, raw_id=raw.id, kind=raw.kind, url=raw.url, path=raw.path, author_id=raw.author_id,
        author_name=raw.author_name, title=title or None, content=text, metadata=raw.metadata,
        published_at=raw.published_at, content_hash=content_hash(text), raw_content_hash=raw.content_hash,
        etl_run_id=etl_run_id,
    )
