"""Real-backend servers and clients over loopback HTTP (envs.md §4.7, §5.3-§5.4)."""

from __future__ import annotations

import http.client
import json
import socket
import types

import pytest

from t2po_cli.config.schema import EnvConfig
from t2po_cli.envs.http_common import request_json, serve_in_thread, server_url
from t2po_cli.envs.searchqa import FAMILY as SEARCH
from t2po_cli.envs.searchqa.retriever import HttpRetriever, format_information, make_retriever_server
from t2po_cli.envs.webshop import FAMILY as SHOP
from t2po_cli.envs.webshop.remote import WebShopHttpEnv, make_webshop_server
from t2po_cli.errors import BackendUnavailable

DOCS = [{"id": "0", "contents": "\"Paris\"\nParis is the capital of France."},
        {"id": "1", "contents": "\"Berlin\"\nBerlin is the capital of Germany."},
        {"id": "2", "contents": "\"Rome\"\nRome has old buildings."}]


@pytest.fixture(scope="module")
def retriever_url():
    server = make_retriever_server(DOCS, port=0)
    serve_in_thread(server)
    yield server_url(server)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def shop_url():
    server = make_webshop_server(port=0, max_envs=2)
    serve_in_thread(server)
    yield server_url(server)
    server.shutdown()
    server.server_close()


def _post(url, body, host=None):
    u = url.removeprefix("http://")
    hostport, _, path = u.partition("/")
    conn = http.client.HTTPConnection(hostport, timeout=5)
    headers = {"Content-Type": "application/json"}
    if host:
        headers["Host"] = host
    conn.request("POST", "/" + path, json.dumps(body), headers)
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_retrieve_both_request_forms(retriever_url):
    one = request_json(f"{retriever_url}/retrieve", {"query": "capital of France", "topk": 2,
                                                     "return_scores": True}, timeout_s=5, retries=0)
    assert len(one["result"]) == 1 and one["result"][0][0]["document"] == DOCS[0]
    assert one["result"][0][0]["score"] > one["result"][0][1]["score"] > 0
    assert one["result"][0][1]["document"] == DOCS[1]
    many = request_json(f"{retriever_url}/retrieve", {"queries": ["Germany", "old buildings", "zzz"],
                                                      "topk": 3}, timeout_s=5, retries=0)
    # without return_scores: bare documents; a query with no hits gets an empty list
    assert many == {"result": [[DOCS[1]], [DOCS[2]], []]}


def test_bad_request_and_unknown_route(retriever_url):
    assert _post(f"{retriever_url}/retrieve", {"topk": 3})[0] == 400
    assert _post(f"{retriever_url}/nope", {})[0] == 404


def test_foreign_host_header_rejected(retriever_url):
    status, body = _post(f"{retriever_url}/retrieve", {"query": "Paris"}, host="evil.example:80")
    assert status == 403 and "Host" in body["error"]
    assert _post(f"{retriever_url}/retrieve", {"query": "Paris"}, host="localhost:1234")[0] == 200


def test_allow_listed_host_accepted():
    server = make_retriever_server(DOCS, port=0, allow_hosts=["retriever.internal"])
    serve_in_thread(server)
    try:
        assert _post(f"{server_url(server)}/retrieve", {"query": "Paris"}, host="retriever.internal")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_searchqa_real_backend_information_string(retriever_url):
    client = HttpRetriever(retriever_url, timeout_s=5, retries=0)
    assert client.url == f"{retriever_url}/retrieve"
    env = SEARCH.make_env(EnvConfig(name="searchqa", backend="real", url=f"{retriever_url}/retrieve"))
    task = SEARCH.sample_tasks("val", [0], 0, 1)[0]
    env.reset(task)
    obs = env.step("<search>capital of Germany</search>")[0]
    assert obs == format_information([DOCS[1]["contents"], DOCS[0]["contents"]])
    assert obs == ('\n<information>{"result": "Doc 1: \\"Berlin\\"\\nBerlin is the capital of Germany.\\n'
                   'Doc 2: \\"Paris\\"\\nParis is the capital of France.\\n"}</information>\n')


