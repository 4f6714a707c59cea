"""In-process BM25 retrieval over short texts with ``bm25s`` (envs.md §4.6 WebShop search, §5.6 Search-QA).

One small wrapper so both embedded envs and the retriever server tokenize, score and break ties the same
way. Tokenization is ours (lower-case word characters minus a short stop-word list) rather than bm25s'
default so a query and the corpus always share one tokenizer, and an all-stop-word query simply scores
nothing instead of raising.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_WORD = re.compile(r"[a-z0-9]+")
_STOPWORD_TEXT = (
    "a an and are as at be by for from has have he her his i in is it its me my of on or she that the "
    "their them they this to was were what when where which who whom why will with you your"
)
STOPWORDS = frozenset(_STOPWORD_TEXT.split(" "))


def tokenize(text: str) -> list[str]:
    """Lower-case alphanumeric tokens without stop words."""
    return [t for t in _WORD.findall(text.lower()) if t not in STOPWORDS]


class BM25Index:
    """A BM25 index over a fixed list of texts; ``search`` returns (doc index, score) best first.

    Args:
        texts: the documents, indexed by position.
    """

    def __init__(self, texts: Sequence[str]) -> None:
        import bm25s

        self.size = len(texts)
        self._retriever = bm25s.BM25()
        # bm25s needs at least one token per document to build its vocabulary; an empty document gets a
        # placeholder that no query can produce (queries are tokenized by the same regex).
        corpus = [tokenize(t) or ["\x00empty"] for t in texts]
        self._retriever.index(corpus, show_progress=False)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """Top-``k`` documents with a positive score; ties broken by document index (deterministic)."""
        import numpy as np  # lazily: the env packages are imported to validate a config (t2po train --dry-run)

        tokens = [t for t in tokenize(query) if t in self._retriever.vocab_dict]
        if not tokens or k <= 0 or self.size == 0:
            return []
        scores = np.asarray(self._retriever.get_scores(tokens), dtype=np.float64)
        # Stable sort on -score keeps equal-score documents in index order.
        order = np.argsort(-scores, kind="stable")[:k]
        return [(int(i), float(scores[i])) for i in order if scores[i] > 0.0]
