"""A tracker's head as ONNX, alone (sentence vectors in) or joined to the encoder (token ids in).

Pure numpy + onnx. The head graph reproduces ``labeling.ml.training.LinearScorer`` on the
embedding features: ``vectors @ W + b``, then a sigmoid (concepts: P(yes), one column) or a softmax
over the labels (topics: one column per label, in the manifest's order).

The standalone graph appends to the encoder what ``trackers.ml.embedding.OnnxEncoder`` does after
it (mean pooling over the attention mask, L2 normalisation) and then the head, so that one file maps
token ids to scores.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # every onnxruntime since 1.10 reads it
VECTORS = "embedding"  # the head's input: (n, dim) float32 sentence vectors
SCORES = "scores"  # its output: (n, 1) P(yes), or (n, labels) probabilities


class NotExportable(ValueError):
    """A head whose features have no ONNX form."""


def head_model(
    coef: np.ndarray, intercept: np.ndarray | float, *, topic: bool, featurizer: str
) -> onnx.ModelProto:
    """The head alone: ``embedding`` (n, dim) in, ``scores`` out."""
    if featurizer != "embedding":
        raise NotExportable(f"features {featurizer!r} cannot be exported to ONNX")
    weights = np.asarray(coef, dtype=np.float32)
    weights = weights if weights.ndim == 2 else weights.reshape(-1, 1)
    bias = np.asarray(intercept, dtype=np.float32).reshape(-1)
    dim, outputs = weights.shape
    if bias.shape != (outputs,):
        raise ValueError(f"{outputs} weight columns but {bias.size} intercepts")
    if topic and outputs < 2:
        raise ValueError("a topic head has a column per label")
    nodes, initializers = _head_nodes(VECTORS, SCORES, weights, bias, topic)
    graph = helper.make_graph(
        nodes,
        "tracker_head",
        [helper.make_tensor_value_info(VECTORS, TensorProto.FLOAT, ["n", dim])],
        [helper.make_tensor_value_info(SCORES, TensorProto.FLOAT, ["n", outputs])],
        initializer=initializers,
    )
    return _model(graph)


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
    weights, bias, topic = head_parts(head)
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
    nodes, initializers = _head_nodes(VECTORS, SCORES, weights, bias, topic)
    graph.node.extend(pooling + nodes)
    graph.initializer.extend(const + initializers)
    del graph.output[:]
    dim, outputs = weights.shape
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
