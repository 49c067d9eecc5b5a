"""Write the fixtures of learner/tests/parity.rs and rollout/tests/families.rs: tiny random
checkpoints of every model family rlvr runs, made by `transformers`, with what `transformers`
computes on them, so the Rust tests check our model against the reference without Python.
Run with the bench venv:

    source scripts/bench-venv.sh && bench_venv "torch, transformers" torch==2.11.0 transformers
    "$BENCH_PYTHON" scripts/parity-fixtures.py

Every parameter is drawn from N(0, 0.2) — biases and norm weights too, whose default init
(zeros, ones) would hide a dropped bias or norm. Per family, `expected.safetensors` holds:
- `input_ids` [1, 16] and `logits` [1, 16, vocab]: the full forward;
- `loss` and `grad_norm`: the mean next-token cross-entropy of `input_ids` and the L2 norm of
  its gradient over every parameter (one training step's figures, before any clipping);
- `prompt_a` [6], `prompt_b` [3] and `greedy_a`, `greedy_b` [8]: greedy continuations, with
  `greedy_logprobs_a`, `greedy_logprobs_b` [8] the log-probability of each chosen token.

Shapes: Llama 3.1 (untied head, grouped-query attention, `llama3` RoPE scaling, theta 500000);
SmolLM2 (tied embeddings, theta 100000); Llama with attention and MLP biases; Mistral (no
sliding window); Qwen2 (q/k/v biases, tied, as Qwen2.5-0.5B); Qwen3 (head_dim 16 ≠ 32/4,
per-head q/k norms); OLMo 2 (norms after attention and MLP, whole-projection q/k norms). And a
reward model (`LlamaForSequenceClassification` with one label, Llama 3.1's shape) with its
score at every position, for the PPO value model.
"""

import pathlib

import torch
from safetensors.torch import save_file
from transformers import (AutoConfig, AutoModelForCausalLM, LlamaConfig,
                          LlamaForSequenceClassification)

OUT = pathlib.Path(__file__).resolve().parent.parent / "learner" / "tests" / "fixtures" / "parity"

COMMON = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=64, max_position_embeddings=64)

SHAPES = {
    "llama31": ("llama", dict(
        COMMON, intermediate_size=88, rms_norm_eps=1e-5, rope_theta=500000.0,
        tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
    )),
    "smollm2": ("llama", dict(
        COMMON, num_key_value_heads=4, rms_norm_eps=1e-5, rope_theta=100000.0,
        tie_word_embeddings=True,
    )),
    "llama_bias": ("llama", dict(COMMON, attention_bias=True, mlp_bias=True, rms_norm_eps=1e-5)),
    "mistral": ("mistral", dict(COMMON, sliding_window=None, rms_norm_eps=1e-5)),
    "qwen2": ("qwen2", dict(COMMON, tie_word_embeddings=True, rope_theta=1000000.0)),
    "qwen3": ("qwen3", dict(COMMON, head_dim=16, rope_theta=1000000.0)),
    "olmo2": ("olmo2", dict(COMMON, rms_norm_eps=1e-6, rope_theta=500000.0)),
}

INPUT = [1, 5, 9, 2, 33, 7, 60, 12, 12, 40, 3, 0, 17, 25, 48, 63]
PROMPT_A = [1, 5, 9, 2, 33, 7]
PROMPT_B = [4, 61, 30]
NEW_TOKENS = 8


def randomise(model):
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)


def greedy(model, prompt):
    """Greedy continuation and each chosen token's log-probability, one full forward a step."""
    ids = list(prompt)
    logprobs = []
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
            lp = torch.log_softmax(logits, -1)
            token = int(lp.argmax())
            ids.append(token)
            logprobs.append(float(lp[token]))
    return torch.tensor(ids[len(prompt):]), torch.tensor(logprobs)


def main():
    for name, (model_type, shape) in SHAPES.items():
        torch.manual_seed(0)
        config = AutoConfig.for_model(model_type, **shape)
        config._attn_implementation = "eager"
        model = AutoModelForCausalLM.from_config(config).eval()
        randomise(model)
        out = OUT / name
        model.save_pretrained(out, safe_serialization=True)
        ids = torch.tensor([INPUT])
        with torch.no_grad():
            logits = model(input_ids=ids).logits.float()
        model.zero_grad()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grad_norm = torch.sqrt(sum(p.grad.double().pow(2).sum() for p in model.parameters()))
        greedy_a, lp_a = greedy(model, PROMPT_A)
        greedy_b, lp_b = greedy(model, PROMPT_B)
        save_file({
            "input_ids": ids, "logits": logits.contiguous(),
            "loss": loss.detach().double().reshape(1), "grad_norm": grad_norm.reshape(1),
            "prompt_a": torch.tensor(PROMPT_A), "prompt_b": torch.tensor(PROMPT_B),
            "greedy_a": greedy_a, "greedy_b": greedy_b,
            "greedy_logprobs_a": lp_a, "greedy_logprobs_b": lp_b,
        }, str(out / "expected.safetensors"))
        print(name, model_type, tuple(logits.shape), f"loss {loss.item():.4f}",
              f"grad_norm {grad_norm.item():.4f}", "->", out)

    torch.manual_seed(1)
    rm = LlamaForSequenceClassification(
        LlamaConfig(num_labels=1, pad_token_id=0, **SHAPES["llama31"][1])).eval()
    randomise(rm)
    out = OUT / "rm"
    rm.save_pretrained(out, safe_serialization=True)
    ids = torch.tensor([[1, 5, 9, 2, 33, 7, 60, 12, 12, 40, 3, 4, 17, 25, 48, 63]])
    with torch.no_grad():
        scores = rm.score(rm.model(input_ids=ids).last_hidden_state).squeeze(-1).float()
    save_file({"input_ids": ids, "scores": scores.contiguous()}, str(out / "expected.safetensors"))
    print("rm", tuple(scores.shape), "->", out)


if __name__ == "__main__":
    main()
