"""A labelled corpus on disk, indexed on its own for evaluation: `twin eval retrieval --corpus DIR`.

Layout: `DIR/<author-id>/<slug>.md`, each a post with a front matter block (`title`, `published`,
optional `author`: the display name). The text is turned into what cleaning makes of an HTML
article (headings as lines of their own, code fences dropped, code and tables kept), so the
chunker sees what the platform's pipeline would give it. Documents get the URL path
`/<author-id>/<slug>`, which is what the query file's `relevant` lists name.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from twin.features.chunking import Chunker, ChunkSizes, ModelTokenizer
from twin.features.embedding import Embedder
from twin.models import Author, Chunk, CleanedDocument, DocumentKind, EmbeddedChunk, content_hash, stable_id
from twin.retrieval.evaluation import EvalConfig, EvalQuery, EvalReport
from twin.retrieval.llm import QueryLLM
from twin.retrieval.relevance import RelevanceModel
from twin.search.base import HybridWeights
from twin.search.lancedb_index import LanceDBSearchIndex

CORPUS_HOST = "https://corpus.invalid"  # never fetched: the documents are read from disk
_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)
_FENCE = re.compile(r"^```[^\n]*\n", re.MULTILINE)
_MD_HEADING = re.compile(r"^#{1,6}[ \t]+", re.MULTILINE)


class CorpusError(ValueError):
    """The corpus folder cannot be read."""


@dataclass
class LabelledCorpus:
    authors: list[Author]
    documents: list[CleanedDocument]


def load_corpus(folder: Path) -> LabelledCorpus:
    if not folder.is_dir():
        raise CorpusError(f"corpus folder {folder} does not exist")
    authors, documents = [], []
    for author_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        posts = sorted(author_dir.glob("*.md"))
        if not posts:
            continue
        name = None
        for post in posts:
            doc = _document(author_dir.name, post)
            name = name or doc.author_name
            documents.append(doc)
        authors.append(Author(id=author_dir.name, name=name or author_dir.name))
    if not documents:
        raise CorpusError(f"no posts (<author>/<slug>.md) under {folder}")
    return LabelledCorpus(authors, documents)


def _document(author_id: str, path: Path) -> CleanedDocument:
    raw = path.read_text(encoding="utf-8")
    match = _FRONT_MATTER.match(raw)
    if not match:
        raise CorpusError(f"{path}: no front matter (--- title: ... ---)")
    meta = dict(line.split(":", 1) for line in match.group(1).splitlines() if ":" in line)
    meta = {k.strip(): v.strip() for k, v in meta.items()}
    body = _MD_HEADING.sub("", _FENCE.sub("", raw[match.end():])).strip()
    name = meta.get("author") or " ".join(part.capitalize() for part in author_id.split("-"))
    published = datetime.fromisoformat(meta["published"]).replace(tzinfo=UTC) if "published" in meta else None
    doc_id = stable_id(author_id, path.stem)
    return CleanedDocument(
        id=doc_id, raw_id=doc_id, kind=DocumentKind.ARTICLE, url=f"{CORPUS_HOST}/{author_id}/{path.stem}",
        author_id=author_id, author_name=name, title=meta.get("title") or path.stem, content=body,
        published_at=published, content_hash=content_hash(body), raw_content_hash=content_hash(raw),
        cleaned_at=datetime.now(UTC), etl_run_id="labelled-corpus")


def word_windows(doc: CleanedDocument, words: int) -> list[Chunk]:
    """The plain baseline's chunks: consecutive windows of `words` whitespace-separated words."""
    tokens = doc.content.split()
    chunks = []
    for index, start in enumerate(range(0, len(tokens), words)):
        text = " ".join(tokens[start:start + words])
        chunks.append(Chunk(id=stable_id(doc.id, "w", str(index)), document_id=doc.id, chunk_index=index,
                            kind=doc.kind, author_id=doc.author_id, author_name=doc.author_name, url=doc.url,
                            title=doc.title, text=text, token_count=len(text.split()),
                            published_at=doc.published_at, document_hash=doc.content_hash))
    return chunks


def index_chunks(chunks: Sequence[Chunk], embedder: Embedder, root: Path | None = None,
                 name: str = "labelled", title_boost: float = 0.0) -> LanceDBSearchIndex:
    """Embed and write chunks into a fresh embedded index (in a temporary folder unless `root`)."""
    folder = root or Path(tempfile.mkdtemp(prefix="twin-labelled-"))
    index = LanceDBSearchIndex(folder, name, title_boost=title_boost)
    index.ensure(embedder.dimension)
    vectors = embedder.encode([c.text for c in chunks])
    result = index.upsert([EmbeddedChunk(**c.model_dump(), embedding=v) for c, v in zip(chunks, vectors, strict=True)])
    if not result.ok:
        raise CorpusError(f"{len(result.failures)} chunks could not be indexed: {result.failures[:3]}")
    return index


def chunk_corpus(corpus: LabelledCorpus, embedder: Embedder, sizes: ChunkSizes) -> list[Chunk]:
    chunker = Chunker(ModelTokenizer(embedder.tokenizer), sizes)
    return [c for doc in corpus.documents for c in chunker.chunk(doc)]


