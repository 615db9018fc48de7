"""Node / query-bundle inputs: they live in the core (:mod:`metaembed_rag.frameworks.llama_index.inputs`);
this module keeps the package's import path."""

from metaembed_rag.frameworks.llama_index.inputs import *  # noqa: F403
from metaembed_rag.frameworks.llama_index.inputs import __all__  # noqa: F401
