"""Tiny random backbones for tests, built in memory (no download) and saved like real checkpoints.

Each ``build_*`` function writes a folder with ``save_pretrained`` (config, weights, tokenizer /
processor files) so that ``MetaEmbedModel.from_backbone(folder)`` goes through the same
``AutoConfig`` / ``AutoModel`` / ``AutoProcessor`` path as a real checkpoint. The families keep
their real classes, token schemes and image processors; only the sizes are small:

* BERT: ``BertConfig`` (hidden 32, 2 layers) + a WordPiece ``BertTokenizer`` over a small vocab.
* Qwen2-VL / Qwen2.5-VL: ``...ForConditionalGeneration`` checkpoints (hidden 64, 2 layers, a
  2-layer vision tower, patch 14, spatial merge 2), the real ``Qwen2VLImageProcessor`` (PIL
  backend when torchvision is absent) with small ``min_pixels`` / ``max_pixels``, a byte-level
  BPE ``Qwen2Tokenizer`` holding the Qwen special tokens, and the Qwen2-VL chat template.
* Idefics3: ``Idefics3ForConditionalGeneration`` (Llama text model, hidden 64, 2 layers; SigLIP
  vision tower on 32-px crops, patch 8, scale factor 2 -> 4 tokens per crop), the real
  ``Idefics3ImageProcessor`` with image splitting (longest edge 64 -> up to 2x2 crops + global
  image), a byte-level BPE tokenizer with ``<image>``, ``<fake_token_around_image>``,
  ``<global-img>`` and ``<row_i_col_j>`` tokens, and the Idefics3 chat template.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "build_tiny_bert",
    "build_tiny_qwen2vl",
    "build_tiny_qwen25vl",
    "build_tiny_idefics3",
    "QWEN2VL_CHAT_TEMPLATE",
    "IDEFICS3_CHAT_TEMPLATE",
]

# The chat template shipped with Qwen/Qwen2-VL-2B-Instruct (also used by Qwen2.5-VL).
QWEN2VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The chat template shipped with HuggingFaceM4/Idefics3-8B-Llama3.
IDEFICS3_CHAT_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

_WORD_TEXT = (
    "a an the of and in on with to is are dog dogs cat man woman child children girl boy people "
    "red blue green black white brown yellow running playing sitting standing water grass ball "
    "street beach snow field park bike car house tree two three query describe image photo "
    "picture document text what where who how retrieval search meta token embed"
)


def _byte_level_vocab(special: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocab: the 256 byte symbols plus a few merges, then ``special``."""
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []
    # A handful of merges so that common words are not all single characters.
    for word in ("Ġthe", "Ġa", "Ġdog", "Ġimage", "Query", "Ġof", "Ġin"):
        current = word[0]
        for ch in word[1:]:
            merged = current + ch
            if merged not in vocab:
                merges.append((current, ch))
                vocab[merged] = len(vocab)
            current = merged
    for tok in special:
        vocab.setdefault(tok, len(vocab))
    return vocab, merges


