#!/usr/bin/env python3
"""PyTorch baseline for `hft bench`: the same benchmark Llama, batch and AdamW step in PyTorch and transformers.

Builds Benchmarks.StepModel(name) of src/Model/Diagnostics/Benchmarks.cs as a transformers LlamaForCausalLM (SDPA
attention, random initialisation), feeds it one fixed batch of random tokens, and times whole optimizer steps
(zero_grad, forward with labels, backward, global-norm clipping at 1.0, AdamW lr 1e-4, betas (0.9, 0.999), eps 1e-8,
weight decay 0.01, PyTorch's default foreach implementation) with

  fft  full fine-tuning, and
  hft  the tensors our HFT policy freezes set to requires_grad=False (and left out of the optimizer): the list comes
       from `hft policy --policy hft --seed 1 --trainable-ratio 0.5` run on the same config (--hft), or a file of
       names (--frozen-list), the draw `hft bench` uses (FreezePolicy.Hft(1));

in three precisions:

  fp32       float32 everywhere (TF32 matmuls off, PyTorch's default), as our fp32;
  bf16       torch.autocast(dtype=bfloat16) over the forward pass with float32 master weights, gradients and AdamW
             state: bf16 matrix products, fp32 elsewhere, the scheme of our bf16 mixed precision;
  bf16-pure  model.to(bfloat16): weights, gradients and AdamW state in bfloat16 (no fp32 master; PyTorch only).

Each configuration runs --warmup steps, then --steps timed steps (torch.cuda.synchronize after each); ms is the
median, as in hft bench. Peak memory is torch.cuda.max_memory_allocated from model creation to the last step. Also
times c = a @ b.T at the GEMM sizes of hft bench in fp32, TF32 and bf16 (cuBLAS through torch.matmul).

Also times causal scaled_dot_product_attention forward and backward in fp32 and bf16 at the attention shape of hft
bench (batch 8, 12 heads, 1024 tokens, head dimension 64).

Writes JSON to OUT (after every configuration, so a run stopped by a timeout keeps what it measured) with the keys
card, torch_version, transformers_version, model {name, config, batch, seq, parameters}, frozen, frozen_source,
settings, gemm [{impl, m, n, k, tflops}], gemm_training [{impl, product, form, m, n, k, tflops}] (torch-bf16 on
the products of a training step, as hft bench's), attention and attention_bf16 {shape, precision, forward_ms, backward_ms,
forward_tflops, backward_tflops} (as hft bench writes them), step [{method, precision, ms, ms_min, ms_max, tokens_per_s, peak_bytes,
trainable_parameters, loss} or {method, precision, error}], hft_fft_ratio {precision: hft ms / fft ms}, and prints a
table. `hft bench --from bench.json --compare OUT` sets these figures beside ours.

Usage: python3 tools/pytorch_baseline.py OUT.json --hft bundle/hft/hft [--model base] [--warmup 3] [--steps 10]
"""

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

# Benchmarks.StepModel in src/Model/Diagnostics/Benchmarks.cs: the config (with LlamaConfig's defaults for the rest:
# rms_norm_eps 1e-6, rope_theta 10000, untied head, no biases, SiLU), the batch and the sequence length.
STEP_MODELS = {
    "base": (dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                  max_position_embeddings=2048), 8, 1024),
    "small": (dict(vocab_size=2048, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                   max_position_embeddings=1024), 4, 256),
}
LLAMA_DEFAULTS = dict(rms_norm_eps=1e-6, tie_word_embeddings=False, hidden_act="silu", attention_bias=False,
                      mlp_bias=False, attention_dropout=0.0, initializer_range=0.02, bos_token_id=1, eos_token_id=2)
