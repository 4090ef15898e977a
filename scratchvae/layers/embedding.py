"""Embedding modules around the op pairs of scratchvae/ops/embedding.py.

``Embedding`` is ``nn.Embedding`` (a table (K, D) initialised N(0, 1));
``ClassBias`` adds an embedding of each image's label, a per-channel bias,
to a feature map. Derivations live in the op docstrings.
"""
import numpy as np

from ..backend import check_int, check_rng, standard_normal
from ..ops.embedding import (class_bias_backward, class_bias_forward, embedding_backward,
                             embedding_forward)
from .base import Module, Parameter


class Embedding(Module):
    """out = table[indices]: indices of any integer shape S -> S + (D,).

    The table (num_embeddings, embedding_dim) is drawn from N(0, 1), as
    PyTorch's. The indices have no gradient: ``backward`` accumulates the
    table's and returns None.
    """

    def __init__(self, num_embeddings, embedding_dim, rng=None, dtype=np.float32):
        self.num_embeddings = check_int("Embedding", "num_embeddings", num_embeddings, 1)
        self.embedding_dim = check_int("Embedding", "embedding_dim", embedding_dim, 1)
        check_rng("Embedding", rng)
        self.weight = Parameter(standard_normal(rng, (self.num_embeddings, self.embedding_dim),
                                                dtype))
        self.cache = None

    def forward(self, indices):
        out, self.cache = embedding_forward(indices, self.weight.data)
        return out

    def backward(self, dout):
        self.weight.accumulate(embedding_backward(dout, self.forward_cache()))
        return None

    def __repr__(self):
        return f"Embedding({self.num_embeddings}, {self.embedding_dim})"


class ClassBias(Module):
    """y = h + table[labels][:, :, None, None]: a learned bias per class and channel.

    h (N, C, H, W), labels (N,) in [0, num_classes); the table
    (num_classes, C) is an Embedding's, drawn from N(0, 1). ``forward(h,
    labels)``; ``backward(dy)`` accumulates the table's gradient and
    returns dh = dy.
    """

    def __init__(self, num_classes, channels, rng=None, dtype=np.float32):
        self.num_classes = check_int("ClassBias", "num_classes", num_classes, 1)
        self.channels = check_int("ClassBias", "channels", channels, 1)
        check_rng("ClassBias", rng)
        self.weight = Parameter(standard_normal(rng, (self.num_classes, self.channels), dtype))
        self.cache = None

    def forward(self, h, labels):
        y, self.cache = class_bias_forward(h, labels, self.weight.data)
        return y

    def backward(self, dy):
        dh, dtable = class_bias_backward(dy, self.forward_cache())
        self.weight.accumulate(dtable)
        return dh

    def __repr__(self):
        return f"ClassBias({self.num_classes}, {self.channels})"
