"""M_t against the t2po.md §2 reference table (α = 0.6, |V| = 151,936), errata 1-2."""

from __future__ import annotations

import math

import pytest
import torch

from t2po_cli.hooks.signal import token_signal

V = 151_936  # the padded Qwen3 logits width
LN_V = 11.931213  # ln(151936): the width, not the tokenizer length 151,669 (ln = 11.929455)
ALPHA = 0.6


def _two_token_row(p0: float, p1: float, fill: float) -> torch.Tensor:
    row = torch.full((V,), fill)
    row[0], row[1] = math.log(p0), math.log(p1)
    return row


def _one_hot_row(fill: float) -> torch.Tensor:
    row = torch.full((V,), fill)
    row[7] = 0.0 if fill == -math.inf else 1000.0
    return row


# (row builder, c_t, M_t) from the §2 table.
TABLE = [
    ("one-hot, large finite logits", lambda: _one_hot_row(0.0), 0.0, 0.4),
    ("one-hot, -inf row", lambda: _one_hot_row(-math.inf), 0.0, 0.4),
    ("0.9/0.1, -inf elsewhere", lambda: _two_token_row(0.9, 0.1, -math.inf), -0.10536, 0.325885),
    ("0.9/0.1, finite elsewhere", lambda: _two_token_row(0.9, 0.1, -1e4), -0.10536, 0.325885),
    ("0.5/0.5, -inf elsewhere", lambda: _two_token_row(0.5, 0.5, -math.inf), -0.69315, -0.039126),
    ("uniform", lambda: torch.zeros(V), -11.93121, -7.158729),
]


@pytest.mark.parametrize(("name", "build", "c_t", "m_t"), TABLE, ids=[t[0] for t in TABLE])
def test_reference_table(name: str, build, c_t: float, m_t: float) -> None:
    sig = token_signal(build().unsqueeze(0), ALPHA)
    assert sig.top1_logp.item() == pytest.approx(c_t, abs=1e-5)
    assert sig.m.item() == pytest.approx(m_t, abs=1e-5)
    assert sig.m.dtype == torch.float32


def test_table_rows_batched_and_entropy() -> None:
    logits = torch.stack([build() for _, build, _, _ in TABLE])
    sig = token_signal(logits, ALPHA)
    assert sig.m.shape == (len(TABLE),)
    assert torch.allclose(sig.m, torch.tensor([t[3] for t in TABLE]), atol=1e-5)
    # Ĥ of the table: 0, 0, 0.027246, 0.027246, 0.058095, 1.
    h_norm = (sig.entropy / LN_V).tolist()
    for got, want in zip(h_norm, [0.0, 0.0, 0.027246, 0.027246, 0.058095, 1.0], strict=True):
        assert got == pytest.approx(want, abs=1e-5)
    assert torch.isfinite(sig.entropy).all()


def test_normaliser_is_the_logits_width_not_the_tokenizer_length() -> None:
    # Uniform over the 151,669 tokenizer entries inside a 151,936-wide row: H = ln 151669.
    row = torch.full((V,), -math.inf)
    row[:151_669] = 0.0
    h = math.log(151_669)
    with_width = ALPHA * -h + (1 - ALPHA) * (1 - h / math.log(V))  # -7.157611
    with_tokenizer_len = ALPHA * -h  # Ĥ would clip to 1: -7.157673
    got = token_signal(row.unsqueeze(0), ALPHA).m.item()
    assert got == pytest.approx(with_width, abs=1e-5)
    assert abs(got - with_tokenizer_len) > 5e-5


def test_alpha_mix() -> None:
    sig = token_signal(_two_token_row(0.9, 0.1, -math.inf).unsqueeze(0), alpha=0.9)
    assert sig.m.item() == pytest.approx(0.9 * math.log(0.9) + 0.1 * (1 - 0.027246), abs=1e-5)


def test_released_nan_path_gives_alpha_times_c() -> None:
    # Errata 2: with -inf entries the released entropy is NaN and the clip yields M = α·c_t.
    logits = torch.stack([_one_hot_row(-math.inf), _two_token_row(0.9, 0.1, -math.inf), _one_hot_row(0.0)])
    sig = token_signal(logits, ALPHA, released=True)
    assert sig.m.tolist() == pytest.approx([0.0, ALPHA * math.log(0.9), 0.4], abs=1e-5)
    assert torch.isfinite(sig.m).all()
    # The entropy field stays the NaN-safe value (it feeds metrics only).
    assert torch.isfinite(sig.entropy).all()


def test_released_dtype_follows_logits() -> None:
    # Errata 1: released M_t carries bf16 rounding; intended M_t is float32 from the same bf16 logits.
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(4, V, generator=gen) * 3).to(torch.bfloat16)
    released = token_signal(logits, ALPHA, released=True).m
    intended = token_signal(logits, ALPHA).m
    assert released.dtype == intended.dtype == torch.float32
    assert torch.equal(released, released.to(torch.bfloat16).float())  # bf16-representable values
    assert not torch.equal(released, intended)
    assert torch.allclose(released, intended, atol=5e-2)
    # float32 logits without -inf: the released path is the intended value.
    f32 = logits.float()
    assert torch.allclose(token_signal(f32, ALPHA, released=True).m, token_signal(f32, ALPHA).m, atol=1e-6)
