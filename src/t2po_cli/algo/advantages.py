"""Row-level advantage estimators: GRPO, GiGPO, RLOO and turn-level GAE (gigpo.md §1-8, errata 4-7, 10).

One training row = one active environment turn (gigpo.md §1). Every estimator is a pure function of a
``RowBatch`` (tensors of shape ``[N]``, N rows) and returns ``FloatTensor[N]``; the trainer broadcasts a row's
advantage to that row's response tokens (``broadcast_to_tokens`` in ``algo.losses``).

The estimators themselves (``algo/estimators/<name>.py``) combine these functions; the trainer calls them
through ``algo.registry`` and never names one.

Building blocks (each tested on hand-computed numbers): ``row_scores`` (S_i, §2), ``step_returns`` (G_t, §4),
``episode_advantage`` (A^E, §3 / GRPO §8), ``anchor_groups`` + ``similarity_clusters`` (§5),
``step_advantage`` (A^S, §6), ``gigpo_advantages`` (§7), ``rloo_advantages`` (errata 4),
``gae_advantages`` (PPO, §8).

Rows with no response tokens still count in every statistic (errata 10); they simply get no loss.
Advantages are computed on real rows only; batch padding rows are added afterwards with a zero loss mask
(gigpo.md §7.1).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from t2po_cli.tracking import keys

if TYPE_CHECKING:
    from t2po_cli.algo.estimators.gigpo import GiGPOParams

EPS = 1e-6
"""Epsilon added to the group std (gigpo.md §3, §6)."""
NORMS = ("mean_norm", "mean_std_norm")


@dataclass(frozen=True)
class RowBatch:
    """The rows of one training step, one per active environment turn (gigpo.md §1).

    Attributes:
        episode_reward: R_τ of the row's trajectory (sum of its turn rewards), ``FloatTensor[N]``.
        step_reward: r_t, the reward returned by this turn's ``env.step``, ``FloatTensor[N]``.
        group_id: task group (``uid``): the n environments that share a task, ``LongTensor[N]``.
        traj_id: trajectory (``traj_uid``), one per environment per rollout; ids must increase with the
            environment index so that (traj_id, turn) order is (env, turn) order (errata 6), ``LongTensor[N]``.
        turn: turn index within the trajectory (0-based), ``LongTensor[N]``.
        invalid: True where the projection marked the action invalid, ``BoolTensor[N]``.
        anchor_obs: the raw environment observation of this turn (no history, no prompt text), length N.
    """

    episode_reward: torch.Tensor
    step_reward: torch.Tensor
    group_id: torch.Tensor
    traj_id: torch.Tensor
    turn: torch.Tensor
    invalid: torch.Tensor
    anchor_obs: list[str]

    def __post_init__(self) -> None:
        n = self.episode_reward.shape[0]
        for name in ("episode_reward", "step_reward", "group_id", "traj_id", "turn", "invalid"):
            t = getattr(self, name)
            if t.dim() != 1 or t.shape[0] != n:
                raise ValueError(f"RowBatch.{name} must have shape [{n}], got {tuple(t.shape)}")
        if len(self.anchor_obs) != n:
            raise ValueError(f"RowBatch.anchor_obs has {len(self.anchor_obs)} entries for {n} rows")

    def __len__(self) -> int:
        return int(self.episode_reward.shape[0])


# --------------------------------------------------------------------------------------------------------
# Rewards (gigpo.md §2, §4)
# --------------------------------------------------------------------------------------------------------


def row_scores(episode_reward: torch.Tensor, invalid: torch.Tensor, penalty: float) -> torch.Tensor:
    """Row score S_i = R_τ(i) − κ·1[row i invalid] (gigpo.md §2).

    Args:
        episode_reward: R_τ per row, ``FloatTensor[N]``.
        invalid: ``BoolTensor[N]``.
        penalty: κ (0 disables).

    Returns:
        S, ``FloatTensor[N]``.
    """
    return episode_reward.float() - penalty * invalid.float()


def traj_order(traj_id: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
    """Row indices sorted by (traj_id, turn): the (env, turn) order of errata 6, ``LongTensor[N]``."""
    # Two stable sorts give lexicographic order without assuming a bound on the turn index.
    by_turn = torch.sort(turn, stable=True).indices
    return by_turn[torch.sort(traj_id[by_turn], stable=True).indices]


def step_returns(
    step_reward: torch.Tensor,
    traj_id: torch.Tensor,
    turn: torch.Tensor,
    invalid: torch.Tensor,
    gamma: float,
    penalty: float,
) -> torch.Tensor:
    """Discounted step returns with the invalid penalty applied after discounting (gigpo.md §4).

        G_t = r_t + γ·G_{t+1},  G_{T+1} = 0;   then  G_i ← G_i − κ·1[row i invalid]

    The penalty is subtracted once per row and never propagated to earlier turns.

    Args:
        step_reward: r_t, ``FloatTensor[N]``.
        traj_id: ``LongTensor[N]``.
        turn: ``LongTensor[N]``.
        invalid: ``BoolTensor[N]``.
        gamma: γ.
        penalty: κ.

    Returns:
        G per row (input order), ``FloatTensor[N]``.
    """
    order = traj_order(traj_id, turn).tolist()
    r = step_reward.float()
    out = torch.zeros_like(r)
    running, prev_traj = 0.0, None
    for i in reversed(order):
        tid = int(traj_id[i])
        if tid != prev_traj:  # a new trajectory starts (walking backwards): G_{T+1} = 0
            running, prev_traj = 0.0, tid
        running = float(r[i]) + gamma * running
        out[i] = running
    return out - penalty * invalid.float()


# --------------------------------------------------------------------------------------------------------
# Group statistics
# --------------------------------------------------------------------------------------------------------


def _group_mean_std(values: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row group mean, unbiased (N−1) std and group size of ``values`` grouped by ``keys``.

    Args:
        values: ``FloatTensor[M]``.
        keys: ``LongTensor[M]``.

    Returns:
        (mean, std, count), each ``[M]`` (the statistic of the row's group); std is NaN-free: 0 for size 1.
    """
    _, inv = torch.unique(keys, return_inverse=True)
    n_groups = int(inv.max()) + 1 if inv.numel() else 0
    v = values.double()  # float64 sums: group statistics must not depend on summation order noise
    count = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, inv, torch.ones_like(v))
    mean = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, inv, v) / count
    dev2 = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, inv, (v - mean[inv]) ** 2)
    std = torch.where(count > 1, dev2 / (count - 1).clamp(min=1), torch.zeros_like(dev2)).sqrt()
    return mean[inv].float(), std[inv].float(), count[inv].float()


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not one of {NORMS}")


