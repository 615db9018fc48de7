"""Reference retrievers to read the model's figures against: BM25 and mean-pooled cosine.

* BM25 — the ``bm25s`` library, as hybrid search runs it (:mod:`metaembed_rag.index.lexical`,
  one settings table: :data:`BM25_SETTINGS`): its default
  tokenizer (lower-cased, tokens matching ``(?u)\\b\\w\\w+\\b``), its English stop-word list,
  no stemming (the library's default; ``bm25s`` stems only when given a stemmer), the Lucene
  BM25 variant with ``k1=1.5``, ``b=0.75``.
* Mean-pool — the backbone a MetaEmbed model was built on, alone: its tokenizer, the last
  hidden states averaged over the attention mask, L2-normalised, scored by cosine (the
  classic sentence-transformers recipe; for all-MiniLM-L6-v2 this is that model as published).

Both take the texts as given (a document is its title and text, as the model reads it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .device import resolve_device
from .hub import resolve_backbone_path, trust_remote_code_default
from .index.lexical import BM25_SETTINGS, import_bm25s, tokenize
from .vector_cache import folder_identity

__all__ = [
    "BASELINES",
    "BM25_SETTINGS",
    "MeanPoolEncoder",
    "bm25_rankings",
    "mean_pool",
    "parse_baselines",
]

logger = logging.getLogger(__name__)

#: The baselines ``metaembed-rag eval --baselines`` knows.
BASELINES = ("bm25", "mean-pool")


def parse_baselines(text: str) -> list[str]:
    """``"bm25,mean-pool"`` -> ``["bm25", "mean-pool"]``, checked against :data:`BASELINES`.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in BASELINES]
    if bad or not names:
        raise ValueError(
            f"unknown baseline {', '.join(map(repr, bad)) or repr(text)}; "
            f"choose from {','.join(BASELINES)} (comma-separated)"
        )
    return list(dict.fromkeys(names))


def bm25_rankings(
    doc_ids: Sequence[str],
    doc_texts: Sequence[str],
    queries: Sequence[str],
    *,
    k: int = 1000,
) -> list[list[str]]:
    """Rank the documents for each query with BM25 (settings in :data:`BM25_SETTINGS`).

    Args:
        doc_ids: the corpus's document ids.
        doc_texts: their texts, in the same order.
        queries: query texts.
        k: ranking depth (cut to the corpus size).

    Returns:
        One list of doc ids per query, best first, ``min(k, len(doc_ids))`` long.

    Raises:
        ImportError: ``bm25s`` is not installed (the message names the extra).
    """
    if len(doc_ids) != len(doc_texts):
        raise ValueError(f"{len(doc_ids)} doc ids but {len(doc_texts)} texts")
    bm25s = import_bm25s()
    s = BM25_SETTINGS
    retriever = bm25s.BM25(k1=s["k1"], b=s["b"], method=s["method"])
    retriever.index(tokenize(doc_texts), show_progress=False)
    depth = min(k, len(doc_ids))
    indices, _ = retriever.retrieve(tokenize(queries), k=depth, show_progress=False)
    return [[doc_ids[int(i)] for i in row] for row in indices]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H) hidden states averaged over the tokens where ``attention_mask`` is 1, then
    L2-normalised: (B, H) float32 unit vectors."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return F.normalize((summed / counts).float(), p=2, dim=-1)


@dataclass
class MeanPoolEncoder:
    """A text backbone used on its own: mean-pooled, L2-normalised last hidden states.

    Attributes:
        model: the ``transformers`` base model (no Meta tokens, no LoRA).
        tokenizer: its tokenizer (right padding).
        reference: the backbone reference it was loaded from (``package:...``, hub id, folder).
        identity: the reference, where it resolved to and its weight files' sizes and mtimes
            (the document-vector cache key).
    """

    model: nn.Module
    tokenizer: Any
    reference: str
    identity: str

    @classmethod
    def from_backbone(
        cls,
        reference: str,
        *,
        model_folder: str | Path | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        trust_remote_code: bool | None = None,
    ) -> MeanPoolEncoder:
        """Load a backbone the way :class:`~metaembed_rag.MetaEmbedModel` does.

        Args:
            reference: a model config's ``backbone`` (``package:<module>``, a hub id, a folder,
                or ``embedded``, which needs ``model_folder``).
            model_folder: the MetaEmbed model folder the reference is relative to.
            device: where to run (default: CUDA, MPS, CPU).
            dtype: the precision to load the weights in.
            trust_remote_code: run the backbone's custom code (default: what
                :func:`metaembed_rag.hub.set_trust` set; never a saved config's value).

        Raises:
            ValueError: the backbone is not a text model (a vision-language backbone has no
                plain text mean-pool baseline here).
        """
        from .model_io import load_backbone

        folder = Path(model_folder) if model_folder is not None else None
        path = resolve_backbone_path(reference, folder)
        if trust_remote_code is None:
            trust_remote_code = trust_remote_code_default()
        adapter_cls, model, processor = load_backbone(path, trust_remote_code, dtype)
        if adapter_cls.family != "text":
            raise ValueError(
                f"the mean-pool baseline needs a text backbone; {reference!r} is a "
                f"{adapter_cls.family} model: drop mean-pool from --baselines"
            )
        processor.padding_side = "right"
        model.to(resolve_device(device)).eval()
        return cls(model, processor, reference, folder_identity(reference, path))

    @torch.inference_mode()
    def encode(
        self, texts: Sequence[str], *, batch_size: int = 32, max_length: int = 256
    ) -> torch.Tensor:
        """(len(texts), H) float32 unit vectors on the CPU; texts are cut to ``max_length``
        tokens (special tokens included). Batches hold texts of similar length."""
        if not texts:
            raise ValueError("no texts to encode")
        device = next(self.model.parameters()).device
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        out = torch.empty(0)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(device)
            hidden = self.model(**batch).last_hidden_state
            vectors = mean_pool(hidden, batch["attention_mask"]).cpu()
            if out.numel() == 0:
                out = torch.empty(len(texts), vectors.shape[1])
            out[torch.tensor(idx)] = vectors
        return out
