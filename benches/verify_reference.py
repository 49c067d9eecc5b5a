"""Baseline for `rlvr verify`: the Python references on the same JSONL input, single-threaded.
GSM8K rows use the Tülu 3 rule (open-instruct's verify_gsm8k_sample, a few regexes); MATH rows
use HF math-verify (`verify(parse(gold), parse(answer))`); google_ifeval rows use Google's IFEval
checks as vendored in lm-evaluation-harness (strict and loose, as its `process_results` runs
them; needs `lm_eval.tasks.ifeval` on PYTHONPATH). Labels are parsed before the clock starts.
Prints one JSON object with answers/s per verifier."""
import json
import re
import sys
import time

from math_verify import parse, verify


def gsm8k_tulu3(response, truth):
    response = re.sub(r"(\d),(\d)", r"\1\2", response)
    numbers = re.findall(r"[-+]?\d*\.\d+|\d+", response)
    prediction = numbers[-1] if numbers else response
    return str(prediction).lower() == str(truth).lower()


def math_verify(response, truth):
    return verify(parse("$" + truth + "$"), parse(response))


def ifeval_label(truth):
    from lm_eval.tasks.ifeval.utils import InputExample

    row = json.loads(truth)
    return InputExample(key=0, instruction_id_list=row["instruction_id_list"], prompt=row.get("prompt", ""),
                        kwargs=row["kwargs"])


def google_ifeval(response, inp):
    from lm_eval.tasks.ifeval import utils

    strict = utils.test_instruction_following_strict(inp, response)
    utils.test_instruction_following_loose(inp, response)
    return strict.follow_all_instructions


def main():
    rows = [json.loads(line) for line in open(sys.argv[1])]
    out = {}
    verifiers = [("gsm8k", gsm8k_tulu3, str), ("MATH", math_verify, str), ("google_ifeval", google_ifeval, ifeval_label)]
    for name, fn, label in verifiers:
        mine = [(r["response"], label(r["ground_truth"])) for r in rows if r["dataset"] == name]
        if not mine:
            continue
        t = time.perf_counter()
        ok = sum(bool(fn(response, truth)) for response, truth in mine)
        secs = time.perf_counter() - t
        out[name] = {"rows": len(mine), "verified": ok, "seconds": secs, "answers_per_s": len(mine) / secs}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