def episode_advantage(
    scores: torch.Tensor,
    group_id: torch.Tensor,
    traj_id: torch.Tensor,
    norm: str,
    cross_step_stats: bool = True,
) -> torch.Tensor:
    """Episode-level advantage A^E (GiGPO Eq. 3, gigpo.md §3); also the GRPO advantage (§8).

        μ_g, σ_g = mean, unbiased std of the group's statistic values;   |g| = 1 → μ_g = 0, σ_g = 1
        mean_norm:      A^E_i = S_i − μ_g
        mean_std_norm:  A^E_i = (S_i − μ_g) / (σ_g + 1e-6)

    With ``cross_step_stats`` (released default) the values are every turn row of the task group, so longer
    trajectories weigh more. Without it (``vanilla_grpo``), each trajectory contributes one value, the mean
    of its rows' scores (errata 5: the WebShop/ALFWorld reading), and |g| counts trajectories. Note that a
    singleton group gives A^E = S_i, not 0.

    Args:
        scores: S, ``FloatTensor[N]``.
        group_id: ``LongTensor[N]``.
        traj_id: ``LongTensor[N]``.
        norm: ``mean_norm`` or ``mean_std_norm``.
        cross_step_stats: pool all turn rows (true) or one value per trajectory.

    Returns:
        A^E, ``FloatTensor[N]``.
    """
    _check_norm(norm)
    s = scores.float()
    if cross_step_stats:
        mean, std, count = _group_mean_std(s, group_id)
    else:
        traj_keys, tinv = torch.unique(traj_id, return_inverse=True)
        n_traj = traj_keys.numel()
        tcount = torch.zeros(n_traj).index_add_(0, tinv, torch.ones_like(s))
        tmean = torch.zeros(n_traj).index_add_(0, tinv, s) / tcount
        tgroup = torch.zeros(n_traj, dtype=torch.long).scatter_(0, tinv, group_id)
        gmean, gstd, gcount = _group_mean_std(tmean, tgroup)
        mean, std, count = gmean[tinv], gstd[tinv], gcount[tinv]
    single = count <= 1
    mean = torch.where(single, torch.zeros_like(mean), mean)
    std = torch.where(single, torch.ones_like(std), std)
    if norm == "mean_norm":
        return s - mean
    return (s - mean) / (std + EPS)


# --------------------------------------------------------------------------------------------------------
# Anchor-state grouping (gigpo.md §5, errata 6-7)
# --------------------------------------------------------------------------------------------------------


