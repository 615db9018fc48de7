"""MLLMReranker on tiny random models: the probability arithmetic by hand from the model's
logits, batch vs one-by-one, prompts for each input kind, top_n and fusion."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_models import build_tiny_causal_lm

from metaembed_rag.rerank import MLLMReranker, RerankPrompt, fuse_scores


@pytest.fixture(scope="module")
def tiny_lm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm") / "lm")


def _image(seed: int) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    arr = (torch.rand(40, 56, 3, generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(arr)


def _hand_prob(r: MLLMReranker, text: str, images: list) -> float:
    """P(True) computed here: run the model on prompt + each word, sum the words' token log
    probabilities, softmax over the two."""
    logps = []
    for word in r.prompt.answers:
        wid = r.tokenizer.encode(word, add_special_tokens=False)
        if images:
            enc = r.processor(text=[text], images=[images], return_tensors="pt")
        else:
            enc = r.tokenizer([text], return_tensors="pt", add_special_tokens=False)
        n = enc["input_ids"].shape[1]
        ids = torch.cat([enc["input_ids"], torch.tensor([wid[:-1]], dtype=torch.long)], dim=1)
        inputs = {**enc, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
        with torch.no_grad():
            logits = r.model(**inputs).logits[0].double()
        total = 0.0
        for j, tok in enumerate(wid):
            row = logits[n - 1 + j]
            total += float(row[tok] - torch.logsumexp(row, dim=0))
        logps.append(total)
    a, b = logps
    return 1.0 / (1.0 + torch.exp(torch.tensor(b - a)).item())


CANDS = ["a dog in the park", "the red car", "two people on the beach with a ball", "snow"]


def test_text_lm_probability_by_hand_and_batching(tiny_lm_path: Path) -> None:
    r = MLLMReranker.from_pretrained(tiny_lm_path, device="cpu", batch_size=3)
    assert all(len(w) > 1 for w in r.answer_ids)  # the multi-token path
    scores = r.score("where is the dog?", CANDS)
    for cand, got in zip(CANDS, scores, strict=True):
        text, images = r.build_prompt("where is the dog?", cand)
        assert got == pytest.approx(_hand_prob(r, text, images), abs=1e-6)
        assert 0.0 < got < 1.0
    one = MLLMReranker(r.model, r.tokenizer, batch_size=1).score("where is the dog?", CANDS)
    assert one == pytest.approx(scores, abs=1e-6)


def test_single_token_answers_are_softmax_of_two_logits(tiny_lm_path: Path) -> None:
    prompt = RerankPrompt(question="Relevant? Answer 1 or 0.", answers=("1", "0"))
    r = MLLMReranker.from_pretrained(tiny_lm_path, device="cpu", prompt=prompt, batch_size=4)
    assert all(len(w) == 1 for w in r.answer_ids)
    scores = r.score("where is the dog?", CANDS)
    text, _ = r.build_prompt("where is the dog?", CANDS[2])
    enc = r.tokenizer([text], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        last = r.model(**enc).logits[0, -1].double()
    t, f = r.answer_ids[0][0], r.answer_ids[1][0]
    hand = torch.softmax(torch.stack([last[t], last[f]]), 0)[0].item()
    assert scores[2] == pytest.approx(hand, abs=1e-6)
    one = [r.score("where is the dog?", [c])[0] for c in CANDS]
    assert one == pytest.approx(scores, abs=1e-6)


def test_prompt_text_and_chat_template(tiny_lm_path: Path) -> None:
    prompt = RerankPrompt(
        query_label="Q:", candidate_label="Doc:", question="Match? True or False."
    )
    r = MLLMReranker.from_pretrained(tiny_lm_path, device="cpu", prompt=prompt)
    text, images = r.build_prompt("cats", "a cat sleeps")
    assert images == []
    assert "<|im_start|>user\nQ: cats\nDoc: a cat sleeps\nMatch? True or False.<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="no image processor"):
        r.build_prompt("cats", _image(0))


def test_top_n_and_fusion(tiny_lm_path: Path) -> None:
    r = MLLMReranker.from_pretrained(tiny_lm_path, device="cpu")
    probs = r.score("dog", CANDS)
    ranked = r.rerank("dog", CANDS, top_n=2)
    order = sorted(range(4), key=lambda i: (-probs[i], i))
    assert [i for i, _ in ranked] == order[:2]
    assert [s for _, s in ranked] == pytest.approx([probs[i] for i in order[:2]])
    first = [4.0, 3.0, 2.0, 1.0]
    fused = MLLMReranker(r.model, r.tokenizer, fusion_weight=0.25).rerank(
        "dog", CANDS, first_stage_scores=first
    )
    want = fuse_scores(probs, first, 0.25)
    assert dict(fused) == pytest.approx(dict(enumerate(want)))
    assert want[0] == pytest.approx(0.75 * probs[0] + 0.25)
    with pytest.raises(ValueError, match="fusion weight"):
        fuse_scores([0.5], [1.0], 1.5)


def test_idefics3_images_text_and_pairs(tiny_idefics3_path: Path) -> None:
    r = MLLMReranker.from_pretrained(tiny_idefics3_path, device="cpu", batch_size=2)
    assert r.processor is not None
    # prompt building for each input kind
    text, images = r.build_prompt(_image(1), ("a dog", _image(2)))
    assert len(images) == 2 and text.count("<image>") == 2
    assert text.index("Query:") < text.index("Candidate: a dog")
    text, images = r.build_prompt({"text": "dog"}, "a dog runs")
    assert images == [] and "<image>" not in text
    cands = [_image(3), ("two dogs", _image(4)), _image(5)]
    scores = r.score("a dog", cands)
    for cand, got in zip(cands, scores, strict=True):
        t, imgs = r.build_prompt("a dog", cand)
        assert got == pytest.approx(_hand_prob(r, t, imgs), abs=1e-5)
    one = MLLMReranker(r.model, r.tokenizer, r.processor, batch_size=1).score("a dog", cands)
    assert one == pytest.approx(scores, abs=1e-5)
    mixed = r.score("a dog", ["text only", _image(3)])
    assert mixed[1] == pytest.approx(scores[0], abs=1e-5)


def test_qwen2vl_text_path(tiny_qwen2vl_path: Path) -> None:
    r = MLLMReranker.from_pretrained(tiny_qwen2vl_path, device="cpu", batch_size=4)
    scores = r.score("where is the dog?", CANDS)
    one = [r.score("where is the dog?", [c])[0] for c in CANDS]
    assert one == pytest.approx(scores, abs=1e-5)
    if r.processor is None:  # no torchvision here: images are refused with the reason
        with pytest.raises(ValueError, match="torchvision"):
            r.build_prompt("dog", _image(0))
