"""Retrieval metrics, the query-file format, and evaluation over the small corpus on each adapter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.fixtures.features import AUTHORS
from twin.retrieval.evaluation import (
    EvalFileError,
    EvalQuery,
    evaluate,
    format_table,
    load_queries,
    score_ranking,
    url_path,
)
from twin.retrieval.retriever import Retriever


def test_metrics_on_a_ranking_worked_out_by_hand() -> None:
    docs = [("/x",), ("/a",), ("/y",), ("/a-again",), ("/z",), ("/b",)]
    scores = score_ranking(docs, ["https://site.org/a/", "/b", "/never"])
    assert scores["recall@5"] == pytest.approx(1 / 3)
    assert scores["recall@10"] == pytest.approx(2 / 3)
    assert scores["mrr"] == pytest.approx(1 / 2)
    dcg = 1 / math.log2(3) + 1 / math.log2(7)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert scores["ndcg@10"] == pytest.approx(dcg / ideal)
    assert score_ranking([], ["/a"]) == {"hit@1": 0.0, "recall@5": 0.0, "recall@10": 0.0, "mrr": 0.0, "ndcg@10": 0.0}
    assert score_ranking([("/b",), ("/a",)], ["/b"])["hit@1"] == 1.0


def test_a_second_document_of_an_already_found_item_gains_nothing() -> None:
    # Two files of one repository, the repository named as relevant: found once.
    docs = [("/me/repo/a.py", "/me/repo"), ("/me/repo/b.py", "/me/repo")]
    scores = score_ranking(docs, ["/me/repo"])
    assert scores["recall@5"] == 1.0 and scores["ndcg@10"] == pytest.approx(1.0)
    assert score_ranking(docs, ["/me/repo/b.py"])["mrr"] == pytest.approx(1 / 2)


def test_url_paths_compare_whatever_form_they_are_given_in() -> None:
    assert url_path("https://blog.example.org/posts/chunking/?utm=x#top") == "/posts/chunking"
    assert url_path("/posts/chunking/") == url_path("posts/chunking") == "/posts/chunking"
    assert url_path("https://example.org") == "/"


def test_query_file_lines_that_cannot_be_used_are_reported_and_the_rest_loaded(tmp_path: Path) -> None:
    path = tmp_path / "queries.jsonl"
    path.write_text("\n".join([
        json.dumps({"id": "ok", "query": "compilers", "relevant": ["/grace/grace-compilers"], "author": "grace"}),
        "{not json",
        json.dumps({"query": "", "relevant": ["/a"]}),
        json.dumps({"query": "no labels", "relevant": []}),
        "",
        json.dumps({"query": "default id", "relevant": ["https://example.org/ada/ada-engine"]}),
    ]))
    queries, problems = load_queries(path)
    assert [q.id for q in queries] == ["ok", "line6"]
    assert queries[0].author == "grace"
    assert [p.split(":")[1] for p in problems] == ["2", "3", "4"]
    assert "not JSON" in problems[0] and '"query"' in problems[1] and '"relevant"' in problems[2]
    (tmp_path / "bad.jsonl").write_text("[]\n")
    with pytest.raises(EvalFileError, match="no usable query"):
        load_queries(tmp_path / "bad.jsonl")
    with pytest.raises(EvalFileError, match="does not exist"):
        load_queries(tmp_path / "missing.jsonl")


def test_evaluation_reports_each_retriever_and_says_what_it_skipped(indexed_corpus, embedder) -> None:
    retriever = Retriever(indexed_corpus[0], embedder, authors=AUTHORS)
    queries = [
        EvalQuery("kw", "FLOW-MATIC business language", ["/grace/grace-compilers"]),
        EvalQuery("para", "an insect stuck in the computer", ["https://example.org/grace/grace-bug"]),
        EvalQuery("code", "function returning the smallest virtual runtime", ["/linus/repo/sched.py"]),
    ]
    report = evaluate(retriever, queries)
    assert list(report.results) == ["bm25", "vector", "hybrid", "hybrid_selfquery", "hybrid_docagg",
                                    "hybrid_selfquery_docagg"]
    assert any("no LLM" in n for n in report.notes) and any("no reranker" in n for n in report.notes)
    for name, values in report.results.items():
        assert {"hit@1", "recall@5", "recall@10", "mrr", "ndcg@10"} <= set(values)
        assert all(0.0 <= v <= 1.0 for v in values.values()), name
        assert "fp_rate" not in values, "no unanswerable question, no false-positive rate"
        assert set(report.per_query[name]) == {"kw", "para", "code"}
    assert report.per_query["bm25"]["kw"]["mrr"] == 1.0
    assert report.per_query["vector"]["para"]["mrr"] == 1.0
    assert report.results["hybrid"]["recall@10"] == 1.0
    table = format_table(report)
    assert "hit@1" in table and "recall@5" in table and "hybrid" in table.splitlines()[-1]
