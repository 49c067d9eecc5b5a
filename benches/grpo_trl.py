"""TRL's GRPOTrainer on the tiny-arith RLVR task: the baseline of `scripts/bench-grpo.sh`.

Same model directory, prompt template, batch (prompts x samples), response length, learning
rate, beta and temperature as `rlvr run tiny-arith-rlvr`; the reward is the same check of the
final `#### N` answer. Prints one JSON line: median seconds per RL step, first step excluded.
"""

import argparse
import json
import random
import re
import statistics
import time

import torch
from datasets import Dataset
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

NAMES = ["tom", "ana", "li", "sam", "mia", "raj", "eva", "ben"]
ITEMS = ["apples", "pens", "cards", "books", "coins", "shells"]


def problems(count, seed):
    """Questions in the template of rlvr_data::arith (operands 1..9, half products)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        op = min(rng.randrange(4), 2)
        a, b = (rng.randint(2, 9), rng.randint(2, 9)) if op == 2 else (rng.randint(1, 9), rng.randint(1, 9))
        if op == 1 and b > a:
            a, b = b, a
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        question, answer = [
            (f"{name} has {a} {item}. {name} gets {b} more. how many {item} does {name} have now?", a + b),
            (f"{name} has {a} {item}. {name} gives away {b}. how many {item} are left?", a - b),
            (f"{name} buys {a} bags with {b} {item} in each. how many {item} is that?", a * b),
        ][op]
        prompt = f"<s><|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
        rows.append({"prompt": prompt, "answer": str(answer)})
    return rows


def reward(completions, answer, **_):
    out = []
    for text, truth in zip(completions, answer):
        found = re.findall(r"####\s*(-?\d+)", text)
        out.append(1.0 if found and found[-1] == truth else 0.0)
    return out


class Clock(TrainerCallback):
    def __init__(self):
        self.marks = [time.perf_counter()]

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append(time.perf_counter())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--beta", type=float, default=0.01)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    tok = PreTrainedTokenizerFast(
        tokenizer_file=f"{a.model}/tokenizer.json", pad_token="<pad>", eos_token="<|im_end|>", bos_token="<s>"
    )
    model = LlamaForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32)
    model.generation_config.eos_token_id = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("</s>")]
    model.generation_config.pad_token_id = tok.pad_token_id
    data = Dataset.from_list(problems(a.prompts * (a.steps + 1), seed=7))
    batch = a.prompts * a.samples
    config = GRPOConfig(
        output_dir="/tmp/rlvr-bench-trl",
        per_device_train_batch_size=batch,
        generation_batch_size=batch,
        num_generations=a.samples,
        max_completion_length=a.max_new_tokens,
        learning_rate=a.lr,
        lr_scheduler_type="constant",
        beta=a.beta,
        loss_type="grpo",
        temperature=1.0,
        max_steps=a.steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        max_grad_norm=1.0,
        shuffle_dataset=False,
    )
    clock = Clock()
    trainer = GRPOTrainer(
        model=model, reward_funcs=reward, args=config, train_dataset=data, processing_class=tok, callbacks=[clock]
    )
    trainer.train()
    steps = [b - a_ for a_, b in zip(clock.marks, clock.marks[1:])]
    print(json.dumps({"impl": "trl", "trl_step_s": steps, "median_step_s": statistics.median(steps[1:])}))


if __name__ == "__main__":
    main()
