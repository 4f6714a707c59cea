"""Policy construction: base model + tokenizer, LoRA adapters or full fine-tuning, value head, checkpoints.

``load_policy(cfg)`` is the one entry point. It resolves the base folder (``tiny`` build, ``smollm2``
conversion or a local ``hf`` folder, see ``offline_models``), loads it in the resolved dtype, wraps it in
peft LoRA adapters when ``cfg.lora.enabled`` and adds an optional scalar value head for PPO.

Checkpoint layout written by ``save_trainable`` (a folder the trainer's checkpoint module owns)::

    policy.json                 kind, lora flag, base folder, dtype (read back by load_policy)
    adapter/                    peft adapter (LoRA)                  | or
    model/                      full HF folder incl. tokenizer      (full fine-tuning)
    value_head.safetensors      when the policy has a value head
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from t2po_cli.config.schema import ModelConfig
from t2po_cli.errors import UserError
from t2po_cli.trainer import offline_models

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class ValueHead(nn.Module):
    """Scalar value V(s_t) from the last hidden state (PPO critic sharing the policy trunk).

    Kept in float32 whatever the base dtype, so value regression does not run in bf16.
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, 1)
        # Zero init: every state starts at V = 0, so the first advantages are plain returns.
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden [B, T, H]`` (any float dtype) → values ``[B, T]`` float32."""
        return self.proj(hidden.float()).squeeze(-1)


@dataclass
class Policy:
    """Everything the rollout engine and the trainer need about the policy.

    Attributes:
        model: the causal LM (a ``peft.PeftModel`` when ``lora`` is true).
        tokenizer: its tokenizer (left padding, pad token set).
        eos_id: the chat end-of-turn id (``<|im_end|>`` for ChatML models).
        eos_ids: every id that ends a response (``eos_id`` first; some models list two).
        pad_id: padding id (never sampled into a response).
        think_ids: ``(<think>, </think>)`` ids when both are single tokens, else None (TTI unavailable).
        device: where the model lives.
        dtype: base weights dtype (LoRA adapters and the value head stay float32).
        lora: adapters are the trainable part (else every weight is).
        base_path: folder the base weights were loaded from (recorded in checkpoints).
        value_head: PPO critic head, or None.
        reference_model: frozen copy for the KL reference under full fine-tuning, or None.
    """

    model: nn.Module
    tokenizer: object
    eos_id: int
    eos_ids: tuple[int, ...]
    pad_id: int
    think_ids: tuple[int, int] | None
    device: torch.device
    dtype: torch.dtype
    lora: bool
    base_path: Path
    kind: str
    value_head: ValueHead | None = None
    reference_model: nn.Module | None = field(default=None, repr=False)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimizer updates: adapters or all weights, plus the value head."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.value_head is not None:
            params += list(self.value_head.parameters())
        return params

    @contextlib.contextmanager
    def reference(self) -> Iterator[nn.Module]:
        """Context yielding the reference policy π_ref for the KL term, under ``torch.no_grad``.

        With LoRA it is the same model with adapters disabled (``disable_adapter``, model.md §7.5): no second
        copy. With full fine-tuning the weights themselves move, so a frozen copy is needed; it is made only
        when ``load_policy(..., with_reference=True)`` (i.e. ``trainer.kl_coef > 0``), because it doubles
        memory. Do not step the optimizer inside this context.

        Raises:
            RuntimeError: full fine-tuning without a reference copy.
        """
        with torch.no_grad():
            if self.lora:
                with self.model.disable_adapter():
                    yield self.model
            elif self.reference_model is not None:
                yield self.reference_model
            else:
                raise RuntimeError("full fine-tuning without a reference copy: load_policy(with_reference=True)")


# ------------------------------------------------------------------------------------------ dtype


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 dot products (avx512_bf16 or AMX), read from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(cfg: ModelConfig, device: torch.device) -> torch.dtype:
    """The base weights dtype for ``cfg.dtype``.

    ``auto`` is bf16 where it is fast (CUDA with bf16, or a CPU with bf16 instructions: 2.2-2.7x, model.md §3a)
    and float32 elsewhere. Two exceptions stay float32 under ``auto``: the tiny model (Python overhead
    dominates, bf16 buys nothing, model.md §7.3) and full fine-tuning (AdamW on bf16 weights loses updates).
    """
    if cfg.dtype == "float32":
        return torch.float32
    if cfg.dtype == "bfloat16":
        return torch.bfloat16
    if cfg.kind == "tiny" or not cfg.lora.enabled:
        return torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ------------------------------------------------------------------------------------------ loading


def base_folder(cfg: ModelConfig) -> Path:
    """The base model folder for ``cfg.kind`` (building or converting it into the cache if needed)."""
    if cfg.kind == "tiny":
        return offline_models.tiny_dir(cfg)
    if cfg.kind == "smollm2":
        return offline_models.smollm2_dir()
    if cfg.kind == "reader":
        return offline_models.reader_dir(cfg)
    if cfg.kind == "hf":
        return _resolve_hf(cfg.path)
    raise UserError(f"unknown model.kind '{cfg.kind}'; choose tiny, smollm2, reader or hf")


def _resolve_hf(path: str | None) -> Path:
    """A local folder, or the snapshot folder of a hub id already in the HF cache (never downloads)."""
    if not path:
        raise UserError("model.kind=hf needs model.path (a local folder or a cached hub id)")
    if Path(path).expanduser().is_dir():
        return Path(path).expanduser()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(path, local_files_only=True))
    except Exception as err:  # LocalEntryNotFoundError, HFValidationError, ...: all mean "not here"
        raise UserError(
            f"model.path={path} is neither a folder nor in the local Hugging Face cache ({type(err).__name__}); "
            f"download it once where there is network (huggingface-cli download {path}) or point model.path "
            f"at a local checkpoint folder"
        ) from err


def load_tokenizer(folder: Path):
    """The tokenizer of ``folder`` with left padding (the engine's batch layout) and a pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        # Models without a pad token (SmolLM2, Llama): pad with EOS. Pads are masked and never recorded.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def single_token_id(tokenizer, text: str) -> int | None:
    """The id of ``text`` if it encodes to exactly one token, else None."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


def _eos_ids(model: nn.Module, tokenizer) -> tuple[int, ...]:
    ids = [tokenizer.eos_token_id]
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for extra in gen_eos if isinstance(gen_eos, list) else [gen_eos]:
        if extra is not None and extra not in ids:
            ids.append(extra)
    return tuple(int(i) for i in ids)


def load_policy(
    cfg: ModelConfig,
    *,
    checkpoint: str | Path | None = None,
    base_path: str | Path | None = None,
    with_reference: bool = False,
    device: torch.device | str | None = None,
) -> Policy:
    """Build the policy described by ``cfg``, optionally resuming the trainable part from a checkpoint.

    Args:
        cfg: model section of the run config.
        checkpoint: a folder written by ``save_trainable``; its full weights (``model/``) become the base, or
            its adapter (``adapter/``) is loaded onto the recorded base. A full-weights checkpoint under a
            LoRA config gets fresh adapters (warm start with full fine-tuning, RL with LoRA).
        base_path: load base weights from this folder instead of the ``cfg.kind`` default (prebuilt models,
            tests with a synthetic-corpus tiny build).
        with_reference: full fine-tuning only: keep a frozen copy for ``Policy.reference()`` (KL term).
        device: defaults to CUDA when available, else CPU.

    Returns:
        The policy in train mode with only its trainable part requiring grad.
    """
    from transformers import AutoModelForCausalLM

    device = torch.device(device) if device is not None else default_device()
    ckpt = Path(checkpoint) if checkpoint is not None else None
    meta = json.loads((ckpt / "policy.json").read_text()) if ckpt is not None else {}
    if ckpt is not None and (ckpt / "model").is_dir():
        base = ckpt / "model"
    elif ckpt is not None and (ckpt / "adapter").is_dir():
        base = Path(meta["base_path"])
    else:
        base = Path(base_path) if base_path is not None else base_folder(cfg)
    dtype = resolve_dtype(cfg, device)
    tokenizer = load_tokenizer(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, local_files_only=True).to(device)
    reference_model = None
    if cfg.lora.enabled:
        model = _with_lora(model, cfg, ckpt / "adapter" if ckpt is not None and (ckpt / "adapter").is_dir() else None)
    else:
        model.requires_grad_(True)
        if with_reference:
            reference_model = copy.deepcopy(model).eval().requires_grad_(False)
    value_head = None
    if cfg.value_head:
        value_head = ValueHead(model.config.hidden_size).to(device)
        if ckpt is not None and (ckpt / "value_head.safetensors").is_file():
            from safetensors.torch import load_file

            value_head.load_state_dict(load_file(ckpt / "value_head.safetensors", device=str(device)))
    open_id, close_id = single_token_id(tokenizer, THINK_OPEN), single_token_id(tokenizer, THINK_CLOSE)
    eos_ids = _eos_ids(model, tokenizer)
    return Policy(
        model=model.train(), tokenizer=tokenizer, eos_id=eos_ids[0], eos_ids=eos_ids,
        pad_id=int(tokenizer.pad_token_id), device=device, dtype=dtype, lora=cfg.lora.enabled,
        think_ids=(open_id, close_id) if open_id is not None and close_id is not None else None,
        base_path=base.resolve(), kind=cfg.kind, value_head=value_head, reference_model=reference_model,
    )


def _with_lora(model: nn.Module, cfg: ModelConfig, adapter: Path | None) -> nn.Module:
    """Wrap ``model`` in trainable LoRA adapters (fresh, or loaded from ``adapter``); the base is frozen.

    peft keeps adapters in float32 on a bf16 base (``autocast_adapter_dtype``), so AdamW runs in fp32.
    """
    import warnings

    from peft import LoraConfig, PeftModel, get_peft_model

    with warnings.catch_warnings():
        # peft still calls transformers' renamed is_gradient_checkpointing (model.md §0); not actionable here.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        if adapter is not None:
            return PeftModel.from_pretrained(model, adapter, is_trainable=True)
        lora = LoraConfig(
            r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
            target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM",
        )
        return get_peft_model(model, lora)


# ------------------------------------------------------------------------------------------ checkpoints


def save_trainable(policy: Policy, folder: str | Path) -> Path:
    """Write the trainable part of ``policy`` (adapter or full weights, plus value head) to ``folder``.

    ``folder`` must not exist yet or be empty; the caller (trainer checkpointing) owns atomicity.

    Returns:
        ``folder`` as a Path.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    if policy.lora:
        policy.model.save_pretrained(out / "adapter")
    else:
        policy.model.save_pretrained(out / "model")
        policy.tokenizer.save_pretrained(out / "model")
    if policy.value_head is not None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in policy.value_head.state_dict().items()},
                  out / "value_head.safetensors")
    meta = {"kind": policy.kind, "lora": policy.lora, "base_path": str(policy.base_path),
            "dtype": str(policy.dtype).removeprefix("torch."), "value_head": policy.value_head is not None}
    (out / "policy.json").write_text(json.dumps(meta, indent=2))
    return out


