"""ETL throughput: documents per second through cleaning alone (the baseline) and through cleaning
plus both Great Expectations checkpoints (raw and cleaned suites, Data Docs update included), and
through cleaning plus near-duplicate signatures, all in the same run.

    .venv/bin/python -m benchmarks.bench_etl [--docs 1000] [--repeat 3]

No servers: the database round trips are left out so that the ratio shows what validation costs.
Each measurement is the best of `--repeat` runs after one warm-up (GX builds its context once).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.report import record
from twin.etl.cleaning import clean_document
from twin.etl.dedup import minhash
from twin.etl.pipeline import CLEANED_CHECKPOINT, RAW_CHECKPOINT, cleaned_frame, cleaned_suite_parameters, raw_frame
from twin.etl.validation import validate_records
from twin.models import DocumentKind, RawDocument, SourceKind, content_hash, stable_id
from twin.settings import Settings, load_settings
from twin.storage.documents import to_mongo


def synthetic_documents(count: int) -> list[RawDocument]:
    """Articles with markup leftovers, code files and short posts, in a fixed 3:1:1 mix."""
    docs = []
    for i in range(count):
        kind = (DocumentKind.ARTICLE, DocumentKind.ARTICLE, DocumentKind.ARTICLE, DocumentKind.CODE,
                DocumentKind.POST)[i % 5]
        if kind is DocumentKind.ARTICLE:
            body = "".join(f"<p>Paragraph {j} of article {i}: pipelines   should be idempotent 🚀, see "
                           f"https://blog.test/{i}/{j} &amp; more.</p>" for j in range(20))
            text = f"<nav>Home</nav><article><h1>Article {i}</h1>{body}</article><footer>© 2026</footer>"
        elif kind is DocumentKind.CODE:
            text = "".join(f"def f{j}(x):\r\n    return x * {j}   \r\n\r\n" for j in range(30))
        else:
            text = f"Post {i}: shipped the crawler today 🎉 #launch https://lnkd.test/{i}"
        url = f"https://source.test/{kind}/{i}"
        docs.append(RawDocument(id=stable_id(url, ""), kind=kind, source_kind=SourceKind.ARTICLE, url=url,
                                author_id="ada", author_name="Ada", content=text, content_hash=content_hash(text),
                                crawl_run_id="bench"))
    return docs


def clean_only(docs: list[RawDocument], _: Settings) -> None:
    for doc in docs:
        clean_document(doc, "bench")


def clean_and_validate(docs: list[RawDocument], settings: Settings) -> None:
    records = [to_mongo(d) for d in docs]
    validate_records(RAW_CHECKPOINT, raw_frame(records), settings=settings)
    cleaned = [clean_document(d, "bench") for d in docs]
    validate_records(CLEANED_CHECKPOINT, cleaned_frame(cleaned), settings=settings,
                     parameters=cleaned_suite_parameters(settings))


def clean_and_sign(docs: list[RawDocument], _: Settings) -> None:
    for doc in docs:
        minhash(clean_document(doc, "bench").content)


def best_rates(steps: dict[str, Callable[[list[RawDocument], Settings], None]], docs: list[RawDocument],
               settings: Settings, repeat: int) -> dict[str, float]:
    """Best docs/s of each step; the steps take turns so that load on a shared machine hits all alike."""
    best = dict.fromkeys(steps, float("inf"))
    for step in steps.values():
        step(docs[:50], settings)  # warm-up: imports, GX context, regex caches
    for _ in range(repeat):
        for name, step in steps.items():
            started = time.perf_counter()
            step(docs, settings)
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: len(docs) / seconds for name, seconds in best.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    docs = synthetic_documents(args.docs)
    with tempfile.TemporaryDirectory(prefix="bench-etl-") as tmp:
        settings = load_settings(data_dir=Path(tmp))
        rates = best_rates({"cleaning alone (baseline)": clean_only,
                            "cleaning + GX validation (2 checkpoints)": clean_and_validate,
                            "cleaning + MinHash signatures": clean_and_sign}, docs, settings, args.repeat)
    baseline = rates["cleaning alone (baseline)"]
    validated = rates["cleaning + GX validation (2 checkpoints)"]
    print(f"{args.docs} documents (3 articles : 1 code file : 1 post), best of {args.repeat}")
    print(f"{'path':<44}{'docs/s':>10}{'vs baseline':>13}")
    for name, rate in rates.items():
        print(f"{name:<44}{rate:>10.0f}{rate / baseline:>12.2f}x")
    for name, rate in list(rates.items())[1:]:
        record("etl", name, rate, "cleaning alone", baseline, "docs/s")
    print(f"validation overhead: cleaning + validation takes {baseline / validated:.2f}x the time of cleaning alone")


if __name__ == "__main__":
    main()
