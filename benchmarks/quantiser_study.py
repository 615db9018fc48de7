"""Why no storage kind reaches 4 KiB per chunk at (16,64): quantisers against the bit budget.

A study, not a storage kind: it measures, on the zero-shot suite and the default model's cached
vectors (``metaembed-rag eval`` or ``benchmarks/compression.py --parts quality`` fills the
cache), how macro nDCG@10 at every budget moves when the K=64 candidate vectors are coded in
fewer bits, for coders an index could use:

* ``residualB`` - the shipped PLAID-style kinds (``VectorCodec``), with their automatic
  codebook (B bits per dimension plus a 2-byte centroid id per vector);
* ``transformN`` - transform coding at N bits per vector, the best rate/distortion coder tried:
  each chunk keeps its centre (the mean of its vectors, float16, 768 bytes per chunk), each
  vector slot k its offset ``o_k`` (the mean over the corpus sample of ``x_k - centre``); what
  is left is rotated onto the principal axes of the corpus sample and each axis gets 0-8 bits
  by reverse water-filling on its variance times the vectors' own energy along it (quantile
  buckets, bucket means as values). All statistics come from the corpus being coded (as an
  index build would train on its first batch), never from queries or judgments;
* ``transform384-unit`` - ``transform384`` with the decoded vectors rescaled to unit length (as
  the residual kinds decode);
* ``tiered384`` - transform coding with more bits for the first slots (the ones the small
  budgets read): slots 0-7 at 1024 bits, 8-15 at 512, 16-63 at 256 (48 bytes per vector on
  average, as ``transform384``), each slot group with its own axes and allocation;
* ``tiered384-oQ`` - ``tiered384`` where a vector whose residual is longer than the Q-th
  percentile of the sample's is coded shrunk to that length and stored with its float16 shrink
  factor (2 more bytes per vector), so that the quantiser's range, fitted to typical
  residuals, does not clip it;
* ``pca128`` - a linear projection of both sides to 128 dimensions (the corpus sample's
  principal axes, then unit length): what a projection costs before any quantisation.

It also prints, per query vector j, the nDCG@10 of ranking by that vector alone
(``max_k <q_j, x_k>``): with the anchored default model only j=0 ranks (the others are near
zero), so the larger budgets add many small terms whose coding noise sums up (see
``docs/storage.md``).

Usage::

    python benchmarks/quantiser_study.py --max-queries 300 --json study.json
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path

import _env  # before numpy / torch: thread settings, import paths

_env.setup(2)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _suite import decoded, dev_sets, suite_sets  # noqa: E402

logger = logging.getLogger("quantiser_study")
HERE = Path(__file__).resolve().parent
SAMPLE_CHUNKS = 20_000
BUCKET_SAMPLE = 200_000


def _f16(x: torch.Tensor) -> torch.Tensor:
    return x.half().float()


def _buckets(values: torch.Tensor, bits: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Quantile edges and bucket means of ``values`` for ``2**bits`` buckets."""
    flat = values.reshape(-1)
    flat = flat[torch.randperm(flat.numel(), generator=gen)[:BUCKET_SAMPLE]]
    n = 2**bits
    edges = torch.quantile(flat, torch.linspace(0, 1, n + 1)[1:-1])
    which = torch.bucketize(flat, edges)
    means = torch.stack([flat[which == i].mean() for i in range(n)])
    return edges, means


