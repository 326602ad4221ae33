#!/usr/bin/env python3
"""Runs a GGUF model with llama.cpp (through llama-cpp-python, installed by scripts/llama_cpp.sh)
and prints one JSON object on stdout. Used by crates/infer/tests/gguf.rs, which checks that
llama.cpp computes what the training model computes, and by `pazar bench infer`, which compares
our engine's speed with llama.cpp's on the same weights and thread count.

  .venv-llama/bin/python scripts/llama_cpp_driver.py greedy --model M.gguf --prompt-hex HEX \
      --tokens N [--threads T] [--n-ctx C]
    Tokenizes the prompt with llama.cpp's own tokenizer (no BOS), decodes N tokens greedily
    (argmax of the logits, no sampler) and prints
    {"llama_cpp_python", "n_vocab", "n_ctx", "prompt_tokens", "prompt_round_trip_hex",
     "tokens", "text_hex", "prompt_logits"}: the prompt's token ids, the prompt detokenized
    again, the generated ids, their detokenized bytes, and the logits at the prompt's last
    position.

  .venv-llama/bin/python scripts/llama_cpp_driver.py bench --model M.gguf --prompt-hex HEX \
      --tokens N [--threads T] [--n-ctx C] [--repeat R]
    Greedy generation of N tokens at batch 1, timed R times (default 3; the best run is kept)
    and prints {"llama_cpp_python", "threads", "prompt_tokens", "generated", "prefill_s",
    "decode_s", "tokens_per_s", "runs"}: tokens_per_s is generated tokens over the time of the
    single-token decode steps (prompt prefill not included), as the binding sees it (the
    Python call per token is included).

The context is n_ctx positions (default: the model's context length); generation stops there.
The KV cache is kept in f32 (llama.cpp's default is f16) so that logits can be compared with
ours. Exit status 2 for bad arguments, 1 if llama.cpp fails to load the model.
"""

import argparse
import json
import sys
import time

import numpy as np

import llama_cpp
from llama_cpp import Llama

GGML_TYPE_F32 = 0


def load(args):
    try:
        return Llama(
            model_path=args.model,
            n_ctx=args.n_ctx,
            n_batch=512,
            n_threads=args.threads,
            n_threads_batch=args.threads,
            logits_all=True,
            type_k=GGML_TYPE_F32,
            type_v=GGML_TYPE_F32,
            flash_attn=False,
            seed=0,
            verbose=False,
        )
    except Exception as e:  # llama-cpp-python raises ValueError with llama.cpp's reason
        print(f"llama.cpp failed to load {args.model}: {e}", file=sys.stderr)
        sys.exit(1)


def context(llm, args):
    """Positions a run may use: --n-ctx, else the model's context length (llama.cpp rounds the
    context it allocates up to a multiple of 256, beyond the positions the model was trained on)."""
    return args.n_ctx or llm._model.n_ctx_train()


def generate(llm, prompt, n, limit):
    """Greedy decoding after `prompt`; returns the generated ids and the time of each step."""
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    prefill = time.perf_counter() - t0
    out, steps = [], []
    while len(out) < n:
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        if len(out) == n or llm.n_tokens >= limit:
            break
        t = time.perf_counter()
        llm.eval([nxt])
        steps.append(time.perf_counter() - t)
    return out, prefill, steps


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["greedy", "bench"])
    p.add_argument("--model", required=True)
    p.add_argument("--prompt-hex", required=True, help="the prompt's bytes, hex")
    p.add_argument("--tokens", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n-ctx", type=int, default=0, help="0: the model's context length")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    try:
        prompt_bytes = bytes.fromhex(args.prompt_hex)
    except ValueError as e:
        p.error(f"--prompt-hex: {e}")
    if not prompt_bytes or args.tokens < 1 or args.threads < 1 or args.repeat < 1 or args.n_ctx < 0:
        p.error("the prompt must not be empty; --tokens, --threads and --repeat must be at least 1")

    llm = load(args)
    prompt = llm.tokenize(prompt_bytes, add_bos=False, special=False)
    limit = context(llm, args)
    if len(prompt) >= limit:
        p.error(f"the prompt is {len(prompt)} tokens; the context holds {limit}")
    base = {"llama_cpp_python": llama_cpp.__version__}

    if args.mode == "greedy":
        llm.reset()
        llm.eval(prompt)
        prompt_logits = [float(x) for x in llm.scores[llm.n_tokens - 1]]
        tokens, _, _ = generate(llm, prompt, args.tokens, limit)
        result = {
            **base,
            "n_vocab": llm.n_vocab(),
            "n_ctx": limit,
            "prompt_tokens": prompt,
            "prompt_round_trip_hex": llm.detokenize(prompt).hex(),
            "tokens": tokens,
            "text_hex": llm.detokenize(tokens).hex(),
            "prompt_logits": prompt_logits,
        }
    else:
        runs = []
        for _ in range(args.repeat):
            tokens, prefill, steps = generate(llm, prompt, args.tokens, limit)
            decode = sum(steps)
            runs.append(
                {
                    "generated": len(tokens),
                    "prefill_s": prefill,
                    "decode_s": decode,
                    "tokens_per_s": len(steps) / decode if decode > 0 else None,
                }
            )
        best = max(runs, key=lambda r: r["tokens_per_s"] or 0.0)
        result = {**base, "threads": args.threads, "prompt_tokens": len(prompt), **best, "runs": runs}
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
