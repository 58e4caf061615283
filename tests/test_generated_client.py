"""A client generated from the v1 schema by openapi-python-client: every operation has a plain
name (``predict``, ``list_versions``, ``update_webhook``), and the generated code imports and
predicts against a running server."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from config.api import api, api_v1

pytestmark = pytest.mark.django_db(transaction=True)

BIN = Path(sys.executable).parent


def test_every_operation_has_a_plain_unique_name():
    for schema in (api.get_openapi_schema(), api_v1.get_openapi_schema()):
        ids = [op.get("operationId") for path in schema["paths"].values() for op in path.values()]
        assert len(ids) == len(set(ids)) and all(ids)
        assert all(i.replace("_", "").isalpha() and i.islower() for i in ids), ids
        assert not any(i.startswith(("serving_", "trackers_", "labeling_")) for i in ids)
    v1 = {op["operationId"] for path in api_v1.get_openapi_schema()["paths"].values() for op in path.values()}
    assert {"predict", "predict_many", "list_versions", "promote_version", "update_webhook"} <= v1


def test_a_generated_client_imports_and_predicts(live_server, trained, key, tmp_path, monkeypatch):
    schema = tmp_path / "v1.json"
    schema.write_text(json.dumps(api_v1.get_openapi_schema()))
    config = tmp_path / "config.yaml"
    config.write_text(
        "package_name_override: trackers_client\nproject_name_override: trackers-client\npost_hooks: []\n"
    )
    out = tmp_path / "trackers_client"
    subprocess.run(
        [
            BIN / "openapi-python-client",
            "generate",
            "--path",
            schema,
            "--config",
            config,
            "--meta",
            "none",
            "--output-path",
            out,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    client_module = importlib.import_module("trackers_client")
    predict = importlib.import_module("trackers_client.api.predict.predict")
    models = importlib.import_module("trackers_client.models")
    client = client_module.AuthenticatedClient(
        base_url=live_server.url,
        token=key["Authorization"].removeprefix("Bearer "),
        headers={"Connection": "close"},
    )
    with client:
        answer = predict.sync(
            trained.code,
            client=client,
            body=models.PredictIn(texts=["please cancel my plan", "lunch was great"]),
        )
    assert isinstance(answer, models.PredictOut), answer
    assert answer.version == 1 and len(answer.results) == 2
    assert [r.match for r in answer.results] == [True, False] and all(r.id for r in answer.results)
