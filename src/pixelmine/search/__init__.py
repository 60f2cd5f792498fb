"""Similarity search: a persisted vector index over a backbone's features (``index/``).

    >>> ws.similar("3fa2", k=10)            # an image id prefix, a catalogued path, or a new file

The index is exact inner product (faiss ``IndexFlatIP``) on L2-normalised vectors, i.e. cosine similarity:
exact search answers 1,000 queries over 100,000 x 512 vectors in about 2 s on 2 cores, so an approximate
index would only cost recall at the sizes pixelmine targets on a laptop.
"""

from .index import VectorIndex, index_dir
from .query import Neighbour, similar

__all__ = ["Neighbour", "VectorIndex", "index_dir", "similar"]
