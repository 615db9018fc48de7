"""LangChain's standard unit suite for embeddings (``langchain-tests``), run in full."""

from __future__ import annotations

from typing import Any

from langchain_shared import DefaultModelEmbeddingsParams
from langchain_tests.unit_tests import EmbeddingsUnitTests
from metaembed_rag import DEFAULT_MODEL
from metaembed_rag.hub import resolve_model_folder

from langchain_metaembed import MODEL_ENV_VAR


class TestMetaEmbedEmbeddingsUnit(DefaultModelEmbeddingsParams, EmbeddingsUnitTests):
    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        # The model folder named by METAEMBED_MODEL (shares the cached load of the default).
        folder = str(resolve_model_folder(DEFAULT_MODEL))
        return {MODEL_ENV_VAR: folder}, {"batch_size": 8}, {"model_name": folder, "batch_size": 8}
