"""Check the SmolLM2-135M-Instruct directory `scripts/smollm2.sh` builds against transformers,
and rlvr's greedy generation on it against transformers' (the figures in BENCHMARKS.md, "Real
checkpoints"). Run with the bench venv (it needs torch, transformers and gguf):

    source scripts/bench-venv.sh && bench_venv "torch, transformers, gguf, accelerate" torch==2.11.0 transformers gguf accelerate
    "$BENCH_PYTHON" scripts/smollm2-check.py RLVR_BIN MODEL_DIR GGUF_FILE

1. The conversion, against transformers' own GGUF reader (an independent dequantisation and
   tokenizer conversion): every weight (max |difference|), the tokenizer's ids on a set of
   texts, the special tokens and the chat template.
2. Generation: for each prompt, transformers' greedy continuation (`apply_chat_template` +
   `generate`, do_sample=False) of the converted directory against `rlvr generate
   --temperature 0` given the same rendered text; the ids must be equal. Prints the ids as the
   Rust test (`actors/tests/real_model.rs`) holds them.
"""

import json
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "What is 12 times 7?",
    "Write a haiku about the sea.",
    "Name three primary colors.",
]
TEXTS = [
    "Hello, world!", "  leading spaces", "numbers 1234567 and 3.14159", "tabs\tand\nnewlines\n\n",
    "ümlaut café naïve 日本語 😀", "<|im_start|>user\nhi<|im_end|>\n", "x = a**2 + b**2; print(x)",
]
NEW_TOKENS = 48


def main():
    rlvr, model_dir, gguf = sys.argv[1], sys.argv[2], sys.argv[3]
    gguf_dir, gguf_name = gguf.rsplit("/", 1)
    ours = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ref = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32).eval()
    ref_state = ref.state_dict()
    worst = max(
        (t - ref_state[n]).abs().max().item() for n, t in ours.state_dict().items() if n in ref_state
    )
    missing = sorted(set(ref_state) ^ set(ours.state_dict()))
    print(f"weights: max |rlvr convert - transformers' GGUF reader| = {worst:.3e}; "
          f"names only on one side: {missing}")

    tok = AutoTokenizer.from_pretrained(model_dir)
    ref_tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    same = [tok(t)["input_ids"] == ref_tok(t)["input_ids"] for t in TEXTS]
    print(f"tokenizer: {sum(same)}/{len(same)} texts encode alike; "
          f"specials ours {tok.bos_token, tok.eos_token, tok.pad_token} "
          f"reference {ref_tok.bos_token, ref_tok.eos_token, ref_tok.pad_token}; "
          f"chat template identical: {tok.chat_template == ref_tok.chat_template}")

    agree = 0
    held = {}
    for prompt in PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = ours.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False,
                                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        want = out[0, ids.shape[1]:].tolist()
        got = subprocess.run(
            [rlvr, "generate", "--model", model_dir, "--prompt", text, "--temperature", "0",
             "--max-new-tokens", str(NEW_TOKENS), "--json"],
            check=True, capture_output=True, text=True).stdout
        got = json.loads(got.splitlines()[0])["token_ids"]
        agree += got == want
        held[prompt] = want
        print(f"{prompt!r}: rlvr {'==' if got == want else '!='} transformers "
              f"({len(want)} tokens): {tok.decode(want, skip_special_tokens=True)!r}")
        if got != want:
            print(f"  rlvr:         {got}\n  transformers: {want}")
    print(f"greedy continuations equal: {agree}/{len(PROMPTS)}")
    print("ids:", json.dumps(held))


if __name__ == "__main__":
    main()
