"""``MLLMReranker``: a generative (vision-)language model as a zero-shot reranker (MM-Embed).

Each (query, candidate) pair becomes one user turn in the model's chat template::

    [query image] Query: <query text>
    [candidate image] Candidate: <candidate text>
    Does the candidate answer the query? Answer True or False.

followed by the generation prompt. The score is the probability of the answer "True" against
"False" at the answer position: ``softmax([log p("True"), log p("False")])[0]``, where the log
probability of a word is the sum of its tokens' log probabilities (teacher-forced). When both
words are one token each this is exactly ``softmax([logit_True, logit_False])[0]`` of the
logits at the answer position. Token ids come from the model's tokenizer.

Batches are padded on the right, so a row's real tokens never see padding (causal attention)
and its score does not depend on the batch it is in. Models: any ``transformers`` causal LM
(text only: ``AutoModelForCausalLM`` + ``AutoTokenizer``) or image-text-to-text model
(Qwen2-VL / Qwen2.5-VL, Idefics3 / SmolVLM: ``AutoModelForImageTextToText`` +
``AutoProcessor``). ``trust_remote_code`` is off unless passed. See ``docs/gpu-vlm.md``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from ..inputs import Item, ItemLike, load_images, to_items

__all__ = ["MLLMReranker", "RerankPrompt", "fuse_scores", "load_reranker", "rerank_results"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RerankPrompt:
    """The text around the query and the candidate (MM-Embed style yes/no question).

    Attributes:
        query_label: put before the query text.
        candidate_label: put before the candidate text.
        question: the yes/no question after both; it should name the two answer words.
        system: an optional system turn.
        answers: the (yes, no) answer words whose probabilities are compared.
    """

    query_label: str = "Query:"
    candidate_label: str = "Candidate:"
    question: str = "Does the candidate answer the query? Answer True or False."
    system: str | None = None
    answers: tuple[str, str] = ("True", "False")

    def parts(self, query: Item, candidate: Item) -> tuple[list[dict[str, Any]], list[Any]]:
        """Chat content parts of the user turn (``{"type": "image"}`` / ``{"type": "text"}``)
        and the images in the order they appear."""
        parts: list[dict[str, Any]] = []
        images: list[Any] = []
        for label, item, end in (
            (self.query_label, query, "\n"),
            (self.candidate_label, candidate, "\n" + self.question),
        ):
            if item.image is not None:
                parts.append({"type": "image"})
                images.append(item.image)
            text = f"{label} {item.text}" if item.text else label
            parts.append({"type": "text", "text": text + end})
        return parts, images


def fuse_scores(rerank: Sequence[float], first: Sequence[float], weight: float) -> list[float]:
    """``(1 - weight) * rerank + weight * first``, the first-stage scores min-max scaled to
    [0, 1] over the candidates (all equal: 0.5).

    >>> fuse_scores([0.9, 0.1], [3.0, 1.0], 0.5)
    [0.95, 0.05]
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"fusion weight must be in [0, 1], got {weight}")
    lo, hi = min(first, default=0.0), max(first, default=0.0)
    scaled = [0.5 if hi == lo else (f - lo) / (hi - lo) for f in first]
    return [(1 - weight) * r + weight * s for r, s in zip(rerank, scaled, strict=True)]


