"""The visual-document RAG chatbot demo: ``metaembed-rag serve --index DIR``.

A small local web page over a :class:`~metaembed_rag.collection.Collection`: upload PDFs,
images and text files, index them, ask questions, see the retrieved pages / passages with
their scores at any trained budget and the measured search latency, and get an answer from a
LlamaIndex / LangChain model (``llm=``) or an extractive one.

Needs the ``app`` extra (FastAPI, uvicorn, python-multipart): ``pip install "metaembed-rag[app]"``.

>>> from metaembed_rag.app import serve                   # doctest: +SKIP
>>> serve("my-index", port=8000)                          # doctest: +SKIP
"""

from __future__ import annotations

from .answer import LLMAdapter, extractive_answer, load_llm, wrap_llm
from .server import create_app, serve

__all__ = ["LLMAdapter", "create_app", "extractive_answer", "load_llm", "serve", "wrap_llm"]
