"""``MLLMRerankCompressor``: MM-Embed's zero-shot MLLM reranker as a LangChain document
compressor (the rules live in :class:`metaembed_rag.rerank.MLLMReranker`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from metaembed_rag.rerank import MLLMReranker
from pydantic import ConfigDict, Field

__all__ = ["MLLMRerankCompressor"]


class MLLMRerankCompressor(BaseDocumentCompressor):
    """Rerank documents by a generative model's probability of answering "True" to "does the
    candidate answer the query?" (``docs/gpu-vlm.md``).

    The best ``top_n`` come back, best first (ties keep the input order), as copies whose
    metadata gains the score under ``score_key``. With ``first_stage_key`` (a metadata key
    holding the retriever's score) and the reranker's ``fusion_weight > 0`` the score fuses
    both. An image document is given by ``metadata[image_key]`` (a path); its text, if any,
    goes with it.

    >>> compressor = MLLMRerankCompressor(                              # doctest: +SKIP
    ...     reranker=MLLMReranker.from_pretrained("Qwen/Qwen2-VL-2B-Instruct"), top_n=3)
    """

    reranker: MLLMReranker = Field(description="The MLLMReranker that scores the pairs.")
    top_n: int | None = Field(default=3, ge=1, description="Documents kept; None keeps all.")
    score_key: str = Field(default="relevance_score", description="Metadata key of the score.")
    first_stage_key: str | None = Field(
        default=None, description="Metadata key of a first-stage score to fuse with."
    )
    image_key: str | None = Field(
        default=None, description="Metadata key of an image path for image documents."
    )

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def _candidate(self, doc: Document) -> Any:
        image = doc.metadata.get(self.image_key) if self.image_key else None
        if image:
            from pathlib import Path

            return (doc.page_content, Path(image)) if doc.page_content else Path(image)
        return doc.page_content

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """The best ``top_n`` documents for ``query``, as copies with the score in metadata."""
        if not documents:
            return []
        first = None
        if self.first_stage_key is not None:
            first = [float(d.metadata.get(self.first_stage_key, 0.0)) for d in documents]
        ranked = self.reranker.rerank(
            query, [self._candidate(d) for d in documents], top_n=self.top_n,
            first_stage_scores=first,
        )  # fmt: skip
        return [
            documents[i].model_copy(
                update={"metadata": {**documents[i].metadata, self.score_key: s}}
            )
            for i, s in ranked
        ]
