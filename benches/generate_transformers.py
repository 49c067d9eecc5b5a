"""Baseline for `rlvr bench generate`: transformers' `generate` on the same model directory,
batch, samples per prompt (`num_return_sequences`), prompt length, new tokens and sampling (temperature 1, no top-k/top-p, EOS ignored), with
the same torch 2.11 on the same device (CPU, or CUDA with --device cuda) and dtype. Prints one
JSON object."""
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    a = p.parse_args()
    torch.manual_seed(0)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype).to(a.device).eval()
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (a.batch, a.prompt_len), device=a.device)
    mask = torch.ones_like(ids)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, pad_token_id=0, eos_token_id=None,
              num_return_sequences=a.samples)
    with torch.inference_mode():
        model.generate(ids, attention_mask=mask, max_new_tokens=4, min_new_tokens=4, **kw)
        best = float("inf")
        for _ in range(a.repeats):
            sync()
            t = time.perf_counter()
            out = model.generate(ids, attention_mask=mask, max_new_tokens=a.new_tokens,
                                 min_new_tokens=a.new_tokens, **kw)
            sync()
            best = min(best, time.perf_counter() - t)
            assert out.shape == (a.batch * a.samples, a.prompt_len + a.new_tokens), out.shape
    tokens = a.batch * a.samples * a.new_tokens
    print(json.dumps({"engine": "transformers", "version": __import__("transformers").__version__,
                      "torch": torch.__version__, "device": a.device, "dtype": a.dtype, "threads": torch.get_num_threads(),
                      "seconds": best, "tokens_per_s": tokens / best}))


if __name__ == "__main__":
    main()
