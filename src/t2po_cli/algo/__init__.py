"""Advantages and losses as pure torch functions (design.md §2.1).

Modules: ``advantages`` (GRPO, GiGPO, RLOO, turn-level GAE; row level), ``losses`` (PPO-clip with dual clip,
k3 KL, entropy, value loss; token level), ``a2tgpo`` (information gain, turn-group normalisation,
accumulation, presets), ``turn_clip`` (A²TGPO turn-level ratio loss, released token layout) and
``ig_probe`` (the batched gold-answer log-prob pass).
"""
