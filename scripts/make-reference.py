#!/usr/bin/env python3
"""Makes the reference checkpoints in tests/fixtures/reference with Hugging Face transformers and
peft, the implementations billion-llm is tested against (tests/integration/reference.rs and the
tests that load these tiny models: finetune, speculative, bad_input).

For each architecture it builds a tiny model from a hub-style `config.json`, randomises every
weight (norm scales 1 + N(0, 0.1²), Gemma's stored as w in x·(1 + w); norm biases N(0, 0.1²);
everything else N(0, 0.15²): far
from the near-identity of a fresh init, so a wrong rotary or residual shows in the logits),
saves it as the hub does, adds a peft LoRA adapter with non-zero B matrices (N(0, 0.2²); peft
starts B at zero, which would make the adapter a no-op), and records in `reference.json` what
transformers and peft compute from the saved files. See tests/fixtures/reference/README.md for
the fields.

Run it in a virtual environment with CPU wheels (about 1 GB, a few minutes):

    python3 -m venv /tmp/reference-venv
    /tmp/reference-venv/bin/pip install --index-url https://download.pytorch.org/whl/cpu torch
    /tmp/reference-venv/bin/pip install 'transformers==5.17.*' 'peft==0.21.*'
    /tmp/reference-venv/bin/python scripts/make-reference.py --check   # or: (nothing), --out DIR

- `--check` recomputes every `reference.json` from the committed weights and adapters and
  compares (ids and greedy tokens exactly, numbers within the tests' own tolerances); it
  writes nothing. This is how to confirm the fixtures still say what transformers computes,
  for instance after a transformers upgrade.
- Without `--check` it makes new random checkpoints in `--out` (default: the fixtures folder,
  replacing them). The seed is fixed, so two runs on one torch version write the same files; the
  committed files came from an earlier run of this recipe whose seed was not recorded, so new
  ones have other weights (any such set is a valid fixture: the tests read every expected value
  from `reference.json`).
"""

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import peft
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "reference"
SEED = 1234
# Positions of the forward pass; the greedy continuation starts from the first GREEDY_PROMPT of
# them and generates GREEDY_NEW tokens.
POSITIONS = 24
GREEDY_PROMPT = 8
GREEDY_NEW = 16
LORA = dict(r=4, lora_alpha=8, lora_dropout=0.0)

