"""Grounding heuristics and the LLM judge of the evaluation (the judge through the one LLMClient, against
the OpenAI-compatible test server)."""

from __future__ import annotations

import pytest

from twin.evaluation.grounding import (
    Verdict,
    grounded_prompts,
    judge_from_settings,
    lexical_support,
    parse_verdict,
    top_k,
)


def test_lexical_support_counts_content_words_found_in_the_passages() -> None:
    passages = ["Sourdough starters need flour, water and patience.", "Bake the loaf at high heat."]
    assert lexical_support("Patience with the sourdough starter, flour and water.", passages) == pytest.approx(4 / 5)
    assert lexical_support("Quantum chromodynamics explains gluons.", passages) == 0.0
    assert lexical_support("it is the", passages) == 0.0  # nothing but stop words: no support claimed


def test_top_k_orders_passages_by_cosine() -> None:
    assert top_k([[1.0, 0.0], [0.0, 1.0]], [[0.0, 2.0], [3.0, 0.1], [1.0, 1.0]], 2) == [[1, 2], [0, 2]]


def test_grounded_prompt_carries_the_passages_and_the_question() -> None:
    [messages] = grounded_prompts(["Why bake hot?"], [["Bake the loaf at high heat.", "Use steam."]])
    text = messages[-1]["content"]
    assert "[1] Bake the loaf at high heat." in text and "[2] Use steam." in text and "Why bake hot?" in text


@pytest.mark.parametrize(("reply", "verdict"), [
    ('{"style": 4, "grounded": 2}', Verdict(4, 2)),
    ('Sure! Here it is: {"style": 5, "grounded": 5} Hope this helps.', Verdict(5, 5)),
    ("style: 3\ngrounded: 1", Verdict(3, 1)),
    ('{"style": 9, "grounded": 2}', None),
    ("Yes.", None),
    ('{"style": 4}', None),
])
def test_verdicts_parse_or_are_counted_as_unparsed(reply: str, verdict: Verdict | None) -> None:
    assert parse_verdict(reply) == verdict


def test_no_judge_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    from twin.settings import get_settings

    monkeypatch.delenv("TWIN_JUDGE_BASE_URL", raising=False)
    get_settings.cache_clear()
    assert judge_from_settings(get_settings()) is None
    get_settings.cache_clear()


def test_judge_sends_its_prompt_file_through_the_llm_client(openai_server, monkeypatch: pytest.MonkeyPatch) -> None:
    from twin.settings import get_settings

    monkeypatch.setenv("TWIN_JUDGE_BASE_URL", openai_server.url)
    monkeypatch.setenv("TWIN_JUDGE_MODEL", "judge-under-test")
    get_settings.cache_clear()
    judge = judge_from_settings(get_settings())
    get_settings.cache_clear()
    assert judge is not None and "judge-under-test" in judge.name
    openai_server.faults.extend(["canned", "canned"])  # "Yes.": a reply with no verdict in it
    verdicts = judge.grade(["Why bake hot?", "What is a starter?"], ["Heat sets the crust.", "Flour and water."],
                           [["Bake the loaf at high heat."], ["A starter is flour and water."]],
                           ["Because heat sets the crust.", "It is yeast."])
    assert verdicts == [None, None]  # counted as unparsed, never guessed
    bodies = sorted(r["messages"][-1]["content"] for r in openai_server.requests)  # sent concurrently
    assert len(bodies) == 2 and all("ANSWER TO GRADE" in b for b in bodies)
    assert "It is yeast." in bodies[0] and "[1] A starter is flour and water." in bodies[0]
    assert "Because heat sets the crust." in bodies[1] and "[1] Bake the loaf at high heat." in bodies[1]
    assert {r["model"] for r in openai_server.requests} == {"judge-under-test"}
    assert all(r["temperature"] == 0.0 for r in openai_server.requests)
