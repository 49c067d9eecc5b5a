"""Reference verdicts for the `google_ifeval` verifier.

For every IFEval prompt in data/eval/ifeval.jsonl this writes two synthetic
responses (sentences of GSM8K questions, edited towards or away from each of the prompt's
instructions) and the reference implementation's strict and loose verdict per instruction:
Google's IFEval checks as vendored in lm-evaluation-harness (`lm_eval.tasks.ifeval`), run
instruction by instruction the way its `utils.py` runs them. `verifiers/tests/google_ifeval.rs`
compares our verifier against the file without Python.

A verdict is `null` where the reference cannot run here: NLTK's `punkt_tab` model (sentence
counts, `word_tokenize`) is downloaded from GitHub at run time, which this machine cannot reach.
`langdetect` is seeded (it samples).

Usage (`scripts/ifeval-fixtures.sh` sets up the environment and runs this):
    python scripts/ifeval-fixtures.py OUT.jsonl
"""

import json
import random
import re
import sys
from pathlib import Path

from langdetect import DetectorFactory

DetectorFactory.seed = 0

from lm_eval.tasks.ifeval import instructions_registry  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "eval"

CHATTY_FIRST = ["Sure, here is my answer:", "Of course! Here you go.", "**Answer**"]
CHATTY_LAST = ["Hope this helps!", "Let me know if you need more, thanks.", "*Done*"]


def sentence_pool():
    pool = []
    for line in (DATA / "gsm8k-test.jsonl").read_text().splitlines():
        q = json.loads(line)["question"]
        pool.extend(s.strip() for s in re.split(r"(?<=[.?!])\s+", q) if s.strip())
    return pool


def near(rng, n):
    return max(0, n + rng.choice([-1, 0, 0, 1]))


