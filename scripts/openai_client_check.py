#!/usr/bin/env python3
"""Drives `pazar infer serve` with the official OpenAI Python client (scripts/openai_venv.sh
installs it): lists the models, asks for a completion, a chat completion and the same chat
streamed, and a prompt longer than the context. Prints one JSON report on stdout and exits 1 on
any failure (the report's "failures" say which), 2 on bad usage.

Usage: .venv-openai/bin/python scripts/openai_client_check.py --base-url http://127.0.0.1:PORT/v1
"""

import argparse
import json
import sys

import openai
from openai import OpenAI


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", required=True, help="the API's base URL, ending in /v1")
    ap.add_argument("--prompt", default="The ", help="the completion's prompt (keep it inside the context)")
    ap.add_argument("--max-tokens", type=int, default=12)
    args = ap.parse_args()

    # No key is checked by the local API; the client insists on one. No retries: a failure
    # should show at once.
    client = OpenAI(base_url=args.base_url, api_key="unused", max_retries=0, timeout=120)
    report = {"openai_version": openai.__version__, "base_url": args.base_url}
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)

    models = client.models.list().data
    check(len(models) == 1, f"models.list: expected one model, got {len(models)}")
    model = models[0].id
    report["model"] = model
    check(model.startswith("pazar-"), f"model id {model!r} does not start with pazar-")

    c = client.completions.create(model=model, prompt=args.prompt, max_tokens=args.max_tokens, temperature=0)
    report["completion"] = {
        "id": c.id,
        "text": c.choices[0].text,
        "finish_reason": c.choices[0].finish_reason,
        "usage": c.usage.model_dump() if c.usage else None,
    }
    check(c.object == "text_completion", f"completion object {c.object!r}")
    check(c.model == model, f"completion model {c.model!r}")
    check(len(c.choices) == 1, "completion: one choice")
    check(c.choices[0].finish_reason in ("stop", "length"), f"completion finish_reason {c.choices[0].finish_reason!r}")
    check(c.usage is not None and c.usage.prompt_tokens == len(args.prompt.encode()), "completion usage.prompt_tokens")
    check(
        c.usage is not None and c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens,
        "completion usage.total_tokens",
    )

    messages = [{"role": "user", "content": args.prompt}]
    whole = client.chat.completions.create(model=model, messages=messages, max_tokens=args.max_tokens, temperature=0)
    report["chat"] = {
        "content": whole.choices[0].message.content,
        "finish_reason": whole.choices[0].finish_reason,
    }
    check(whole.object == "chat.completion", f"chat object {whole.object!r}")
    check(whole.choices[0].message.role == "assistant", "chat message role")

    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=args.max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    pieces = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    usage = [ch.usage for ch in chunks if ch.usage]
    streamed = "".join(pieces)
    report["chat_stream"] = {
        "chunks": len(chunks),
        "content": streamed,
        "finish_reasons": finishes,
        "usage": usage[-1].model_dump() if usage else None,
    }
    check(len(chunks) >= 3, f"chat stream: {len(chunks)} chunks")
    check(
        bool(chunks) and chunks[0].choices and chunks[0].choices[0].delta.role == "assistant",
        "chat stream: the first chunk's delta has role assistant",
    )
    check(all(ch.object == "chat.completion.chunk" for ch in chunks), "chat stream: every chunk is a chat.completion.chunk")
    check(len({ch.id for ch in chunks}) == 1, "chat stream: one id for all chunks")
    check(len(finishes) == 1 and finishes[0] in ("stop", "length"), f"chat stream: finish reasons {finishes}")
    check(streamed == whole.choices[0].message.content, "chat stream: the streamed text is the whole answer's (greedy)")
    # One token per byte; a byte sequence that is not UTF-8 arrives as U+FFFD, so only valid
    # text can be counted back.
    if "\ufffd" not in streamed:
        check(
            bool(usage) and usage[-1].completion_tokens == len(streamed.encode()),
            "chat stream: usage.completion_tokens is the streamed text's bytes",
        )

    context = models[0].model_extra.get("context_length") if models[0].model_extra else None
    report["context_length"] = context
    try:
        client.completions.create(model=model, prompt="x" * ((context or 4096) + 1), max_tokens=1)
        check(False, "an over-long prompt was accepted")
    except openai.BadRequestError as e:
        report["too_long"] = {"status": e.status_code, "code": e.code}
        check(e.code == "context_length_exceeded", f"over-long prompt: code {e.code!r}")

    report["failures"] = failures
    report["ok"] = not failures
    print(json.dumps(report, ensure_ascii=False))
    return 0 if not failures else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except openai.OpenAIError as e:
        print(json.dumps({"ok": False, "failures": [f"{type(e).__name__}: {e}"]}))
        sys.exit(1)
