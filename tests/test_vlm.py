"""Vision-language backbones (Qwen2-VL, Qwen2.5-VL, Idefics3) on tiny random checkpoints."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from metaembed_rag.backbones import Idefics3Adapter, Qwen2VLAdapter, adapter_for  # noqa: E402
from metaembed_rag.model import MetaEmbedModel  # noqa: E402

logger = logging.getLogger(__name__)

FLICKR = Path(__file__).parents[1] / ".." / "shared" / "data" / "flickr8k"
FAMILIES = ["qwen2vl", "qwen25vl", "idefics3"]
ATOL = 1e-5


def _image(w: int, h: int, seed: int) -> Image.Image:
    gen = torch.Generator().manual_seed(seed)
    data = (torch.rand((h, w, 3), generator=gen) * 255).to(torch.uint8).numpy()
    return Image.fromarray(data, "RGB")


@pytest.fixture(scope="module", params=FAMILIES)
def vlm(request: pytest.FixtureRequest) -> MetaEmbedModel:
    path = request.getfixturevalue(f"tiny_{request.param}_path")
    model = MetaEmbedModel.from_backbone(path, device="cpu", dtype="float32", max_length=256)
    model.family_name = request.param  # type: ignore[attr-defined]
    return model


@pytest.fixture(scope="module")
def images() -> dict[str, Image.Image]:
    # Different sizes -> different numbers of image tokens / crops per item.
    return {"small": _image(40, 30, 1), "tall": _image(60, 110, 2), "wide": _image(120, 70, 3)}


# ------------------------------------------------------------------------------ loading
def test_adapter_picked(vlm: MetaEmbedModel) -> None:
    expected = Idefics3Adapter if vlm.family_name == "idefics3" else Qwen2VLAdapter  # type: ignore[attr-defined]
    assert type(vlm.adapter) is expected
    assert adapter_for(vlm.backbone.config) is expected
    assert vlm.supports_images
    # base model, no LM head
    assert not hasattr(vlm.backbone, "lm_head")


def test_backbone_weights_loaded_from_generation_checkpoint(
    vlm: MetaEmbedModel, request: pytest.FixtureRequest
) -> None:
    """AutoModel on a ...ForConditionalGeneration checkpoint loads every weight (key prefixes)."""
    from safetensors.torch import load_file

    path = request.getfixturevalue(f"tiny_{vlm.family_name}_path")  # type: ignore[attr-defined]
    saved = load_file(str(Path(path) / "model.safetensors"))
    emb = vlm.adapter.input_embeddings().weight
    saved_emb = next(v for k, v in saved.items() if k.endswith("embed_tokens.weight"))
    assert torch.equal(emb, saved_emb)
    n_saved = sum(v.numel() for k, v in saved.items() if not k.startswith("lm_head"))
    n_model = sum(p.numel() for p in vlm.backbone.parameters())
    assert n_model == n_saved


# ------------------------------------------------------------------------------ shapes
def test_shapes_and_norms(vlm: MetaEmbedModel, images: dict[str, Image.Image]) -> None:
    inputs: list[Any] = ["a dog on the grass", images["small"], ("two cats", images["wide"])]
    q = vlm.encode_queries(inputs, batch_size=3)
    d = vlm.encode_documents(inputs, batch_size=3)
    assert q.shape == (3, 16, 64)
    assert d.shape == (3, 64, 64)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(3, 16))
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(3, 64))
    for budget in vlm.budgets:
        assert q[:, : budget.r_q].shape == (3, budget.r_q, 64)
        assert d[:, : budget.r_c].shape == (3, budget.r_c, 64)
    assert torch.isfinite(q).all() and torch.isfinite(d).all()
    # query and document vectors of the same input differ (different Meta tables)
    assert not torch.allclose(q[:, 0], d[:, 0])


def test_input_forms(vlm: MetaEmbedModel, images: dict[str, Image.Image], tmp_path: Path) -> None:
    img = images["tall"]
    png = tmp_path / "img.png"
    img.save(png)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    forms: list[Any] = [img, png, buf.getvalue(), {"image": str(png)}]
    out = vlm.encode_documents(forms, batch_size=4)
    for i in range(1, len(forms)):
        torch.testing.assert_close(out[i], out[0], atol=ATOL, rtol=0)
    pair = vlm.encode_queries([("a photo", img), {"text": "a photo", "image": png}])
    torch.testing.assert_close(pair[0], pair[1], atol=ATOL, rtol=0)
    text = vlm.encode_queries("a photo")
    assert not torch.allclose(text[0], pair[0])


@pytest.mark.skipif(
    not (FLICKR / "images").is_dir(), reason=f"Flickr8k images not found at {FLICKR}"
)
def test_real_flickr_image(vlm: MetaEmbedModel) -> None:
    files = sorted((FLICKR / "images").glob("*.jpg"))[:2]
    if not files:
        pytest.skip(f"no .jpg in {FLICKR / 'images'}")
    out = vlm.encode_documents(files, batch_size=2)
    assert out.shape == (2, 64, 64)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 64))
    alone = vlm.encode_documents(files[1])
    torch.testing.assert_close(alone[0], out[1], atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------ padding
def test_left_padding_invariance(vlm: MetaEmbedModel, images: dict[str, Image.Image]) -> None:
    """An item gives the same vectors alone and batched with longer / shorter inputs."""
    target_text = "a dog runs on the beach"
    target_pair = ("two children", images["small"])
    batch: list[Any] = [
        "a",
        target_text,
        "a very long description of a red car parked in the street near a tree and a house " * 3,
        images["tall"],
        target_pair,
        ("a much longer text that goes with the wide image of the park", images["wide"]),
    ]
    for side in ("query", "document"):
        together = vlm.encode(batch, side, batch_size=len(batch))
        for i in (1, 4):
            alone = vlm.encode([batch[i]], side)
            torch.testing.assert_close(together[i], alone[0], atol=ATOL, rtol=0)
        # a text-only batch (no image in the batch at all) too
        texts = vlm.encode(batch[:3], side, batch_size=3)
        torch.testing.assert_close(texts[1], together[1], atol=ATOL, rtol=0)


def test_batch_is_left_padded(vlm: MetaEmbedModel, images: dict[str, Image.Image]) -> None:
    b = vlm.prepare(["a", "a much longer text input here", images["wide"]], "query")
    mask = b.tensors["attention_mask"]
    assert (mask[:, -1] == 1).all()
    assert mask[0, 0] == 0
    # once a row starts, it stays unmasked (pads only on the left)
    assert (mask.cummax(dim=1).values == mask).all()


def test_mrope_positions_are_used(vlm: MetaEmbedModel, images: dict[str, Image.Image]) -> None:
    """Qwen: the vectors depend on the M-RoPE ids (RoPE is relative, so a uniform shift would
    not show anything); plain 1-D positions on the three axes give different vectors for an
    image input, so the checks on the ids below are about ids the model really uses."""
    if vlm.family_name == "idefics3":  # type: ignore[attr-defined]
        pytest.skip("M-RoPE only")
    from metaembed_rag.backbones import left_padded_position_ids

    batch = vlm.prepare([("a dog runs", images["wide"])], "query")
    meta, _ = vlm.meta_embeddings("query")
    adapter = vlm.adapter
    original = adapter.extra_forward_kwargs

    def plain(b: Any, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
        kw = original(b, ids, mask)
        kw["position_ids"] = left_padded_position_ids(mask).unsqueeze(0).expand(3, -1, -1)
        return kw

    with torch.no_grad():
        ref = adapter.forward(batch, meta)
        adapter.extra_forward_kwargs = plain  # type: ignore[method-assign]
        try:
            moved = adapter.forward(batch, meta)
        finally:
            del adapter.extra_forward_kwargs
    assert not torch.allclose(ref, moved, atol=1e-4)


# ------------------------------------------------------------------------------ positions
def _capture_text_positions(vlm: MetaEmbedModel) -> tuple[list[torch.Tensor], Any]:
    """Record the position ids the text model actually receives."""
    seen: list[torch.Tensor] = []
    text_model = getattr(vlm.backbone, "language_model", None) or vlm.backbone.text_model

    def hook(_mod: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        seen.append(kwargs["position_ids"].detach().clone())

    return seen, text_model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("side", ["query", "document"])
def test_meta_positions_follow_input(
    vlm: MetaEmbedModel, images: dict[str, Image.Image], side: str
) -> None:
    """The appended Meta tokens get positions max+1, max+2, ... (all three M-RoPE axes for
    Qwen), pads are ignored, whatever the padding of the batch."""
    inputs: list[Any] = ["a", ("a dog", images["tall"]), images["small"], "a longer text input"]
    batch = vlm.prepare(inputs, side)  # type: ignore[arg-type]
    seen, handle = _capture_text_positions(vlm)
    try:
        with torch.no_grad():
            vlm.forward(batch, side)  # type: ignore[arg-type]
    finally:
        handle.remove()
    (pos,) = seen
    num_meta = vlm.num_meta_tokens(side)  # type: ignore[arg-type]
    mask = batch.tensors["attention_mask"]
    if pos.dim() == 2:  # 1-D RoPE (Idefics3): (B, L+M)
        pos = pos.unsqueeze(0)
    assert pos.shape[-1] == mask.shape[1] + num_meta
    for row in range(len(inputs)):
        real = mask[row].bool()
        input_pos = pos[:, row, : mask.shape[1]][:, real]
        meta_pos = pos[:, row, mask.shape[1] :]
        start = int(input_pos.max()) + 1
        expected = torch.arange(start, start + num_meta)
        for axis in range(pos.shape[0]):
            assert torch.equal(meta_pos[axis].cpu(), expected), (row, axis)
        # the input starts at 0 whatever its left padding
        assert int(input_pos[:, 0].max()) == 0
        if isinstance(inputs[row], tuple) and pos.shape[0] == 3:
            # an image item's text positions are not plain arange: image tokens share
            # positions, so the Meta tokens start below the sequence length
            assert start < int(real.sum())


def test_qwen_positions_match_get_rope_index(
    vlm: MetaEmbedModel, images: dict[str, Image.Image]
) -> None:
    """Qwen: the adapter's positions equal the model's own get_rope_index on the unpadded
    extended sequence (the reference computation)."""
    if vlm.family_name == "idefics3":  # type: ignore[attr-defined]
        pytest.skip("M-RoPE only")
    item = ("a dog", images["wide"])
    batch = vlm.prepare(["short", item], "query")
    num_meta = vlm.num_meta_tokens("query")
    ids = batch.tensors["input_ids"]
    mask = batch.tensors["attention_mask"]
    ph = vlm.adapter.placeholder_id
    ext_ids = torch.cat([ids, torch.full((2, num_meta), ph)], dim=1)
    ext_mask = torch.cat([mask, torch.ones((2, num_meta), dtype=mask.dtype)], dim=1)
    pos = vlm.adapter.position_ids(batch, ext_ids, ext_mask)  # type: ignore[attr-defined]
    # reference: the image row alone, unpadded
    real = mask[1].bool()
    solo_ids = torch.cat([ids[1][real], torch.full((num_meta,), ph)]).unsqueeze(0)
    solo_types = (solo_ids == vlm.backbone.config.image_token_id).long()
    ref, _ = vlm.backbone.get_rope_index(
        solo_ids, mm_token_type_ids=solo_types, image_grid_thw=batch.tensors["image_grid_thw"]
    )
    ext_real = ext_mask[1].bool()
    assert torch.equal(pos[:, 1, ext_real], ref[:, 0])
    assert (pos[:, 1, ~ext_real] == 0).all()
    # the image block uses 2-D grid positions (h and w axes differ somewhere)
    image_cols = solo_types[0].bool()
    assert not torch.equal(ref[1, 0, image_cols], ref[2, 0, image_cols])


def test_qwen_prepare_matches_family_processor(
    vlm: MetaEmbedModel, images: dict[str, Image.Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Qwen: the adapter's batch is token-for-token what ``Qwen2VLProcessor`` produces from
    the chat-templated prompts (same ids, mask, mm_token_type_ids, pixels, grids)."""
    if vlm.family_name == "idefics3":  # type: ignore[attr-defined]
        pytest.skip("Qwen only")
    from transformers import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin
    from transformers.utils import is_torchvision_available

    adapter = vlm.adapter
    if not is_torchvision_available():
        # Building the processor object needs torchvision only for its video processor.
        monkeypatch.setattr(ProcessorMixin, "check_argument_for_proper_class", lambda *a: None)
    proc = Qwen2VLProcessor(
        image_processor=adapter.image_processor,  # type: ignore[attr-defined]
        tokenizer=adapter.tokenizer,  # type: ignore[attr-defined]
        video_processor=None,
        chat_template=adapter.chat_template,  # type: ignore[attr-defined]
    )
    items: list[Any] = ["a dog", ("two cats running", images["tall"]), images["wide"]]
    ours = vlm.prepare(items, "query", instruction="Find the image.")
    bodies = [
        "Query: Find the image. a dog",
        "Query: Find the image. two cats running",
        "Query: Find the image. Describe the image.",
    ]
    texts = []
    for body, has_image in zip(bodies, [False, True, True], strict=True):
        content: list[dict[str, Any]] = [{"type": "image"}] if has_image else []
        content.append({"type": "text", "text": body})
        texts.append(
            proc.apply_chat_template(
                [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
            )
        )
    ref = proc(
        text=texts, images=[images["tall"], images["wide"]], padding=True, return_tensors="pt"
    )
    for key in (
        "input_ids",
        "attention_mask",
        "mm_token_type_ids",
        "pixel_values",
        "image_grid_thw",
    ):
        assert torch.equal(ref[key], ours.tensors[key]), key


# ------------------------------------------------------------------------------ options
def test_append_one_side(request: pytest.FixtureRequest, images: dict[str, Image.Image]) -> None:
    for family in ("qwen2vl", "idefics3"):
        path = request.getfixturevalue(f"tiny_{family}_path")
        model = MetaEmbedModel.from_backbone(path, append_both_sides=False, max_length=128)
        assert model.num_meta_tokens("query") == 16
        assert model.num_meta_tokens("document") == 64
        inputs: list[Any] = ["a dog", ("a cat", images["small"])]
        q = model.encode_queries(inputs)
        d = model.encode_documents(inputs)
        assert q.shape == (2, 16, 64) and d.shape == (2, 64, 64)
        alone = model.encode_queries(inputs[1])
        torch.testing.assert_close(alone[0], q[1], atol=ATOL, rtol=0)


def test_truncation_keeps_image_tokens(vlm: MetaEmbedModel, images: dict[str, Image.Image]) -> None:
    long_text = "a dog runs on the grass with a red ball " * 40
    item = (long_text, images["wide"])
    full = vlm.prepare([item], "document", max_length=4096)
    cut = vlm.prepare([item, "short"], "document", max_length=100)
    assert full.num_truncated == 0
    assert cut.num_truncated == 1
    assert cut.tensors["attention_mask"][0].sum() <= 100
    image_id = vlm.backbone.config.image_token_id
    n_full = int((full.tensors["input_ids"] == image_id).sum())
    n_cut = int((cut.tensors["input_ids"][0] == image_id).sum())
    assert n_full == n_cut > 0
    tok = vlm.adapter.tokenizer  # type: ignore[attr-defined]
    text = tok.decode(cut.tensors["input_ids"][0][cut.tensors["attention_mask"][0].bool()])
    assert text.rstrip().endswith(("assistant", "Assistant:"))  # template kept whole
    out = vlm.encode_documents([item], max_length=100)
    assert out.shape == (1, 64, 64)
    # an image larger than max_length: the text goes, the image tokens stay whole
    tiny = vlm.prepare([item], "document", max_length=5)
    assert tiny.num_truncated == 1
    assert int((tiny.tensors["input_ids"] == image_id).sum()) == n_full


def test_plain_prompt_without_chat_template(
    tiny_qwen2vl_path: Path, images: dict[str, Image.Image]
) -> None:
    model = MetaEmbedModel.from_backbone(tiny_qwen2vl_path, use_chat_template=False, max_length=128)
    batch = model.prepare([("a dog", images["small"])], "query")
    text = model.adapter.tokenizer.decode(batch.tensors["input_ids"][0])  # type: ignore[attr-defined]
    assert text.startswith("<|im_start|>user\n<|vision_start|><|image_pad|>")
    assert text.endswith("<|vision_end|>Query: a dog<|im_end|>\n<|im_start|>assistant\n")
    assert model.encode_queries([("a dog", images["small"])]).shape == (1, 16, 64)


def test_save_load_round_trip(
    vlm: MetaEmbedModel, images: dict[str, Image.Image], tmp_path: Path
) -> None:
    inputs: list[Any] = ["a dog", ("a cat", images["small"]), images["tall"]]
    before_q = vlm.encode_queries(inputs)
    before_d = vlm.encode_documents(inputs)
    folder = vlm.save_pretrained(tmp_path / "model")
    loaded = MetaEmbedModel.from_pretrained(folder, device="cpu", dtype="float32")
    assert type(loaded.adapter) is type(vlm.adapter)
    torch.testing.assert_close(loaded.encode_queries(inputs), before_q, atol=0, rtol=0)
    torch.testing.assert_close(loaded.encode_documents(inputs), before_d, atol=0, rtol=0)


def test_save_with_embedded_backbone(tiny_qwen2vl_path: Path, tmp_path: Path) -> None:
    model = MetaEmbedModel.from_backbone(tiny_qwen2vl_path, max_length=128)
    img = _image(50, 50, 7)
    before = model.encode_documents([("x", img)])
    folder = model.save_pretrained(tmp_path / "embedded", save_backbone=True)
    loaded = MetaEmbedModel.from_pretrained(folder)
    torch.testing.assert_close(loaded.encode_documents([("x", img)]), before, atol=0, rtol=0)


# ------------------------------------------------------------------------------ errors
def test_unreadable_image_errors(vlm: MetaEmbedModel, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="input 1"):
        vlm.encode_documents(["fine", b"this is not an image"])
    missing = tmp_path / "missing.png"
    with pytest.raises(ValueError, match="missing.png"):
        vlm.encode_queries([missing])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="bad.jpg"):
        vlm.encode_documents([("text", bad)])


def test_skipping_special_tokens_needs_an_adapter_that_marks_them(tiny_qwen2vl_path: Path) -> None:
    """The vision-language adapters mark no special tokens (their image tokens are special
    tokens): ``anchor_skip_special`` is refused when the model is built, naming the fix."""
    assert not Qwen2VLAdapter.marks_special_tokens and not Idefics3Adapter.marks_special_tokens
    with pytest.raises(
        ValueError, match="'qwen2_vl' adapter does not.*anchor_skip_special to false"
    ):
        MetaEmbedModel.from_backbone(
            tiny_qwen2vl_path, anchor="segments", anchor_skip_special=True, max_length=64
        )
