"""Baseline for `rlvr bench train`: PyTorch eager training steps (the checkpoint's transformers
class through AutoModelForCausalLM, mean next-token loss, backward, gradient clipping at 1.0,
torch's AdamW) on the
same model directory, batch, sequence length and random tokens as a count, with the same torch
2.11 on the same device and CPU thread count. `--dtype bf16` trains with f32 parameters under
bf16 autocast (f32 master weights and moments, as rlvr's bf16 mode keeps). Prints one JSON
object."""
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation="sdpa")
    model.to(a.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    ids = torch.randint(0, model.config.vocab_size, (a.batch, a.seq_len), device=a.device)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(a.device, dtype=torch.bfloat16, enabled=a.dtype == "bf16"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step()
    sync()
    t = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync()
    seconds = time.perf_counter() - t
    tokens = a.batch * a.seq_len * a.steps
    print(json.dumps({"engine": "pytorch-eager", "torch": torch.__version__, "device": a.device, "dtype": a.dtype,
                      "transformers": __import__("transformers").__version__,
                      "threads": torch.get_num_threads(), "seconds": seconds, "tokens_per_s": tokens / seconds}))


if __name__ == "__main__":
    main()
