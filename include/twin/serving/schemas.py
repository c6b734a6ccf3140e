"""Request and response bodies of the HTTP API (they make its OpenAPI schema)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

AUTHOR_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
# Enforced again against TWIN_SERVE_MAX_QUESTION_CHARS by the ingress; this bound keeps the schema finite.
MAX_TEXT = 20_000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AskRequest(Strict):
    question: str = Field(..., min_length=1, max_length=MAX_TEXT, description="The question for the twin.")
    author: str | None = Field(None, pattern=AUTHOR_PATTERN, description="Whose twin answers; default TWIN_AUTHOR.")
    k: int | None = Field(None, ge=1, le=20, description="Passages to retrieve; default TWIN_SERVE_DEFAULT_K.")
    stream: bool = Field(False, description="Answer as Server-Sent Events: token, then one final event.")


class Source(BaseModel):
    """A passage's document the answer may cite, numbered as in the prompt."""

    number: int
    document_id: str
    url: str
    title: str | None
    author: str
    author_name: str
    score: float


class AskResponse(BaseModel):
    answer: str
    sources: list[Source]
    model_version: str
    trace_id: str
    role: Literal["champion", "challenger"]
    cited: list[int] = Field(default_factory=list, description="Source numbers the answer cites.")


class SearchRequest(Strict):
    query: str = Field(..., min_length=1, max_length=MAX_TEXT)
    author: str | None = Field(None, pattern=AUTHOR_PATTERN)
    k: int = Field(5, ge=1, le=50)


class SearchHitOut(BaseModel):
    document_id: str
    chunk_id: str
    url: str
    title: str | None
    author: str
    score: float
    text: str


class SearchResponse(BaseModel):
    query: str
    hits: list[SearchHitOut]
    answerable: bool
    relevance: float | None
    notes: list[str]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields (name, ...) the twin does not use

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | None = Field(None, max_length=MAX_TEXT)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(..., min_length=1, max_length=128, description='"twin-<author>" (GET /v1/models)')
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=64)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, le=1024)
    max_completion_tokens: int | None = Field(None, ge=1, le=1024)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)


class FeedbackRequest(Strict):
    trace_id: str = Field(..., min_length=1, max_length=128)
    rating: Literal[1, -1]
    comment: str = Field("", max_length=2000)


class FeedbackResponse(BaseModel):
    trace_id: str
    author: str
    version: str
    rating: int


class ErrorBody(BaseModel):
    message: str
    type: str
    code: int
    details: list[dict[str, object]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
