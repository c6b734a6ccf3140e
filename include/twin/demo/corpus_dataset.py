"""Dataset versions straight from the sample corpus, with no generator: each paragraph of an author's
articles is a passage, its instruction is built from the article's title, and every fourth document is held
out (whole, as the dataset builder splits). The training tests and `training/author_check.py` use it."""

from __future__ import annotations

import hashlib

from lxml import html

from twin.datasets.filters import title_instruction
from twin.datasets.versions import DatasetVersions, file_name, to_jsonl
from twin.demo.corpus_files import SITE_DIR, article_paths
from twin.storage.artifacts import ArtifactStore


def author_rows(author: str) -> list[dict]:
    rows = []
    for path in article_paths(author):
        page = html.fromstring((SITE_DIR / path.lstrip("/")).read_text())
        title = page.findtext(".//h1").strip()
        document_id = hashlib.sha1(path.encode()).hexdigest()[:12]
        paragraphs = [" ".join(p.text_content().split()) for p in page.iterfind(".//div[@class='post-body']/p")]
        for n, text in enumerate(p for p in paragraphs if len(p) >= 80):
            instruction = title_instruction(title, n)
            passage_id = f"{document_id}-{n}"
            base = {"author_id": author, "passage_id": passage_id, "document_id": document_id, "kind": "article",
                    "instruction": instruction, "id": f"{passage_id}-i"}
            rows.append({**base, "output": text, "messages": [{"role": "user", "content": instruction},
                                                            {"role": "assistant", "content": text}],
                         "prompt": [{"role": "user", "content": instruction}],
                         "chosen": [{"role": "assistant", "content": text}],
                         "rejected": [{"role": "assistant", "content": f"I am not sure about {title.lower()}."}]})
    return rows


def write_version(store: ArtifactStore, author: str, rows: list[dict], test_every: int = 4) -> str:
    """One version: every `test_every`-th document held out (split by document, as the builder does)."""
    documents = sorted({r["document_id"] for r in rows})
    test_docs = set(documents[::test_every])
    files = {}
    for split in ("train", "test"):
        part = [{**r, "split": split} for r in rows if (r["document_id"] in test_docs) == (split == "test")]
        instr = [{k: r[k] for k in r if k not in ("prompt", "chosen", "rejected")} for r in part]
        pref = [{**{k: r[k] for k in r if k not in ("messages", "output")}, "id": r["id"] + "p"} for r in part]
        files[file_name("instruction", split)] = to_jsonl(instr)
        files[file_name("preference", split)] = to_jsonl(pref)
    version = hashlib.sha256(b"".join(files[k] for k in sorted(files))).hexdigest()[:16]
    DatasetVersions(store).write(author, version, files, {"version": version, "author_id": author,
                                                          "created_at": "2026-12-01T00:00:00+00:00",
                                                          "source": "sample corpus (paragraphs, title questions)"})
    return version
