"""The differential corpus of the verifiers (verifiers/tests/fixtures/corpus/): answers in the
forms models really write, generated from the GSM8K, MATH-500, IFEval and RLVR-sample rows in
the repository, each with its semantic truth (known by construction: a rewrite of the label is
right, a perturbation wrong) and the verdicts of the Python references run side by side:

- the Tülu 3 release's own functions (open-instruct @ 9c2d44bec, "Ground-Truth RL (#377)", the
  code the release trained with, unchanged until 2025-02-01): `verify_gsm8k_sample`,
  `verify_math_sample` (with sympy's `parse_latex`, antlr4 4.11), `verify_ifeval_sample`
  (with `langdetect`, seeded); read from a git checkout given on the command line, never copied;
- HF math-verify (`verify(parse("$" + label + "$"), parse(answer))`);
- Google's IFEval checks as vendored in lm-evaluation-harness, strict and loose, with NLTK's
  English `punkt_tab` model (NLTK_DATA pointing at a copy; the wheel of llama-index-core ships one).

`verifiers/tests/corpus.rs` reads the files and asserts agreement per family; every remaining
disagreement is listed with its reason in `verifiers/tests/fixtures/corpus/DISAGREEMENTS.md`.

    scripts/verifier-corpus.sh OPEN_INSTRUCT_GIT_DIR    # sets up the references, runs the three stages
"""

import json
import pathlib
import random
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "verifiers" / "tests" / "fixtures" / "corpus"
rng = random.Random(20)


def rows(rel):
    return [json.loads(l) for l in (ROOT / "data" / rel).read_text().splitlines() if l.strip()]


# ---------------------------------------------------------------------------------------------
# GSM8K: labels from GSM8K test; each family a form of the final answer, right or wrong.

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
        "nineteen"]


def gsm8k_items():
    labels = [r["answer"].split("####")[-1].strip() for r in rows("eval/gsm8k-test.jsonl")]
    ints = [(l, int(l.replace(",", ""))) for l in labels]
    items = []

    def add(family, response, label, truth):
        items.append({"family": family, "response": response, "ground_truth": label, "truth": truth})

    def pick(pred, k):
        pool = [x for x in ints if pred(x[1])]
        return rng.sample(pool, min(k, len(pool)))
    for label, v in pick(lambda v: True, 30):
        add("plain", f"So the total is {v}. The answer is {v}.", label, True)
        add("hash", f"Work: {v} in all.\n#### {v}", label, True)
        add("boxed", f"The answer is $\\boxed{{{v}}}$.", label, True)
        add("off_by_one", f"The answer is {v + 1}.", label, False)
        add("trailing_zeros", f"The answer is {v}.00", label, True)
        add("dollars", f"She earns ${v:,} in all.", label, True)
        add("latex_fraction", f"The answer is $\\frac{{{2 * v}}}{{2}}$.", label, True)
        add("latex_fraction_wrong", f"The answer is $\\frac{{{2 * v + 1}}}{{2}}$.", label, False)
        add("decimal_wrong", f"The answer is {v}.5", label, False)
        add("no_number_after_marker",
            f"<|user|>\nIs it {v}?\n<|assistant|>\nI cannot tell.", label, False)
        if v < 19 and v > 0:
            add("spelled_out_after_digits",
                f"First I got {v}, but that was wrong; the answer is {ONES[v - 1]}.", label, False)
    for label, v in pick(lambda v: v >= 1000, 20):
        add("thousands_comma", f"The answer is {v:,}.", label, True)
        add("space_grouping", f"The answer is {v:,}.".replace(",", " "), label, True)
        add("thin_space_grouping", f"The answer is {v:,}.".replace(",", "\u202f"), label, True)
        add("european_grouping_decimal_comma", f"The answer is {v:,}".replace(",", ".") + ",00.", label, True)
        # One group of three after a dot reads as a decimal in English ("3.430" is 3.43): the
        # form is ambiguous, recorded without a truth.
        add("european_single_group_ambiguous", f"The answer is {v:,}".replace(",", ".") + ".", label, None)
    for v in [1_234_567, 2_000_000, 12_500_000]:
        add("european_grouping", f"The answer is {v:,}.".replace(",", "."), str(v), True)
    for label, v in pick(lambda v: v % 100 == 0 and v >= 100, 12):
        mantissa = v / 10 ** (len(str(v)) - 1)
        exp = len(str(v)) - 1
        m = f"{mantissa:g}"
        add("scientific_latex", f"The answer is ${m} \\times 10^{{{exp}}}$.", label, True)
        add("scientific_e", f"The answer is {m}e{exp}.", label, True)
        add("scientific_wrong", f"The answer is ${m} \\times 10^{{{exp + 1}}}$.", label, False)
    for label, v in pick(lambda v: 1 <= v < 50, 12):
        add("unicode_minus_wrong_sign", f"The answer is \u2212{v}.", label, False)
    # The reference solutions as responses, and with the final number changed.
    for r in rng.sample(rows("eval/gsm8k-test.jsonl"), 300):
        label = r["answer"].split("####")[-1].strip()
        add("reference_solution", r["answer"], label, True)
        head, _, tail = r["answer"].rpartition("####")
        v = int(label.replace(",", ""))
        add("reference_solution_wrong", f"{head}#### {v + 3}", label, False)
    for word in ["Tuesday", "blue", "Anna"]:
        add("text_label", f"The answer is {word}.", word, True)
        add("text_label_wrong", "The answer is Monday." if word != "Monday" else "The answer is red.", word, False)
    return items