class MLLMReranker:
    """Zero-shot reranking by P("True") of a generative model (see the module docstring).

    Args:
        model: a ``transformers`` causal LM or image-text-to-text model (eval mode).
        tokenizer: its tokenizer.
        processor: its ``AutoProcessor`` for image inputs (``None``: text only).
        prompt: the prompt text and answer words.
        batch_size: pairs per forward pass.
        max_length: token limit of a prompt (longer ones are cut from the candidate text's end
            by the tokenizer's truncation; ``None``: no limit).
        fusion_weight: weight of the min-max scaled first-stage score in :meth:`rerank`
            (0: the model's probability alone).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        processor: Any = None,
        *,
        prompt: RerankPrompt | None = None,
        batch_size: int = 8,
        max_length: int | None = None,
        fusion_weight: float = 0.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        fuse_scores([], [], fusion_weight)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.processor = processor
        self.prompt = prompt or RerankPrompt()
        self.batch_size = batch_size
        self.max_length = max_length
        self.fusion_weight = fusion_weight
        self.answer_ids = [self._word_ids(w) for w in self.prompt.answers]
        if self.answer_ids[0] == self.answer_ids[1]:
            raise ValueError(f"the answer words {self.prompt.answers} tokenize the same")

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> MLLMReranker:
        """Load a checkpoint: image-text-to-text models (a ``vision_config``) with
        ``AutoModelForImageTextToText`` + ``AutoProcessor``, others with
        ``AutoModelForCausalLM`` + ``AutoTokenizer``. ``device`` default: CUDA when present;
        ``dtype`` default: bfloat16 on CUDA, float32 on CPU. ``kwargs`` go to the constructor.
        """
        import transformers

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype is None:
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        elif isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        path = str(name_or_path)
        config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        common = {"trust_remote_code": trust_remote_code}
        processor = None
        if getattr(config, "vision_config", None) is not None:
            model = transformers.AutoModelForImageTextToText.from_pretrained(
                path, dtype=dtype, **common
            )
            try:
                processor = transformers.AutoProcessor.from_pretrained(path, **common)
            except ImportError as exc:  # e.g. Qwen2-VL's video processor needs torchvision
                logger.warning(
                    "%s: no AutoProcessor (%s); text inputs only",
                    path,
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                )
            tokenizer = (
                processor.tokenizer
                if processor is not None
                else transformers.AutoTokenizer.from_pretrained(path, **common)
            )
        else:
            model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **common)
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, **common)
        model = cast(Any, model).to(device)
        return cls(model, tokenizer, processor, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ prompts
    def _word_ids(self, word: str) -> list[int]:
        ids = self.tokenizer.encode(word, add_special_tokens=False)
        if not ids:
            raise ValueError(f"the answer word {word!r} has no tokens in this tokenizer")
        return list(ids)

    def build_prompt(self, query: ItemLike, candidate: ItemLike) -> tuple[str, list[Any]]:
        """The prompt text up to the answer position (chat template with the generation
        prompt; plain text plus ``"\\nAnswer: "`` for a tokenizer without a template) and its
        images in order.

        Raises:
            ValueError: an image input for a model loaded without a processor.
        """
        q, c = to_items([query, candidate])
        load_images([q, c])
        parts, images = self.prompt.parts(q, c)
        if images and self.processor is None:
            raise ValueError(
                "this reranker has no image processor (a text-only model, or AutoProcessor "
                "could not load: for Qwen2-VL install torchvision); pass text inputs"
            )
        # a processor's template takes content parts; a text LM's template takes one string
        templater = self.processor if self.processor is not None else self.tokenizer
        if getattr(templater, "chat_template", None):
            messages: list[dict[str, Any]] = []
            if self.prompt.system:
                messages.append({"role": "system", "content": self.prompt.system})
            content: Any = (
                parts if templater is self.processor else "".join(p["text"] for p in parts)
            )
            messages.append({"role": "user", "content": content})
            text = templater.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        else:
            body = "".join(p["text"] for p in parts)
            text = (self.prompt.system + "\n" if self.prompt.system else "") + body + "\nAnswer: "
        return text, images

    # ------------------------------------------------------------------ scoring
    def _encode(self, texts: list[str], images: list[list[Any]]) -> dict[str, torch.Tensor]:
        """Right-padded model inputs of a batch of prompts."""
        trunc = {"truncation": True, "max_length": self.max_length} if self.max_length else {}
        if any(images):
            if not all(images):
                raise ValueError("a batch mixes prompts with and without images")
            self.processor.tokenizer.padding_side = "right"
            batch = self.processor(
                text=texts, images=images, padding=True, return_tensors="pt", **trunc
            )
        else:
            self.tokenizer.padding_side = "right"
            if self.tokenizer.pad_token is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
            batch = self.tokenizer(
                texts, padding=True, return_tensors="pt", add_special_tokens=False, **trunc
            )
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}

    @staticmethod
    def _append(batch: dict[str, torch.Tensor], extra: list[int]) -> dict[str, torch.Tensor]:
        """``extra`` token ids after each row's last real token (rows stay right padded)."""
        if not extra:
            return batch
        ids, mask = batch["input_ids"], batch["attention_mask"]
        n, length = ids.shape
        k = len(extra)
        new_ids = torch.cat([ids, ids.new_full((n, k), ids[0, -1].item())], dim=1)
        new_mask = torch.cat([mask, mask.new_zeros(n, k)], dim=1)
        lengths = mask.sum(dim=1)
        out = dict(batch)
        extras = {
            key: torch.cat([v, v.new_zeros(n, k)], dim=1)
            for key, v in batch.items()
            if key not in ("input_ids", "attention_mask")
            and torch.is_tensor(v)
            and v.dim() == 2
            and v.shape == (n, length)
        }
        extra_t = torch.tensor(extra, dtype=ids.dtype, device=ids.device)
        for r in range(n):
            end = int(lengths[r])
            tail_ids = new_ids[r, end:length].clone()
            new_ids[r, end : end + k] = extra_t
            new_ids[r, end + k :] = tail_ids
            new_mask[r, : end + k] = 1
            new_mask[r, end + k :] = 0
            for v in extras.values():
                tail = v[r, end:length].clone()
                v[r, end : end + k] = 0
                v[r, end + k :] = tail
        out.update(extras)
        out["input_ids"], out["attention_mask"] = new_ids, new_mask
        return out

    @torch.inference_mode()
    def _word_logprobs(self, texts: list[str], images: list[list[Any]]) -> torch.Tensor:
        """``(n, 2)`` float64 log probabilities of the two answer words after each prompt."""
        base = self._encode(texts, images)
        lengths = base["attention_mask"].sum(dim=1)  # the answer position is lengths - 1
        rows = torch.arange(len(texts), device=self.device)
        if all(len(w) == 1 for w in self.answer_ids):
            logits = self.model(**base, use_cache=False).logits[rows, lengths - 1].double()
            logp = torch.log_softmax(logits, dim=-1)
            return torch.stack([logp[:, w[0]] for w in self.answer_ids], dim=1).cpu()
        out = []
        for word in self.answer_ids:
            batch = self._append(base, word[:-1])
            logits = self.model(**batch, use_cache=False).logits
            total = torch.zeros(len(texts), dtype=torch.float64, device=self.device)
            for j, tok in enumerate(word):
                step = torch.log_softmax(logits[rows, lengths - 1 + j].double(), dim=-1)
                total += step[:, tok]
            out.append(total)
        return torch.stack(out, dim=1).cpu()

    def score(self, query: ItemLike, candidates: Sequence[ItemLike]) -> list[float]:
        """P("True") of each candidate for ``query`` (batched by ``batch_size``; prompts with
        and without images go in separate batches)."""
        prompts = [self.build_prompt(query, c) for c in candidates]
        out = [math.nan] * len(prompts)
        groups: dict[bool, list[int]] = {}
        for i, (_, imgs) in enumerate(prompts):
            groups.setdefault(bool(imgs), []).append(i)
        for members in groups.values():
            for s in range(0, len(members), self.batch_size):
                idx = members[s : s + self.batch_size]
                logp = self._word_logprobs(
                    [prompts[i][0] for i in idx], [prompts[i][1] for i in idx]
                )
                probs = torch.softmax(logp, dim=1)[:, 0].tolist()
                for i, p in zip(idx, probs, strict=True):
                    out[i] = float(p)
        return out

    def rerank(
        self,
        query: ItemLike,
        candidates: Sequence[ItemLike],
        *,
        top_n: int | None = None,
        first_stage_scores: Sequence[float] | None = None,
    ) -> list[tuple[int, float]]:
        """``(position in candidates, score)`` of the best ``top_n`` (``None``: all), best
        first, ties in input order. With ``first_stage_scores`` and ``fusion_weight > 0`` the
        score is :func:`fuse_scores` of P("True") and the first-stage score."""
        if top_n is not None and top_n < 1:
            raise ValueError(f"top_n must be >= 1 or None, got {top_n}")
        if not candidates:
            return []
        scores = self.score(query, candidates)
        if first_stage_scores is not None and self.fusion_weight > 0:
            if len(first_stage_scores) != len(candidates):
                raise ValueError(
                    f"{len(first_stage_scores)} first-stage scores for {len(candidates)} candidates"
                )
            scores = fuse_scores(scores, list(first_stage_scores), self.fusion_weight)
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        if top_n is not None:
            order = order[:top_n]
        return [(i, scores[i]) for i in order]


