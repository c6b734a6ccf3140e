"""The LLM client with the real packaged SmolLM2-135M-Instruct, locally and through a real
OpenAI-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import time

import pytest

from tests.fixtures.features import AUTHORS
from tests.llm.support import SMALL_TOKENS
from twin.llm import LLMClient, LLMError, SamplingSettings
from twin.llm.client import as_messages
from twin.llm.openai_backend import OpenAIBackend
from twin.retrieval.llm import QueryLLM
from twin.retrieval.retriever import Retriever

PROMPTS = ["Name one reason to test a data pipeline.",
           [{"role": "system", "content": "Answer in one short sentence."},
            {"role": "user", "content": "What does an index make faster in a database, and why does it cost space?"}]]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(local_backend) -> LLMClient:
    return LLMClient(local_backend, SamplingSettings(max_new_tokens=SMALL_TOKENS, seed=7), batch_size=2)


def test_local_generation_is_batched_seeded_and_counted(client: LLMClient) -> None:
    first = client.chat(PROMPTS)
    again = client.chat(PROMPTS)
    assert [r.text for r in first] == [r.text for r in again]  # same seed, same batch: same replies
    assert all(r.text for r in first)
    for result in first:
        assert 0 < result.completion_tokens <= SMALL_TOKENS
        assert result.finish_reason in ("stop", "length")
        assert result.prompt_tokens > 10  # the chat template's system turn and markers count too
    for prompt, result in zip(PROMPTS, first, strict=True):  # counted per row, not the padded width
        alone = client.backend.tokenizer.apply_chat_template(as_messages(prompt), add_generation_prompt=True,
                                                             return_dict=True)
        assert result.prompt_tokens == len(alone["input_ids"])
    fingerprint = first[0].fingerprint
    assert fingerprint.backend == "local" and fingerprint.model == "SmolLM2-135M-Instruct"
    assert fingerprint.revision.startswith("gguf-sha256:") and fingerprint.sampling.seed == 7
    other_seed = client.chat(PROMPTS, sampling=client.settings_for(seed=8))
    assert other_seed[0].fingerprint.key != fingerprint.key


def test_left_padding_does_not_change_a_greedy_reply(client: LLMClient) -> None:
    greedy = client.settings_for(temperature=0.0, max_new_tokens=8)
    alone = client.chat([PROMPTS[0]], sampling=greedy)[0]
    beside_a_longer_prompt = client.chat(PROMPTS, sampling=greedy)[0]
    assert alone.text == beside_a_longer_prompt.text
    assert alone.prompt_tokens == beside_a_longer_prompt.prompt_tokens


def test_client_is_retrievals_query_llm(client: LLMClient) -> None:
    assert isinstance(client, QueryLLM)
    assert client.name == "local:SmolLM2-135M-Instruct"
    reply = client.complete("Say hello.", max_new_tokens=4)
    assert isinstance(reply, str) and reply


def test_openai_backend_gives_the_servers_reply_with_its_usage(client: LLMClient, openai_server) -> None:
    remote = LLMClient(OpenAIBackend(openai_server.url, "smollm2", timeout_s=60, max_retries=0),
                       client.sampling, batch_size=2)
    replies = remote.chat([PROMPTS[0]])
    local = client.chat([PROMPTS[0]])
    assert replies[0].text == local[0].text  # the server ran the same model with the same seed
    assert (replies[0].prompt_tokens, replies[0].completion_tokens) == (local[0].prompt_tokens,
                                                                        local[0].completion_tokens)
    sent = openai_server.requests[0]
    assert sent["max_tokens"] == SMALL_TOKENS and sent["seed"] == 7 and sent["repetition_penalty"] == 1.2
    assert replies[0].fingerprint.backend == "openai" and replies[0].fingerprint.model == "smollm2"


def test_openai_backend_retries_a_timeout_and_a_busy_server(openai_server) -> None:
    openai_server.faults.extend(["slow", "busy", "canned"])
    openai_server.slow_s = 2.0
    backend = OpenAIBackend(openai_server.url, "smollm2", timeout_s=0.5, max_retries=2)
    started = time.monotonic()
    [reply] = LLMClient(backend, SamplingSettings(max_new_tokens=4)).chat(["Say yes."])
    assert reply.text == "Yes." and len(openai_server.requests) == 3  # timed out, 503, then answered
    assert time.monotonic() - started < 30


def test_openai_backend_gives_up_with_a_clear_error(openai_server) -> None:
    openai_server.faults.extend(["busy", "busy"])
    backend = OpenAIBackend(openai_server.url, "smollm2", timeout_s=5, max_retries=1)
    with pytest.raises(LLMError, match="no answer after 2 tries"):
        LLMClient(backend, SamplingSettings(max_new_tokens=4)).chat(["Say yes."])


def test_openai_backend_does_not_retry_a_refused_key(openai_server) -> None:
    from pydantic import SecretStr

    openai_server.api_key = "right"
    wrong = OpenAIBackend(openai_server.url, "smollm2", api_key=SecretStr("wrong"), max_retries=3)
    with pytest.raises(LLMError, match=r"refused the request \(401\)"):
        LLMClient(wrong, SamplingSettings(max_new_tokens=4)).chat(["Say yes."])
    assert len(openai_server.requests) == 1
    right = OpenAIBackend(openai_server.url, "smollm2", api_key=SecretStr("right"))
    assert LLMClient(right, SamplingSettings(max_new_tokens=4)).chat(["Say yes."])[0].text


def test_settings_choose_the_backend(llm_env, openai_server) -> None:
    from twin.llm import build_client
    from twin.settings import load_settings

    remote = build_client(load_settings(llm_backend="openai", llm_base_url=openai_server.url, llm_model="m",
                                        llm_max_retries=0, llm_max_new_tokens=4, llm_batch_size=3))
    assert remote.name == "openai:m" and remote.batch_size == 3 and remote.sampling.max_new_tokens == 4
    with pytest.raises(LLMError, match="TWIN_LLM_BASE_URL"):
        build_client(load_settings(llm_backend="openai"))
    assert build_client(llm_env).name == "local:SmolLM2-135M-Instruct"


def test_query_expansion_goes_through_the_llm_client(client: LLMClient, indexed_corpus, embedder) -> None:
    retriever = Retriever(indexed_corpus[0], embedder, authors=AUTHORS, llm=client, self_query_llm=False)
    result = retriever.retrieve("the first bug", k=5, expand=True, self_query=False)
    assert any(note.startswith(f"query expansion ({client.name})") for note in result.notes), result.notes
    assert result.phrasings[0] == "the first bug" and result.hits
    assert retriever.self_query.llm is None  # rules read the question unless TWIN_SELF_QUERY_LLM is on


def test_build_retriever_attaches_the_client_only_when_asked(llm_env) -> None:
    from twin.retrieval.retriever import build_retriever
    from twin.settings import load_settings

    assert build_retriever(llm_env).llm is None
    expanding = build_retriever(llm_env, expand=True)
    assert isinstance(expanding.llm, LLMClient) and expanding.self_query.llm is None
    reading = build_retriever(load_settings(self_query_llm=True))  # the rest from llm_env's environment
    assert isinstance(reading.self_query.llm, LLMClient)
