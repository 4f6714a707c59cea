"""Secrets in the environment or in URL credentials never reach MLflow params, tags or artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reliability.helpers import t2po

pytestmark = pytest.mark.slow

SECRET_ENV = {
    "HF_TOKEN": "hf_tok_value_1", "MY_API_KEY": "apikey_value_2", "DB_PASSWORD": "pw_value_3",
    "AWS_SECRET_ACCESS_KEY": "aws_value_4", "GITHUB_TOKEN": "gh_value_5",
}
URL_PASSWORD = "urlpass_value_6"


def test_secrets_never_logged(tmp_path: Path) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = tmp_path / "run"
    r = t2po(["train", "--run-dir", str(run), "--tracking-uri", uri, "trainer=ci", "trainer.steps=1",
              "trainer.val_every=0", f"env.url=http://alice:{URL_PASSWORD}@127.0.0.1:1/x"],
             cwd=tmp_path, env=SECRET_ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    secrets = [*SECRET_ENV.values(), URL_PASSWORD]
    client = mlflow.MlflowClient(tracking_uri=uri)
    run_id = json.loads((run / "mlflow_sync.json").read_text())["run_id"]
    data = client.get_run(run_id).data
    logged = json.dumps({"params": data.params, "tags": data.tags})
    for name in SECRET_ENV:
        assert name not in logged
    for value in secrets:
        assert value not in logged
    assert data.params["env.url"].startswith("http://***@")
    # Artifacts: every file in the store and run's artifact tree, and the sqlite file itself.
    for path in [tmp_path / "mlflow.db", *tmp_path.rglob("mlartifacts/**/*")]:
        if path.is_file():
            blob = path.read_bytes()
            for value in secrets:
                assert value.encode() not in blob, path