# RoPE base: 10000, transformers' default in both its spellings (rope_theta in 4.x, rope_parameters in 5.x), so it is
# not passed to transformers.LlamaConfig; config_summary reads back what the model got and hft bench --compare checks it.
ROPE_THETA = 10000.0
# The fields `hft bench` writes in step_config that `hft bench --compare` checks against model.config.
COMPARED_KEYS = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "head_dim", "max_position_embeddings", "tie_word_embeddings", "rms_norm_eps",
                 "rope_theta"]
PRECISIONS = ["fp32", "bf16", "bf16-pure"]
METHODS = ["fft", "hft"]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="where to write the JSON")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--hft", help="the hft executable: its `policy` command gives the tensors HFT freezes")
    src.add_argument("--frozen-list", help="a file of the tensor names HFT freezes, one per line (# comments)")
    p.add_argument("--model", default="base", choices=sorted(STEP_MODELS), help="step model of hft bench (default base)")
    p.add_argument("--seed", type=int, default=1, help="seed of the HFT draw (hft bench: 1)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per configuration")
    p.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated subset of " + ", ".join(PRECISIONS))
    p.add_argument("--gemm-sizes", default="1024,2048,4096,8192", help="m = n = k of the GEMM timings (empty: none)")
    p.add_argument("--gemm-repeats", type=int, default=10, help="timed GEMMs per size and precision")
    p.add_argument("--time-budget", type=float, default=0,
                   help="seconds: configurations that would start later are skipped (recorded as errors); 0: no limit")
    p.add_argument("--device", default="cuda", help="torch device (default cuda; cpu only to try the script)")
    a = p.parse_args(argv)
    a.precisions = [x.strip() for x in a.precisions.split(",") if x.strip()]
    for x in a.precisions:
        if x not in PRECISIONS:
            p.error(f"unknown precision '{x}': expected {', '.join(PRECISIONS)}")
    a.gemm_sizes = [int(x) for x in a.gemm_sizes.split(",") if x.strip()]
    if a.steps < 1 or a.warmup < 0 or a.gemm_repeats < 1:
        p.error("--steps and --gemm-repeats must be >= 1 and --warmup >= 0")
    return a


def policy_config(name):
    """The config.json `hft policy` reads for the step model (only fields our LlamaConfig parser knows)."""
    cfg, _, _ = STEP_MODELS[name]
    full = dict(model_type="llama", architectures=["LlamaForCausalLM"], **cfg, **LLAMA_DEFAULTS, rope_theta=ROPE_THETA)
    full["num_key_value_heads"] = cfg["num_attention_heads"]
    return full


