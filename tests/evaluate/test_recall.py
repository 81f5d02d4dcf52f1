"""Fact-recall evaluation: fact generation, planting, matching, the report, the CLI."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from contextwindow.cli import main
from contextwindow.errors import ConfigError
from contextwindow.evaluate import fact_recall, make_facts, plant_facts, plot_recall
from contextwindow.evaluate.fact_kinds import FACT_KINDS
from contextwindow.evaluate.recall import Fact, context_text, default_memories, fact_in_text
from contextwindow.evaluate.report import recall_table
from contextwindow.memory import BufferMemory, SummaryBufferMemory
from contextwindow.messages import Message, ToolCall
from contextwindow.samples import sample_conversation
from contextwindow.summarize import KeyFactsSummarizer
from contextwindow.tokens import TokenCounter

COUNTER = TokenCounter.for_model("gpt-4o")


def test_make_facts_is_seeded_distinct_and_rotates_kinds():
    facts = make_facts(10, seed=3)
    assert facts == make_facts(10, seed=3)
    assert facts != make_facts(10, seed=4)
    assert [f.kind for f in facts] == [FACT_KINDS[k % len(FACT_KINDS)] for k in range(10)]
    assert len({f.value for f in facts}) == 10 and len({f.subject for f in facts}) == 10
    for fact in facts:
        assert fact_in_text(fact.value, fact.statement)
        # no value is contained in another, so one match cannot count for two facts
        assert not any(o is not fact and (o.value in fact.value or fact.value in o.value)
                       for o in facts)


def test_make_facts_avoids_values_in_the_conversation():
    facts = make_facts(5, seed=1, kinds=("name",))
    avoid = " ".join(f.value for f in facts)
    fresh = make_facts(5, seed=1, kinds=("name",), avoid=avoid)
    assert not any(fact_in_text(f.value, avoid) for f in fresh)
    with pytest.raises(ConfigError, match="at least one"):
        make_facts(2, kinds=())
    with pytest.raises(ConfigError, match=">= 1"):
        make_facts(0)


def test_plant_facts_inserts_whole_turns_early():
    base = sample_conversation(40, seed=2, tool_every=3)
    facts = make_facts(6, seed=2)
    planted, positions = plant_facts(base, facts, within=0.25, seed=2)
    assert len(planted) == len(base) + 2 * len(facts)
    for fact, position in zip(facts, positions):
        assert planted[position] == Message(role="user", content=fact.statement)
        ack = planted[position + 1]
        assert ack.role == "assistant" and not fact_in_text(fact.value, ack.content)
    # removing the planted turns gives back the original conversation, in order
    inserted = {p for p in positions} | {p + 1 for p in positions}
    assert [m for i, m in enumerate(planted) if i not in inserted] == base
    # planted before a user message (never inside a tool-call unit), in the first quarter
    users = [i for i, m in enumerate(base) if m.role == "user"]
    cutoff = users[round(len(users) * 0.25) - 1]
    original_index = 0
    for i in range(len(planted)):
        if i in inserted:
            assert base[original_index].role == "user" and original_index <= cutoff
        else:
            original_index += 1
    # it replays through a memory's ordering checks
    memory = BufferMemory(counter=COUNTER)
    for message in planted:
        memory.add_message(message)


def test_plant_facts_on_any_conversation():
    call = ToolCall("c1", "f", "{}")
    custom = [Message(role="assistant", tool_calls=(call,)),
              Message(role="tool", tool_call_id="c1", content="r"),
              Message(role="assistant", content="hello")]
    fact = Fact("name", "x", "Ingrid", "My name is Ingrid.")
    planted, positions = plant_facts(custom, [fact])  # no user message: planted first
    assert positions == [0] and planted[2:] == custom
    planted, positions = plant_facts([Message(role="system", content="s")], [fact])
    assert positions == [1]
    with pytest.raises(ConfigError, match="within"):
        plant_facts(custom, [fact], within=0)


def test_fact_in_text_is_exact_and_bounded():
    assert fact_in_text("4817", "the code is 4817.")
    assert not fact_in_text("4817", "the code is 48170")
    assert not fact_in_text("4817", "x4817")
    assert fact_in_text("14 March 2027", "on 14 March 2027, ok")
    assert not fact_in_text("Ingrid", "ingrid")
    assert fact_in_text("1,250", "costs 1,250 euros")
    assert not fact_in_text("", "anything")


def test_context_text_includes_tool_calls():
    call = ToolCall("c1", "lookup", '{"code": "QX7P2L"}')
    assert context_text([Message(role="user", content="a"),
                         Message(role="assistant", tool_calls=(call,))]) == \
        'a\nlookup({"code": "QX7P2L"})'


def test_fact_recall_report_without_model():
    report = fact_recall(n_facts=8, turns=40, seed=0, budget=1024, counter=COUNTER)
    rows = {row.name: row for row in report.rows}
    assert list(rows) == ["Buffer", "Window(k=4)", "TokenBuffer", "SinkWindow(keep_first=2)",
                          "Recall", "SummaryBuffer(KeyFacts)"]
    assert report.conversation_tokens == rows["Buffer"].tokens
    assert rows["Buffer"].found == (True,) * 8
    assert rows["Window(k=4)"].found == (False,) * 8  # facts are in the first quarter only
    assert rows["TokenBuffer"].found == (False,) * 8
    # the sink window keeps the system prompt and the first two messages, nothing else early
    assert rows["SinkWindow(keep_first=2)"].found == tuple(p < 3 for p in report.positions)
    # recall answers the final user turn, which asks about none of the facts: nothing comes back
    assert rows["Recall"].found == (False,) * 8
    keyfacts = rows["SummaryBuffer(KeyFacts)"]
    # KeyFacts carries the values verbatim; its 256-token block is full by the end, so it
    # drops its oldest lines first: the facts it lost are the earliest planted
    assert keyfacts.found == (False,) + (True,) * 7
    assert keyfacts.summarizations == len(keyfacts.fold_seconds) > 0
    for name in ("TokenBuffer", "SinkWindow(keep_first=2)", "Recall", "SummaryBuffer(KeyFacts)"):
        assert rows[name].tokens <= 1024
    data = json.loads(json.dumps(report.to_dict()))
    assert [f["value"] for f in data["facts"]] == [f.value for f in report.facts]
    assert data["rows"][0]["recall"] == 1.0
    assert recall_table(report).row_count == 6


def test_fact_recall_custom_memories_conversation_and_facts():
    conversation = [Message(role="system", content="Be brief.")] + [
        Message(
            role=role, content=f"{role} talks about the weather again, at length and in detail."
        )
        for k in range(60)
        for role in ("user", "assistant")
    ]
    facts = [Fact("code", "the code", "ZX81", "The code is ZX81."),
             Fact("name", "the cat", "Bartholomew", "The cat is called Bartholomew.")]
    memories = {"keyfacts": lambda: SummaryBufferMemory(300, KeyFactsSummarizer(),
                                                        counter=COUNTER),
                "buffer": lambda: BufferMemory(counter=COUNTER)}
    report = fact_recall(memories, conversation=conversation, facts=facts, seed=1,
                         counter=COUNTER)
    assert [(r.name, r.found) for r in report.rows] == [("keyfacts", (True, True)),
                                                        ("buffer", (True, True))]
    with pytest.raises(ConfigError, match="already occurs"):
        fact_recall(memories, conversation=conversation,
                    facts=[Fact("name", "x", "Be", "Be it.")], counter=COUNTER)


def test_default_memories_with_a_model_summarizer_label_set():
    memories = default_memories(1024, model_summarizer=KeyFactsSummarizer())
    assert list(memories)[-3:] == ["SummaryBuffer(model)", "SummaryBuffer(KeyFacts)",
                                   "SummaryBuffer(model+KeyFacts)"]
    assert isinstance(memories["SummaryBuffer(model+KeyFacts)"](), SummaryBufferMemory)


class Flaky:
    """A model summarizer whose first call returns an empty summary and second call raises."""

    def __init__(self) -> None:
        self.calls = 0

    def summarize(self, previous, messages):
        self.calls += 1
        if self.calls == 1:
            return ""
        if self.calls == 2:
            raise RuntimeError("model server is down")
        return f"notes {self.calls}"


def test_fact_recall_survives_summarizer_failures():
    flaky = Flaky()
    report = fact_recall(n_facts=4, turns=30, seed=2, budget=600, counter=COUNTER,
                         model_summarizer=flaky)
    rows = {row.name: row for row in report.rows}
    model, combined = rows["SummaryBuffer(model)"], rows["SummaryBuffer(model+KeyFacts)"]
    assert model.error is None and model.failures == 2 and model.summarizations > 0
    assert "empty summary" in model.last_failure or "model server is down" in model.last_failure
    assert combined.failures == 0 and rows["SummaryBuffer(KeyFacts)"].failures == 0
    assert rows["Buffer"].failures is None  # not a summary memory
    assert flaky.calls == 2 + model.summarizations + combined.summarizations
    for row in (model, combined):
        assert 0 < row.tokens <= 600
    data = report.to_dict()["rows"]
    assert [row["failures"] for row in data][-3:] == [2, 0, 0]
    assert "last_failure" in data[-3] and "last_failure" not in data[-1]
    console = Console(file=io.StringIO(), width=200)
    console.print(recall_table(report))
    assert "(2 failed)" in console.file.getvalue()


def test_fact_recall_always_failing_summarizer_degrades_to_trimming():
    def broken(previous, messages):
        raise RuntimeError("no model")

    from contextwindow.summarize import FunctionSummarizer

    memories = default_memories(600, counter=COUNTER, model_summarizer=FunctionSummarizer(broken))
    memories["raising"] = lambda: SummaryBufferMemory(600, FunctionSummarizer(broken),
                                                      counter=COUNTER)  # on_error="raise"
    report = fact_recall(memories, n_facts=4, turns=30, seed=2, budget=600, counter=COUNTER)
    rows = {row.name: row for row in report.rows}
    model = rows["SummaryBuffer(model)"]
    assert model.error is None and model.summarizations == 0 and model.failures > 0
    assert model.summary is None and model.found == rows["TokenBuffer"].found
    assert "RuntimeError: no model" in model.last_failure
    assert rows["SummaryBuffer(KeyFacts)"].failures == 0
    # a memory left on on_error="raise" stops being fed; the evaluation goes on
    raising = rows["raising"]
    assert raising.error.startswith("SummarizerError after ") and raising.failures == 1
    assert list(rows)[-1] == "raising"


def test_plot_recall_writes_png(tmp_path):
    report = fact_recall({"buffer": lambda: BufferMemory(counter=COUNTER)}, n_facts=3,
                         turns=10, counter=COUNTER)
    path = plot_recall(report, tmp_path / "img" / "recall.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_recall_json_and_plot(tmp_path, capsys):
    plot = tmp_path / "r.png"
    code = main(["recall", "--no-model", "--facts", "4", "--turns", "24", "--budget", "600",
                 "--seed", "5", "--json", "--plot", str(plot)])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["budget"] == 600 and len(data["facts"]) == 4
    assert [row["memory"] for row in data["rows"]][-1] == "SummaryBuffer(KeyFacts)"
    assert data["rows"][0]["recalled"] == 4
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_cli_recall_table_and_custom_conversation(tmp_path, capsys):
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps([m.to_openai() for m in sample_conversation(20, seed=3)]))
    assert main(["recall", "--no-model", "--facts", "3", "--conversation", str(chat)]) == 0
    out = capsys.readouterr().out
    assert "Fact recall: 3 facts" in out and "SummaryBuffer(KeyFacts)" in out
    assert main(["recall", "--no-model", "--conversation", str(tmp_path / "none.json")]) == 2