# The hub-style configs, written as they are (transformers' own save would add its defaults).
# llama: grouped-query attention 4/2. llama3: llama3 rope scaling, an explicit head_dim, tied
# embeddings and a list of EOS ids. stablelm: partial rotary 0.25 and qkv bias. gpt_neox:
# rotary_pct 0.25, parallel residual and exact GELU. gemma3: (1 + w) RMSNorms before and after
# attention and the MLP, q/k norms, GeGLU (tanh GELU), head_dim 32 ≠ hidden / heads, query
# scaling by query_pre_attn_scalar 24, a 6-token sliding window on two of three layers (the 24
# positions pass it) with their own RoPE base, scaled and tied embeddings.
CASES = {
    "llama": (
        {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "attention_bias": False,
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "pretraining_tp": 1,
            "rope_scaling": None,
            "torch_dtype": "float32",
            "use_cache": True,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "vocab_size": 256,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
            "rms_norm_eps": 1e-05,
            "rope_theta": 10000.0,
            "tie_word_embeddings": False,
        },
        ["q_proj", "v_proj", "down_proj"],
    ),
    "llama3": (
        {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "attention_bias": False,
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "pretraining_tp": 1,
            "rope_scaling": {
                "factor": 32.0,
                "high_freq_factor": 4.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 8192,
                "rope_type": "llama3",
            },
            "torch_dtype": "float32",
            "use_cache": True,
            "bos_token_id": 1,
            "eos_token_id": [2, 3],
            "vocab_size": 320,
            "hidden_size": 64,
            "intermediate_size": 160,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "max_position_embeddings": 131072,
            "rms_norm_eps": 1e-05,
            "rope_theta": 500000.0,
            "mlp_bias": False,
            "attention_dropout": 0.0,
            "tie_word_embeddings": True,
        },
        ["q_proj", "v_proj", "down_proj"],
    ),
    "stablelm": (
        {
            "architectures": ["StableLmForCausalLM"],
            "model_type": "stablelm",
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "torch_dtype": "float32",
            "use_cache": True,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "use_qkv_bias": True,
            "tie_word_embeddings": False,
            "vocab_size": 300,
            "hidden_size": 64,
            "intermediate_size": 176,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "partial_rotary_factor": 0.25,
            "layer_norm_eps": 1e-05,
            "rope_theta": 10000,
            "max_position_embeddings": 256,
        },
        ["q_proj", "v_proj"],
    ),
    "gpt_neox": (
        {
            "architectures": ["GPTNeoXForCausalLM"],
            "model_type": "gpt_neox",
            "hidden_act": "gelu",
            "initializer_range": 0.02,
            "torch_dtype": "float32",
            "use_cache": True,
            "bos_token_id": 0,
            "eos_token_id": 0,
            "use_parallel_residual": True,
            "tie_word_embeddings": False,
            "vocab_size": 288,
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "rotary_pct": 0.25,
            "rotary_emb_base": 10000,
            "layer_norm_eps": 1e-05,
            "max_position_embeddings": 256,
        },
        ["query_key_value", "dense_4h_to_h"],
    ),
    "gemma3": (
        {
            "architectures": ["Gemma3ForCausalLM"],
            "model_type": "gemma3_text",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "attn_logit_softcapping": None,
            "final_logit_softcapping": None,
            "bos_token_id": 2,
            "eos_token_id": 1,
            "pad_token_id": 0,
            "hidden_activation": "gelu_pytorch_tanh",
            "initializer_range": 0.02,
            "torch_dtype": "float32",
            "use_cache": True,
            "use_bidirectional_attention": False,
            "vocab_size": 272,
            "hidden_size": 64,
            "intermediate_size": 160,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 32,
            "query_pre_attn_scalar": 24,
            "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
            "sliding_window": 6,
            "rope_theta": 1000000.0,
            "rope_local_base_freq": 10000.0,
            "rope_scaling": None,
            "rms_norm_eps": 1e-06,
            "max_position_embeddings": 256,
            "tie_word_embeddings": True,
        },
        ["q_proj", "v_proj", "down_proj"],
    ),
}


def write_config(case_dir: Path, config: dict) -> None:
    (case_dir / "config.json").write_text(json.dumps(config, indent=2))


@torch.no_grad()
def randomise(model: torch.nn.Module, zero_centred_norms: bool) -> None:
    """`zero_centred_norms`: the norms scale by 1 + w (Gemma), so w is drawn around 0 to give
    the same scales, 1 + N(0, 0.1²), as the other families' w."""
    for name, p in model.named_parameters():
        if "norm" in name:
            base = 1.0 if name.endswith("weight") and not zero_centred_norms else 0.0
            p.copy_(base + 0.1 * torch.randn_like(p))
        else:
            p.normal_(0.0, 0.15)


def make(name: str, case_dir: Path) -> list:
    """Writes a random checkpoint and its adapter into `case_dir`; returns the input ids."""
    config, targets = CASES[name]
    if case_dir.exists():
        shutil.rmtree(case_dir)
    case_dir.mkdir(parents=True)
    write_config(case_dir, config)
    # The config read back the way a user's load reads it; the model's own init is replaced.
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(case_dir))
    model = model.to(torch.float32)
    randomise(model, zero_centred_norms=config["model_type"].startswith("gemma"))
    model.config._name_or_path = name  # what the adapter's base_model_name_or_path records
    model.save_pretrained(case_dir)
    # save_pretrained writes transformers' full config: keep the hub-style one the tests read.
    write_config(case_dir, config)

    lora = get_peft_model(model, LoraConfig(target_modules=targets, **LORA))
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.2)
    lora.save_pretrained(case_dir / "lora")
    # The base's name, not the path it was saved to (which save_pretrained can leave there).
    adapter_config = case_dir / "lora" / "adapter_config.json"
    settings = json.loads(adapter_config.read_text())
    settings["base_model_name_or_path"] = name
    adapter_config.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return torch.randint(0, config["vocab_size"], (POSITIONS,)).tolist()


