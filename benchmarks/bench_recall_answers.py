"""The answer check of the recall benchmark: a local model (Qwen2.5-0.5B, greedy) answers a
sample of the long-chat questions from each contender's context at 2,048 tokens.

Same chats and contenders as ``bench_recall.py``. For each sampled question (stratified by
kind) the context is shown to the model as chat messages (the user's turns prefixed ``[8 May
2023]``, the contender's system messages after a short instruction), the question last; the
reply (at most ``--max-new-tokens``, greedy) is correct when it contains every answer value
(a date in any common day-month form). Reported per contender: exact-value accuracy next to
the evidence share and the answer-in-context share on the same questions. The ceiling is the
full history when it fits the model's window; a 150-session chat does not (its token count is
reported), so the ceiling is the oracle context: the gold evidence turns, then the newest
turns that fit the same budget.

    nice -n 10 .venv/bin/python benchmarks/bench_recall_answers.py --threads 1
"""

from __future__ import annotations

import argparse
import random
import time

from _common import add_out_argument, emit, log, machine, provenance
from bench_recall import LLAMAINDEX

from contextwindow.evaluate.contenders import CONTENDERS, llamaindex_vector_memory
from contextwindow.evaluate.evidence import Contender, answered, rendered, score
from contextwindow.evaluate.longchat import LongChat, Question, generate
from contextwindow.evaluate.longchat_facts import KINDS
from contextwindow.memory import default_counter
from contextwindow.messages import Message
from contextwindow.tokens import TokenCounter

ORACLE = "oracle: gold evidence + newest (ceiling)"
FULL = "full history (ceiling)"
INSTRUCTION = ("You are the assistant in a long-running chat with the user. The user's "
               "messages show the date they were sent in brackets.")
ASK = "{question}\n(Answer in a few words, from what I told you in our conversation.)"


def oracle(chat: LongChat, question: Question, budget: int,
           counter: TokenCounter) -> list[Message]:
    """The gold evidence turns, then the newest turns that fit, then the question."""
    evidence = [chat.message(e) for e in question.evidence]
    asked = question.as_message()
    room = budget - counter.count_messages([*evidence, asked])
    newest: list[Message] = []
    for message in reversed(chat.messages):
        cost = counter.count_message(message)
        if cost > room:
            break
        if message.id not in question.evidence:
            newest.insert(0, message)
            room -= cost
    return [*evidence, *newest, asked]


def prompt(context: list[Message]) -> list[Message]:
    """What the model reads: the instruction and the context's system messages as one system
    message, then the turns, the user's with their dates (dated replies teach the model to
    start its own with a date); the question last, with the instruction next to it (where a
    small model heeds it)."""
    system = [m for m in context if m.role == "system"]
    turns = [Message(role=m.role, content=rendered([m]) if m.role == "user" else m.content)
             for m in context[:-1] if m.role != "system"]
    head = "\n\n".join([INSTRUCTION, *(m.content or "" for m in system)])
    return [Message(role="system", content=head), *turns,
            Message(role="user", content=ASK.format(question=context[-1].content))]


def sample(chat: LongChat, size: int, seed: int) -> list[Question]:
    """``size`` questions, as evenly spread over the kinds as ``size`` allows."""
    rng = random.Random(seed)
    by_kind = {kind: [q for q in chat.questions if q.kind == kind] for kind in KINDS}
    for questions in by_kind.values():
        rng.shuffle(questions)
    picked: list[Question] = []
    while len(picked) < size and any(by_kind.values()):
        for kind in KINDS:
            if by_kind[kind] and len(picked) < size:
                picked.append(by_kind[kind].pop())
    return picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="which chat (bench_recall's seed)")
    parser.add_argument("--sessions", type=int, default=150)
    parser.add_argument("--sample", type=int, default=20)
    parser.add_argument("--budget", type=int, default=2048)
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-llamaindex", action="store_true")
    add_out_argument(parser, "bench_recall_answers")
    args = parser.parse_args()

    import torch

    from contextwindow.generation import Generator
    from contextwindow.retrieval.dense import Embedder
    from contextwindow.sampling import SamplingParams

    torch.set_num_threads(args.threads)
    counter = default_counter()
    chat = generate(args.seed, sessions=args.sessions)
    questions = sample(chat, args.sample, args.seed)
    generator = Generator.load(args.model, policy="none", sink_cache=False, prefix_cache_mb=0)
    params = SamplingParams(max_tokens=args.max_new_tokens, temperature=0)
    full = generator.counter.count_messages(prompt([*chat.messages, questions[0].as_message()]))
    lineup: dict[str, Contender] = {}  # the ceiling first
    if full + args.max_new_tokens <= generator.context:
        lineup[FULL] = Contender(lambda history, asked, budget, count: [*history, asked],
                                 checked=False)
    else:
        lineup[ORACLE] = Contender(lambda history, asked, budget, count: oracle(
            chat, next(q for q in questions if q.id == asked.id), budget, count))
    lineup.update(CONTENDERS)
    if not args.no_llamaindex:
        lineup[LLAMAINDEX] = llamaindex_vector_memory(Embedder())
    history = list(chat.messages)
    rows, began = {}, time.perf_counter()
    for name, contender in lineup.items():
        replies = []
        for k, q in enumerate(questions):
            context = contender(history, q.as_message(), args.budget, counter)
            scored = score(chat, q, context, counter, args.budget, checked=contender.checked)
            _, completion = generator.chat(prompt(context), params)
            reply = completion.text.strip()
            replies.append({"question": q.id, "kind": q.kind, "text": q.text,
                            "answer": q.answer, "reply": reply, "correct": answered(q, reply),
                            "evidence": f"{scored.found}/{scored.evidence}",
                            "answer_in_context": scored.answer, "tokens": scored.tokens})
            log(f"[{time.perf_counter() - began:6.0f} s] {name} {k + 1}/{len(questions)}: "
                f"{q.text!r} -> {reply!r} ({'ok' if replies[-1]['correct'] else 'wrong'})")
        found = sum(int(r["evidence"].split("/")[0]) for r in replies)
        total = sum(int(r["evidence"].split("/")[1]) for r in replies)
        rows[name] = {"accuracy": round(sum(r["correct"] for r in replies) / len(replies), 4),
                      "evidence": round(found / total, 4),
                      "answer_in_context": round(
                          sum(r["answer_in_context"] for r in replies) / len(replies), 4),
                      "replies": replies}
    emit({
        "benchmark": "recall_answers",
        "inputs": {"seed": args.seed, "sessions": args.sessions, "sample": len(questions),
                   "kinds": {kind: sum(q.kind == kind for q in questions) for kind in KINDS},
                   "budget": args.budget, "counter": counter.name, "model": args.model,
                   "decoding": f"greedy, at most {args.max_new_tokens} new tokens",
                   "full_history_model_tokens": full, "model_window": generator.context,
                   "ceiling": FULL if FULL in lineup else ORACLE,
                   "correct": "the reply contains every answer value (dates: day and month "
                              "in any common form)"},
        "summary": {name: {k: v for k, v in row.items() if k != "replies"}
                    for name, row in rows.items()},
        "rows": rows,
        "seconds": round(time.perf_counter() - began, 1),
        "machine": machine(), **provenance(),
    }, args.out)


if __name__ == "__main__":
    main()
