"""Cleaning recipes per kind, PII scrubbing and duplicate detection (no servers needed)."""

from __future__ import annotations

from tests.etl.conftest import ESSAY, NEAR_ESSAY, essay, raw_doc
from twin.etl.cleaning import clean_code, clean_document, clean_prose, clean_text, scrub_pii, strip_markup
from twin.etl.dedup import DuplicateIndex, DuplicateKind, minhash, signature_bytes, signature_from_bytes
from twin.models import DocumentKind, content_hash


def test_article_loses_markup_boilerplate_urls_emoji_and_extra_whitespace() -> None:
    html = (
        "<html><body><nav>Home | Blog</nav><h1>On   testing</h1>"
        "<p>Tests catch bugs 🐛 early, see https://example.test/a?b=1 and www.example.test.</p>"
        "<script>track()</script><p>Second&nbsp;paragraph &amp; more.</p>"
        "Share this article\n<footer>© 2026 Ada</footer></body></html>"
    )
    assert clean_prose(html) == "On testing\n\nTests catch bugs early, see and .\n\nSecond paragraph & more."


def test_mojibake_and_compatibility_characters_are_normalised() -> None:
    assert clean_prose("donâ€™t use the ﬁle  twice") == "don't use the file twice"


def test_escaped_markup_is_decoded_once_and_stays_visible() -> None:
    # Double-escaped HTML in the source is a crawler leftover the cleaned-documents suite must see.
    assert strip_markup("a &lt;div&gt;b&lt;/div&gt;") == "a <div>b</div>"
    assert strip_markup("plain text, 3 < 4") == "plain text, 3 < 4"


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
    raw = raw_doc("https://blog.test/a", "<p>Hello   world</p>", published="2026-01-02")
    cleaned = clean_document(raw, "run-1")
    assert (cleaned.id, cleaned.raw_id, cleaned.raw_content_hash) == (raw.id, raw.id, raw.content_hash)
    assert cleaned.content == "Hello world" and cleaned.content_hash == content_hash("Hello world")
    assert cleaned.etl_run_id == "run-1" and cleaned.published_at == raw.published_at


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
