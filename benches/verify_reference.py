"""Baseline for `rlvr verify`: the Python references on the same JSONL input, single-threaded.
GSM8K rows use the Tülu 3 rule (open-instruct's verify_gsm8k_sample, a few regexes); MATH rows
use HF math-verify (`verify(parse(gold), parse(answer))`). Prints one JSON object with
answers/s per verifier."""
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


def main():
    rows = [json.loads(line) for line in open(sys.argv[1])]
    out = {}
    for name, fn in [("gsm8k", gsm8k_tulu3), ("MATH", math_verify)]:
        mine = [r for r in rows if r["dataset"] == name]
        if not mine:
            continue
        t = time.perf_counter()
        ok = sum(bool(fn(r["response"], r["ground_truth"])) for r in mine)
        secs = time.perf_counter() - t
        out[name] = {"rows": len(mine), "verified": ok, "seconds": secs, "answers_per_s": len(mine) / secs}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
