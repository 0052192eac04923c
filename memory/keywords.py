"""Keyword vectors for hybrid retrieval: BM25 term weights as sparse vectors.

Qdrant Edge's built-in BM25 encoder (tokenizer, stop words, stemming; no model to download)
makes them for both engines, so a memory scores the same on Edge and on a Qdrant server.
The IDF half of BM25 is computed by the engine at query time, over the user's own memories.
It is also a langchain-qdrant `SparseEmbeddings`, for the server engine's vector store.
"""

from __future__ import annotations

import re
from functools import cache

import qdrant_edge
from langchain_qdrant import SparseEmbeddings, SparseVector

from engram.memory.engines.base import Sparse


@cache
def _bm25() -> qdrant_edge.Bm25:
    return qdrant_edge.Bm25()


def document_keywords(text: str) -> Sparse:
    vector = _bm25().embed_document(text)
    return Sparse(list(vector.indices), list(vector.values))


def query_keywords(text: str) -> Sparse:
    vector = _bm25().embed_query(text)
    return Sparse(list(vector.indices), list(vector.values))


class KeywordEmbeddings(SparseEmbeddings):
    """The same encoder behind langchain-qdrant's interface."""

    def embed_documents(self, texts: list[str]) -> list[SparseVector]:
        return [_langchain(document_keywords(text)) for text in texts]

    def embed_query(self, text: str) -> SparseVector:
        return _langchain(query_keywords(text))


def _langchain(vector: Sparse) -> SparseVector:
    return SparseVector(indices=vector.indices, values=vector.values)


# -- the same word: how facts are matched to the words they came from -------------------

_STOPWORDS = frozenset(
    "the and for are was were has have had with that this from they them their there about "
    "user users you your yours not but can will would could should into also very just like "
    "likes liked been being than then what when where which who whom how does did its our "
    "ours she her his him".split()
)


def content_words(text: str) -> set[str]:
    """Words that carry meaning, stemmed so that word forms meet (live/lives/living/lived)."""
    words = re.findall(r"[a-z0-9]+", text.casefold())
    return {stem(w) for w in words if len(w) > 2 and w not in _STOPWORDS}


def stem(word: str) -> str:
    """A crude suffix-stripping stem, enough to match a fact to the words it came from:
    live/lives/living/lived -> "liv", move/moved/moving -> "mov", study/studied -> "study".
    Only a suffix that leaves at least three letters is stripped."""
    for suffix, replacement in (("ies", "y"), ("ied", "y"), ("ing", ""), ("ed", ""), ("es", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + replacement
            if suffix in ("ing", "ed") and _doubled(word):
                word = word[:-1]  # running -> run, stopped -> stop (but calling -> call)
            break
    else:
        if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
            word = word[:-1]
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]  # live -> liv, like lives/living after their suffix
    return word


def _doubled(word: str) -> bool:
    """Ends in a doubled consonant that the suffix doubled (runn, stopp; not add, call)."""
    return len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouylsz"