def frozen_from_hft(hft, name, seed):
    """Runs `hft policy` on the step model's config.json; returns (names, the policy's summary line)."""
    with tempfile.TemporaryDirectory(prefix="hft-policy-") as d:
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(policy_config(name), f, indent=2)
        cmd = [hft, "policy", "--model", d, "--policy", "hft", "--seed", str(seed), "--trainable-ratio", "0.5"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise SystemExit(f"pytorch_baseline: {' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    lines = [x.strip() for x in r.stdout.splitlines() if x.strip()]
    names = [x for x in lines if not x.startswith("#")]
    summary = next((x[1:].strip() for x in lines if x.startswith("#")), "")
    return names, f"{' '.join(cmd[1:])} -> {summary}"


def frozen_from_file(path):
    names = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                names.append(line)
    return names, f"file {path}"


def build_model(torch, transformers, name, device):
    """LlamaForCausalLM of the step model in float32 with SDPA attention, initialised from torch.manual_seed(1)."""
    cfg, _, _ = STEP_MODELS[name]
    config = transformers.LlamaConfig(**cfg, **LLAMA_DEFAULTS, num_key_value_heads=cfg["num_attention_heads"], use_cache=False)
    torch.manual_seed(1)
    try:
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    except TypeError:  # a transformers without the keyword: set it on the config
        config._attn_implementation = "sdpa"
        model = transformers.LlamaForCausalLM(config)
    attn = getattr(model.config, "_attn_implementation", None)
    if attn != "sdpa":
        raise SystemExit(f"pytorch_baseline: the model runs attention '{attn}', not sdpa")
    if type(model).__name__ != "LlamaForCausalLM":
        raise SystemExit(f"pytorch_baseline: built {type(model).__name__}, not LlamaForCausalLM")
    return model.to(device=device, dtype=torch.float32).train()


def config_summary(model):
    c = model.config
    out = {}
    for key in COMPARED_KEYS:
        v = getattr(c, key, None)
        if key == "rope_theta" and v is None:
            v = (getattr(c, "rope_parameters", None) or {}).get("rope_theta")
        if key == "head_dim" and v is None:
            v = c.hidden_size // c.num_attention_heads
        if v is not None:
            out[key] = v
    return out


def sync(torch, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(torch, device, op, repeats, warmup=2):
    """Median seconds of op() over `repeats` calls, each synchronized, after `warmup` untimed ones."""
    for _ in range(warmup):
        op()
    sync(torch, device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        op()
        sync(torch, device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_mm(torch, device, a, b, repeats):
    """Median seconds of torch.mm(a, b) and c's dtype: for bf16 operands c in fp32 as ours, where this torch has out_dtype."""
    out_dtype = None
    if a.dtype == torch.bfloat16:
        try:
            torch.mm(a[:8, :8], b[:8, :8], out_dtype=torch.float32)
            out_dtype = torch.float32
        except (TypeError, RuntimeError):
            out_dtype = None

    def op():
        return torch.mm(a, b, out_dtype=out_dtype) if out_dtype is not None else torch.mm(a, b)

    c = op()
    return median_seconds(torch, device, op, repeats, warmup=1), str(c.dtype).replace("torch.", "")


def time_gemm(torch, device, impl, s, repeats):
    """Median seconds of c = a @ b.T (m = n = k = s) filled as hft bench fills ours (0.01, 0.02), and c's dtype."""
    dtype = torch.bfloat16 if impl == "torch-bf16" else torch.float32
    a = torch.full((s, s), 0.01, device=device, dtype=dtype)
    b = torch.full((s, s), 0.02, device=device, dtype=dtype)
    return time_mm(torch, device, a, b.t(), repeats)


def gemms(torch, device, sizes, repeats, log):
    results = []
    prior = torch.backends.cuda.matmul.allow_tf32
    try:
        for impl in ["torch-fp32", "torch-tf32", "torch-bf16"]:
            torch.backends.cuda.matmul.allow_tf32 = impl == "torch-tf32"
            for s in sizes:
                entry = {"impl": impl, "m": s, "n": s, "k": s}
                try:
                    t, c_dtype = time_gemm(torch, device, impl, s, repeats)
                    entry["tflops"] = 2.0 * s * s * s / t / 1e12
                    entry["c_dtype"] = c_dtype
                    log(f"gemm {impl} {s}^3: {entry['tflops']:.2f} TFLOP/s (c {c_dtype})")
                except Exception as e:  # noqa: BLE001 - recorded, the rest still runs
                    entry["error"] = f"{type(e).__name__}: {e}"
                    log(f"gemm {impl} {s}^3: {entry['error']}")
                results.append(entry)
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prior
    return results


def loss_chunk_rows(batch, seq, vocab):
    """LlamaModelOptions.DefaultLossChunkRows: the rows of the loss head per chunk (all rows where they fit 64 Mi logits)."""
    budget = 64 << 20
    if batch * seq * vocab <= budget:
        return batch * seq
    rows = max(1, budget // vocab)
    return rows - rows % 128 if rows >= 128 else rows


def training_gemms(name):
    """Benchmarks.TrainingGemms: the distinct products (product, form, m, n, k) of a training step of a step model."""
    cfg, batch, seq = STEP_MODELS[name]
    t, d, f, v = batch * seq, cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    qd = kvd = d  # the step models have no GQA and head_dim = hidden_size / heads
    rows = loss_chunk_rows(batch, seq, v)
    weights = [("q", qd, d, t), ("k", kvd, d, t), ("v", kvd, d, t), ("o", d, qd, t), ("gate", f, d, t), ("up", f, d, t),
               ("down", d, f, t), ("head", v, d, rows)]
    out = []

    def add(product, form, m, n, k):
        if not any(x[1:] == (form, m, n, k) for x in out):
            out.append((product, form, m, n, k))

    for w, o, i, r in weights:
        add(f"x·W_{w}ᵀ", "NT", r, o, i)
    for w, o, i, r in weights:
        add(f"dy·W_{w}", "NN", r, i, o)
    for w, o, i, r in weights:
        add(f"dW_{w}", "TN", o, i, r)
    # The input gradients hft sums in one launch (Backend.MatMulSum), timed here as one mm over their k together.
    add("dq·W_q + dk·W_k + dv·W_v", "NN", t, d, qd + 2 * kvd)
    add("dgate·W_gate + dup·W_up", "NN", t, d, 2 * f)
    return out


def training_gemm_times(torch, device, name, repeats, log):
    """torch-bf16 on each product of training_gemms(name), c in fp32 where torch.mm has out_dtype (as hft bench's gemm_training)."""
    results = []
    for product, form, m, n, k in training_gemms(name):
        entry = {"impl": "torch-bf16", "product": product, "form": form, "m": m, "n": n, "k": k}
        try:
            def full(rows, cols, value):
                return torch.full((rows, cols), value, device=device, dtype=torch.bfloat16)
            # NT: a [m, k] · b [n, k]ᵀ; NN: a [m, k] · b [k, n]; TN: a [k, m]ᵀ · b [k, n].
            a = full(k, m, 0.01).t() if form == "TN" else full(m, k, 0.01)
            b = full(n, k, 0.02).t() if form == "NT" else full(k, n, 0.02)
            t, entry["c_dtype"] = time_mm(torch, device, a, b, repeats)
            entry["tflops"] = 2.0 * m * n * k / t / 1e12
            log(f"gemm torch-bf16 {form} {m}x{n}x{k} ({product}): {entry['tflops']:.1f} TFLOP/s")
        except Exception as e:  # noqa: BLE001 - recorded, the rest still runs
            entry["error"] = f"{type(e).__name__}: {e}"
        results.append(entry)
    return results


# The attention shape of `hft bench` on a GPU (batch, heads, sequence, head dimension), causal, no GQA.
ATTENTION_SHAPE = (8, 12, 1024, 64)


def time_attention(torch, device, precision, repeats, log):
    """torch.nn.functional.scaled_dot_product_attention (causal) forward and backward at ATTENTION_SHAPE, as hft bench
    times ours: median ms of the forward, and of forward + backward minus the forward; TFLOP/s with the same counts."""
    b, h, t, d = ATTENTION_SHAPE
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    entry = {"shape": f"b{b} t{t} h{h} d{d} causal", "precision": precision}
    try:
        g = torch.Generator(device=device).manual_seed(3)
        q, k, v, do = (torch.randn(b, h, t, d, device=device, dtype=dtype, generator=g) for _ in range(4))
        for x in (q, k, v):
            x.requires_grad_(True)
        sdpa = torch.nn.functional.scaled_dot_product_attention

        def forward():
            with torch.no_grad():
                sdpa(q, k, v, is_causal=True)

        def forward_backward():
            q.grad = k.grad = v.grad = None
            sdpa(q, k, v, is_causal=True).backward(do)

        fwd = median_seconds(torch, device, forward, repeats) * 1e3
        both = median_seconds(torch, device, forward_backward, repeats) * 1e3
        bwd = max(both - fwd, 1e-6)
        flops = 2.0 * 2 * d * h * (t + 1) / 2.0 * b * t
        entry.update({"forward_ms": fwd, "backward_ms": bwd, "forward_tflops": flops / fwd / 1e9,
                      "backward_tflops": 2.5 * flops / bwd / 1e9})
        log(f"attention {precision}: forward {fwd:.2f} ms, backward {bwd:.2f} ms")
        del q, k, v, do
    except Exception as e:  # noqa: BLE001 - recorded, the rest still runs
        entry["error"] = f"{type(e).__name__}: {e}"[:500]
        log(f"attention {precision}: {entry['error']}")
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return entry


def run_step(torch, transformers, args, method, precision, frozen, ids, log):
    """One configuration: warm-up and timed optimizer steps; the step entry."""
    device = args.device
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = build_model(torch, transformers, args.model, device)
    if precision == "bf16-pure":
        model = model.to(torch.bfloat16)
    names = dict(model.named_parameters())
    if method == "hft":
        missing = sorted(set(frozen) - set(names))
        if missing:
            raise SystemExit(f"pytorch_baseline: frozen tensors not in the model: {missing[:5]}")
        for n in frozen:
            names[n].requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    autocast = precision == "bf16"
    device_type = "cuda" if cuda else "cpu"

    def step():
        opt.zero_grad(set_to_none=True)
        if autocast:
            with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
                loss = model(input_ids=ids, labels=ids).loss
        else:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        return loss

    for _ in range(args.warmup):
        step()
    sync(torch, device)
    times = []
    loss = None
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        sync(torch, device)
        times.append((time.perf_counter() - t0) * 1e3)
    loss = float(loss.detach().float())
    if not math.isfinite(loss):
        raise RuntimeError(f"the loss is {loss}")
    ms = statistics.median(times)
    batch, seq = ids.shape
    entry = {
        "method": method, "precision": precision, "ms": ms, "ms_min": min(times), "ms_max": max(times),
        "tokens_per_s": batch * seq / (ms / 1e3),
        "peak_bytes": int(torch.cuda.max_memory_allocated()) if cuda else None,
        "trainable_parameters": sum(p.numel() for p in trainable), "loss": loss,
    }
    del opt, trainable, names, model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return entry


def write(path, report):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, path)


def ratios(steps):
    out = {}
    for p in PRECISIONS:
        ms = {s["method"]: s.get("ms") for s in steps if s["precision"] == p}
        if ms.get("fft") and ms.get("hft"):
            out[p] = ms["hft"] / ms["fft"]
    return out


def table(report):
    lines = [f"PyTorch {report['torch_version']}, transformers {report['transformers_version']} on {report['card']}; "
             f"{report['model']['name']} model, batch {report['model']['batch']} x {report['model']['seq']}", "",
             "| GEMM | m = n = k | TFLOP/s |", "| --- | ---: | ---: |"]
    for g in report["gemm"]:
        lines.append(f"| {g['impl']} | {g['m']} | {g['tflops']:.2f} |" if "tflops" in g else f"| {g['impl']} | {g['m']} | {g['error']} |")
    lines += ["", "| method | precision | ms/step | tokens/s | peak bytes | trainable | loss |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for s in report["step"]:
        if "error" in s:
            lines.append(f"| {s['method']} | {s['precision']} | failed: {s['error']} | | | | |")
        else:
            peak = f"{s['peak_bytes']:,}" if s["peak_bytes"] is not None else "n/a"
            lines.append(f"| {s['method']} | {s['precision']} | {s['ms']:.1f} | {s['tokens_per_s']:,.0f} | {peak} | "
                         f"{s['trainable_parameters']:,} | {s['loss']:.4f} |")
    if report["hft_fft_ratio"]:
        lines += ["", "HFT/FFT step time " + ", ".join(f"{p} {r:.3f}" for p, r in report["hft_fft_ratio"].items()) + "."]
    return "\n".join(lines)


def main(argv):
    args = parse_args(argv)
    start = time.monotonic()

    def log(msg):
        print(f"[{time.monotonic() - start:6.1f} s] {msg}", flush=True)

    # The frozen list first: it needs no GPU, and a wrong --hft path should fail at once.
    frozen, frozen_source = frozen_from_hft(args.hft, args.model, args.seed) if args.hft else frozen_from_file(args.frozen_list)
    if not frozen:
        raise SystemExit("pytorch_baseline: the HFT policy froze nothing")
    log(f"HFT freezes {len(frozen)} tensors ({frozen_source})")

    import torch
    import transformers

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("pytorch_baseline: torch.cuda.is_available() is False")
    card = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{args.device} ({os.cpu_count()} cores)"
    _, batch, seq = STEP_MODELS[args.model]
    probe = build_model(torch, transformers, args.model, "cpu")
    report = {
        "card": card,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "cuda_version": torch.version.cuda,
        "model": {"name": args.model, "class": type(probe).__name__, "attn_implementation": probe.config._attn_implementation,
                  "config": config_summary(probe), "batch": batch, "seq": seq,
                  "parameters": sum(p.numel() for p in probe.parameters())},
        "frozen": frozen,
        "frozen_source": frozen_source,
        "settings": {"warmup": args.warmup, "steps": args.steps, "optimizer": "torch.optim.AdamW (foreach default)",
                     "lr": 1e-4, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01, "clip_grad_norm": 1.0,
                     "allow_tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
                     "bf16": "torch.autocast(bfloat16) over the forward, fp32 master weights",
                     "bf16-pure": "model.to(bfloat16), bf16 AdamW state", "gemm_repeats": args.gemm_repeats},
        "gemm": [],
        "step": [],
        "hft_fft_ratio": {},
    }
    del probe
    write(args.out, report)

    report["gemm"] = gemms(torch, args.device, args.gemm_sizes, args.gemm_repeats, log)
    report["gemm_training"] = training_gemm_times(torch, args.device, args.model, args.gemm_repeats, log)
    write(args.out, report)
    # The same keys as hft bench: "attention" in fp32, "attention_bf16" in bf16.
    report["attention"] = time_attention(torch, args.device, "fp32", args.gemm_repeats, log)
    report["attention_bf16"] = time_attention(torch, args.device, "bf16", args.gemm_repeats, log)
    write(args.out, report)

    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, STEP_MODELS[args.model][0]["vocab_size"], (batch, seq), generator=g).to(args.device)
    failed = 0
    for precision in args.precisions:
        for method in METHODS:
            if args.time_budget and time.monotonic() - start > args.time_budget:
                entry = {"method": method, "precision": precision, "error": f"skipped: past the time budget of {args.time_budget:.0f} s"}
                failed += 1
            else:
                try:
                    entry = run_step(torch, transformers, args, method, precision, frozen, ids, log)
                    peak = f"{entry['peak_bytes'] / 2**30:.2f} GiB peak" if entry["peak_bytes"] is not None else "no peak on this device"
                    log(f"step {method} {precision}: {entry['ms']:.1f} ms, {entry['tokens_per_s']:,.0f} tokens/s, {peak}")
                except Exception as e:  # noqa: BLE001 - out of memory and the like: recorded, the rest still runs
                    entry = {"method": method, "precision": precision, "error": f"{type(e).__name__}: {e}"[:500]}
                    failed += 1
                # After the except block, whose traceback held the failed configuration's tensors.
                gc.collect()
                if args.device.startswith("cuda"):
                    torch.cuda.empty_cache()
            if "error" in entry:
                log(f"step {method} {precision}: {entry['error']}")
            report["step"].append(entry)
            report["hft_fft_ratio"] = ratios(report["step"])
            write(args.out, report)

    print()
    print(table(report))
    print(f"\nwrote {args.out} in {time.monotonic() - start:.0f} s")
    return 1 if failed or any("error" in g for g in report["gemm"]) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
