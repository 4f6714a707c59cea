"""t2po: experiment orchestration for multi-turn agentic RL (T2PO, A2TGPO, GiGPO, GRPO, PPO)."""

__version__ = "0.1.0"
