from tests.llm.support import model_cache_dir  # noqa: F401  (fixture: the packaged model, dequantised once a run)
