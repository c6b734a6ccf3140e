"""Names shared by the DAGs, the local stack and the library: Assets, pools, DAG ids.

Kept free of Airflow imports so that the library and CLI load without it.
"""

from __future__ import annotations

# Asset names: a producer DAG updates one, a consumer DAG is scheduled on it.
RAW_DOCUMENTS_ASSET = "raw_documents"
CLEANED_DOCUMENTS_ASSET = "cleaned_documents"
CHUNKS_ASSET = "chunks"
DATASETS_ASSET = "datasets"  # a new fine-tuning dataset version (extra: author, version)
MODELS_ASSET = "models"  # a twin version became champion (extra: author, version)

# Airflow pool that caps concurrent fetches of the crawl DAG; `twin stack up` creates it.
CRAWL_POOL = "crawl_fetch"

DEFAULT_OWNER = "twin"
