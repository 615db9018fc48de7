"""Write ``examples/sample_docs/meta-tokens-explained.pdf``: a tiny two-page PDF with a text layer.

The PDF is written by hand (standard PDF 1.4 objects, the built-in Helvetica font, no
dependencies), so anyone can regenerate the sample exactly::

    python examples/make_sample_pdf.py            # rewrites the shipped sample
    python examples/make_sample_pdf.py out.pdf    # somewhere else

``write_pdf`` is also used by the tests to generate PDFs on the fly.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

PAGES = [
    [
        "Meta tokens and late interaction",
        "",
        "MetaEmbed appends a small set of learnable Meta tokens to the input of a",
        "transformer: sixteen for a query and sixty-four for a candidate document.",
        "The final hidden states at those positions form a fixed-size multi-vector",
        "embedding. Queries and documents are compared with late interaction: for",
        "every query vector, take its best dot product with any document vector,",
        "and add these maxima up (MaxSim).",
    ],
    [
        "Budgets: trading quality for speed",
        "",
        "Training with Matryoshka Multi-Vector Retrieval makes every prefix of the",
        "vectors useful on its own. A budget such as (8,16) scores with the first",
        "eight query vectors and the first sixteen document vectors. The index",
        "stores all sixty-four vectors once, so the budget can change per query",
        "without re-encoding: (1,1) is a plain single-vector search, (16,64) the",
        "most accurate and the slowest.",
    ],
]


def _escape(line: str) -> str:
    line.encode("latin-1")  # Helvetica with the standard encoding: Latin-1 text only
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def write_pdf(path: str | Path, pages: list[list[str]], title: str = "") -> Path:
    """Write a minimal PDF: one US-Letter page per entry of ``pages`` (lines of text, 11 pt
    Helvetica; lines longer than 90 characters are wrapped). Returns the path."""
    objects: list[bytes] = []  # object i+1

    def add(body: str | bytes) -> int:
        objects.append(body.encode("latin-1") if isinstance(body, str) else body)
        return len(objects)

    catalog = add("")  # filled in below
    pages_obj = add("")
    font = add("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    kids = []
    for lines in pages:
        wrapped = [w for line in lines for w in (textwrap.wrap(line, 90) or [""])]
        ops = ["BT", "/F1 11 Tf", "14 TL", "72 720 Td"]
        ops += [f"({_escape(line)}) Tj T*" for line in wrapped]
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        content = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        kids.append(
            add(
                f"<< /Type /Page /Parent {pages_obj} 0 R /MediaBox [0 0 612 792] "
                f"/Resources << /Font << /F1 {font} 0 R >> >> /Contents {content} 0 R >>"
            )
        )
    objects[catalog - 1] = f"<< /Type /Catalog /Pages {pages_obj} 0 R >>".encode()
    refs = " ".join(f"{k} 0 R" for k in kids)
    objects[pages_obj - 1] = f"<< /Type /Pages /Kids [{refs}] /Count {len(kids)} >>".encode()
    info = add(f"<< /Title ({_escape(title)}) /Producer (metaembed-rag) >>") if title else None

    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    trailer = f"<< /Size {len(objects) + 1} /Root {catalog} 0 R"
    trailer += f" /Info {info} 0 R >>" if info else " >>"
    out += b"trailer\n" + trailer.encode() + b"\nstartxref\n%d\n%%%%EOF\n" % xref
    path = Path(path)
    path.write_bytes(bytes(out))
    return path


def main() -> None:
    default = Path(__file__).resolve().parent / "sample_docs" / "meta-tokens-explained.pdf"
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    target.parent.mkdir(parents=True, exist_ok=True)
    write_pdf(target, PAGES, title="Meta tokens explained")
    print(f"wrote {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
