"""The LlamaIndex side shared by the ``llama-index-*-metaembed`` packages (extra ``llama-index``).

* :class:`MetaEmbedEmbedding` (:mod:`.embedding`) - the LlamaIndex embedding; the vector store,
  the retriever and the reranker all encode through it;
* :mod:`.inputs` - nodes, query bundles and ``ImageType`` values as MetaEmbed inputs;
* :mod:`.filters` - LlamaIndex ``MetadataFilters`` -> the core filter syntax.

Import it only where ``llama-index-core`` is installed: ``pip install "metaembed-rag[llama-index]"``
(or any ``llama-index-*-metaembed`` package, which pulls it in).
"""

from __future__ import annotations

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without llama-index-core
    raise ImportError(
        "metaembed_rag.frameworks.llama_index needs llama-index-core: "
        'pip install "metaembed-rag[llama-index]" (or a llama-index-*-metaembed package).'
    ) from exc

from .embedding import MetaEmbedEmbedding
from .filters import ELEMENTS_KEY, element_index, to_core_filter

__all__ = ["ELEMENTS_KEY", "MetaEmbedEmbedding", "element_index", "to_core_filter"]
