"""What the framework integration packages share, in the core so each package installs alone.

* :mod:`metaembed_rag.frameworks.llama_index` - the LlamaIndex side: ``MetaEmbedEmbedding``
  (the embedding every LlamaIndex package encodes with), node / query-bundle inputs and the
  ``MetadataFilters`` translation (extra ``llama-index``).

The ``llama-index-*-metaembed`` packages under ``integrations/`` are thin adapters over these:
each depends only on ``metaembed-rag`` and ``llama-index-core``, never on a sibling package.
Framework-neutral pieces (the relevance calibration, maximal marginal relevance) live in
:mod:`metaembed_rag.relevance` and :mod:`metaembed_rag.index.diversity`.
"""
