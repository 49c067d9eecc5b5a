#!/usr/bin/env python3
"""How many of a model's weights can a bf16 copy move in N optimiser steps at a learning rate?

A learner that trains in bf16 keeps an f32 master of each weight (rlvr, DeepSpeed's bf16
optimiser): the master starts on the bf16 value, moves by AdamW's update (about `lr` a step at
most: |m/sqrt(v)| <= 1 when the gradients keep their sign; the worst case is (1 - beta1) /
sqrt(1 - beta2) = 3.16 lr), and the bf16 weight the forward pass (and the rollout engine) reads
changes only once its master has moved more than half a bf16 step (2^(floor(log2|w|) - 8)).
This counts, from the weights of a safetensors file, the share that can have changed at all.

usage: python scripts/bf16-reach.py MODEL.safetensors [--lr 3e-6] [--steps 1 10 100 1000]
(needs torch: the bench venv's python, scripts/bench-venv.sh)
"""
import argparse
import json
import struct

import torch

KINDS = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--lr", type=float, default=3e-6)
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 10, 32, 100, 1000])
    args = ap.parse_args()
    with open(args.model, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        total, movable = 0, {s: 0 for s in args.steps}
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            a, b = meta["data_offsets"]
            f.seek(base + a)
            t = torch.frombuffer(bytearray(f.read(b - a)), dtype=KINDS[meta["dtype"]])
            w = t.to(torch.bfloat16).float().abs()
            half_step = torch.pow(2.0, torch.floor(torch.log2(w.clamp_min(1e-38))) - 8)
            half_step[w == 0] = 0
            total += w.numel()
            for s in args.steps:
                movable[s] += int((half_step < s * args.lr).sum())
    print(f"{args.model}: {total:,} weights; AdamW at lr {args.lr:g}, at most lr per step")
    for s in args.steps:
        print(f"  {s:5d} steps (a master moves <= {s * args.lr:.1e}): {movable[s] / total:7.2%} of the bf16 weights can have changed")


if __name__ == "__main__":
    main()