def measure(name: str, case_dir: Path, input_ids: list) -> dict:
    """What transformers and peft compute from the files in `case_dir`."""
    base = AutoModelForCausalLM.from_pretrained(case_dir, dtype=torch.float32).eval()
    ids = torch.tensor([input_ids])
    with torch.no_grad():
        logits = base(ids).logits[0]
    prompt = input_ids[:GREEDY_PROMPT]
    eos = base.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    # min_new_tokens masks the EOS ids until all GREEDY_NEW tokens are out (like --ignore-eos).
    out = base.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=GREEDY_NEW,
        min_new_tokens=GREEDY_NEW,
        do_sample=False,
        pad_token_id=eos,
    )
    reference = {
        "arch": CASES[name][0]["model_type"],
        "input_ids": input_ids,
        "logits": logits.double().tolist(),
        "greedy_prompt": prompt,
        "greedy_new_tokens": out[0, len(prompt) :].tolist(),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }

    lora = PeftModel.from_pretrained(base, case_dir / "lora", is_trainable=True).eval()
    with torch.no_grad():
        reference["lora_logits"] = lora(ids).logits[0].double().tolist()
    lora.train()
    # The ids are their own labels: transformers shifts them, so position t predicts id t + 1.
    loss = lora(input_ids=ids, labels=ids).loss
    loss.backward()
    reference["lora_loss"] = loss.item()
    reference["lora_grad_norms"] = {
        n: p.grad.norm().item() for n, p in lora.named_parameters() if p.requires_grad
    }
    reference["peft"] = peft.__version__
    return reference


def compare(name: str, ours: dict, committed: dict) -> list:
    """The differences beyond the tests' tolerances, as lines to print."""
    problems = []
    for key in ["input_ids", "greedy_prompt", "greedy_new_tokens"]:
        if ours[key] != committed[key]:
            problems.append(f"{name} {key}: {ours[key]} != {committed[key]}")
    for key in ["logits", "lora_logits"]:
        scale = max(abs(v) for row in committed[key] for v in row)
        diff = max(
            abs(a - b)
            for ra, rb in zip(ours[key], committed[key], strict=True)
            for a, b in zip(ra, rb, strict=True)
        )
        print(f"{name} {key}: max|diff| {diff:.2e} (max|ref| {scale:.2f})")
        if diff > 1e-4 * scale:
            problems.append(f"{name} {key}: max|diff| {diff:e} > 1e-4 x {scale:e}")
    if not math.isclose(ours["lora_loss"], committed["lora_loss"], rel_tol=1e-4):
        problems.append(f"{name} lora_loss: {ours['lora_loss']} != {committed['lora_loss']}")
    if ours["lora_grad_norms"].keys() != committed["lora_grad_norms"].keys():
        problems.append(f"{name} lora_grad_norms: other parameter names")
    for n, v in committed["lora_grad_norms"].items():
        if not math.isclose(ours["lora_grad_norms"].get(n, math.nan), v, rel_tol=1e-3):
            problems.append(f"{name} {n}: gradient norm {ours['lora_grad_norms'].get(n)} != {v}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=FIXTURES)
    parser.add_argument(
        "--check",
        action="store_true",
        help="recompute each reference.json from the committed files and compare; write nothing",
    )
    parser.add_argument(
        "--only",
        choices=list(CASES),
        action="append",
        help="make or check only this case (repeatable); the others are left as they are",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread: sums in one order, so a rerun gives the same bits
    problems = []
    for name in args.only or CASES:
        case_dir = args.out / name
        if args.check:
            committed = json.loads((case_dir / "reference.json").read_text())
            problems += compare(name, measure(name, case_dir, committed["input_ids"]), committed)
        else:
            torch.manual_seed(SEED)
            ids = make(name, case_dir)
            reference = measure(name, case_dir, ids)
            (case_dir / "reference.json").write_text(json.dumps(reference))
            print(f"{name}: {sum(1 for _ in case_dir.rglob('*'))} files in {case_dir}")
    for p in problems:
        print(p, file=sys.stderr)
    if args.check:
        print("the fixtures match" if not problems else f"{len(problems)} mismatches")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
