"""VectorEnv: groups share task and seed, only active envs step, executors agree (envs.md §0.1-§0.2)."""

from __future__ import annotations

import pytest

from t2po_cli.config.schema import EnvConfig
from t2po_cli.envs.registry import get_family
from t2po_cli.envs.vector import VectorEnv
from t2po_cli.errors import UserError


def _rollout(executor: str, family: str = "webshop", steps: int = 4):
    fam = get_family(family)
    tasks = fam.sample_tasks("train", [0, 1], 7, 1)
    policies = [fam.expert_policy(0), fam.random_policy(1)] * 2
    with VectorEnv(family, EnvConfig(name=family), 4, executor=executor) as venv:
        first = venv.reset(tasks, group_size=2)
        obs = [o for o, _ in first]
        infos = [i for _, i in first]
        log = [first]
        for t in range(steps):
            actions = [fam.project(policies[i](venv.slots[i].task, obs[i], infos[i], t), infos[i]["admissible"]
                                   ).action if venv.active[i] else None for i in range(4)]
            results = venv.step(actions)
            log.append([(r.obs, r.reward, r.done) if r else None for r in results])
            for i, r in enumerate(results):
                if r is not None:
                    obs[i], infos[i] = r.obs, r.info
        return venv.slots, log


def test_groups_share_task_seed_and_uid():
    slots, log = _rollout("inline", steps=0)
    assert [s.group for s in slots] == [0, 0, 1, 1]
    assert slots[0].task == slots[1].task and slots[0].uid == slots[1].uid != slots[2].uid
    assert log[0][0] == log[0][1]  # same task -> identical reset


def test_finished_envs_are_masked_out():
    _slots, log = _rollout("inline", family="searchqa", steps=4)
    # env 0 is an expert on a 1- or 2-hop question: it answers within 3 turns, then returns None.
    done_at = next(t for t, row in enumerate(log[1:]) if row[0] and row[0][2])
    assert all(row[0] is None for row in log[done_at + 2:])


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_executors_agree_with_inline(executor):
    assert _rollout(executor) == _rollout("inline")


def test_bad_arguments():
    with pytest.raises(UserError, match="executor"):
        VectorEnv("webshop", EnvConfig(), 2, executor="gpu")
    fam = get_family("webshop")
    with VectorEnv("webshop", EnvConfig(), 2) as venv, pytest.raises(UserError, match="must equal"):
        venv.reset(fam.sample_tasks("val", [0, 1], 0, 1), group_size=2)
