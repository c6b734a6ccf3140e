"""Serving: Ray Serve hosts the twin's LLM deployment (multiplexed versions, batching, streaming) and
the RAG ingress (FastAPI: /v1/ask, /v1/search, OpenAI-compatible /v1/chat/completions, the web page).

    from twin.serving.app import build_app
    serve.run(build_app(), route_prefix="/")
"""