def load_trainable(policy: Policy, folder: str | Path) -> None:
    """Load a ``save_trainable`` folder into an existing policy in place (same structure required).

    Raises:
        UserError: the checkpoint holds a different trainable part (adapter vs full weights).
    """
    from safetensors.torch import load_file

    src = Path(folder)
    meta = json.loads((src / "policy.json").read_text())
    if meta["lora"] != policy.lora:
        raise UserError(f"checkpoint {src} has lora={meta['lora']} but the policy has lora={policy.lora}; "
                        f"use the same model.lora.enabled as the run that wrote it")
    if policy.lora:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(policy.model, load_file(src / "adapter" / "adapter_model.safetensors"))
    else:
        state: dict[str, torch.Tensor] = {}
        for shard in sorted((src / "model").glob("*.safetensors")):
            state.update(load_file(shard, device=str(policy.device)))
        missing, unexpected = policy.model.load_state_dict(state, strict=False)
        # Tied embeddings: save_pretrained stores the shared matrix once, so lm_head.weight may be absent.
        if unexpected or set(missing) - {"lm_head.weight"}:
            raise UserError(f"checkpoint {src} does not match the model: missing {missing}, unexpected {unexpected}")
    if policy.value_head is not None and (src / "value_head.safetensors").is_file():
        policy.value_head.load_state_dict(load_file(src / "value_head.safetensors", device=str(policy.device)))
