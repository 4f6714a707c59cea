"""Warm-start corpus: the demonstrator's transcripts, intervention-style thought truncation, cache keys."""

from __future__ import annotations

import random
import re
from dataclasses import replace

import pytest

from t2po_cli.config.compose import compose_config
from t2po_cli.config.validate import ConfigError, validate_config
from t2po_cli.envs.registry import expert_dialogues
from t2po_cli.trainer.models import load_tokenizer
from t2po_cli.trainer.offline_models import synthetic_corpus, tiny_dir
from t2po_cli.trainer.warmstart import sft_examples, truncate_thought, warmstart_key

OPEN, CLOSE = 1, 2


@pytest.mark.parametrize(
    ("ids", "seed_value", "expected"),
    [
        # <think> 10 11 12 </think> 20 : 3 thought tokens, keep 1 or 2
        ([OPEN, 10, 11, 12, CLOSE, 20], 1, [OPEN, 10, CLOSE, 20]),
        ([OPEN, 10, 11, 12, CLOSE, 20], 2, [OPEN, 10, 11, CLOSE, 20]),
        # a one-token thought cannot be cut; no thought at all is left alone
        ([OPEN, 10, CLOSE, 20], 1, [OPEN, 10, CLOSE, 20]),
        ([20, 21], 1, [20, 21]),
    ],
)
def test_truncate_thought_hand_computed(ids, seed_value, expected):
    class FixedRng(random.Random):
        def randint(self, a: int, b: int) -> int:
            assert (a, b) == (1, 2) or len(ids) < 6
            return seed_value

    assert truncate_thought(ids, OPEN, CLOSE, FixedRng()) == expected


def test_truncate_thought_cut_is_uniform_over_the_thought():
    ids = [OPEN, *range(10, 20), CLOSE, 99]
    rng = random.Random(0)
    kept = {len(truncate_thought(ids, OPEN, CLOSE, rng)) - 3 for _ in range(500)}
    assert kept == set(range(1, 10))  # 1..n-1 thought tokens survive, never 0 and never all


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from t2po_cli.config.schema import ModelConfig

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("T2PO_CACHE", str(tmp_path_factory.mktemp("cache")))
        return load_tokenizer(tiny_dir(ModelConfig(vocab_size=512), texts=synthetic_corpus(600)))


def _cfg(*overrides: str):
    return compose_config(["trainer=ci", "trainer.warmstart.episodes=4", *overrides]).config


def test_sft_examples_truncate_the_requested_fraction(tokenizer):
    def encode(msg: str) -> list[int]:
        return tokenizer(msg, add_special_tokens=False)["input_ids"][-64:]

    eos = tokenizer.eos_token_id
    whole = sft_examples(_cfg("trainer.max_response_tokens=400", "trainer.warmstart.truncated_think_rate=0"),
                         encode, tokenizer, eos)
    cut = sft_examples(_cfg("trainer.max_response_tokens=400", "trainer.warmstart.truncated_think_rate=1.0"),
                       encode, tokenizer, eos)
    assert len(whole) == len(cut) > 0
    close = tokenizer.convert_tokens_to_ids("</think>")
    for (p0, r0), (p1, r1) in zip(whole, cut, strict=True):
        assert p0 == p1
        a, b = r0.tolist(), r1.tolist()
        assert a[a.index(close):] == b[b.index(close):]  # the action part is untouched
        assert b.index(close) < a.index(close)  # every thought got shorter
        assert b[: b.index(close)] == a[: b.index(close)]  # and is a prefix of the whole one


def test_webshop_corpus_is_the_demonstrator_and_keys_differ():
    dialogue = next(expert_dialogues("webshop", 1, 0, history_length=2, max_turns=15, demonstrator=True))
    clicks = [re.search(r"click\[(b0\w{8})\]", r) for _, r in dialogue]
    first_item = next(m.group(1) for m in clicks if m)
    results_prompt = next(p for p, r in dialogue if f"click[{first_item}]" in r)
    listed = re.findall(r"'click\[(b0\w{8})\]'", results_prompt)
    assert first_item == listed[0]  # the demonstrator opens the first listed result
    base = _cfg()
    assert warmstart_key(base) != warmstart_key(_cfg("trainer.warmstart.truncated_think_rate=0.25"))
    assert warmstart_key(_cfg("env=alfworld")).startswith("alfworld-tiny-")


def test_truncated_think_rate_is_validated():
    cfg = _cfg()
    bad = replace(cfg, trainer=replace(cfg.trainer, warmstart=replace(cfg.trainer.warmstart,
                                                                        truncated_think_rate=1.5)))
    with pytest.raises(ConfigError, match="truncated_think_rate"):
        validate_config(bad)


def test_compact_prompt_style_gets_its_own_warmstart_key() -> None:
    full = compose_config([]).config
    assert warmstart_key(full) == warmstart_key(replace(full, env=replace(full.env, prompt_style="full")))
    assert warmstart_key(full) != warmstart_key(replace(full, env=replace(full.env, prompt_style="compact")))


def test_bf16_autocast_enters_the_key_only_when_on() -> None:
    cfg = compose_config([]).config
    on = replace(cfg, trainer=replace(cfg.trainer, warmstart=replace(cfg.trainer.warmstart, bf16_autocast=True)))
    assert warmstart_key(cfg) != warmstart_key(on)
