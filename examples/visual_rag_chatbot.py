"""Visual-document RAG chatbot on the sample documents, offline.

Indexes ``examples/sample_docs`` (text, Markdown and a PDF) into a collection folder, then
serves the demo page: upload more PDFs / images / text files, ask questions, see the retrieved
pages and passages with their scores, move the budget slider, compare budgets.

    pip install -e ".[app,default-model]"
    python examples/visual_rag_chatbot.py                   # then open http://127.0.0.1:8000/
    python examples/visual_rag_chatbot.py --port 8080 --index /tmp/my-demo
    python examples/visual_rag_chatbot.py --llm my_llms:chat   # answers by your LLM
    python examples/visual_rag_chatbot.py --once "What is a retrieval budget?"   # no server

``--llm module:attr`` names a LlamaIndex LLM or a LangChain chat model (or a zero-argument
function returning one), e.g. a file ``my_llms.py`` holding
``from langchain_ollama import ChatOllama; chat = ChatOllama(model="llama3.2")``. Without it
the answer is extractive: the retrieved sentences that answer the question best (ranked by
meaning with the collection's model and by the question's words, which are highlighted).
With ``--index DIR`` the collection (and the files uploaded through the page) is kept:
re-running re-indexes only new or changed files.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metaembed_rag.app import load_llm, serve
from metaembed_rag.app.server import DemoState
from metaembed_rag.collection import Collection

SAMPLE_DOCS = Path(__file__).resolve().parent / "sample_docs"


def main(argv: Sequence[str] | None = None, *, model: Any = None) -> int:
    """Index the samples, then serve (or answer one ``--once`` question and return).

    ``model``: a loaded ``MetaEmbedModel`` to use instead of ``--model`` (for tests).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--index", help="collection folder, kept between runs (default: a new temporary folder)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", help="model name or folder (default: the built-in model)")
    parser.add_argument("--llm", help="module:attr of a LlamaIndex LLM / LangChain chat model")
    parser.add_argument(
        "--budget", help="default budget 'r_q,r_c' (default: the model's largest trained one)"
    )
    parser.add_argument("--once", metavar="QUESTION", help="answer one question and exit")
    args = parser.parse_args(argv)
    if args.index is None:
        args.index = str(Path(tempfile.mkdtemp(prefix="metaembed-chatbot-")) / "index")

    collection = Collection.open_or_create(args.index, model=model or args.model)
    report = collection.add_paths([SAMPLE_DOCS], progress=False)
    print(report.summary())
    llm = load_llm(args.llm) if args.llm else None

    if args.once:
        state = DemoState(args.index, collection=collection, llm=llm, default_budget=args.budget)
        out = state.ask({"query": args.once, "k": 3})
        print(f"\nQ: {args.once}  (budget ({out['budget']}), {out['latency_ms']:.0f} ms)")
        answer = out["answer"]
        print(f"A ({answer['mode']}): {answer.get('text') or answer.get('error')}")
        for r in out["results"]:
            where = r["source"] + (f", page {r['page']}" if r["page"] else "")
            print(f"  #{r['rank'] + 1} {r['score']:.3f}  {where}")
        return 0

    url = f"http://{args.host}:{args.port}/"
    print(f"Index: {args.index}. Starting the demo on {url} ...")
    serve(
        args.index,
        host=args.host,
        port=args.port,
        llm=llm,
        collection=collection,
        default_budget=args.budget,
        on_ready=lambda: print(f"Ready: open {url} (Ctrl-C stops the server)", flush=True),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
