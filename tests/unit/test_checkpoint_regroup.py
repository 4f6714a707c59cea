"""Optimizer checkpoints saved with one param group load into an optimizer with a separate value-head group."""

from __future__ import annotations

import torch

from t2po_cli.trainer.checkpoint import _regroup


def test_single_group_checkpoint_keeps_moments_and_takes_new_learning_rates() -> None:
    body, head = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)
    old = torch.optim.AdamW([*body.parameters(), *head.parameters()], lr=1e-4)
    (body(torch.ones(1, 3)).sum() + head(torch.ones(1, 2)).sum()).backward()
    old.step()
    saved = old.state_dict()

    new = torch.optim.AdamW([{"params": list(body.parameters()), "lr": 1e-4},
                             {"params": list(head.parameters()), "lr": 1e-3}], lr=1e-4)
    new.load_state_dict(_regroup(saved, new))
    assert [g["lr"] for g in new.param_groups] == [1e-4, 1e-3]
    for p, q in zip([*body.parameters(), *head.parameters()], [*body.parameters(), *head.parameters()], strict=True):
        assert torch.equal(new.state[p]["exp_avg"], old.state[q]["exp_avg"])


def test_matching_groups_pass_through_unchanged() -> None:
    lin = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(lin.parameters(), lr=1e-3)
    saved = opt.state_dict()
    assert _regroup(saved, opt) is saved