def load_reranker(spec: str, **kwargs: Any) -> MLLMReranker:
    """A reranker from a ``--rerank`` value: ``mllm:MODEL`` (a ``transformers`` checkpoint
    name or folder); ``kwargs`` go to :meth:`MLLMReranker.from_pretrained`.

    Raises:
        ValueError: another form (the message shows the accepted one).
    """
    kind, sep, name = spec.partition(":")
    if kind != "mllm" or not sep or not name:
        raise ValueError(
            f"--rerank {spec!r}: write mllm:MODEL, e.g. mllm:Qwen/Qwen2-VL-2B-Instruct or "
            "mllm:/path/to/checkpoint"
        )
    return MLLMReranker.from_pretrained(name, **kwargs)


def rerank_results(
    reranker: MLLMReranker, query: Any, results: Sequence[Any], top_n: int | None = None
) -> list[Any]:
    """Rerank search results (dataclasses with ``text``, ``score``, ``rank`` and optionally
    ``image``: :class:`~metaembed_rag.index.Hit`, ``SearchResult``): copies, best first, with
    the reranker's score and new ranks; the first-stage score is fused when the reranker's
    ``fusion_weight > 0``."""
    import dataclasses

    cands: list[Any] = []
    for r in results:
        image = getattr(r, "image", None)
        cands.append((r.text, image) if image is not None and r.text else image or r.text or "")
    ranked = reranker.rerank(
        query, cands, top_n=top_n, first_stage_scores=[float(r.score) for r in results]
    )
    return [
        dataclasses.replace(results[i], score=float(s), rank=rank)
        for rank, (i, s) in enumerate(ranked)
    ]
