"""Fixtures for the ETL: a set of good and bad raw documents with known outcomes, and a store on the
test's own database (the real MongoDB-protocol server of the run)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from twin.models import DocumentKind, RawDocument, SourceKind, content_hash, stable_id
from twin.settings import get_settings
from twin.storage.documents import Collections, DocumentStore


def raw_doc(url: str, content: str, *, kind: DocumentKind = DocumentKind.ARTICLE, path: str | None = None,
            author_id: str = "ada", author_name: str = "Ada Lovelace", published: str | None = None,
            title: str | None = "A title", **metadata: object) -> RawDocument:
    source = {DocumentKind.ARTICLE: SourceKind.ARTICLE, DocumentKind.CODE: SourceKind.REPOSITORY,
              DocumentKind.POST: SourceKind.EXPORT}[kind]
    return RawDocument(
        id=stable_id(url, path or ""), kind=kind, source_kind=source, url=url, path=path, author_id=author_id,
        author_name=author_name, title=title, content=content, content_hash=content_hash(content),
        metadata=dict(metadata), crawl_run_id="crawl-1",
        published_at=datetime.fromisoformat(published).replace(tzinfo=UTC) if published else None,
    )


def essay(topic: str, sentences: int = 80) -> str:
    """Long prose whose word 5-grams are all distinct, so near-duplicate similarity is predictable."""
    return " ".join(f"Sentence {i} about {topic} explains step {i * 7} of the method clearly."
                    for i in range(sentences))


ESSAY = essay("data pipelines")
NEAR_ESSAY = ESSAY.replace("Sentence 40 about data pipelines", "Sentence 40 about data workflows")


@dataclass
class Seeded:
    good: dict[str, str]  # name -> id of documents that must end up in cleaned_documents
    bad: dict[str, str]  # name -> id of documents that must end up in quarantine
    duplicates: dict[str, str]  # id of a duplicate -> id of its canonical document


def seed_fixture_documents(store: DocumentStore) -> Seeded:
    """Six good documents (two of them duplicates of the first) and seven bad ones."""
    docs = {
        # good
        "article": raw_doc("https://blog.test/pipelines", f"<article><p>{ESSAY}</p>"
                           "<footer>© 2026 Ada</footer></article>", published="2026-01-01", content_format="html"),
        "exact_duplicate": raw_doc("https://medium.test/@ada/pipelines", ESSAY, published="2026-02-01"),
        "near_duplicate": raw_doc("https://substack.test/p/pipelines", NEAR_ESSAY, published="2026-03-01"),
        "code": raw_doc("https://github.test/ada/site", 'TEMPLATE = "<div class=\\"card\\">{}</div>"\n\n'
                        "def render(x):\r\n    return TEMPLATE.format(x)   \r\n", kind=DocumentKind.CODE,
                        path="site/render.py", language="python"),
        "post": raw_doc("https://linkedin.test/in/ada", "Shipped the new crawler today 🚀 https://lnkd.test/x",
                        kind=DocumentKind.POST, path="post-1", title=None),
        "other_article": raw_doc("https://blog.test/gardens", essay("growing tomatoes", 20)),
        # bad
        "empty": raw_doc("https://blog.test/empty", "   \n  "),
        "markup_left": raw_doc("https://blog.test/escaped",
                               "Some intro text. &lt;script&gt;track()&lt;/script&gt; end"),
        "markup_only": raw_doc("https://blog.test/chrome", "<nav>Home | About</nav><script>var a = 1;</script>",
                               content_format="html"),
        # text that holds unparsed HTML (an extractor leftover): prose must not carry markup
        "unparsed_html": raw_doc("https://blog.test/unparsed", "Intro. <p class='x'>A paragraph</p> end."),
        "absurd_size": raw_doc("https://blog.test/huge", "lorem ipsum " * 100_000),
        "no_author": raw_doc("https://blog.test/anonymous", essay("anonymous things", 5), author_id="",
                             author_name=""),
    }
    store.upsert_raw_documents(docs.values())
    # A record written by something else, without author fields: must reach the gate, not crash the run.
    malformed = docs["other_article"].model_dump(mode="python")
    malformed.update(_id=stable_id("https://blog.test/malformed", ""), url="https://blog.test/malformed",
                     content="A paragraph with no author.", content_hash=content_hash("A paragraph with no author."))
    for key in ("id", "author_id", "author_name"):
        malformed.pop(key)
    store.collection(Collections.RAW_DOCUMENTS).insert_one(malformed)
    ids = {name: doc.id for name, doc in docs.items()}
    bad_names = ("empty", "markup_left", "markup_only", "unparsed_html", "absurd_size", "no_author")
    return Seeded(
        good={n: i for n, i in ids.items() if n not in bad_names},
        bad={**{n: ids[n] for n in bad_names}, "malformed": malformed["_id"]},
        duplicates={ids["exact_duplicate"]: ids["article"], ids["near_duplicate"]: ids["article"]},
    )


@pytest.fixture
def etl_settings(twin_env, monkeypatch: pytest.MonkeyPatch):
    """Settings on a fresh database; the fixture set quarantines half its documents by design."""
    monkeypatch.setenv("TWIN_QUARANTINE_MAX_SHARE", "0.6")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def etl_store(etl_settings):
    store = DocumentStore.from_settings(etl_settings)
    store.ensure_indexes()
    yield store
    store.client.drop_database(etl_settings.mongodb_database)
    store.close()
