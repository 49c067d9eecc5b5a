"""`rlvr eval` against transformers on the same prompts, side by side in one run (BENCHMARKS.md,
"rlvr eval"): run by scripts/eval-vs-transformers.sh, which runs `rlvr eval` first and passes its
output directory here.

For every question `rlvr eval` asked (its `samples.jsonl`: the rendered prompt and rlvr's greedy
response), transformers generates greedily from the same rendered prompt — tokenized with no
special tokens added (the rendered prompt holds whatever BOS its template writes, as rlvr's
`encode_prompt` sees it), in batches of BATCH left-padded rows,
the same maximum of new tokens, stopping at the generation config's end-of-sequence ids — timed
from the first batch to the last (the model already loaded, as rlvr's figure counts generation
only). Then it reports how many responses differ (and where the first differing token is), and
writes transformers' responses as `rlvr verify` input (labels from the repo's data/eval files) so
the same verifiers score both.

    python eval-vs-transformers.py MODEL_DIR RLVR_OUT MAX_NEW_TOKENS BATCH THREADS
"""

import json
import sys
import time
from collections import defaultdict

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def labels(task):
    """`rlvr verify`'s dataset and ground truth per question id, from the repo's eval files."""
    if task == "gsm8k":
        rows = [json.loads(l) for l in open("data/eval/gsm8k-test.jsonl")]
        return {str(i): ("gsm8k", r["answer"].rsplit("####", 1)[-1].strip()) for i, r in enumerate(rows)}
    if task == "ifeval":
        rows = [l for l in open("data/eval/ifeval.jsonl") if l.strip()]
        return {str(json.loads(l)["key"]): ("google_ifeval", l.strip()) for l in rows}
    raise SystemExit(f"no labels for task {task}")


def main():
    model_dir, out, max_new, batch, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(threads)
    samples = [json.loads(l) for l in open(f"{out}/samples.jsonl")]
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    pad = tok.pad_token_id if tok.pad_token_id is not None else next(iter(eos))
    # Longest prompts first, as a batch of similar lengths wastes less padding.
    order = sorted(range(len(samples)), key=lambda i: -len(tok(samples[i]["prompt"], add_special_tokens=False).input_ids))
    responses, new_tokens = {}, 0
    started = time.perf_counter()
    for b in range(0, len(order), batch):
        rows = order[b:b + batch]
        enc = tok([samples[i]["prompt"] for i in rows], add_special_tokens=False, return_tensors="pt", padding=True)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new, do_sample=False, eos_token_id=list(eos),
                                 pad_token_id=pad)
        for i, ids in zip(rows, gen[:, enc.input_ids.shape[1]:].tolist()):
            cut = next((k for k, t in enumerate(ids) if t in eos), None)
            ids = ids[:cut] if cut is not None else [t for t in ids if t != pad]
            new_tokens += len(ids) + (cut is not None)
            responses[i] = ids
        print(f"transformers: {min(b + batch, len(order))}/{len(order)} in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
    seconds = time.perf_counter() - started
    differ = defaultdict(list)
    truths = {task: labels(task) for task in {s["task"] for s in samples}}
    with open(f"{out}/transformers-verify.jsonl", "w") as f:
        for i, s in enumerate(samples):
            text = tok.decode(responses[i], skip_special_tokens=True)
            ours = tok(s["response"], add_special_tokens=False).input_ids
            if text != s["response"]:
                first = next((k for k, (a, b) in enumerate(zip(ours, responses[i])) if a != b),
                             min(len(ours), len(responses[i])))
                differ[s["task"]].append({"id": s["id"], "first_differing_token": first,
                                          "rlvr_tokens": len(ours), "transformers_tokens": len(responses[i])})
            dataset, truth = truths[s["task"]][s["id"]]
            f.write(json.dumps({"dataset": dataset, "response": text, "ground_truth": truth}) + "\n")
    print(json.dumps({"seconds": seconds, "new_tokens": new_tokens, "questions": len(samples),
                      "differ": {t: len(d) for t, d in differ.items()}, "differences": differ}))


if __name__ == "__main__":
    main()
