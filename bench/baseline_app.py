"""The serving benchmark's baseline: the same prediction request answered by the simplest thing
that works — sentence-transformers (torch) and a scikit-learn logistic regression with the
tracker's weights, in a bare WSGI app behind the same server settings as the app.

    BASELINE_HEAD=head.json [BASELINE_TORCH_THREADS=1] python -m config.serve bench.baseline_app:app

``head.json`` holds the tracker's weights (``coef``, ``intercept``) and ``threshold``; the request
is the app's: ``POST /predict`` with ``{"texts": [...]}``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sklearn.linear_model import LogisticRegression

from trackers.ml.export_encoder import packaged_model_dir

# Threads per process, as the app's encoder has in a web process (TRACKERS_WEB_ENCODER_THREADS): with a
# process per core, more would oversubscribe the cores.
torch.set_num_threads(int(os.environ.get("BASELINE_TORCH_THREADS", "1")))
_head = json.loads(open(os.environ["BASELINE_HEAD"]).read())  # noqa: SIM115 (read once at start)
model = SentenceTransformer(str(packaged_model_dir()), device="cpu")
head = LogisticRegression()
head.coef_ = np.asarray(_head["coef"], dtype=np.float64).reshape(1, -1)
head.intercept_ = np.asarray([_head["intercept"]], dtype=np.float64)
head.classes_ = np.array([0, 1])
head.n_features_in_ = head.coef_.shape[1]
threshold = float(_head["threshold"])


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/health":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"status": "ok"}']
    size = int(environ.get("CONTENT_LENGTH") or 0)
    texts = json.loads(environ["wsgi.input"].read(size))["texts"]
    vectors = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    scores = head.predict_proba(vectors)[:, 1]
    body = json.dumps(
        {"results": [{"score": float(p), "match": bool(p >= threshold)} for p in scores]}
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