# ---------------------------------------------------------------------------------- BERT
def build_tiny_bert(folder: str | Path) -> Path:
    """A 2-layer, 32-d BERT with a WordPiece tokenizer; saved to ``folder``."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = Path(folder)
    torch.manual_seed(0)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,:;!?'\"-()")
    vocab_list = specials + _WORD_TEXT.split() + chars + pieces
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=128)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        type_vocab_size=2,
    )
    model = BertModel(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------- Qwen2-VL
_QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def _qwen_tokenizer():
    from transformers import Qwen2Tokenizer

    vocab, merges = _byte_level_vocab([])
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": _QWEN_SPECIAL})
    tokenizer.padding_side = "left"
    return tokenizer


def _qwen_image_processor(cls_name: str = "Qwen2VLImageProcessor"):
    import transformers
    from transformers.utils import is_torchvision_available

    name = cls_name if is_torchvision_available() else f"{cls_name}Pil"
    cls = getattr(transformers, name)
    # patch 14, merge 2 -> one LLM token per 28x28 pixels; 4..16 tokens per image.
    return cls(
        min_pixels=28 * 28 * 4,
        max_pixels=28 * 28 * 16,
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
    )


def _qwen_video_processor():
    from transformers import Qwen2VLVideoProcessor

    return Qwen2VLVideoProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)


def _build_qwen(folder: str | Path, *, version: str) -> Path:
    import transformers

    folder = Path(folder)
    torch.manual_seed(0)
    tokenizer = _qwen_tokenizer()
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in _QWEN_SPECIAL}
    vocab_size = len(tokenizer)
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        # head_dim 16 -> 8 rotary frequencies split over (t, h, w)
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [2, 3, 3],
        },
        "tie_word_embeddings": True,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    if version == "2":
        vision_config = {
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 64,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
        }
        config_cls, model_cls = (
            transformers.Qwen2VLConfig,
            transformers.Qwen2VLForConditionalGeneration,
        )
        processor_cls = transformers.Qwen2VLProcessor
    else:
        vision_config = {
            "depth": 2,
            "hidden_size": 32,
            "out_hidden_size": 64,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
            "window_size": 56,
            "fullatt_block_indexes": [1],
        }
        config_cls = transformers.Qwen2_5_VLConfig
        model_cls = transformers.Qwen2_5_VLForConditionalGeneration
        processor_cls = transformers.Qwen2_5_VLProcessor
    config = config_cls(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    model = model_cls(config).eval()
    model.save_pretrained(folder)
    # Without torchvision, transformers 5 cannot build the Qwen2-VL processor object itself
    # (its video processor needs torchvision); a real checkpoint's tokenizer and image
    # processor files are what AutoProcessor reads, so save those parts directly.
    tokenizer.chat_template = QWEN2VL_CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    _qwen_image_processor().save_pretrained(folder)
    try:
        processor = processor_cls(
            image_processor=_qwen_image_processor(),
            tokenizer=tokenizer,
            video_processor=_qwen_video_processor(),
            chat_template=QWEN2VL_CHAT_TEMPLATE,
        )
    except Exception as exc:  # torchvision missing
        logger.debug("processor object not built (%s); saved its parts", exc)
    else:
        processor.save_pretrained(folder)
    return folder


def build_tiny_qwen2vl(folder: str | Path) -> Path:
    """A tiny ``Qwen2VLForConditionalGeneration`` checkpoint with its processor."""
    return _build_qwen(folder, version="2")


def build_tiny_qwen25vl(folder: str | Path) -> Path:
    """A tiny ``Qwen2_5_VLForConditionalGeneration`` checkpoint with its processor."""
    return _build_qwen(folder, version="2.5")


# ---------------------------------------------------------------------------------- Idefics3
def build_tiny_idefics3(folder: str | Path) -> Path:
    """A tiny ``Idefics3ForConditionalGeneration`` checkpoint with its processor."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    torch.manual_seed(0)
    bos, eos, pad = "<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>"
    image_special = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
    row_col = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    vocab, merges = _byte_level_vocab([bos, eos, pad])
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    # Llama 3 adds <|begin_of_text|> in front of every sequence.
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        model_max_length=8192,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": image_special})
    tokenizer.add_tokens(row_col)
    tokenizer.padding_side = "left"
    image_processor_name = (
        "Idefics3ImageProcessor"
        if transformers.utils.is_torchvision_available()
        else "Idefics3ImageProcessorPil"
    )
    # crops of 32 px (the vision tower's image_size); images resized to longest edge 64,
    # so up to 2x2 crops plus the global image.
    image_processor = getattr(transformers, image_processor_name)(
        do_image_splitting=True,
        size={"longest_edge": 64},
        max_image_size={"longest_edge": 32},
    )
    image_seq_len = int(((32 // 8) ** 2) / (2**2))
    processor = transformers.Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len,
        chat_template=IDEFICS3_CHAT_TEMPLATE,
    )
    tokenizer = processor.tokenizer
    config = transformers.Idefics3Config(
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    model = transformers.Idefics3ForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


if __name__ == "__main__":  # pragma: no cover - manual smoke run
    import sys
    import tempfile

    logging.basicConfig(level=logging.INFO)
    root = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
    for name, fn in [
        ("bert", build_tiny_bert),
        ("qwen2vl", build_tiny_qwen2vl),
        ("qwen25vl", build_tiny_qwen25vl),
        ("idefics3", build_tiny_idefics3),
    ]:
        logger.info("%s -> %s", name, fn(root / name))


# ---------------------------------------------------------------------------------- causal LM
def build_tiny_causal_lm(folder: str | Path) -> Path:
    """A 2-layer random ``Qwen2ForCausalLM`` (hidden 32) with the byte-level Qwen tokenizer and
    the Qwen chat template; "True" / "False" are several tokens each in this vocab."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    folder = Path(folder)
    tok = _qwen_tokenizer()
    tok.chat_template = QWEN2VL_CHAT_TEMPLATE
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    Qwen2ForCausalLM(cfg).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