def similarity_clusters(observations: list[str], threshold: float) -> list[int]:
    """Greedy clustering of observations, in the given order (gigpo.md §5, errata 7).

    Each observation joins the **first** cluster whose representative (its first member) has
    ``difflib.SequenceMatcher(None, obs, rep).ratio() >= threshold`` (default ``autojunk=True``: another
    similarity can flip a 0.9 decision, errata 7); otherwise it starts a new cluster. The result depends on
    the order, hence the (env, turn) order of ``anchor_groups``. Cost O(M² · string length).

    Args:
        observations: M strings.
        threshold: in (0, 1).

    Returns:
        Cluster index per observation (0, 1, ... in order of first appearance), length M.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"similarity threshold must lie in (0, 1), got {threshold}")
    reps: list[str] = []
    out: list[int] = []
    for obs in observations:
        for k, rep in enumerate(reps):
            if difflib.SequenceMatcher(None, obs, rep).ratio() >= threshold:
                out.append(k)
                break
        else:
            reps.append(obs)
            out.append(len(reps) - 1)
    return out


def anchor_groups(rows: RowBatch, similarity: bool = False, threshold: float = 0.95) -> torch.Tensor:
    """Anchor-state cluster id per row (GiGPO Eq. 6, gigpo.md §5).

    Clusters never cross task groups; within a group, rows of all turns of all trajectories are eligible
    (the same state at different turn indices pools). Exact mode: one cluster per distinct string.
    Similarity mode: ``similarity_clusters`` over the group's rows in (traj_id, turn) order (errata 6), so
    the result does not depend on the order the rows were passed in.

    Args:
        rows: the batch (uses ``group_id``, ``traj_id``, ``turn``, ``anchor_obs``).
        similarity: use difflib similarity instead of exact equality.
        threshold: similarity threshold in (0, 1).

    Returns:
        Cluster id per row, globally unique across groups, ``LongTensor[N]``.
    """
    order = traj_order(rows.traj_id, rows.turn).tolist()
    by_group: dict[int, list[int]] = {}
    for i in order:
        by_group.setdefault(int(rows.group_id[i]), []).append(i)
    cluster = torch.empty(len(rows), dtype=torch.long)
    next_id = 0
    for g in sorted(by_group):
        members = by_group[g]
        obs = [rows.anchor_obs[i] for i in members]
        if similarity:
            local = similarity_clusters(obs, threshold)
        else:
            first: dict[str, int] = {}
            local = [first.setdefault(o, len(first)) for o in obs]
        for i, k in zip(members, local, strict=True):
            cluster[i] = next_id + k
        next_id += max(local) + 1
    return cluster


def step_advantage(returns: torch.Tensor, cluster_id: torch.Tensor, norm: str) -> torch.Tensor:
    """Step-level advantage A^S (GiGPO Eq. 7, gigpo.md §6).

        μ_C, σ_C = mean, unbiased std of G over anchor cluster C;   |C| = 1 → μ_C = G_i, σ_C = 1 (A^S = 0)
        mean_norm:      A^S_i = G_i − μ_C
        mean_std_norm:  A^S_i = (G_i − μ_C) / (σ_C + 1e-6)

    Args:
        returns: G (penalised step returns), ``FloatTensor[N]``.
        cluster_id: anchor cluster per row, ``LongTensor[N]``.
        norm: ``mean_norm`` or ``mean_std_norm``.

    Returns:
        A^S, ``FloatTensor[N]``.
    """
    _check_norm(norm)
    g = returns.float()
    mean, std, count = _group_mean_std(g, cluster_id)
    single = count <= 1
    mean = torch.where(single, g, mean)
    std = torch.where(single, torch.ones_like(std), std)
    if norm == "mean_norm":
        return g - mean
    return (g - mean) / (std + EPS)


def gigpo_advantages(rows: RowBatch, p: GiGPOParams, penalty: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GiGPO final advantage A = A^E + w·A^S (GiGPO Eq. 8, gigpo.md §7).

    Args:
        rows: the batch.
        p: settings (``algo.gigpo``: norm, cross_step_stats, gamma, step_advantage_w, similarity_*).
        penalty: κ, the invalid-action penalty (0 when off).

    Returns:
        (A ``FloatTensor[N]``, parts): parts holds ``scores`` S, ``episode`` A^E, ``step_returns`` G,
        ``step`` A^S and ``cluster`` ids, each ``[N]``.
    """
    scores = row_scores(rows.episode_reward, rows.invalid, penalty)
    a_e = episode_advantage(scores, rows.group_id, rows.traj_id, p.norm, p.cross_step_stats)
    g = step_returns(rows.step_reward, rows.traj_id, rows.turn, rows.invalid, p.gamma, penalty)
    cluster = anchor_groups(rows, p.similarity_grouping, p.similarity_threshold)
    a_s = step_advantage(g, cluster, p.norm)
    parts = {"scores": scores, "episode": a_e, "step_returns": g, "step": a_s, "cluster": cluster}
    return a_e + p.step_advantage_w * a_s, parts


# --------------------------------------------------------------------------------------------------------
# Baselines (gigpo.md §8, errata 4)
# --------------------------------------------------------------------------------------------------------


