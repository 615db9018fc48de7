"""Quickstart: encode passages once, score them at every budget.

Run: python examples/quickstart.py
"""

from metaembed_rag import MetaEmbedModel, maxsim

passages = [
    "Insulin resistance in muscle and liver is a major cause of type 2 diabetes.",
    "The Moon is Earth's only natural satellite.",
    "Late interaction sums, over query vectors, the best match among document vectors.",
]
model = MetaEmbedModel.from_pretrained("metaembed-minilm-l6")  # the embedded default, offline
docs = model.encode_documents(passages)  # (3, 64, 384): stored once at full size
query = model.encode_queries(["What causes diabetes?"])  # (1, 16, 384)
for budget in model.budgets:
    scores = maxsim(query, docs, budget)[0]
    best = int(scores.argmax())
    print(f"budget {budget}: best passage {best} ({scores[best]:.3f}): {passages[best][:60]}")
