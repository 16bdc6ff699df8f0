"""A demo model that needs no internet: a random-weight Llama with a locally trained byte-level BPE tokenizer.

Hidden size 256 with 4 heads (head_dim 64: vLLM's CPU attention rejects 16), 2 KV heads, 2 layers, a 512-token
vocabulary and a chat template, saved in Hugging Face layout (``config.json``, ``model.safetensors``,
``tokenizer.json``, ``tokenizer_config.json``, ``generation_config.json``). vLLM on CPU loads it in under a minute
and serves thousands of tokens per second on two cores: enough to exercise the whole lifecycle for real.

Needs the ``local`` extra (torch, transformers, tokenizers come with vLLM).
"""

from __future__ import annotations

import json
from pathlib import Path

VOCAB_SIZE = 512
MAX_POSITION_EMBEDDINGS = 4096
SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|user|>", "<|assistant|>", "<|system|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def _training_text() -> list[str]:
    """English text that ships with Python itself (the help topics of ``pydoc``), for the BPE merges."""
    from pydoc_data.topics import topics

    return [topics[name] for name in sorted(topics)]


def train_tokenizer(directory: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_training_text(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        pad_token="<|end_of_text|>",
        model_max_length=MAX_POSITION_EMBEDDINGS,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)


def make_tiny_model(directory: Path, seed: int = 0) -> Path:
    """Write the demo model into ``directory`` (created if needed) and return it."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    train_tokenizer(directory)
    vocab_size = len(json.loads((directory / "tokenizer.json").read_text())["model"]["vocab"])
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=max(vocab_size, VOCAB_SIZE),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=MAX_POSITION_EMBEDDINGS,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        tie_word_embeddings=True,
        dtype="float32",
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory, safe_serialization=True)
    GenerationConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1).save_pretrained(directory)
    return directory


#: The demo adapter's target modules and rank: small enough to write in a second, large enough to change outputs.
ADAPTER_TARGET_MODULES = ("q_proj", "v_proj")
ADAPTER_RANK = 8


def make_tiny_adapter(directory: Path, base_repo: str, *, seed: int = 1, scale: float = 0.5) -> Path:
    """Write a LoRA adapter for the demo model into ``directory`` in PEFT's layout (``adapter_config.json``,
    ``adapter_model.safetensors``), without PEFT: random A and B matrices for ``q_proj`` and ``v_proj`` of every
    layer. PEFT starts B at zero (an adapter that changes nothing); here both are random, so that a completion
    through the adapter differs from the base's."""
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    hidden, head_dim, heads, kv_heads, layers = 256, 64, 4, 2, 2  # make_tiny_model's architecture
    outputs = {"q_proj": heads * head_dim, "v_proj": kv_heads * head_dim}
    tensors = {}
    for layer in range(layers):
        for module in ADAPTER_TARGET_MODULES:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(ADAPTER_RANK, hidden) * scale
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(outputs[module], ADAPTER_RANK) * scale
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_repo,
        "r": ADAPTER_RANK,
        "lora_alpha": 2 * ADAPTER_RANK,
        "lora_dropout": 0.0,
        "target_modules": list(ADAPTER_TARGET_MODULES),
        "bias": "none",
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
    }
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return directory