# ---------------------------------------------------------------------------------------------
# MATH: labels from MATH-500, plus the label forms MATH uses that MATH-500 has few of.

def math_items():
    data = rows("eval/math500.jsonl")
    answers = [r["answer"] for r in data]
    items = []

    def add(family, response, label, truth):
        items.append({"family": family, "response": response, "ground_truth": label, "truth": truth})

    ints = [a for a in answers if re.fullmatch(r"-?\d+", a)]
    fracs = [a for a in answers if re.fullmatch(r"\\frac\{\d+\}\{\d+\}", a)]
    for a in rng.sample(ints, 25):
        v = int(a)
        add("boxed_int", f"Thus the answer is $\\boxed{{{a}}}$.", a, True)
        add("boxed_int_wrong", f"Thus the answer is $\\boxed{{{v + 2}}}$.", a, False)
        add("no_delimiters_int", f"Adding the two cases, the answer is {a}", a, True)
        add("no_delimiters_int_wrong", f"Adding the two cases, the answer is {v + 1}", a, False)
        add("fbox", f"So $\\fbox{{{a}}}$ is it.", a, True)
        add("boxed_space", f"The answer is $\\boxed {a}$.", a, True)
        add("boxed_equation", f"Solving, $\\boxed{{x = {a}}}$.", a, True)
        add("boxed_subscript_equation", f"Solving, $\\boxed{{x_1 = {a}}}$.", a, True)
        add("display_math", f"Therefore\n\\[{a}\\]", a, True)
        add("inline_parens", f"Therefore \\({a}\\).", a, True)
        add("decimal_zero", f"$\\boxed{{{a}.0}}$", a, True)
        add("minerva", f"Final Answer: The final answer is ${a}$. I hope it is correct.", a, True)
        add("minerva_wrong", f"Final Answer: The final answer is ${v - 1}$. I hope it is correct.", a, False)
        if v > 0:
            add("unicode_minus", f"The answer is $\\boxed{{\u2212{a}}}$.", f"-{a}", True)
            add("unit_in_box", f"The answer is $\\boxed{{{a} cm}}$.", a, True)
            add("degrees_unicode", f"The angle is $\\boxed{{{a}\u00b0}}$.", a, True)
            add("approx_sign", f"So $x \\approx {a}$, that is, $\\boxed{{\\approx {a}}}$.", a, True)
        if v >= 1000:
            add("thousands_comma", f"$\\boxed{{{v:,}}}$", a, True)
    for a in rng.sample(fracs, 20):
        n, d = map(int, re.findall(r"\d+", a))
        add("no_delimiters_frac", f"The answer is {a}", a, True)
        add("frac_slash", f"$\\boxed{{{n}/{d}}}$", a, True)
        add("frac_dfrac", f"$\\boxed{{\\dfrac{{{n}}}{{{d}}}}}$", a, True)
        add("frac_wrong", f"$\\boxed{{\\frac{{{n + 1}}}{{{d}}}}}$", a, False)
        dec = n / d
        if len(f"{dec:.10g}") < 9 and "e" not in f"{dec:.10g}":
            add("frac_as_decimal", f"$\\boxed{{{dec:.10g}}}$", a, True)
            add("frac_as_percent", f"$\\boxed{{{dec * 100:.10g}\\%}}$", a, True)
        else:
            add("frac_as_rounded_decimal", f"$\\boxed{{{dec:.3f}}}$", a, False)
    # Forms MATH labels take beyond integers and fractions.
    special = [
        ("pi_no_delimiters", "The answer is \\pi", "\\pi", True),
        ("pi_unicode", "$\\boxed{2\u03c0}$", "2\\pi", True),
        ("pi_wrong", "$\\boxed{3\\pi}$", "2\\pi", False),
        ("sqrt_unicode", "$\\boxed{3\u221a2}$", "3\\sqrt{2}", True),
        ("sqrt_unicode_paren", "$\\boxed{\u221a(13)}$", "\\sqrt{13}", True),
        ("sqrt_wrong", "$\\boxed{3\\sqrt{3}}$", "3\\sqrt{2}", False),
        ("infinity_interval", "$\\boxed{\\left(-\\infty, 3\\right]}$", "(-\\infty,3]", True),
        ("infinity_interval_wrong", "$\\boxed{(-\\infty, 3)}$", "(-\\infty,3]", False),
        ("left_right_tuple", "$\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
        ("pmatrix_rows", "$\\boxed{\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}}$", "\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}", True),
        ("pmatrix_rows_wrong", "$\\boxed{\\begin{pmatrix} -2 \\\\ 1 \\end{pmatrix}}$", "\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}", False),
        ("tuple_vs_vector", "$\\boxed{(1, -2, 3)}$", "\\begin{pmatrix} 1 \\\\ -2 \\\\ 3 \\end{pmatrix}", True),
        ("tuple_vs_vector_wrong", "$\\boxed{(1, 2, 3)}$", "\\begin{pmatrix} 1 \\\\ -2 \\\\ 3 \\end{pmatrix}", False),
        ("percent_vs_decimal", "$\\boxed{25\\%}$", "0.25", True),
        ("percent_vs_decimal_wrong", "$\\boxed{2.5\\%}$", "0.25", False),
        ("inequality_vs_interval", "$\\boxed{2 \\le x < 5}$", "[2,5)", True),
        ("inequality_vs_interval_wrong", "$\\boxed{2 < x < 5}$", "[2,5)", False),
        ("inequality_vs_interval_inf", "$\\boxed{x \\geq 3}$", "[3,\\infty)", True),
        ("plus_minus_vs_roots", "$\\boxed{3\\pm\\sqrt{2}}$", "3+\\sqrt{2}, 3-\\sqrt{2}", True),
        ("plus_minus_vs_roots_wrong", "$\\boxed{3\\pm\\sqrt{3}}$", "3+\\sqrt{2}, 3-\\sqrt{2}", False),
        ("roots_vs_plus_minus", "$\\boxed{1+\\sqrt{19}, 1-\\sqrt{19}}$", "1 \\pm \\sqrt{19}", True),
        ("text_case", "$\\boxed{\\text{east}}$", "\\text{East}", True),
        ("text_case_wrong", "$\\boxed{\\text{west}}$", "\\text{East}", False),
        ("text_no_command", "The answer is $\\boxed{Evelyn}$.", "\\text{Evelyn}", True),
        ("complex_order", "$\\boxed{2i+1}$", "1+2i", True),
        ("complex_order_wrong", "$\\boxed{2+i}$", "1+2i", False),
        ("complex_order_2", "$\\boxed{-5i + 6}$", "6 - 5i", True),
        ("polynomial_order", "$\\boxed{3x - 6 + x^3}$", "x^3+3x-6", True),
        ("polynomial_order_wrong", "$\\boxed{x^3 - 3x - 6}$", "x^3+3x-6", False),
        ("polynomial_expanded", "$\\boxed{x^2 + 2x + 1}$", "(x+1)^2", True),
        ("polynomial_factored", "$\\boxed{(x-1)(x+1)}$", "x^2-1", True),
        ("polynomial_factored_wrong", "$\\boxed{(x-1)^2}$", "x^2-1", False),
        ("polynomial_variables", "$\\boxed{q-p}$", "p - q", False),
        ("polynomial_variables_2", "$\\boxed{-q+p}$", "p - q", True),
        ("base_subscript_missing", "$\\boxed{1011}$", "1011_2", True),
        ("base_subscript_added", "$\\boxed{52_8}$", "52", True),
        ("base_subscript_braced", "$\\boxed{4210_5}$", "4210_{5}", True),
        ("base_subscript_wrong", "$\\boxed{1001_2}$", "1011_2", False),
        ("log_forms", "$\\boxed{\\frac{\\ln 3}{\\ln 2}}$", "\\log_2 3", True),
        ("log_forms_2", "$\\boxed{\\log 9}$", "2\\log 3", True),
        ("log_forms_wrong", "$\\boxed{\\log_3 2}$", "\\log_2 3", False),
        ("e_vs_exp", "$\\boxed{\\exp(1)}$", "e", True),
        ("e_vs_exp_2", "$\\boxed{e^{2}}$", "\\exp(2)", True),
        ("e_vs_exp_wrong", "$\\boxed{\\exp(2)}$", "e", False),
        ("units_text", "$\\boxed{5.4 \\text{ cents}}$", "5.4 \\text{ cents}", True),
        ("units_plain_word", "$\\boxed{18 inches}$", "18", True),
        ("dollar_sign", "$\\boxed{\\$18.90}$", "\\$18.90", True),
        ("choice_letter", "The answer is $\\boxed{\\text{(C)}}$.", "\\text{(C)}", True),
        ("choice_letter_wrong", "The answer is $\\boxed{(D)}$.", "\\text{(C)}", False),
        ("set_order", "$\\boxed{5, 3, 7}$", "3, 5, 7", True),
        ("degree_word", "$\\boxed{90 \\text{ degrees}}$", "90^\\circ", True),
        ("approx_decimal_of_exact", "$\\boxed{1.4142}$", "\\sqrt{2}", False),
        ("minerva_frac", "Final Answer: The final answer is $\\frac{3}{2}$. I hope it is correct.", "\\frac{3}{2}", True),
        ("no_delimiters_frac_words", "The answer is \\frac{3}{2}.", "\\frac32", True),
        ("no_delimiters_pi_words", "Therefore, the answer is \\pi/2.", "\\frac{\\pi}{2}", True),
    ]
    for family, response, label, truth in special:
        add(family, response, label, truth)
    # The reference solutions as responses (every MATH-500 row), and with the last boxed answer
    # replaced by another row's (a different answer).
    for r in data:
        add("reference_solution", r["solution"], r["answer"], True)
        other = rng.choice([a for a in answers if a.replace(" ", "") != r["answer"].replace(" ", "")])
        i = r["solution"].rfind("\\boxed{")
        if i >= 0:
            depth, j = 0, i + len("\\boxed")
            while j < len(r["solution"]):
                depth += {"{": 1, "}": -1}.get(r["solution"][j], 0)
                if depth == 0:
                    break
                j += 1
            wrong = r["solution"][:i] + "\\boxed{" + other + "}" + r["solution"][j + 1:]
            add("reference_solution_other_answer", wrong, r["answer"], False)
    return items


# ---------------------------------------------------------------------------------------------
# IF rows (Tülu 3 functions): responses edited towards and away from each row's constraint,
# plus the two families the issue names: sentences around abbreviations and decimals, and
# response languages.

SENTENCE_TEXTS = [
    "Dr. Smith arrived at 3 p.m. on Jan. 5. He left soon after. It rained.",
    "The price rose 2.5 percent. Mr. Lee was surprised! Was he? Yes.",
    "I met J. R. R. Tolkien once. It was brief. We talked about e.g. maps.",
    "It was late. The end.",
    "A.B. testing works. Prof. Adams agrees. The U.S. economy grew 3.1 percent in Q1. Done.",
    "Values are 1.5, 2.75 and 3.0. None is negative. Really? Yes. OK.",
    "Wait... what? No. St. Louis is nice. Mt. Hood is tall.",
    "He said: go. Then he went.\nNew line here. And another one.",
]
LANGUAGE_TEXTS = [
    ("This is a short answer written entirely in English, with no other language.", "en"),
    ("Ceci est une réponse courte écrite entièrement en français, sans autre langue.", "fr"),
    ("Dies ist eine kurze Antwort, die vollständig auf Deutsch geschrieben ist.", "de"),
    ("Esta es una respuesta corta escrita completamente en español, sin otro idioma.", "es"),
    ("Questa è una risposta breve scritta interamente in italiano, senza altre lingue.", "it"),
    ("Dit is een kort antwoord dat volledig in het Nederlands is geschreven.", "nl"),
    ("Это короткий ответ, полностью написанный на русском языке.", "ru"),
    ("これは完全に日本語で書かれた短い回答です。", "ja"),
    ("这是一个完全用中文写的简短回答。", "zh-cn"),
    ("이것은 완전히 한국어로 작성된 짧은 답변입니다.", "ko"),
    ("Esta é uma resposta curta escrita inteiramente em português, sem outra língua.", "pt"),
    ("Bu, tamamen Türkçe yazılmış kısa bir cevaptır.", "tr"),
    ("यह पूरी तरह से हिंदी में लिखा गया एक छोटा उत्तर है।", "hi"),
    ("هذه إجابة قصيرة مكتوبة بالكامل باللغة العربية.", "ar"),
]


def constraint(func, **kw):
    keys = ["N", "quantifier", "end_phrase", "keyword_list", "word", "forbidden_words", "letter",
            "i", "first_word", "postscript_marker", "options", "section_splitter", "original_prompt",
            "language"]
    c = {"func_name": func}
    c.update({k: kw.get(k) for k in keys})
    return json.dumps(c)


def if_items():
    items = []

    def add(family, response, label, truth=None):
        items.append({"family": family, "response": response, "ground_truth": label, "truth": truth})

    for text in SENTENCE_TEXTS:
        for n in range(1, 9):
            for q in ["at least", "at most", "around"]:
                add("sentences_abbreviations", text, constraint("verify_sentence_constraint", N=n, quantifier=q))
    for text, lang in LANGUAGE_TEXTS:
        for want in ["en", lang, "fr"]:
            add("response_language", text, constraint("validate_response_language", language=want),
                lang == want)
    sample = [r for r in rows("testdata/rlvr-sample-300.jsonl") if r["dataset"] == "ifeval"]
    answers = [r["answer"].split("####")[0] for r in rows("eval/gsm8k-test.jsonl")[:200]]
    for r in sample:
        gt = json.loads(r["ground_truth"])
        base = rng.choice(answers).strip()
        for name, resp in edits(gt, base):
            add(f"sample_{gt['func_name']}_{name}", resp, r["ground_truth"])
    return items


def edits(gt, base):
    """Responses for one IF label: the base answer, and edits towards and away from it."""
    f = gt["func_name"]
    out = [("plain", base)]
    if f == "verify_bullet_points":
        n = gt["N"]
        out += [("bullets_exact", "\n".join(f"* point {i}" for i in range(n))),
                ("bullets_dash", "\n".join(f"- point {i}" for i in range(n))),
                ("bullets_more", "\n".join(f"* point {i}" for i in range(n + 1)))]
    elif f in ("validate_lowercase", "validate_uppercase"):
        out += [("lower", base.lower()), ("upper", base.upper())]
    elif f == "verify_postscript":
        m = gt["postscript_marker"]
        out += [("with", f"{base}\n{m} see you"), ("bare_marker", f"{base}\n{m}")]
    elif f == "validate_quotation":
        out += [("quoted", f'"{base}"'), ("padded", f'  "{base}"  ')]
    elif f == "validate_no_commas":
        out += [("no_commas", base.replace(",", ""))]
    elif f == "validate_end":
        e = gt["end_phrase"]
        out += [("ends", f"{base} {e}"), ("ends_space", f"{base} {e}  \n")]
    elif f == "verify_paragraph_count":
        n = gt["N"]
        out += [("divided", "\n* * *\n".join(f"Part {i}." for i in range(n))),
                ("divided_empty", "\n* * *\n".join(f"Part {i}." for i in range(n)) + "\n* * *\n")]
    elif f == "validate_word_constraint":
        n = gt["N"]
        words = (base + " ") * (1 + n // max(1, len(base.split())))
        out += [("exact", " ".join(words.split()[:n])), ("one_more", " ".join(words.split()[:n + 1]))]
    elif f == "validate_highlighted_sections":
        n = gt["N"]
        out += [("highlighted", base + "".join(f" *part {i}*" for i in range(n)))]
    elif f == "validate_title":
        out += [("title", f"<<A Title>>\n{base}")]
    elif f == "validate_two_responses":
        out += [("two", f"{base}\n******\nAnother answer."), ("same", f"{base}\n******\n{base}")]
    elif f == "validate_json_format":
        out += [("json", json.dumps({"answer": base})), ("fenced", "```json\n" + json.dumps({"a": 1}) + "\n```")]
    elif f == "validate_placeholders":
        n = gt["N"]
        out += [("placeholders", base + "".join(f" [p{i}]" for i in range(n)))]
    elif f == "validate_sections":
        n, s = gt["N"], gt["section_splitter"]
        out += [("sections", "".join(f"{s} {i}\ntext\n" for i in range(1, n + 1)))]
    elif f == "validate_repeat_prompt":
        out += [("repeated", f"{gt['original_prompt']} {base}")]
    elif f == "verify_keywords":
        out += [("keywords", base + " " + " ".join(gt["keyword_list"]))]
    elif f == "validate_forbidden_words":
        out += [("forbidden", base + " " + " ".join(gt["forbidden_words"]))]
    elif f == "verify_keyword_frequency":
        out += [("frequency", base + (" " + gt["word"]) * gt["N"])]
    elif f == "verify_letter_frequency":
        out += [("letters", base + " " + gt["letter"] * gt["N"])]
    elif f == "validate_frequency_capital_words":
        out += [("capitals", base + " NASA" * gt["N"])]
    elif f == "validate_paragraphs":
        out += [("paragraphs", "\n\n".join(f"{gt['first_word']} p{i}." for i in range(gt["N"])))]
    return out


# ---------------------------------------------------------------------------------------------
# Google IFEval: sentence-count and capital-word prompts, where the reference uses NLTK.

def google_items():
    prompts = rows("eval/ifeval.jsonl")
    items = []
    texts = SENTENCE_TEXTS + [
        "Mr. and Mrs. Dursley, of number four, Privet Drive, were proud to say that they were "
        "perfectly normal, thank you very much. They were the last people you'd expect to be "
        "involved in anything strange or mysterious. Mr. Dursley was the director of a firm "
        "called Grunnings, which made drills. He was a big, beefy man with hardly any neck.",
        "The U.N. met at 10 a.m. today. Dr. A. B. Cohen spoke. It's 3.14159, roughly. I'M SURE "
        "THAT'S RIGHT. NASA AND ESA AGREE. THE END.",
    ]
    for p in prompts:
        ids = p["instruction_id_list"]
        if not any(i in ("length_constraints:number_sentences", "change_case:capital_word_frequency") for i in ids):
            continue
        for k, t in enumerate(texts):
            items.append({"family": "nltk_" + "+".join(i.split(":")[1] for i in ids if i in (
                "length_constraints:number_sentences", "change_case:capital_word_frequency")),
                "key": p["key"], "response": t, "ground_truth": json.dumps(
                    {"instruction_id_list": ids, "kwargs": p["kwargs"], "prompt": p["prompt"]})})
    items += sentence_count_items()
    return items


def sentence_count_items():
    """`number_sentences` at least k for k around a rough count, over real prose: GSM8K and
    MATH-500 solutions, IFEval prompts, and the hand-written texts. The reference's verdicts flip
    where NLTK's count lies, so agreeing on every k is agreeing on the count."""
    texts = ([r["answer"] for r in rows("eval/gsm8k-test.jsonl")[:300]]
             + [r["solution"] for r in rows("eval/math500.jsonl")]
             + [r["prompt"] for r in rows("eval/ifeval.jsonl")] + SENTENCE_TEXTS)
    items = []
    for text in texts:
        rough = max(1, len(re.findall(r"[.?!]\s", text)) + 1)
        ks = range(max(1, rough - 3), rough + 4)
        items.append({"family": "nltk_sentence_count", "key": 0, "response": text,
                      "ground_truth": json.dumps({
                          "instruction_id_list": ["length_constraints:number_sentences"] * len(ks),
                          "kwargs": [{"relation": "at least", "num_sentences": k} for k in ks],
                          "prompt": ""})})
    return items


# ---------------------------------------------------------------------------------------------

def read_corpus(name):
    return [json.loads(l) for l in (OUT / f"{name}.jsonl").read_text().splitlines()]


def write_corpus(name, items):
    with open(OUT / f"{name}.jsonl", "w") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")


def safe(f, *a):
    try:
        return bool(f(*a))
    except Exception as e:  # the reference raises on some inputs: recorded, not compared
        return f"error: {type(e).__name__}"


def stage_items():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, items in [("gsm8k", gsm8k_items()), ("math", math_items()), ("if", if_items()),
                        ("google_ifeval", google_items())]:
        prefix = "google" if name == "google_ifeval" else name
        write_corpus(name, [{"id": f"{prefix}-{i}", **it} for i, it in enumerate(items)])
        print(name, len(items))


def stage_tulu3(open_instruct):
    """The release's verdicts, in a venv with the release's sympy 1.12 and antlr4 4.11."""
    sys.path.insert(0, str(pathlib.Path(open_instruct).parent))
    from open_instruct import ground_truth_utils as gt
    import langdetect
    langdetect.DetectorFactory.seed = 0
    fns = {"gsm8k": gt.verify_gsm8k_sample, "math": gt.verify_math_sample,
           "if": lambda r, c: gt.verify_ifeval_sample(r, json.loads(c))}
    for name, fn in fns.items():
        items = read_corpus(name)
        for it in items:
            it["tulu3"] = safe(fn, it["response"], it["ground_truth"])
        write_corpus(name, items)


def stage_references():
    """math-verify's verdicts and Google's IFEval results."""
    from math_verify import parse, verify
    from lm_eval.tasks.ifeval import utils
    items = read_corpus("math")
    for it in items:
        it["math_verify"] = safe(lambda r, l: verify(parse("$" + l + "$"), parse(r)),
                                 it["response"], it["ground_truth"])
    write_corpus("math", items)
    items = read_corpus("google_ifeval")
    for it in items:
        row = json.loads(it["ground_truth"])
        inp = utils.InputExample(key=it["key"], instruction_id_list=row["instruction_id_list"],
                                 prompt=row["prompt"], kwargs=row["kwargs"])
        it["strict"] = utils.test_instruction_following_strict(inp, it["response"]).follow_instruction_list
        it["loose"] = utils.test_instruction_following_loose(inp, it["response"]).follow_instruction_list
    write_corpus("google_ifeval", items)


if __name__ == "__main__":
    {"items": lambda: stage_items(), "tulu3": lambda: stage_tulu3(sys.argv[2]),
     "references": lambda: stage_references()}[sys.argv[1]]()
