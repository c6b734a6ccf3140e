"""Cleaning recipes per kind, PII scrubbing and duplicate detection (no servers needed)."""

from __future__ import annotations

from tests.etl.conftest import ESSAY, NEAR_ESSAY, essay, raw_doc
from twin.etl.cleaning import clean_code, clean_document, clean_prose, clean_text, clean_text_counted, scrub_pii
from twin.etl.dedup import DuplicateIndex, DuplicateKind, minhash, signature_bytes, signature_from_bytes
from twin.models import DocumentKind, content_hash


def test_article_loses_boilerplate_lines_urls_emoji_and_extra_whitespace_and_counts_them() -> None:
    text = ("# On   testing\n\nTests catch bugs 🐛 early, see https://example.test/a?b=1 and www.example.test.\n\n\n"
            "Second\u00a0paragraph & more.\nShare this article\n© 2026 Ada")
    cleaned, stats = clean_text_counted(text, DocumentKind.ARTICLE)
    assert cleaned == "# On testing\n\nTests catch bugs early, see and .\n\nSecond paragraph & more."
    assert stats.removed_chars == {"boilerplate_lines": len("Share this article") + len("© 2026 Ada"),
                                   "emoji": len("🐛"), "urls": len("https://example.test/a?b=1www.example.test"),
                                   "whitespace": 4 + 1}  # 2 runs of spaces, one blank line too many
    assert stats.source_chars == len(text) and stats.cleaned_chars == len(cleaned)


def test_html_input_is_extracted_by_the_crawler_extraction_not_reparsed_text() -> None:
    lead = "Tests catch bugs early, long before a user does, and they say what the code is meant to do. "
    html = ("<html><body><nav>Home | Blog</nav><article><h1>On testing</h1>"
            f"<p>{lead}Use a <code>&lt;nav&gt;</code> and 3 &lt; 4.</p><script>track()</script>"
            f"<p>{lead}Second&nbsp;paragraph &amp; more.</p></article><footer>© 2026 Ada</footer></body></html>")
    cleaned, stats = clean_text_counted(html, DocumentKind.ARTICLE, content_format="html")
    assert cleaned == f"# On testing\n\n{lead}Use a `<nav>` and 3 < 4.\n\n{lead}Second paragraph & more."
    assert stats.removed_chars["markup"] > 0 and stats.loss_share == 0.0


def test_mojibake_and_compatibility_characters_are_normalised() -> None:
    assert clean_prose("donâ€™t use the ﬁle  twice") == "don't use the file twice"


def test_literal_text_is_never_parsed_as_markup() -> None:
    # Entities stay as written: escaped HTML in text is a leftover the cleaned-documents suite must see.
    for text in ("a &lt;div&gt;b&lt;/div&gt;", "plain text, 3 < 4", "Wrap your links in a <nav> element. Then more.",
                 "A Map<String, Integer> counts; a < b && c > d."):
        assert clean_prose(text) == text


def test_code_keeps_indentation_quotes_and_markup() -> None:
    source = 'def f():\r\n\treturn "“x”" + "<b>"   \r\n\r\n'
    assert clean_code(source) == 'def f():\n\treturn "“x”" + "<b>"'


def test_posts_keep_hashtags_but_lose_links_and_emoji() -> None:
    assert clean_text("Big day 🎉 #launch https://lnkd.test/x", DocumentKind.POST) == "Big day #launch"


def test_pii_scrubbing_replaces_emails_and_phone_numbers_only() -> None:
    text = "Mail ada@example.org or call +44 20 7946 0958 / (555) 123-4567. Released 2024-01-15, v1.2.3, 42 ms."
    assert scrub_pii(text) == "Mail [EMAIL] or call [PHONE] / [PHONE]. Released 2024-01-15, v1.2.3, 42 ms."
    assert "[EMAIL]" not in clean_text("ada@example.org", DocumentKind.POST, scrub=False)


def test_cleaned_document_keeps_traceability_to_its_raw_document() -> None:
    raw = raw_doc("https://blog.test/a", "Hello   world", published="2026-01-02")
    cleaned = clean_document(raw, "run-1")
    assert (cleaned.id, cleaned.raw_id, cleaned.raw_content_hash) == (raw.id, raw.id, raw.content_hash)
    assert cleaned.content == "Hello world" and cleaned.content_hash == content_hash("Hello world")
    assert cleaned.etl_run_id == "run-1" and cleaned.published_at == raw.published_at
    assert cleaned.cleaning.removed_chars == {"whitespace": 2} and cleaned.cleaning.loss_share == 0.0


def test_duplicate_index_finds_exact_and_near_duplicates_within_a_kind() -> None:
    index = DuplicateIndex(threshold=0.9)
    index.add("a", "article", content_hash(ESSAY), minhash(ESSAY))
    exact = index.find("article", content_hash(ESSAY), minhash(ESSAY))
    near = index.find("article", content_hash(NEAR_ESSAY), minhash(NEAR_ESSAY))
    assert (exact.of, exact.kind) == ("a", DuplicateKind.EXACT)
    assert (near.of, near.kind) == ("a", DuplicateKind.NEAR) and near.similarity >= 0.9
    assert index.find("article", "x", minhash(essay("something else"))) is None
    assert index.find("post", content_hash(NEAR_ESSAY), minhash(NEAR_ESSAY)) is None  # other kind


def test_stored_signatures_compare_like_fresh_ones() -> None:
    fresh = minhash(ESSAY)
    restored = signature_from_bytes(signature_bytes(fresh))
    assert restored.jaccard(minhash(NEAR_ESSAY)) == fresh.jaccard(minhash(NEAR_ESSAY))
