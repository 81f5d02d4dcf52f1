"""KV prefix reuse in the local engine: time to first token of the next turn, warm vs cold.

A ~6,000-token conversation (synthetic, ``samples.sample_conversation``) on the real
SmolLM2-135M-Instruct, greedy. Turn 1 is prefilled cold. Each following turn appends the reply
and a new user message and is answered twice on the same prompt: by the generator that kept the
previous turn's KV cache (warm: it prefills only the new suffix) and by one with the prefix
cache off (cold: the whole prompt), alternating which goes first. Reported per turn: both times
to first token, their ratio, the reused tokens, and whether the two replies are identical; and
the prefix cache's bytes after every request, against its budget. A last warm turn goes through
the HTTP server to check that ``usage.prompt_tokens_details.cached_tokens`` reports the reuse.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

from _common import add_out_argument, emit, log, machine, provenance

QUESTIONS = ("Thanks. So what did we decide about the quarterly budget?",
             "Can you summarise the three main points in one sentence each?",
             "Which of those should we do first, and why?",
             "Good. Draft a short note to the team about it.")


def conversation(counter: Any, target_tokens: int) -> list[dict[str, Any]]:
    """A synthetic chat of about ``target_tokens`` tokens, ending with a user turn."""
    from contextwindow.messages import to_openai
    from contextwindow.samples import sample_conversation

    turns = 40
    while True:
        messages = to_openai(sample_conversation(turns, seed=11, tool_every=0))
        messages.append({"role": "user", "content": QUESTIONS[0]})
        if counter.count_messages(messages) >= target_tokens:
            return messages
        turns += 4


def answer(generator: Any, messages: list[dict[str, Any]], max_tokens: int) -> dict[str, Any]:
    from contextwindow.generation import SamplingParams

    fit, done = generator.chat(messages, SamplingParams(max_tokens=max_tokens, temperature=0))
    return {"prompt_tokens": fit.prompt_tokens, "cached_tokens": done.cached_tokens,
            "ttft_s": round(done.time_to_first_token, 3), "text": done.text,
            "prefix_cache_bytes": generator.prefix_cache.nbytes}


def server_check(generator: Any, messages: list[dict[str, Any]], max_tokens: int
                 ) -> dict[str, Any]:
    """One more warm turn through the HTTP server: the reuse as the client sees it."""
    import openai

    from contextwindow.serve import BackgroundServer, create_app

    with BackgroundServer(create_app(generator)) as server:
        client = openai.OpenAI(base_url=server.url, api_key="unused", timeout=600)
        start = time.perf_counter()
        reply = client.chat.completions.create(model=generator.model_id, messages=messages,
                                               max_tokens=max_tokens, temperature=0)
        seconds = time.perf_counter() - start
    details = reply.usage.prompt_tokens_details
    return {"prompt_tokens": reply.usage.prompt_tokens,
            "cached_tokens": details.cached_tokens if details else None,
            "seconds": round(seconds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt-tokens", type=int, default=6000)
    parser.add_argument("--turns", type=int, default=3, help="warm/cold turns after the first")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--prefix-cache-mb", type=float, default=512)
    parser.add_argument("--threads", type=int, default=1)
    add_out_argument(parser, "bench_prefix")
    args = parser.parse_args()

    import torch

    from contextwindow.generation import Generator
    from contextwindow.models import DEFAULT_MODEL, load_model

    torch.set_num_threads(args.threads)
    model, tokenizer = load_model()
    options = {"model_id": DEFAULT_MODEL, "context": 8192}
    warm = Generator(model, tokenizer, prefix_cache_mb=args.prefix_cache_mb, **options)
    cold = Generator(model, tokenizer, prefix_cache_mb=0, **options)
    messages = conversation(warm.counter, args.prompt_tokens)
    result: dict[str, Any] = {
        "benchmark": "prefix", **provenance(), "machine": machine(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "model": DEFAULT_MODEL, "threads": args.threads, "context_window": 8192,
        "cache": "sink", "max_tokens": args.max_tokens,
        "prefix_cache_budget_bytes": warm.prefix_cache.max_bytes,
    }
    log(f"turn 1: {warm.counter.count_messages(messages)} tokens, cold...")
    first = answer(warm, messages, args.max_tokens)
    turns, sizes = [], [first["prefix_cache_bytes"]]
    for turn in range(args.turns + 1):
        previous = first["text"] if not turns else turns[-1]["warm"]["text"]
        messages += [{"role": "assistant", "content": previous},
                     {"role": "user", "content": QUESTIONS[(turn + 1) % len(QUESTIONS)]}]
        if turn == args.turns:
            result["server_check"] = server_check(warm, messages, args.max_tokens)
            sizes.append(warm.prefix_cache.nbytes)
            break
        log(f"turn {turn + 2}: warm and cold...")
        order = [("warm", warm), ("cold", cold)]
        runs = {name: answer(gen, messages, args.max_tokens)
                for name, gen in (order if turn % 2 == 0 else order[::-1])}
        sizes.append(runs["warm"]["prefix_cache_bytes"])
        turns.append({"turn": turn + 2, **runs,
                      "ttft_ratio": round(runs["warm"]["ttft_s"] / runs["cold"]["ttft_s"], 4),
                      "same_reply": runs["warm"]["text"] == runs["cold"]["text"]})
    ratios = [t["ttft_ratio"] for t in turns]
    result.update({
        "first_turn": first, "turns": turns,
        "ttft_ratio_median": round(statistics.median(ratios), 4),
        "ttft_ratio_max": max(ratios),
        "replies_identical": all(t["same_reply"] for t in turns),
        "prefix_cache_peak_bytes": warm.prefix_cache.peak_bytes,
        "prefix_cache_bytes_after_each_request": sizes,
        "within_budget": warm.prefix_cache.peak_bytes <= warm.prefix_cache.max_bytes,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    })
    emit(result, args.out)


if __name__ == "__main__":
    main()
