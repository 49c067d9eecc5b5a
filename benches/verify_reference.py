"""Baseline for `rlvr verify`: the Python references on the same JSONL input, single-threaded.
GSM8K rows use the Tülu 3 rule (open-instruct's verify_gsm8k_sample, a few regexes); MATH rows
use HF math-verify (`verify(parse(gold), parse(answer))`); ifeval rows use the Tülu 3 release's IF
functions, written out below; google_ifeval rows use Google's IFEval
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


# The Tülu 3 release's IF functions (open-instruct's `if_functions.py` is not pip-installable),
# written out as rlvr's `tulu3` mode documents them: same rules, defects included.
def _sentences(text):
    return len(re.split(r"(?<!\w\.\w.)(?<![A-Z][a-z]\.)(?<=\.|\?)\s", text))


def _quantified(count, n, quantifier, around):
    return {"at least": count >= n, "at most": count <= n, "around": abs(count - n) <= around}.get(quantifier, False)


def _paragraph_count(text, N):
    cleaned = "\n".join(line.strip() for line in text.splitlines()).strip()
    paragraphs = cleaned.split("* * *")
    return all(p.strip() for p in paragraphs) and len(paragraphs) == N


def _sections(text, N, section_splitter):
    sections = text.split(section_splitter)
    if sections[0] == "":
        sections.pop(0)
    return len(sections) == N


def _json(text):
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _postscript(text, postscript_marker):
    at = text.find(postscript_marker)
    return at >= 0 and len(text[at:].strip()) > len(postscript_marker)


def _two_responses(text):
    if text.count("******") != 1:
        return False
    first, second = text.split("******")
    return first.strip() != second.strip()


IF_FUNCTIONS = {
    "verify_keywords": lambda t, keyword_list: all(k.lower() in t.lower() for k in keyword_list),
    "verify_keyword_frequency": lambda t, word, N: sum(w == word.lower() for w in re.findall(r"\b\w+\b", t.lower())) == N,
    "validate_forbidden_words": lambda t, forbidden_words: not any(w.lower() in t.lower() for w in forbidden_words),
    "verify_letter_frequency": lambda t, letter, N: t.count(letter) == N,
    "verify_paragraph_count": _paragraph_count,
    "validate_word_constraint": lambda t, N, quantifier: _quantified(len(t.strip().split()), N, quantifier, max(round(N * 0.1), 1)),
    "verify_sentence_constraint": lambda t, N, quantifier: _quantified(_sentences(t), N, quantifier, 1),
    "validate_paragraphs": lambda t, N, first_word, i: len(t.split("\n\n")) == N and t.split("\n\n")[i - 1].strip().startswith(first_word),
    "verify_postscript": _postscript,
    "validate_placeholders": lambda t, N: (len(re.findall(r"\[(.*?)\]", t)) >= N, None),  # a tuple: always true
    "verify_bullet_points": lambda t, N: sum(line.strip().startswith(("*", "-")) for line in t.split("\n")) == N,
    "validate_title": lambda t: bool(re.findall(r"<<(.*?)>>", t)),
    "validate_choice": lambda t, options: any(t in o for o in options),
    "validate_highlighted_sections": lambda t, N: len(re.findall(r"\*(.*?)\*", t)) >= N,
    "validate_sections": _sections,
    "validate_json_format": _json,
    "validate_repeat_prompt": lambda t, original_prompt: t.startswith(original_prompt),
    "validate_two_responses": _two_responses,
    "validate_uppercase": lambda t: t == t.upper(),
    "validate_lowercase": lambda t: t == t.lower(),
    "validate_frequency_capital_words": lambda t, N, quantifier: _quantified(len(re.findall(r"\b[A-Z]+\b", t)), N, quantifier, 0),
    "validate_end": lambda t, end_phrase: t.endswith(end_phrase),
    "validate_quotation": lambda t: t.startswith('"') and t.endswith('"'),
    "validate_no_commas": lambda t: "," not in t,
}


def if_label(truth):
    args = {k: v for k, v in json.loads(truth).items() if v is not None}
    return IF_FUNCTIONS[args.pop("func_name")], args


def if_tulu3(response, label):
    fn, args = label
    return bool(fn(response.split("<|assistant|>\n")[-1].strip(), **args))


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
    verifiers = [
        ("gsm8k", gsm8k_tulu3, str),
        ("MATH", math_verify, str),
        ("ifeval", if_tulu3, if_label),
        ("google_ifeval", google_ifeval, ifeval_label),
    ]
    for name, fn, label in verifiers:
        mine = [(r["response"], label(r["ground_truth"])) for r in rows if r["dataset"] == name]
        if not mine:
            continue
        # The best of up to three passes, as rlvr's side reports its best; a pass that takes
        # over 3 s (MATH, IFEval) is not repeated.
        secs = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            ok = sum(bool(fn(response, truth)) for response, truth in mine)
            secs = min(secs, time.perf_counter() - t)
            if secs > 3:
                break
        out[name] = {"rows": len(mine), "verified": ok, "seconds": secs, "answers_per_s": len(mine) / secs}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
