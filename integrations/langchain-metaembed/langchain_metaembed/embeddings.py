"""``MetaEmbedEmbeddings``: a LangChain ``Embeddings`` backed by a ``MetaEmbedModel``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from langchain_core.embeddings import Embeddings
from langchain_core.utils import from_env
from metaembed_rag import DEFAULT_MODEL, Budget, MetaEmbedModel
from metaembed_rag.budget import BudgetLike, parse_budget
from metaembed_rag.hub import load_model
from metaembed_rag.inputs import ItemLike
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

__all__ = ["MetaEmbedEmbeddings", "MODEL_ENV_VAR"]

#: Environment variable read when ``model_name`` is not given.
MODEL_ENV_VAR = "METAEMBED_MODEL"


class MetaEmbedEmbeddings(BaseModel, Embeddings):
    """MetaEmbed multi-vector embeddings for LangChain.

    ``embed_documents`` / ``embed_query`` (and their async versions, which LangChain runs in a
    thread pool) return the **(1,1) single vector**: the first candidate Meta vector of a
    document and the first query Meta vector of a query, both unit length, so their dot product
    is the MetaEmbed score at budget (1,1). Use them with any LangChain vector store.

    The full multi-vectors (``R_q = 16`` per query, ``R_c = 64`` per document with the default
    model) come from :meth:`encode_queries` / :meth:`encode_documents` (tensors) or
    :meth:`embed_query_multivector` / :meth:`embed_documents_multivector` (lists, optionally cut
    to a budget). :meth:`embed_images` embeds images with a vision-language backbone.
    :class:`~langchain_metaembed.MetaEmbedVectorStore` keeps the full multi-vectors and searches
    them at any budget.

    Example:
        .. code-block:: python

            from langchain_metaembed import MetaEmbedEmbeddings

            emb = MetaEmbedEmbeddings()            # the packaged default model, offline
            emb.embed_query("What causes type 2 diabetes?")[:3]
            emb.encode_documents(["Insulin resistance ..."]).shape  # (1, 64, 384)

    The loaded model is private (``client``). Pass an already loaded
    :class:`~metaembed_rag.MetaEmbedModel` as ``client=`` to skip loading.
    """

    model_name: str = Field(
        default_factory=from_env(MODEL_ENV_VAR, default=DEFAULT_MODEL),
        alias="model",
        description=(
            "MetaEmbed model to load: a built-in name (default 'metaembed-minilm-l6', read "
            "from the METAEMBED_MODEL environment variable when set), a folder written by "
            "MetaEmbedModel.save_pretrained, or a Hugging Face Hub repo id."
        ),
    )
    device: str | None = Field(
        default=None,
        description="Device to run on ('cpu', 'cuda', 'cuda:1', 'mps'); None picks one.",
    )
    dtype: str | None = Field(
        default=None,
        description="Model precision ('float32', 'bfloat16', 'float16'); None: float32 on CPU, bf16/fp16 on CUDA.",
    )
    batch_size: int = Field(default=32, ge=1, description="Inputs per forward pass.")
    max_length: int | None = Field(
        default=None,
        ge=1,
        description="Token limit per input (longer inputs are truncated with a warning); None: the model's.",
    )
    query_instruction: str | None = Field(
        default=None, description="Task instruction put before every query text."
    )
    show_progress: bool = Field(default=False, description="Show a progress bar while encoding.")
    cache_model: bool = Field(
        default=True,
        description=(
            "Share the loaded model with other instances asking for the same model, device and "
            "dtype (one load per process)."
        ),
    )

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), populate_by_name=True)

    _client: MetaEmbedModel = PrivateAttr()

    def __init__(self, client: MetaEmbedModel | None = None, **kwargs: Any) -> None:
        """Load the model (or adopt ``client``, an already loaded ``MetaEmbedModel``)."""
        if client is not None:
            if not isinstance(client, MetaEmbedModel):
                raise TypeError(
                    f"client must be a loaded metaembed_rag.MetaEmbedModel, got "
                    f"{type(client).__name__}; pass model_name= to load one instead."
                )
            if "model_name" not in kwargs and "model" not in kwargs:
                kwargs["model_name"] = f"in-memory:{client.fingerprint()}"
        super().__init__(**kwargs)
        if client is None:
            client = load_model(self.model_name, self.device, self.dtype, cache=self.cache_model)
        self._client = client

    # ------------------------------------------------------------------ model access
    @property
    def client(self) -> MetaEmbedModel:
        """The loaded :class:`~metaembed_rag.MetaEmbedModel`."""
        return self._client

    @property
    def dim(self) -> int:
        """Width D of every vector."""
        return self._client.dim

    @property
    def budgets(self) -> list[Budget]:
        """The model's trained budgets, smallest first (``[Budget(1, 1), ..., Budget(16, 64)]``
        for the default model)."""
        return list(self._client.budgets)

    @property
    def effective_max_length(self) -> int:
        """The token limit documents are encoded with: ``max_length``, else the model's."""
        return self.max_length if self.max_length is not None else self._client.config.max_length

    def fingerprint(self) -> str:
        """The model's fingerprint (indexes record it to refuse another model's vectors)."""
        return self._client.fingerprint()

    # ------------------------------------------------------------------ multi-vectors
    def encode_queries(self, queries: Sequence[ItemLike]) -> torch.Tensor:
        """Full query multi-vectors.

        Args:
            queries: texts, images or (text, image) pairs (see ``metaembed_rag.inputs``).

        Returns:
            float32 CPU tensor ``(n, R_q, D)`` of unit vectors (``R_q = 16``, ``D = 384`` for
            the default model); ``[:, :r_q]`` is a budget's prefix.
        """
        return self._client.encode_queries(
            list(queries),
            batch_size=self.batch_size,
            max_length=self.max_length,
            instruction=self.query_instruction,
            show_progress_bar=self.show_progress,
        )

    def encode_documents(self, documents: Sequence[ItemLike]) -> torch.Tensor:
        """Full document multi-vectors: float32 CPU tensor ``(n, R_c, D)`` of unit vectors
        (``R_c = 64`` for the default model); ``[:, :r_c]`` is a budget's prefix."""
        return self._client.encode_documents(
            list(documents),
            batch_size=self.batch_size,
            max_length=self.max_length,
            show_progress_bar=self.show_progress,
        )

    def _prefix(self, budget: BudgetLike | None) -> tuple[int, int]:
        b = parse_budget(budget, "budget")
        resolved = self._client.resolve_budget(b)
        return resolved.r_q, resolved.r_c

    def embed_query_multivector(
        self, text: str, budget: BudgetLike | None = None
    ) -> list[list[float]]:
        """A query's multi-vector as lists: ``r_q`` vectors of ``D`` floats (``budget=None``:
        all ``R_q``). ``budget`` must be one of the model's trained budgets."""
        r_q, _ = self._prefix(budget)
        return self.encode_queries([text])[0, :r_q].tolist()

    def embed_documents_multivector(
        self, texts: Sequence[str], budget: BudgetLike | None = None
    ) -> list[list[list[float]]]:
        """Documents' multi-vectors as lists: per document ``r_c`` vectors of ``D`` floats
        (``budget=None``: all ``R_c``)."""
        _, r_c = self._prefix(budget)
        return self.encode_documents(list(texts))[:, :r_c].tolist()

    def embed_images(self, images: Sequence[Any]) -> list[list[float]]:
        """(1,1) single vectors of images (document side): one list of ``D`` floats per image.

        Args:
            images: PIL images, ``pathlib.Path`` files, encoded ``bytes``, or
                ``{"text": ..., "image": ...}`` dicts for text + image documents. A plain
                ``str`` is always text, never a file name: wrap paths in ``Path``.

        Raises:
            ValueError: the model's backbone reads text only (the default model); load a
                vision-language MetaEmbed model (Qwen2-VL, Idefics3, ...).
        """
        return self.encode_documents(list(images))[:, 0].tolist()

    def embed_image(self, image: Any) -> list[float]:
        """(1,1) single vector of one image (see :meth:`embed_images`)."""
        return self.embed_images([image])[0]

    # ------------------------------------------------------------------ Embeddings API
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """(1,1) single vectors of documents: one list of ``D`` unit-norm floats per text."""
        if not texts:
            return []
        return self.encode_documents(texts)[:, 0].tolist()

    def embed_query(self, text: str) -> list[float]:
        """(1,1) single vector of a query: ``D`` unit-norm floats. Its dot product with an
        ``embed_documents`` vector is the MetaEmbed score at budget (1,1)."""
        return self.encode_queries([text])[0, 0].tolist()
