"""Build a tiny, random GLM-4.6V-architecture model folder, fully offline.

The folder has what the real ``zai-org/GLM-4.6V-Flash`` folder has (``config.json``
with ``model_type: glm4v``, safetensors weights, a tokenizer carrying GLM's special
tokens and a chat template in GLM's prompt layout, ``Glm46VProcessor`` with its
image and video processor configs), so it loads through exactly the code that loads
the real weights. Its answers are noise; loading, preprocessing, batching,
streaming, thinking and box parsing are real.

Sizes follow the real model where the architecture ties them together: text head
dim 128 with ``partial_rotary_factor`` 0.5 and ``mrope_section`` [8, 12, 12]
(their sum must be head_dim * factor / 2); the vision ``out_hidden_size`` equals the
text hidden size. About 3M parameters, a few MB on disk.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

# GLM's special tokens (strings as in the real tokenizer). The processor looks up
# <|image|>, <|video|>, <|begin_of_video|>, <|end_of_video|> by string.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|image|>",
    "<|video|>",
]
# Kept as ordinary added tokens so that decoding with skip_special_tokens keeps them.
TEXT_TAGS = ["<think>", "</think>", "<answer>", "</answer>", "<|begin_of_box|>", "<|end_of_box|>", "/nothink"]

# GLM's prompt layout: [gMASK]<sop><|system|>\n...<|user|>\n<|begin_of_image|><|image|><|end_of_image|>
# question<|assistant|>; with thinking off, "/nothink" after the question and an empty think block.
CHAT_TEMPLATE = (
    "[gMASK]<sop>"
    "{%- for msg in messages -%}"
    "{%- if msg.role == 'system' -%}<|system|>{{ '\\n' }}"
    "{%- if msg.content is string -%}{{ msg.content }}"
    "{%- else -%}{%- for item in msg.content -%}{%- if item.type == 'text' -%}{{ item.text }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- elif msg.role == 'user' -%}<|user|>{{ '\\n' }}"
    "{%- if msg.content is string -%}{{ msg.content }}"
    "{%- else -%}{%- for item in msg.content -%}"
    "{%- if item.type == 'image' or 'image' in item -%}<|begin_of_image|><|image|><|end_of_image|>"
    "{%- elif item.type == 'video' or 'video' in item -%}<|begin_of_video|><|video|><|end_of_video|>"
    "{%- elif item.type == 'text' -%}{{ item.text }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if loop.last and enable_thinking is defined and not enable_thinking -%}/nothink{%- endif -%}"
    "{%- elif msg.role == 'assistant' -%}<|assistant|>{{ '\\n' }}"
    "{%- if msg.content is string -%}{{ msg.content }}"
    "{%- else -%}{%- for item in msg.content -%}{%- if item.type == 'text' -%}{{ item.text }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>"
    "{%- if enable_thinking is defined and not enable_thinking -%}{{ '\\n<think></think>\\n' }}"
    "{%- endif -%}{%- endif -%}"
)

# The scripted variant answers every prompt with this reply (GLM's output format), so that
# thinking, answer tags and box parsing can be tested through the real path.
SCRIPT_THINK = "Looking at the image."
SCRIPT_ANSWER = "The object is here: "
SCRIPT_BOX = "[120,250,480,760]"
SCRIPT_TOKENS = [SCRIPT_THINK, SCRIPT_ANSWER, SCRIPT_BOX]

TEXT_HIDDEN = 256  # 2 heads of 128: the real head dim, so the real mrope sections fit


def _build_tokenizer():
    """A byte-level BPE without merges: every string encodes, nothing to train or download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = sorted(set(pre_tokenizers.ByteLevel.alphabet()))
    vocab = {ch: i for i, ch in enumerate(byte_chars)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        padding_side="left",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    tokenizer.add_tokens(TEXT_TAGS + SCRIPT_TOKENS)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _script_weights(model, tokenizer) -> None:
    """Make the model a fixed chain of next tokens: it ignores context (attention and MLP outputs
    are zeroed, so the last token's embedding alone reaches the head) and the head maps each
    chain token to its successor. After ``<|assistant|>`` (thinking on) it writes
    ``<think>..</think><answer>.. <|begin_of_box|>[..]<|end_of_box|></answer>``; after the
    ``\n`` that closes the empty think block (thinking off) it starts at ``<answer>``."""
    import torch

    chain = [
        "<|assistant|>",
        "<think>",
        SCRIPT_THINK,
        "</think>",
        "<answer>",
        SCRIPT_ANSWER,
        "<|begin_of_box|>",
        SCRIPT_BOX,
        "<|end_of_box|>",
        "</answer>",
        "<|endoftext|>",
    ]
    newline = tokenizer.convert_ids_to_tokens(tokenizer.encode("\n", add_special_tokens=False)[0])
    pairs = [*itertools.pairwise(chain), (newline, "<answer>")]
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "language_model.layers" in name and ("o_proj" in name or "down_proj" in name):
                param.zero_()
        embed = model.get_input_embeddings().weight
        head = model.get_output_embeddings().weight
        head.normal_(0, 0.002)
        for source, target in pairs:
            source_row = embed[tokenizer.convert_tokens_to_ids(source)]
            head[tokenizer.convert_tokens_to_ids(target)] += 50 * source_row / source_row.norm()


def _printable_only(model, tokenizer) -> None:
    """Zero the head rows of every token but printable ASCII letters, digits and spaces: their logits
    are then 0 while the best printable one is almost surely positive, so the noise is readable
    (no broken UTF-8) and never ends early (no end token): each answer is ``max_tokens`` long."""
    import torch

    keep = set(" abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".replace(" ", "Ġ"))
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        for token, index in tokenizer.get_vocab().items():
            if token not in keep:
                head[index] = 0


def build_tiny_glm4v(folder: Path, *, seed: int = 0, scripted: bool = False) -> Path:
    """Write a tiny random GLM-4.6V-architecture model to ``folder`` (created) and return it.

    ``scripted``: answer every prompt with the same GLM-format reply (see ``_script_weights``);
    otherwise the answers are noise that depends on the image and the prompt.
    """
    import torch
    from transformers import (
        Glm4vConfig,
        Glm4vForConditionalGeneration,
        Glm46VImageProcessor,
        Glm46VProcessor,
        Glm46VVideoProcessor,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer()
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    eos_ids = [ids["<|endoftext|>"], ids["<|user|>"], ids["<|observation|>"]]
    config = Glm4vConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": TEXT_HIDDEN,
            "intermediate_size": 512,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 4096,
            "initializer_range": 0.1,  # larger than the default 0.02: answers vary with the image
            "pad_token_id": ids["<|endoftext|>"],
            "eos_token_id": eos_ids,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.5,
                "mrope_section": [8, 12, 12],
            },
        },
        vision_config={
            "depth": 2,
            "hidden_size": 64,
            "num_heads": 2,
            "intermediate_size": 128,
            "out_hidden_size": TEXT_HIDDEN,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "image_size": 336,
            "initializer_range": 0.1,
        },
        image_token_id=ids["<|image|>"],
        video_token_id=ids["<|video|>"],
        image_start_token_id=ids["<|begin_of_image|>"],
        image_end_token_id=ids["<|end_of_image|>"],
        video_start_token_id=ids["<|begin_of_video|>"],
        video_end_token_id=ids["<|end_of_video|>"],
    )
    torch.manual_seed(seed)
    model = Glm4vForConditionalGeneration(config).to(torch.float32).eval()
    if scripted:
        _script_weights(model, tokenizer)
    else:
        _printable_only(model, tokenizer)
    model.generation_config.eos_token_id = eos_ids
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.do_sample = False
    model.save_pretrained(folder)
    size = {"shortest_edge": 112 * 112, "longest_edge": 28 * 28 * 2048}
    processor = Glm46VProcessor(
        image_processor=Glm46VImageProcessor(size=size),
        tokenizer=tokenizer,
        video_processor=Glm46VVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(folder)
    (folder / "FLASHVL_TINY.json").write_text(
        json.dumps({"what": "tiny random GLM-4.6V-architecture model", "seed": seed, "scripted": scripted})
    )
    return folder
