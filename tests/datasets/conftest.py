from tests.datasets.corpus import corpus_env  # noqa: F401  (fixture)
from tests.llm.support import (  # noqa: F401  (fixtures)
    llm_env,
    local_backend,
    model_cache_dir,
    openai_server,
    openai_server_session,
)
