"""Attention over a decode step's KV cache on the CPU, as rlvr's engine calls it for
SmolLM2-135M (9 query heads, 3 key/value heads, head size 64, f32): 64 sequences, one new token
each, the cache narrowed to the longest and a boolean mask per row; libtorch's SDPA with
`enable_gqa`, and the same with the query heads grouped under their key/value head (no GQA
expansion). Times are for the 30 layers of one step (BENCHMARKS.md, "The first real
post-training run").

    python benches/attention_cpu.py
"""
import torch, time
import torch.nn.functional as F
torch.set_num_threads(2)
B, H, KV, D, CAP = 64, 9, 3, 64, 700
for L in (160, 400, 660):
    q = torch.randn(B, H, 1, D)
    ck = torch.randn(B, KV, CAP, D); cv = torch.randn(B, KV, CAP, D)
    k = ck.narrow(2, 0, L); v = cv.narrow(2, 0, L)
    pos = torch.randint(L // 2, L, (B,))
    mask = torch.arange(L).view(1, 1, 1, L) <= pos.view(B, 1, 1, 1)
    def gqa():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    def grouped():
        qg = q.view(B, KV, H // KV, D)
        return F.scaled_dot_product_attention(qg, k, v, attn_mask=mask).view(B, H, 1, D)
    a, b = gqa(), grouped()
    print("max diff", (a - b).abs().max().item())
    for name, f in (("gqa", gqa), ("grouped", grouped)):
        f(); t = time.perf_counter()
        for _ in range(10): f()
        print(L, name, f"{(time.perf_counter() - t) / 10 * 1000 * 30:.1f} ms per 30 layers")
