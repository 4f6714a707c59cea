"""Per-episode random streams and batched inverse-CDF sampling, by hand."""

from __future__ import annotations

import hashlib

import torch

from t2po_cli.rollout.engine import inverse_cdf, sample_tokens
from t2po_cli.rollout.streams import draw_uniforms, episode_key, episode_streams, seeded_streams
from t2po_cli.rollout.types import SamplingParams


def test_episode_key_is_the_pinned_blake2b_of_the_tuple():
    digest = hashlib.blake2b(b"t2po-episode:0:1:train:0", digest_size=8).digest()
    assert episode_key(0, 1, "train", 0) == int.from_bytes(digest, "little") & (2**63 - 1)
    # Pinned: changing the derivation changes every run's samples (a CHANGELOG entry, not a silent edit).
    assert episode_key(0, 1, "train", 0) == 5035926121701417686
    assert episode_key(7, 3, "val", 5) == 448356420116228697


def test_episode_keys_are_63_bit_and_distinct_across_the_tuple():
    keys = {episode_key(s, t, p, e) for s in range(3) for t in range(4) for p in ("train", "val")
            for e in range(16)}
    assert len(keys) == 3 * 4 * 2 * 16
    assert all(0 <= k < 2**63 for k in keys)


def test_episode_streams_depend_only_on_the_episode_id():
    a = episode_streams(3, 2, "train", [0, 1, 2, 3])
    b = episode_streams(3, 2, "train", [2, 0])
    first = [torch.rand(4, generator=g) for g in a]
    assert torch.equal(torch.rand(4, generator=b[0]), first[2])
    assert torch.equal(torch.rand(4, generator=b[1]), first[0])
    assert not torch.equal(first[0], first[1])


def test_draw_uniforms_draws_once_per_live_row_only():
    streams = seeded_streams(0, 3)
    ref = seeded_streams(0, 3)
    u = draw_uniforms(streams, [True, False, True])
    assert u[1].item() == 0.0
    assert u[0].item() == torch.rand((), generator=ref[0]).item()
    assert u[2].item() == torch.rand((), generator=ref[2]).item()
    # Row 1 drew nothing: its next draw is its stream's first number.
    assert draw_uniforms(streams, [False, True, False])[1].item() == torch.rand((), generator=ref[1]).item()


def test_inverse_cdf_by_hand():
    # weights 0.5, 0, 0.3, 0.2 → cdf 0.5, 0.5, 0.8, 1.0; the token is the first with cdf > u·total.
    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2]] * 5)
    u = torch.tensor([0.0, 0.49, 0.5, 0.8, 0.999])
    assert inverse_cdf(probs, u).tolist() == [0, 0, 2, 3, 3]  # the zero-weight token 1 is never chosen
    assert inverse_cdf(probs * 2.5, u).tolist() == [0, 0, 2, 3, 3]  # unnormalised weights: same tokens


def test_inverse_cdf_never_lands_past_the_last_weighted_token():
    # u·total rounding up to total (here forced with u = 1) → the last token with weight, not V or a zero.
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    assert inverse_cdf(probs, torch.tensor([1.0, 1.0])).tolist() == [1, 1]


def test_sample_tokens_greedy_needs_no_uniforms_and_top_k_one_is_argmax():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    assert sample_tokens(logits, SamplingParams(max_new_tokens=1, temperature=0), None).tolist() == [1, 0]
    params = SamplingParams(max_new_tokens=1, temperature=1.0, top_k=1)
    assert sample_tokens(logits, params, torch.tensor([0.99, 0.0])).tolist() == [1, 0]
