"""``MetadataFilters`` translation: it lives in the core
(:mod:`metaembed_rag.frameworks.llama_index.filters`, shared with the retriever package); this
module keeps the package's import path."""

from metaembed_rag.frameworks.llama_index.filters import *  # noqa: F403
from metaembed_rag.frameworks.llama_index.filters import __all__  # noqa: F401
