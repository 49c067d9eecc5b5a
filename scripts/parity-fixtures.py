"""Write the fixtures of learner/tests/parity.rs: tiny random Llama checkpoints made by
`transformers` and the logits `transformers` computes for a fixed input, so the Rust test checks
our model against the reference without Python. Run with the bench venv:

    source scripts/bench-venv.sh && bench_venv "torch, transformers" torch==2.11.0 transformers
    "$BENCH_PYTHON" scripts/parity-fixtures.py

Two shapes: Llama 3.1 (untied head, grouped-query attention, `llama3` RoPE scaling, theta 500000)
and SmolLM2 (tied embeddings, theta 100000); and a reward model (`LlamaForSequenceClassification`
with one label, Llama 3.1's shape) with its score at every position, for the PPO value model.
"""

import pathlib

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

OUT = pathlib.Path(__file__).resolve().parent.parent / "learner" / "tests" / "fixtures" / "parity"

SHAPES = {
    "llama31": dict(
        hidden_size=32, intermediate_size=88, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=64, max_position_embeddings=64, rms_norm_eps=1e-5,
        rope_theta=500000.0, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
    ),
    "smollm2": dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, vocab_size=64, max_position_embeddings=64, rms_norm_eps=1e-5,
        rope_theta=100000.0, tie_word_embeddings=True,
    ),
}


def main():
    for name, shape in SHAPES.items():
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**shape)).eval()
        # Larger than the default init so differences in any part of the network show.
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.2)
        out = OUT / name
        model.save_pretrained(out, safe_serialization=True)
        ids = torch.tensor([[1, 5, 9, 2, 33, 7, 60, 12, 12, 40, 3, 0, 17, 25, 48, 63]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits.float()
        save_file({"input_ids": ids, "logits": logits.contiguous()}, str(out / "expected.safetensors"))
        print(name, tuple(logits.shape), "->", out)

    torch.manual_seed(1)
    rm = LlamaForSequenceClassification(LlamaConfig(num_labels=1, pad_token_id=0, **SHAPES["llama31"])).eval()
    with torch.no_grad():
        for p in rm.parameters():
            p.normal_(0.0, 0.2)
    out = OUT / "rm"
    rm.save_pretrained(out, safe_serialization=True)
    ids = torch.tensor([[1, 5, 9, 2, 33, 7, 60, 12, 12, 40, 3, 4, 17, 25, 48, 63]])
    with torch.no_grad():
        scores = rm.score(rm.model(input_ids=ids).last_hidden_state).squeeze(-1).float()
    save_file({"input_ids": ids, "scores": scores.contiguous()}, str(out / "expected.safetensors"))
    print("rm", tuple(scores.shape), "->", out)


if __name__ == "__main__":
    main()