def respond(rng, row, pool):
    """A response with edits aimed at (or just past) the prompt's instructions."""
    kw = {}
    for iid, args in zip(row["instruction_id_list"], row["kwargs"]):
        kw[iid] = {k: v for k, v in args.items() if v}
    want = {iid: rng.random() < 0.7 for iid in kw}

    n_sent = rng.choice([1, 2, 3, 5, 8, 12])
    if "length_constraints:number_sentences" in kw and want["length_constraints:number_sentences"]:
        n_sent = max(1, near(rng, kw["length_constraints:number_sentences"]["num_sentences"]))
    if "length_constraints:number_words" in kw and want["length_constraints:number_words"]:
        n_sent = max(1, kw["length_constraints:number_words"]["num_words"] // 16 + rng.choice([-1, 0, 1]))
    sents = [rng.choice(pool) for _ in range(n_sent)]

    n_par = rng.choice([1, 2, 3, 4])
    sep = rng.choice(["\n\n", "\n", " ", "\n***\n", " *** "])
    for iid in ["length_constraints:number_paragraphs", "length_constraints:nth_paragraph_first_word"]:
        if iid in kw and want[iid]:
            n_par = max(1, near(rng, kw[iid]["num_paragraphs"]))
            sep = "\n***\n" if iid.endswith("number_paragraphs") else rng.choice(["\n\n", "\n\n\n\n"])
    while len(sents) < n_par:
        sents.append(rng.choice(pool))
    cuts = sorted(rng.sample(range(1, len(sents)), n_par - 1)) if n_par > 1 else []
    paragraphs = [" ".join(sents[a:b]) for a, b in zip([0] + cuts, cuts + [len(sents)])]

    def words_into(texts, word, times):
        for _ in range(times):
            i = rng.randrange(len(texts))
            ws = texts[i].split(" ")
            ws.insert(rng.randrange(len(ws) + 1), rng.choice([word, word.upper(), word.capitalize()]))
            texts[i] = " ".join(ws)

    for iid, a in kw.items():
        if not want[iid]:
            continue
        if iid == "keywords:existence":
            for k in a["keywords"]:
                words_into(paragraphs, k, 1)
        elif iid == "keywords:frequency":
            words_into(paragraphs, a["keyword"], near(rng, a["frequency"]))
        elif iid == "keywords:forbidden_words":
            pass
        elif iid == "length_constraints:nth_paragraph_first_word":
            n = a["nth_paragraph"] - 1
            if n < len(paragraphs):
                w = rng.choice([a["first_word"], a["first_word"].capitalize(), '"' + a["first_word"] + ',"'])
                paragraphs[n] = w + " " + paragraphs[n]
        elif iid == "detectable_content:number_placeholders":
            for _ in range(near(rng, a["num_placeholders"])):
                words_into(paragraphs, rng.choice(["[name]", "[address]", "[date of birth]"]), 1)
        elif iid == "detectable_format:number_bullet_lists":
            k = near(rng, a["num_bullets"])
            paragraphs.append("\n".join(rng.choice(["* ", "- ", "  * ", "-"]) + rng.choice(pool) for _ in range(k)))
        elif iid == "detectable_format:number_highlighted_sections":
            for _ in range(near(rng, a["num_highlights"])):
                i = rng.randrange(len(paragraphs))
                ws = paragraphs[i].split(" ")
                j = rng.randrange(len(ws))
                mark = rng.choice(["*", "**"])
                ws[j] = mark + ws[j] + mark
                paragraphs[i] = " ".join(ws)
        elif iid == "detectable_format:multiple_sections":
            k = near(rng, a["num_sections"])
            s = a["section_spliter"]
            paragraphs = [f"{s} {i + 1}\n{p}" for i, p in enumerate((paragraphs * 3)[:k])] or paragraphs

    text = sep.join(paragraphs)
    for iid, a in kw.items():
        if not want[iid]:
            continue
        if iid == "detectable_content:postscript":
            text += "\n" + rng.choice([a["postscript_marker"], a["postscript_marker"].lower(), "P. S."]) + " " + rng.choice(pool)
        elif iid == "detectable_format:constrained_response":
            text += " " + rng.choice(["My answer is yes.", "My answer is no.", "My answer is perhaps."])
        elif iid == "detectable_format:title":
            text = rng.choice(["<<A Title>>", "<< >>", "<<title\n>>"]) + "\n" + text
        elif iid == "combination:two_responses":
            text = text + rng.choice(["\n******\n", "******", "\n*****\n"]) + rng.choice([text, rng.choice(pool)])
        elif iid == "detectable_format:json_format":
            body = json.dumps({"answer": text})
            text = rng.choice([body, "```json\n" + body + "\n```", "```\n" + body + "```", "{answer: 1}"])
        elif iid == "change_case:capital_word_frequency":
            ws = text.split(" ")
            for _ in range(near(rng, a["capital_frequency"])):
                j = rng.randrange(len(ws))
                ws[j] = ws[j].upper()
            text = " ".join(ws)
        elif iid == "change_case:english_capital":
            text = text.upper()
        elif iid == "change_case:english_lowercase":
            text = text.lower()
        elif iid == "punctuation:no_comma":
            text = text.replace(",", "")
        elif iid == "combination:repeat_prompt":
            p = a["prompt_to_repeat"]
            text = rng.choice([p, p.upper(), p[: len(p) // 2]]) + "\n" + text
        elif iid == "startend:end_checker":
            text += " " + a["end_phrase"] + rng.choice(["", "", "\nBye.", '"'])
        elif iid == "startend:quotation":
            text = rng.choice(['"' + text + '"', '"' + text, ' "' + text + '" '])
    if rng.random() < 0.3:
        text = rng.choice(CHATTY_FIRST) + "\n" + text
    if rng.random() < 0.2:
        text = text + "\n" + rng.choice(CHATTY_LAST)
    return text


def judge(row, response):
    """The reference's strict and loose verdicts, per instruction (None: cannot run here)."""
    r = response.split("\n")
    first, last, both = "\n".join(r[1:]).strip(), "\n".join(r[:-1]).strip(), "\n".join(r[1:-1]).strip()
    variants = [response, response.replace("*", ""), first, last, both]
    variants += [first.replace("*", ""), last.replace("*", ""), both.replace("*", "")]
    strict, loose = [], []
    for iid, args in zip(row["instruction_id_list"], row["kwargs"]):
        inst = instructions_registry.INSTRUCTION_DICT[iid](iid)
        inst.build_description(**{k: v for k, v in args.items() if v})
        if iid == "keywords:letter_frequency" and not args["letter"].isalpha():
            strict.append(None)  # the reference picks a random letter for `#`
            loose.append(None)
            continue
        try:
            strict.append(bool(response.strip() and inst.check_following(response)))
            loose.append(any(v.strip() and inst.check_following(v) for v in variants))
        except LookupError:  # NLTK's punkt_tab is not installed
            strict.append(None)
            loose.append(None)
    return strict, loose


def main():
    out = Path(sys.argv[1])
    pool = sentence_pool()
    rng = random.Random(0)
    rows = [json.loads(l) for l in (DATA / "ifeval.jsonl").read_text().splitlines()]
    with out.open("w") as f:
        for row in rows:
            for _ in range(2):
                response = respond(rng, row, pool)
                strict, loose = judge(row, response)
                f.write(json.dumps({"key": row["key"], "response": response, "strict": strict, "loose": loose}) + "\n")
    print(f"wrote {2 * len(rows)} responses to {out}")


if __name__ == "__main__":
    main()
