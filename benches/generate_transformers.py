"""Baseline for `rlvr bench generate`: transformers' `generate` on the same model directory,
batch, samples per prompt (`num_return_sequences`), prompt length, new tokens and sampling (temperature 1, no top-k/top-p, EOS ignored), with
the same torch 2.11 on the same device (CPU, or CUDA with --device cuda) and dtype.
--prompts-per-call splits the batch into calls of that many prompts, one after the other, for
shapes whose unshared KV cache (`num_return_sequences` repeats each prompt's) does not fit in
memory at once. Prints one JSON object."""
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
    p.add_argument("--prompts-per-call", type=int, default=0, help="0: the whole batch in one call")
    a = p.parse_args()
    per_call = a.prompts_per_call or a.batch
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
        model.generate(ids[:per_call], attention_mask=mask[:per_call], max_new_tokens=4, min_new_tokens=4, **kw)
        best = float("inf")
        for _ in range(a.repeats):
            sync()
            t = time.perf_counter()
            for first in range(0, a.batch, per_call):
                call = slice(first, first + per_call)
                out = model.generate(ids[call], attention_mask=mask[call], max_new_tokens=a.new_tokens,
                                     min_new_tokens=a.new_tokens, **kw)
                assert out.shape == (ids[call].shape[0] * a.samples, a.prompt_len + a.new_tokens), out.shape
            sync()
            best = min(best, time.perf_counter() - t)
    tokens = a.batch * a.samples * a.new_tokens
    print(json.dumps({"engine": "transformers", "version": __import__("transformers").__version__,
                      "torch": torch.__version__, "device": a.device, "dtype": a.dtype, "threads": torch.get_num_threads(),
                      "prompts_per_call": per_call,
                      "seconds": best, "tokens_per_s": tokens / best}))


if __name__ == "__main__":
    main()
