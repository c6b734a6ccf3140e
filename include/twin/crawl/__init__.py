"""Data collection: crawlers for articles, feeds, repositories and exported posts, into MongoDB.

Kept import-light (the CLI imports this package at start); the crawlers live in submodules:
`twin.crawl.pipeline` (what the DAG and CLI call), `twin.crawl.registry` (extend the dispatcher).
"""
