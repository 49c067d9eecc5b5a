"""Models rlvr writes load in transformers unchanged, and both agree on them (BENCHMARKS.md,
"Real checkpoints"). For each family's parity fixture: `rlvr run tiny-arith-sft` starting from
it (three steps at a small learning rate, the built-in tokenizer beside it) writes a model directory; transformers loads
it (no missing or unexpected tensors; the architecture and dtype `config.json` names) and its
tokenizer, and its greedy continuation of a prompt equals `rlvr generate`'s, token for token,
with the log-probs' per-token maximum difference printed. Run with the bench venv:

    source scripts/bench-venv.sh && bench_venv "torch, transformers" torch==2.11.0 transformers
    "$BENCH_PYTHON" scripts/roundtrip-check.py RLVR_BIN
"""

import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "learner" / "tests" / "fixtures" / "parity"
FAMILIES = ["llama31", "smollm2", "llama_bias", "mistral", "qwen2", "qwen3", "olmo2"]
PROMPT = "2+2="
NEW_TOKENS = 8


def run(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def main():
    rlvr = sys.argv[1]
    work = pathlib.Path(tempfile.mkdtemp(prefix="rlvr-roundtrip-"))
    # The built-in character tokenizer's files, from a one-step tiny pretraining run.
    run(rlvr, "run", "tiny-arith-pretrain", "--out", str(work / "tok"),
        "--set", "train.max_steps=1")
    tok_dir = work / "tok" / "tiny-arith-pretrain"
    agree = 0
    for family in FAMILIES:
        init = work / f"{family}-init"
        init.mkdir()
        for f in ["config.json", "model.safetensors"]:
            shutil.copy(FIXTURES / family / f, init / f)
        for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]:
            shutil.copy(tok_dir / f, init / f)
        out = work / f"{family}-sft"
        run(rlvr, "run", "tiny-arith-sft", "--out", str(out),
            "--set", f"model.name_or_path={init}", "--set", "train.max_steps=3",
            "--set", "train.learning_rate=1e-5",
            "--set", "train.per_device_train_batch_size=4", "--set", "data.max_seq_length=64")
        model_dir = out / "tiny-arith-sft"
        config = json.loads((model_dir / "config.json").read_text())
        model, info = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=torch.float32, output_loading_info=True)
        model.eval()
        tok = AutoTokenizer.from_pretrained(model_dir)
        ids = tok(PROMPT, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False,
                                 output_scores=True, return_dict_in_generate=True,
                                 eos_token_id=None, pad_token_id=0)
        want = gen.sequences[0, ids.shape[1]:].tolist()
        want_lp = [float(torch.log_softmax(s[0].float(), -1)[t]) for s, t in zip(gen.scores, want)]
        got = json.loads(run(rlvr, "generate", "--model", str(model_dir), "--prompt", PROMPT,
                             "--temperature", "0", "--max-new-tokens", str(NEW_TOKENS),
                             "--json").splitlines()[0])
        n = len(got["token_ids"])
        same = got["token_ids"] == want[:n] and (n == len(want) or got["finish_reason"] == "stop")
        worst = max((abs(a - b) for a, b in zip(got["logprobs"], want_lp)), default=0.0)
        agree += same
        clean = not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
        print(f"{family:10s} {config['architectures'][0]:18s} torch_dtype {config['torch_dtype']}: "
              f"transformers loads it {'cleanly' if clean else 'WITH ' + str(info)}; "
              f"tokenizer ids {ids[0].tolist()}; greedy {'equal' if same else 'DIFFERENT'} "
              f"({n} tokens, mean log-prob {sum(want_lp) / len(want_lp):.2f}), "
              f"log-probs max |diff| {worst:.2e}")
        if not same:
            print(f"  rlvr {got['token_ids']}\n  transformers {want}")
    print(f"{agree}/{len(FAMILIES)} families: rlvr and transformers agree on the model rlvr wrote")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