def test_down_backend_fails_fast(monkeypatch):
    # "Fast" as a bound, not a stopwatch (no timed tests): exactly retries + 1 attempts, each with the
    # configured socket timeout, the linear back-off between them, then BackendUnavailable (never a hang).
    import t2po_cli.envs.http_common as hc

    attempts: list[float] = []
    waits: list[float] = []
    real_urlopen = hc.urllib.request.urlopen

    def urlopen(req, timeout):
        attempts.append(timeout)
        return real_urlopen(req, timeout=timeout)

    monkeypatch.setattr(hc.urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(hc, "time", types.SimpleNamespace(sleep=waits.append))
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(BackendUnavailable, match=r"unavailable .* after 3 attempt"):
        HttpRetriever(url, timeout_s=1, retries=2, backoff_s=0.05).contents("q")
    assert attempts == [1, 1, 1] and waits == [0.05, 0.1]
    attempts.clear()
    with pytest.raises(BackendUnavailable, match="after 1 attempt"):
        SEARCH.make_env(EnvConfig(name="searchqa", backend="real", url=url, retries=0, timeout_s=1))
    with pytest.raises(BackendUnavailable, match="after 1 attempt"):
        WebShopHttpEnv(url, timeout_s=1, retries=0).reset(SHOP.sample_tasks("val", [0], 0, 1)[0])
    assert attempts == [1, 1] and waits == [0.05, 0.1]  # no further back-off


def test_webshop_server_expert_episode_matches_embedded(shop_url):
    task = SHOP.sample_tasks("val", [5], 0, 1)[0]
    remote = SHOP.make_env(EnvConfig(name="webshop", backend="real", url=shop_url))
    local = SHOP.make_env(EnvConfig(name="webshop"))
    expert = SHOP.expert_policy(0)
    (r_obs, r_info), (l_obs, l_info) = remote.reset(task), local.reset(task)
    assert r_obs == l_obs and r_info["anchor_obs"] == l_info["anchor_obs"]
    for t in range(15):
        action = SHOP.project(expert(task, r_obs, r_info, t), r_info["admissible"]).action
        r_obs, r_rew, r_done, r_info = remote.step(action)
        l_obs, l_rew, l_done, l_info = local.step(action)
        assert (r_obs, r_rew, r_done) == (l_obs, l_rew, l_done)
        assert r_info["admissible"] == l_info["admissible"]
        if r_done:
            break
    assert r_done and r_info["won"] and r_rew == 10.0 and r_info["task_score"] == 1.0
    # post-done steps are never forwarded (the server-side env is closed already)
    assert remote.step("click[buy now]") == (r_obs, r_rew, r_done, r_info)
    remote.close()


def test_webshop_server_protocol_and_env_cap(shop_url):
    assert request_json(f"{shop_url}/health", timeout_s=5, retries=0)["status"] == "ok"
    a = request_json(f"{shop_url}/reset", {"goal_idx": 0, "split": "val", "seed": 0}, timeout_s=5, retries=0)
    assert set(a) >= {"env_id", "obs", "instruction", "available_actions"}
    assert a["obs"].endswith(f"{a['instruction']} [SEP] Search")
    step = request_json(f"{shop_url}/step", {"env_id": a["env_id"], "action": "search[tea]"}, timeout_s=5,
                        retries=0)
    assert set(step) >= {"obs", "reward", "done", "info", "available_actions"} and step["reward"] == 0.0
    b = request_json(f"{shop_url}/reset", {"goal_idx": 1}, timeout_s=5, retries=0)
    assert _post(f"{shop_url}/reset", {"goal_idx": 2})[0] == 429  # max_envs=2
    for env_id in (a["env_id"], b["env_id"]):
        assert request_json(f"{shop_url}/close", {"env_id": env_id}, timeout_s=5, retries=0) == {}
    assert _post(f"{shop_url}/step", {"env_id": a["env_id"], "action": "x"})[0] == 404
    assert _post(f"{shop_url}/reset", {"goal_idx": 10**9})[0] == 400