def _principal_axes(
    x: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The row numbers of a sample of ``x``'s chunks, and the eigenvalues (largest first) and
    axes ``(D, D)`` of the second moment of their vectors."""
    d = x.shape[-1]
    idx = torch.randperm(x.shape[0], generator=gen)[:SAMPLE_CHUNKS]
    flat = x[idx].reshape(-1, d)
    lam, axes = torch.linalg.eigh(flat.T @ flat / flat.shape[0])
    return idx, lam.flip(0).clamp_min(1e-12), axes.flip(1)


def transform_code(
    x: torch.Tensor,
    plan: list[tuple[int, int, int]],
    seed: int = 0,
    unit: bool = False,
    outlier: float | None = None,
    gain: bool = False,
    unit_shape: bool = False,
) -> torch.Tensor:
    """``x`` ``(N, K, D)`` coded by transform coding (see the module docstring), decoded.

    ``plan`` lists slot groups ``(start, end, bits per vector)``: each group gets its own
    principal axes (of its slots' vectors), scales and bit allocation; ``[(0, K, b)]`` is the
    uniform coder ``transform<b>``. ``unit`` rescales the decoded vectors to unit length.
    ``outlier`` (a quantile, e.g. 0.99): a vector whose residual is longer than that quantile
    of the sample's residual lengths ``tau`` is coded shrunk by ``s = |residual| / tau`` and
    decoded times ``s`` (``s`` float16, one per vector; 1 for every other vector).
    ``gain``: gain-shape coding, no threshold: every residual is coded at unit length (scales,
    buckets and allocation fitted on the sample's unit residuals) and decoded times its own
    float16 length; ``unit_shape`` also rescales the decoded shape to unit length first, so a
    decoded residual is exactly as long as the stored length.
    """
    gen = torch.Generator().manual_seed(seed)
    d = x.shape[-1]
    centre = _f16(x.mean(1, keepdim=True))
    out = torch.empty_like(x)
    for start, end, bits_per_vector in plan:
        part = x[:, start:end]
        idx, lam, axes = _principal_axes(part, gen)
        centred = x[idx, start:end] - x[idx].mean(1, keepdim=True)  # around the chunk's centre
        offset = centred.mean(0, keepdim=True)  # (1, slots, D) per-slot offsets
        sample = centred - offset
        if gain:
            sample = torch.nn.functional.normalize(sample, dim=-1)
        coef = sample @ axes
        scale = coef.reshape(-1, d).std(0).clamp_min(1e-8)
        importance = lam * scale**2

        def alloc(threshold: float, importance: torch.Tensor = importance) -> torch.Tensor:
            return (0.5 * torch.log2(importance / threshold)).clamp(0, 8).round()

        lo, hi = 1e-14, float(importance.max()) * 4
        for _ in range(80):  # the largest allocation within the bit budget
            mid = (lo * hi) ** 0.5
            lo, hi = (mid, hi) if alloc(mid).sum() > bits_per_vector else (lo, mid)
        bits = alloc(hi).int()
        resid = part - centre - offset
        shrink = torch.ones(1)
        if outlier is not None:
            lengths = (centred - offset).norm(dim=-1).reshape(-1)
            tau = torch.quantile(
                lengths[torch.randperm(lengths.numel(), generator=gen)[:BUCKET_SAMPLE]], outlier
            )
            shrink = _f16((resid.norm(dim=-1, keepdim=True) / tau).clamp_min(1.0))
        if gain:
            shrink = _f16(resid.norm(dim=-1, keepdim=True)).clamp_min(1e-4)
        y = ((resid / shrink) @ axes) / scale
        coded = torch.zeros_like(y)
        for b in sorted(set(bits.tolist()) - {0}):
            cols = (bits == b).nonzero().squeeze(1)
            edges, means = _buckets(coef[..., cols] / scale[cols], b, gen)
            coded[..., cols] = means[torch.bucketize(y[..., cols], edges)]
        logger.info("slots %d-%d at %d bits: bits per axis %s", start, end - 1,
                    bits_per_vector, torch.bincount(bits).tolist())  # fmt: skip
        shape = (coded * scale) @ axes.T
        if unit_shape:
            shape = torch.nn.functional.normalize(shape, dim=-1)
        out[:, start:end] = centre + offset + shrink * shape
    return torch.nn.functional.normalize(out, dim=-1) if unit else out


def pca_axes(x: torch.Tensor, width: int, seed: int = 0) -> torch.Tensor:
    """The first ``width`` principal axes ``(D, width)`` of a sample of ``x``."""
    return _principal_axes(x, torch.Generator().manual_seed(seed))[2][:, :width]


#: ``tiered384``: slots 0-7 at 128 bytes, 8-15 at 64, 16-63 at 32 (48 bytes a vector on average).
TIERED384 = [(0, 8, 1024), (8, 16, 512), (16, 64, 256)]
#: name -> (bytes per vector, bytes per chunk besides the vectors, coder). ``None`` coder: pca128.
CODERS: dict[str, tuple[float, int, Callable[[torch.Tensor], torch.Tensor] | None]] = {
    "bfloat16": (768, 0, lambda x: x.to(torch.bfloat16).float()),
    "residual4": (194, 0, lambda x: decoded("residual4", x)),
    "residual2": (98, 0, lambda x: decoded("residual2", x)),
    "transform1536": (192, 768, lambda x: transform_code(x, [(0, x.shape[1], 1536)])),
    "transform768": (96, 768, lambda x: transform_code(x, [(0, x.shape[1], 768)])),
    "transform384": (48, 768, lambda x: transform_code(x, [(0, x.shape[1], 384)])),
    "transform384-unit": (48, 768, lambda x: transform_code(x, [(0, x.shape[1], 384)], unit=True)),
    "tiered384": (48, 768, lambda x: transform_code(x, TIERED384)),
    # + a float16 shrink factor per vector (2 bytes) for the longest residuals
    "tiered384-o99": (50, 768, lambda x: transform_code(x, TIERED384, outlier=0.99)),
    "tiered384-o95": (50, 768, lambda x: transform_code(x, TIERED384, outlier=0.95)),
    "tiered384-o90": (50, 768, lambda x: transform_code(x, TIERED384, outlier=0.90)),
    # gain-shape: every residual coded at unit length, its float16 length stored (2 bytes)
    "tiered384-g": (50, 768, lambda x: transform_code(x, TIERED384, gain=True)),
    "tiered384-gu": (50, 768, lambda x: transform_code(x, TIERED384, gain=True, unit_shape=True)),
    "transform384-g": (50, 768, lambda x: transform_code(x, [(0, x.shape[1], 384)], gain=True)),
    "transform384-gu": (
        50,
        768,
        lambda x: transform_code(x, [(0, x.shape[1], 384)], gain=True, unit_shape=True),
    ),
    "pca128": (256, 0, None),  # bfloat16 at 128 dimensions
}


def run(args: argparse.Namespace) -> dict:
    from metaembed_rag.scoring import maxsim

    if args.dev_recipe is not None:
        model_budgets, sets = dev_sets(
            args.dev_recipe, args.distractors, args.max_queries, args.cache_dir
        )
    else:
        model_budgets, sets = suite_sets(args.suite, args.max_queries, args.cache_dir)
    budgets = [b.as_tuple() for b in model_budgets]
    per_set: dict[str, dict] = {}
    for st in sets:
        queries, docs = st.queries, st.docs
        row: dict = {"per_query_vector": [
            st.ndcg(maxsim(queries[:, j : j + 1], docs)) for j in range(queries.shape[1])
        ]}  # fmt: skip
        for coder in args.coders:
            fn = CODERS[coder][2]
            if fn is None:
                axes = pca_axes(docs, 128)
                norm = torch.nn.functional.normalize
                q, dec = norm(queries @ axes, dim=-1), norm(docs @ axes, dim=-1)
            else:
                q, dec = queries, fn(docs)
            row[coder] = [st.ndcg(maxsim(q, dec, b)) for b in budgets]
            logger.info("%s %s %s", st.name, coder, " ".join(f"{v:.4f}" for v in row[coder]))
        per_set[st.name] = row
    names = list(per_set)
    macro = {c: np.mean([per_set[n][c] for n in names], axis=0).tolist() for c in args.coders}
    pqv = np.mean([per_set[n]["per_query_vector"] for n in names], axis=0).tolist()
    return {"budgets": [f"{a},{b}" for a, b in budgets], "sets": names, "per_set": per_set,
            "macro": macro, "macro_per_query_vector": pqv, "max_queries": args.max_queries}  # fmt: skip


def report(res: dict) -> None:
    pqv = res["macro_per_query_vector"]
    print(f"\nmacro nDCG@10 of query vector j alone (max over 64 document vectors), {len(pqv)} j:")
    rest = pqv[1:]
    print(f"j=0: {pqv[0]:.4f}; j=1..{len(rest)}: mean {np.mean(rest):.4f}, max {np.max(rest):.4f}")
    ref = res["macro"].get("bfloat16")
    print(f"\nmacro nDCG@10 over {len(res['sets'])} sets (first {res['max_queries']} queries each)")
    print("| coder | bytes/vector | bytes/chunk (64 vectors + centre) | "
          + " | ".join(f"({b})" for b in res["budgets"]) + " |")  # fmt: skip
    print("|---|---|---|" + "---|" * len(res["budgets"]))
    for coder, vals in res["macro"].items():
        per_vec, extra, _ = CODERS[coder]
        cells = [f"{v:.4f}" + ("" if ref is None or coder == "bfloat16" else f" ({v - r:+.4f})")
                 for v, r in zip(vals, ref or vals, strict=True)]  # fmt: skip
        print(f"| {coder} | {per_vec:g} | {64 * per_vec + extra:.0f} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", type=Path, default=HERE / "zero-shot-suite.txt")
    p.add_argument("--max-queries", type=int, default=300)
    p.add_argument("--coders", nargs="+", default=list(CODERS), choices=list(CODERS))
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument(
        "--dev-recipe", type=Path, default=None,
        help="choose coders on this training recipe's hard dev split (held-out training "
        "pairs, one set per source) instead of the suite, e.g. scripts/default-model.toml",
    )  # fmt: skip
    p.add_argument("--distractors", type=int, default=2000,
                   help="with --dev-recipe: training positives added per source")  # fmt: skip
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if "bfloat16" not in args.coders:
        args.coders.insert(0, "bfloat16")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    res = run(args)
    report(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
