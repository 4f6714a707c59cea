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


def _released_processor_m(row: torch.Tensor, alpha: float) -> float:
    """M of one 1-D logits row, step for step as the released ``ThinkLogitsProcessor`` computes it: top-1
    log-prob and entropy in the row's dtype, each read out with ``.item()``, then Python-float arithmetic."""
    log_probs = torch.log_softmax(row, dim=-1)
    probs = torch.exp(log_probs)
    max_log_prob = log_probs.max().item()
    entropy = -torch.sum(probs * log_probs).item()
    h_norm = entropy / math.log(max(row.shape[-1], 2))
    return alpha * max_log_prob + (1.0 - alpha) * (1.0 - max(0.0, min(1.0, h_norm)))


def _peaked_row(dtype: torch.dtype, peak: float = 7.2, width: int = 64) -> torch.Tensor:
    row = torch.zeros(1, width, dtype=dtype)
    row[0, 9] = peak
    return row


@pytest.mark.parametrize(
    ("dtype", "release_m", "low_dtype_mix"),
    [(torch.bfloat16, 0.3362057, 0.3359375), (torch.float16, 0.3370120, 0.3369141)],
    ids=["bf16", "fp16"],
)
def test_released_m_rounds_c_and_h_to_the_dtype_but_mixes_in_double(dtype, release_m, low_dtype_mix) -> None:
    # Issue #14 case: a 64-wide row, all zeros but logits[9] = 7.2. The release reads c_t and H_t out as
    # Python floats and mixes in double (0.3362057 in bf16); mixing in bf16 lands on its grid (0.3359375).
    row = _peaked_row(dtype)
    sig = token_signal(row, ALPHA, released=True)
    assert sig.m.dtype == torch.float64
    assert sig.m.item() == pytest.approx(release_m, abs=5e-8)
    assert sig.m.item() == _released_processor_m(row[0], ALPHA)
    assert sig.m.item() != pytest.approx(low_dtype_mix, abs=5e-8)
    assert token_signal(row, ALPHA).m.dtype == torch.float32  # the intended path stays float32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_released_m_never_exceeds_one_minus_alpha(dtype) -> None:
    # A near-one-hot row: M ≈ 0.3995, which a bf16 mix rounds up to 0.40039 (> 1 − α).
    row = _peaked_row(dtype, peak=20.0, width=151_936)
    m = token_signal(row, ALPHA, released=True).m.item()
    assert m <= 1 - ALPHA
    assert m == _released_processor_m(row[0], ALPHA)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "fp32"])
def test_released_m_matches_the_release_formula(dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    scale = torch.tensor([0.5, 1.0, 3.0, 6.0, 10.0, 20.0])[:, None]
    # Narrow rows, batched: bit-for-bit the released value of each row.
    narrow = (torch.randn(6, 1000, generator=gen) * scale).to(dtype)
    got = token_signal(narrow, ALPHA, released=True).m.tolist()
    assert got == [_released_processor_m(r, ALPHA) for r in narrow]
    # Wide rows one at a time, as the release calls it: bit-for-bit too. (Batched, the float32 sum behind a
    # wide bf16/fp16 entropy may accumulate in another order and round H one ulp apart, as the released
    # kernels themselves do across hardware.)
    wide = (torch.randn(6, V, generator=gen) * scale).to(dtype)
    assert [token_signal(r[None], ALPHA, released=True).m.item() for r in wide] == [
        _released_processor_m(r, ALPHA) for r in wide
    ]


def test_released_dtype_follows_logits() -> None:
    # Errata 1: released M_t carries the dtype's rounding of c_t and H_t; intended M_t is float32 from the
    # same bf16 logits.
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(4, V, generator=gen) * 3).to(torch.bfloat16)
    released = token_signal(logits, ALPHA, released=True).m
    intended = token_signal(logits, ALPHA).m
    assert released.dtype == torch.float64 and intended.dtype == torch.float32
    assert not torch.allclose(released.float(), intended, atol=1e-4)
    assert torch.allclose(released.float(), intended, atol=5e-2)
    # float32 logits without -inf: the released path is the intended value.
    f32 = logits.float()
    assert torch.allclose(token_signal(f32, ALPHA, released=True).m.float(), token_signal(f32, ALPHA).m, atol=1e-6)


@pytest.mark.parametrize("released", [False, True], ids=["intended", "released"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_width_one_logits_give_one_minus_alpha_not_nan(released: bool, dtype: torch.dtype) -> None:
    # The release normalises by ln(max(|V|, 2)): a width-1 row has H = 0, Ĥ = 0 and M = 1 − α.
    sig = token_signal(torch.tensor([[3.0], [-2.0]], dtype=dtype), ALPHA, released=released)
    assert sig.m.tolist() == pytest.approx([1 - ALPHA, 1 - ALPHA])
    assert torch.isfinite(sig.entropy).all() and torch.isfinite(sig.top1_logp).all()
