"""Config tier: every recipe composes and validates; the schema rejects unknown keys and wrong types."""

from __future__ import annotations

from pathlib import Path

import pytest

from t2po_cli.cli.catalog import _recipe_files, validation_overrides
from t2po_cli.config.compose import compose_config, load_run_config, recipes_dir
from t2po_cli.config.schema import RunConfig
from t2po_cli.errors import ConfigError

RECIPES = [k for k in _recipe_files() if not k.startswith("sweeps/")]


def test_recipe_count_is_known() -> None:
    # A new recipe must be added here on purpose, so nothing is silently left unvalidated.
    on_disk = 1 + sum(1 for p in recipes_dir().rglob("*.yaml") if p.parent != recipes_dir())
    assert len(RECIPES) == on_disk == 26


@pytest.mark.parametrize("key", RECIPES)
def test_every_recipe_composes(key: str) -> None:
    composed = compose_config(validation_overrides(key))
    assert isinstance(composed.config, RunConfig)
    group, _, option = key.partition("/")
    if group == "env":
        assert composed.config.env.name == option
    if group == "t2po":
        assert composed.config.t2po.variant == option


def test_default_is_webshop_gigpo_t2po_on() -> None:
    cfg = compose_config([]).config
    assert (cfg.env.name, cfg.algo.name, cfg.t2po.variant, cfg.model.kind) == ("webshop", "gigpo", "on", "tiny")
    assert cfg.t2po.tti.enabled and cfg.t2po.tds.enabled
    assert cfg.experiment_name == "webshop"


def test_admissible_action_decoding_is_a_cpu_recipe_choice() -> None:
    # The tiny model cannot copy listed ids, so the CPU recipes constrain actions; real models do not.
    assert compose_config([]).config.trainer.constrained_actions
    assert compose_config(["trainer=ci"]).config.trainer.constrained_actions
    assert not compose_config(["trainer=gpu", "model=qwen2.5-1.5b"]).config.trainer.constrained_actions


def test_env_defaults_win_over_algo_group() -> None:
    # envs.md §1 / t2po.md §7: WebShop mean_norm, ALFWorld mean_std_norm, Search similarity at 0.9.
    assert compose_config(["env=webshop"]).config.algo.norm == "mean_norm"
    assert compose_config(["env=alfworld"]).config.algo.norm == "mean_std_norm"
    s = compose_config(["env=searchqa"]).config.algo
    assert s.similarity_grouping and s.similarity_threshold == 0.9


def test_user_override_beats_env_default() -> None:
    assert compose_config(["env=webshop", "algo.norm=mean_std_norm"]).config.algo.norm == "mean_std_norm"


def test_experiment_recipe_selects_groups() -> None:
    cfg = compose_config(["experiment=alfworld_gigpo_t2po"]).config
    assert cfg.env.name == "alfworld" and cfg.trainer.kl_coef == 0.01
    assert cfg.experiment_name == "alfworld_gigpo_t2po"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["trainer.bogus=1"], "append"),
        (["+trainer.bogus=1"], "unknown key 'trainer.bogus'"),
        (["trainer.steps=abc"], "could not be converted"),
        (["env=nope"], "Could not find 'env/nope'"),
        (["algo=a2tgpo"], "needs gold answers"),
        (["trainer.group_size=1"], "group_size >= 2"),
        (["trainer.mini_batch_rows=5"], "not divisible"),
        (["t2po.alpha=1.5"], "out of range"),
        (["algo.dual_clip_c=0.5"], "must be > 1"),
        (["algo.similarity_threshold=1.0"], "out of range"),
        (["trainer.train_sampling.top_p=0"], "out of range"),
        (["launcher.name=slurm"], "needs a profile"),
        (["steps"], "KEY=VALUE"),
        (["trainer.constrained_actions=false", "trainer.constrained_queries=true"],
         "constrained_queries=true needs trainer.constrained_actions=true"),
    ],
)
def test_bad_config_is_one_clear_line(overrides: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        compose_config(overrides)
    msg = str(info.value)
    assert fragment in msg
    assert "\n" not in msg


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    composed = compose_config(["env=alfworld", "t2po.tds.eta=0.1"])
    path = tmp_path / "resolved_config.yaml"
    path.write_text(composed.yaml)
    assert load_run_config(path) == composed.config
