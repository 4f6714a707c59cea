"""The IG scoring pass (a2tgpo.md §2.1, §11 test 1, errata 17) on a tiny random Qwen2 built here."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from t2po_cli.algo.a2tgpo import InformationGainError
from t2po_cli.algo.ig_probe import forced_answer, gold_answer_logprobs, gold_span_mask
from t2po_cli.algo.losses import token_logps


@pytest.fixture(scope="module")
def model() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    cfg = Qwen2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=64, vocab_size=64, max_position_embeddings=128)
    return Qwen2ForCausalLM(cfg).eval()


def _reference(model, ctx: list[int], ans: list[int], scored: list[bool]) -> float:
    """Unbatched: one sequence, no padding, mean log-prob of the scored answer tokens."""
    ids = torch.tensor([ctx + ans])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    lp = token_logps(logits[:, :-1], ids[:, 1:])[0, len(ctx) - 1 :]
    return float(lp[torch.tensor(scored)].mean())


CTX = [[1, 2, 3, 4, 5, 6], [7, 8], [9, 10, 11, 12]]
ANS = [[20, 21, 22], [23, 24], [25, 26, 27, 28]]
MASK = [[False, True, True], [True, True], [False, True, False, True]]


@pytest.mark.parametrize("side", ["right", "left"])
def test_batched_equals_unbatched(model, side):
    ref = [_reference(model, c, a, m) for c, a, m in zip(CTX, ANS, MASK, strict=True)]
    got = gold_answer_logprobs(model, CTX, ANS, pad_id=0, score_mask=MASK, padding_side=side)
    assert torch.allclose(got, torch.tensor(ref), atol=1e-5)
    # chunked forwards agree too
    chunked = gold_answer_logprobs(model, CTX, ANS, pad_id=0, score_mask=MASK, padding_side=side, batch_size=2)
    assert torch.allclose(chunked, got, atol=1e-5)


def test_default_scores_every_answer_token(model):
    got = gold_answer_logprobs(model, CTX, ANS, pad_id=0)
    ref = [_reference(model, c, a, [True] * len(a)) for c, a in zip(CTX, ANS, strict=True)]
    assert torch.allclose(got, torch.tensor(ref), atol=1e-5)


def test_padding_does_not_leak(model):
    # errata 17: a row's score must not depend on the longest row of its batch
    alone = gold_answer_logprobs(model, CTX[1:2], ANS[1:2], pad_id=0, padding_side="left")
    padded = gold_answer_logprobs(model, CTX, ANS, pad_id=0, padding_side="left")[1:2]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_probe_errors(model):
    with pytest.raises(InformationGainError):
        gold_answer_logprobs(model, [[]], [[1]], pad_id=0)
    with pytest.raises(InformationGainError):
        gold_answer_logprobs(model, [[1]], [[2]], pad_id=0, score_mask=[[False]])
    with pytest.raises(InformationGainError):
        gold_answer_logprobs(model, [[1], [2]], [[2]], pad_id=0)


def test_gold_span_mask_hand_offsets():
    # forced text "<a> Paris</a>": prefix "<a>" (3 chars), gold "Paris" at [4, 9) after a space → span [3, 9)
    # tokens: "<a>" (0,3), " Par" (3,7), "is" (7,9), "</a>" (9,13); " Par" merges the leading space
    offsets = [(0, 3), (3, 7), (7, 9), (9, 13)]
    assert gold_span_mask(offsets, 3, 9) == [False, True, True, False]
    # a token straddling the prefix (newline merge "\nPa") is in; an empty special-token offset is out
    assert gold_span_mask([(0, 2), (2, 5), (5, 8), (0, 0)], 3, 6) == [False, True, True, False]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    # A BPE without pre-tokenisation, trained so that "\nParis" and " Paris" become single tokens.
    tok = Tokenizer(models.BPE())
    alphabet = [chr(i) for i in range(32, 127)] + ["\n"]
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=alphabet, show_progress=False)
    # No merges cross corpus items, so the forced text splits as "<answer>" "\nParis" "\n</answer>".
    words = ["\nParis", " Paris", "<answer>", "\n</answer>", "answer:", "!"]
    tok.train_from_iterator([w for w in words for _ in range(20)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


@pytest.mark.parametrize(
    ("prefix", "gold", "suffix"),
    [("<answer>\n", "Paris", "\n</answer>"), ("answer: ", "Paris", "!"), ("<answer>\n", "Rome", "\n</answer>")],
)
def test_forced_answer_gold_span_covers_gold_exactly(tokenizer, prefix, gold, suffix):
    fa = forced_answer(tokenizer, gold, prefix, suffix)
    text = prefix + gold + suffix
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert fa.ids == enc["input_ids"]
    spans = [enc["offset_mapping"][i] for i, m in enumerate(fa.gold_mask) if m]
    lo, hi = len(prefix), len(prefix) + len(gold)
    # the selected tokens cover every gold character, and each selected token touches the gold span
    covered = {c for s, e in spans for c in range(s, e)}
    assert set(range(lo, hi)) <= covered
    assert all(s < hi and e > lo for s, e in spans)
    # the merge cases: one token carries the prefix's last character and the whole gold string
    if gold == "Paris":
        assert len(spans) == 1 and spans[0][0] == lo - 1


def test_forced_answer_empty_gold_raises(tokenizer):
    with pytest.raises(InformationGainError):
        forced_answer(tokenizer, "", "<answer>\n", "\n</answer>")