def platform_sizes(embedder: Embedder, **overrides: object) -> ChunkSizes:
    """The chunk sizes the features pipeline uses (TWIN_CHUNK_*, or `overrides` of those settings), capped at
    what the embedder takes (254 of MiniLM's 256 positions), so measured figures are the platform's."""
    from twin.features.pipeline import chunk_sizes
    from twin.settings import load_settings

    return chunk_sizes(load_settings(**overrides), embedder)


BASELINE_WORDS = 120  # the plain baseline: RRF over BM25 and vectors on 120-word windows


def evaluate_corpus(corpus: LabelledCorpus, queries: Sequence[EvalQuery], embedder: Embedder, *,
                    sizes: ChunkSizes | None = None, weights: HybridWeights | None = None,
                    min_relevance: float | None = None, configs: Sequence[EvalConfig] | None = None,
                    relevance_model: RelevanceModel | None = None,
                    baseline_min_relevance: float = 0.0, title_boost: float = 0.0,
                    llm: QueryLLM | None = None, baseline_tuning: Sequence[EvalQuery] = ()) -> EvalReport:
    """Index the corpus with the platform's chunker (`sizes`, default the pipeline's) in a temporary embedded
    index, search it with the platform's fusion (`weights`, default the settings') and evaluate `configs`
    (default: every configuration) on `queries`; plus the plain baseline, in the same run, as the
    configuration "baseline" (its relevance signal is the plain cosine, judged at
    `baseline_min_relevance`). `relevance_model` gives the platform's retriever its relevance
    probability, judged at `min_relevance` (default: the model's threshold). With an `llm` the
    default configurations add hybrid with query expansion by it, and "hybrid_selfquery_llm":
    self-query through it (rules as fallback). With `baseline_tuning` questions, the baseline's cosine
    threshold is chosen on them instead."""
    from twin.retrieval.evaluation import choose_threshold, evaluate
    from twin.retrieval.retriever import Retriever, weights_from_settings
    from twin.settings import load_settings

    weights = weights or weights_from_settings(load_settings())
    with tempfile.TemporaryDirectory(prefix="twin-labelled-") as folder:
        base_index = index_chunks([c for d in corpus.documents for c in word_windows(d, BASELINE_WORDS)],
                                  embedder, Path(folder), "baseline")
        plain = [EvalConfig("baseline", "hybrid")]
        if baseline_tuning:
            tuned = evaluate(Retriever(base_index, embedder), baseline_tuning, plain)
            baseline_min_relevance = choose_threshold(tuned.per_query["baseline"], baseline_tuning)
        baseline = evaluate(Retriever(base_index, embedder, min_relevance=baseline_min_relevance), queries, plain)
        index = index_chunks(chunk_corpus(corpus, embedder, sizes or platform_sizes(embedder)), embedder,
                             Path(folder), "platform", title_boost)
        vectors: dict[str, list[float]] = {}  # each question is embedded once for both retrievers
        retriever = Retriever(index, embedder, authors=corpus.authors, weights=weights, min_relevance=min_relevance,
                              relevance_model=relevance_model, llm=llm, self_query_llm=False, query_vectors=vectors)
        report = evaluate(retriever, queries, configs)
        extra = [baseline]
        if llm is not None and configs is None:
            by_llm = Retriever(index, embedder, authors=corpus.authors, weights=weights, min_relevance=min_relevance,
                               relevance_model=relevance_model, llm=llm, self_query_llm=True, query_vectors=vectors)
            extra.append(evaluate(by_llm, queries, [EvalConfig("hybrid_selfquery_llm", "hybrid", self_query=True)]))
    for other in extra:
        for part in ("results", "per_query", "per_kind"):
            getattr(report, part).update(getattr(other, part))
    return report


def load_site(site_dir: Path | None = None) -> LabelledCorpus:
    """The bundled sample site's articles as the ETL would clean them (the crawler's extraction, then
    cleaning), for `tests/data/retrieval_eval.jsonl`, whose labels name their URL paths. Its repository
    and export are left out: no question is labelled with them."""
    from twin.crawl.article import extract
    from twin.demo import AUTHORS, SITE_DIR, article_paths
    from twin.etl.cleaning import clean_text_counted

    folder = site_dir or SITE_DIR
    authors, documents = [], []
    for author in AUTHORS:
        authors.append(Author(id=author.id, name=author.name))
        for url_path in article_paths(author.id):
            html = (folder / url_path.lstrip("/")).read_text(encoding="utf-8")
            text, _ = clean_text_counted(html, DocumentKind.ARTICLE, content_format="html")
            title = getattr(extract(html), "title", None) or url_path
            doc_id = stable_id(author.id, url_path)
            documents.append(CleanedDocument(
                id=doc_id, raw_id=doc_id, kind=DocumentKind.ARTICLE, url=f"{CORPUS_HOST}{url_path}",
                author_id=author.id, author_name=author.name, title=title, content=text,
                content_hash=content_hash(text), raw_content_hash=content_hash(html),
                cleaned_at=datetime.now(UTC), etl_run_id="sample-site"))
    return LabelledCorpus(authors, documents)