def rloo_advantages(
    scores: torch.Tensor,
    group_id: torch.Tensor,
    traj_id: torch.Tensor | None = None,
    turn: torch.Tensor | None = None,
    cross_step_stats: bool = True,
) -> torch.Tensor:
    """RLOO as in the released code base (errata 4).

        A_i = n/(n−1) · (S_i − b_g),    n = |values of g|,  b_g = their mean
        n = 1 → A_i = S_i (the released code leaves a singleton's score unchanged)

    With ``cross_step_stats`` (released default) the values are the S of every turn row of the task group:
    A_i = S_i − mean_{j ∈ g, j ≠ i} S_j, so a trajectory with more turns contributes more baseline samples.
    Without it (``compute_mean_std_cross_steps=False``) the release keeps the first row it meets of each
    trajectory, so each trajectory is represented by its first row's S (its turn-0 row in the (env, turn)
    order of errata 6) and n counts trajectories; every row is then scaled against that baseline.

    gigpo.md §8 describes the textbook form (leave-one-out over the trajectories' R_τ, broadcast to the
    turn rows). Errata 4 wins: the released form uses the penalised row score S.

    Args:
        scores: S, ``FloatTensor[N]``.
        group_id: ``LongTensor[N]``.
        traj_id: ``LongTensor[N]``; needed without ``cross_step_stats``.
        turn: ``LongTensor[N]``; needed without ``cross_step_stats``.
        cross_step_stats: pool all turn rows (true) or one value per trajectory (its first row).

    Returns:
        A, ``FloatTensor[N]``.
    """
    s = scores.float()
    if cross_step_stats:
        mean, _, count = _group_mean_std(s, group_id)
    else:
        if traj_id is None or turn is None:
            raise ValueError("rloo without cross_step_stats needs traj_id and turn (one value per trajectory)")
        order = traj_order(traj_id, turn)
        first = torch.ones_like(order, dtype=torch.bool)
        first[1:] = traj_id[order][1:] != traj_id[order][:-1]
        firsts = order[first]  # one row per trajectory: its lowest turn
        _, ginv = torch.unique(group_id, return_inverse=True)
        n_groups = int(ginv.max()) + 1 if ginv.numel() else 0
        gcount = torch.zeros(n_groups, dtype=torch.float64).index_add_(
            0, ginv[firsts], torch.ones(firsts.numel(), dtype=torch.float64))
        gsum = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, ginv[firsts], s[firsts].double())
        mean, count = (gsum / gcount)[ginv].float(), gcount[ginv].float()
    scale = count / (count - 1).clamp(min=1)
    return torch.where(count > 1, scale * (s - mean), s)


def gae_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    traj_id: torch.Tensor,
    turn: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn-level GAE for PPO with a critic (gigpo.md §8), within each trajectory ordered by turn.

        δ_t = r_t + γ·V_{t+1} − V_t,   V_{T+1} = 0 (the last active turn ends the episode's rows)
        A_t = δ_t + γλ·A_{t+1},        A_{T+1} = 0
        returns_t = A_t + V_t

    One value per turn row (e.g. the value head read at the last prompt token). A trajectory cut by the
    turn cap is also bootstrapped with 0: the rows carry no value for the unseen next state.

    Args:
        rewards: r_t per row (the trainer passes step reward − κ·1[invalid]), ``FloatTensor[N]``.
        values: V_t per row, ``FloatTensor[N]`` (detached).
        traj_id: ``LongTensor[N]``.
        turn: ``LongTensor[N]``.
        gamma: γ.
        lam: λ.

    Returns:
        (advantages, returns), each ``FloatTensor[N]`` in input order.
    """
    order = traj_order(traj_id, turn).tolist()
    r, v = rewards.float(), values.detach().float()
    adv = torch.zeros_like(r)
    next_v, next_a, prev_traj = 0.0, 0.0, None
    for i in reversed(order):
        tid = int(traj_id[i])
        if tid != prev_traj:
            next_v, next_a, prev_traj = 0.0, 0.0, tid
        delta = float(r[i]) + gamma * next_v - float(v[i])
        next_a = delta + gamma * lam * next_a
        adv[i] = next_a
        next_v = float(v[i])
    return adv, adv + v


# --------------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------------


def advantage_stats(adv: torch.Tensor) -> dict[str, float]:
    """``critic/advantages/{mean,max,min}`` of the step's advantages ``[N]`` (gigpo.md §9 names)."""
    if adv.numel() == 0:
        return {}
    x = adv.float()
    return {
        keys.ADVANTAGE_MEAN: float(x.mean()),
        keys.ADVANTAGE_MAX: float(x.max()),
        keys.ADVANTAGE_MIN: float(x.min()),
    }
