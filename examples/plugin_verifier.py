#!/usr/bin/env python3
"""An rlvr verifier plug-in: reads one JSON request per line on stdin, writes one JSON verdict
per line on stdout (see verifiers/src/plugin.rs for the protocol).

This one accepts a response whose last line contains the ground truth, ignoring case and
surrounding whitespace. Use it as a template: replace `judge`.

    rlvr verify --input in.jsonl --plugin contains=python3,examples/plugin_verifier.py
"""
import json
import sys


def judge(response: str, ground_truth: str):
    lines = [l for l in response.strip().splitlines() if l.strip()]
    last = lines[-1].lower() if lines else ""
    ok = ground_truth.strip().lower() in last
    return ok, f"last line {'contains' if ok else 'lacks'} {ground_truth!r}"


def main():
    for line in sys.stdin:
        request = json.loads(line)
        verified, reason = judge(request["response"], request["ground_truth"])
        reply = {"id": request["id"], "verified": verified, "score": 1.0 if verified else 0.0, "reason": reason}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
