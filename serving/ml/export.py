"""A tracker's head as ONNX, alone (sentence vectors in) or joined to the encoder (token ids in).

Pure numpy + onnx. The head graph reproduces ``labeling.ml.training.LinearScorer``:
``features @ W + b``, then a sigmoid (concepts: P(yes), one column) or a softmax over the labels
(topics: one column per label, in the manifest's order). The features are the sentence vector, or
(``ngrams``) the vector beside its text's token n-gram features, which the graph computes from the
token ids (``input_ids``, a second input) with ``TfIdfVectorizer`` as ``trackers.ml.ngrams`` does:
each n-gram of the vocabulary present weighs its idf, and the row is scaled to unit length.

The standalone graph appends to the encoder what ``trackers.ml.embedding.OnnxEncoder`` does after
it (mean pooling over the attention mask, L2 normalisation) and then the head, so that one file maps
token ids to scores.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trackers.ml.ngrams import Ngrams

OPSET = 17
IR_VERSION = 8  # every onnxruntime since 1.10 reads it
VECTORS = "embedding"  # the head's input: (n, dim) float32 sentence vectors
TOKENS = "input_ids"  # n-gram heads' second input: (n, tokens) int64, the encoder's own token ids
SCORES = "scores"  # its output: (n, 1) P(yes), or (n, labels) probabilities
NGRAMS = "ngram_features"


class NotExportable(ValueError):
    """A head whose features have no ONNX form."""


def head_model(
    coef: np.ndarray,
    intercept: np.ndarray | float,
    *,
    topic: bool,
    featurizer: str,
    ngrams: Ngrams | None = None,
) -> onnx.ModelProto:
    """The head alone: ``embedding`` (n, dim) in, and for n-gram heads ``input_ids`` (n, tokens);
    ``scores`` out."""
    if featurizer not in ("embedding", "ngrams"):
        raise NotExportable(f"features {featurizer!r} cannot be exported to ONNX")
    if featurizer == "ngrams" and (ngrams is None or not len(ngrams)):
        raise NotExportable("an n-gram head needs its vocabulary to be exported")
    weights = np.asarray(coef, dtype=np.float32)
    weights = weights if weights.ndim == 2 else weights.reshape(-1, 1)
    bias = np.asarray(intercept, dtype=np.float32).reshape(-1)
    features, outputs = weights.shape
    if bias.shape != (outputs,):
        raise ValueError(f"{outputs} weight columns but {bias.size} intercepts")
    if topic and outputs < 2:
        raise ValueError("a topic head has a column per label")
    counted = ngrams if featurizer == "ngrams" else None
    dim = features - (len(counted) if counted is not None else 0)
    inputs = [helper.make_tensor_value_info(VECTORS, TensorProto.FLOAT, ["n", dim])]
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    head_in = VECTORS
    if counted is not None:
        inputs.append(helper.make_tensor_value_info(TOKENS, TensorProto.INT64, ["n", "tokens"]))
        nodes, initializers = _ngram_nodes(counted, TOKENS, NGRAMS)
        nodes.append(helper.make_node("Concat", [VECTORS, NGRAMS], ["head_features"], axis=1))
        head_in = "head_features"
    head_nodes, head_initializers = _head_nodes(head_in, SCORES, weights, bias, topic)
    graph = helper.make_graph(
        nodes + head_nodes,
        "tracker_head",
        inputs,
        [helper.make_tensor_value_info(SCORES, TensorProto.FLOAT, ["n", outputs])],
        initializer=initializers + head_initializers,
    )
    return _model(graph)


def _ngram_nodes(
    ngrams: Ngrams, tokens: str, out: str
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """``trackers.ml.ngrams.Ngrams.features`` as ONNX: presence × idf, rows scaled to unit length."""
    pool = np.concatenate([ngrams.unigrams, ngrams.bigrams.reshape(-1)]).astype(np.int64)
    initializers = [
        numpy_helper.from_array(np.asarray([1], dtype=np.int64), "ngram_axis"),
        numpy_helper.from_array(np.asarray(1e-12, dtype=np.float32), "ngram_eps"),
    ]
    nodes = [
        helper.make_node(
            "TfIdfVectorizer",
            [tokens],
            ["ngram_weighted"],
            mode="IDF",  # each n-gram present weighs its idf, however often it occurs
            min_gram_length=1,
            max_gram_length=2,
            max_skip_count=0,
            pool_int64s=pool.tolist(),
            ngram_counts=[0, len(ngrams.unigrams)],
            ngram_indexes=list(range(len(ngrams))),
            weights=ngrams.idf.astype(np.float32).tolist(),
        ),
        helper.make_node("Mul", ["ngram_weighted", "ngram_weighted"], ["ngram_sq"]),
        helper.make_node("ReduceSum", ["ngram_sq", "ngram_axis"], ["ngram_sq_sum"], keepdims=1),
        helper.make_node("Sqrt", ["ngram_sq_sum"], ["ngram_norm"]),
        helper.make_node("Max", ["ngram_norm", "ngram_eps"], ["ngram_norm_safe"]),
        helper.make_node("Div", ["ngram_weighted", "ngram_norm_safe"], [out]),
    ]
    return nodes, initializers


def head_ngrams(head: onnx.ModelProto) -> Ngrams | None:
    """The token n-grams a head graph counts (None: it reads the sentence vector alone)."""
    node = next((n for n in head.graph.node if n.op_type == "TfIdfVectorizer"), None)
    if node is None:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    pool = np.asarray(attrs["pool_int64s"], dtype=np.int64)
    unigrams = int(attrs["ngram_counts"][1])
    return Ngrams(
        pool[:unigrams],
        pool[unigrams:].reshape(-1, 2),
        np.asarray(attrs["weights"], dtype=np.float32),
    )


def _head_nodes(
    vectors: str, scores: str, weights: np.ndarray, bias: np.ndarray, topic: bool
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    initializers = [numpy_helper.from_array(weights, "head_W"), numpy_helper.from_array(bias, "head_b")]
    nodes = [
        helper.make_node("MatMul", [vectors, "head_W"], ["head_z"]),
        helper.make_node("Add", ["head_z", "head_b"], ["head_logits"]),
        helper.make_node("Softmax", ["head_logits"], [scores], axis=1)
        if topic
        else helper.make_node("Sigmoid", ["head_logits"], [scores]),
    ]
    return nodes, initializers


def standalone_model(encoder: onnx.ModelProto, head: onnx.ModelProto, *, hidden: str) -> onnx.ModelProto:
    """The encoder with pooling, normalisation and ``head`` appended: the encoder's inputs in,
    ``embedding`` and ``scores`` out."""
    model = onnx.ModelProto()
    model.CopyFrom(encoder)
    graph = model.graph
    weights, _, _ = head_parts(head)
    const = [
        numpy_helper.from_array(np.asarray([1], dtype=np.int64), "pool_axis"),
        numpy_helper.from_array(np.asarray(1e-9, dtype=np.float32), "pool_eps"),
        numpy_helper.from_array(np.asarray(1e-12, dtype=np.float32), "norm_eps"),
        numpy_helper.from_array(np.asarray([-1], dtype=np.int64), "last_axis"),
    ]
    pooling = [
        helper.make_node("Cast", ["attention_mask"], ["pool_mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["pool_mask", "last_axis"], ["pool_mask3"]),
        helper.make_node("Mul", [hidden, "pool_mask3"], ["pool_masked"]),
        helper.make_node("ReduceSum", ["pool_masked", "pool_axis"], ["pool_sum"], keepdims=0),
        helper.make_node("ReduceSum", ["pool_mask3", "pool_axis"], ["pool_count"], keepdims=0),
        helper.make_node("Max", ["pool_count", "pool_eps"], ["pool_count_safe"]),
        helper.make_node("Div", ["pool_sum", "pool_count_safe"], ["pooled"]),
        helper.make_node("Mul", ["pooled", "pooled"], ["pooled_sq"]),
        helper.make_node("ReduceSum", ["pooled_sq", "last_axis"], ["pooled_sq_sum"], keepdims=1),
        helper.make_node("Sqrt", ["pooled_sq_sum"], ["pooled_norm"]),
        helper.make_node("Max", ["pooled_norm", "norm_eps"], ["pooled_norm_safe"]),
        helper.make_node("Div", ["pooled", "pooled_norm_safe"], [VECTORS]),
    ]
    # The head's own nodes: they read ``embedding`` (made above) and, for n-grams, the encoder's
    # ``input_ids``.
    graph.node.extend(pooling + list(head.graph.node))
    graph.initializer.extend(const + list(head.graph.initializer))
    del graph.output[:]
    ngrams = head_ngrams(head)
    dim, outputs = weights.shape[0] - (len(ngrams) if ngrams is not None else 0), weights.shape[1]
    graph.output.extend(
        [
            helper.make_tensor_value_info(VECTORS, TensorProto.FLOAT, ["n", dim]),
            helper.make_tensor_value_info(SCORES, TensorProto.FLOAT, ["n", outputs]),
        ]
    )
    onnx.checker.check_model(model)
    return model


def head_parts(head: onnx.ModelProto) -> tuple[np.ndarray, np.ndarray, bool]:
    """A head graph's weights (dim, outputs), intercepts (outputs,) and whether it is a softmax."""
    weights = numpy_helper.to_array(next(i for i in head.graph.initializer if i.name == "head_W"))
    bias = numpy_helper.to_array(next(i for i in head.graph.initializer if i.name == "head_b"))
    return weights, bias, any(n.op_type == "Softmax" for n in head.graph.node)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="trackers", ir_version=IR_VERSION
    )
    onnx.checker.check_model(model)
    return model
