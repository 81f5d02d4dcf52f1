"""Text-side commands: ``count`` and ``trim`` (no model, no torch)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError, InvalidMessageError
from ..messages import Message, as_messages
from ..tokens import TokenCounter
from ..trim import trim as trim_messages

console = Console(stderr=True)

ModelOption = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="OpenAI model whose tokenizer and chat framing to use (default gpt-4o).")]
EncodingOption = Annotated[Optional[str], typer.Option(
    "--encoding", "-e", help="A tiktoken encoding instead of a model (o200k_base, cl100k_base).")]
SourceArgument = Annotated[str, typer.Argument(
    help="A file path, or - for standard input.", show_default=True)]


def make_counter(model: str | None, encoding: str | None) -> TokenCounter:
    if model and encoding:
        raise ConfigError("give --model or --encoding, not both")
    if encoding:
        return TokenCounter.for_encoding(encoding)
    return TokenCounter.for_model(model or "gpt-4o")


def read_source(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"no such file: {source}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessageError(f"{source} is not UTF-8 text: {exc}") from None


def parse_conversation(text: str, source: str) -> tuple[list[Message], list[dict[str, Any]] | None]:
    """A JSON list of messages, or an object with ``messages`` (and optional ``tools``)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidMessageError(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    tools = None
    if isinstance(data, dict):
        tools = data.get("tools")
        data = data.get("messages")
    if not isinstance(data, list):
        raise InvalidMessageError(
            f"{source}: expected a JSON list of messages or an object with a 'messages' list")
    return as_messages(data), tools


def looks_like_json(text: str) -> bool:
    return text.lstrip()[:1] in ("[", "{")


def count(
    source: SourceArgument = "-",
    model: ModelOption = None,
    encoding: EncodingOption = None,
    text: Annotated[bool, typer.Option("--text", help="Treat the input as plain text even if it looks like JSON.")] = False,
    per_message: Annotated[bool, typer.Option("--per-message", help="Also show a table of each message's tokens.")] = False,
) -> None:
    """Count tokens of a text file or of a JSON conversation (prompt tokens, as the API bills them)."""
    counter = make_counter(model, encoding)
    raw = read_source(source)
    if text or not looks_like_json(raw):
        typer.echo(counter.count_text(raw))
        return
    messages, tools = parse_conversation(raw, source)
    if per_message:
        table = Table(title=f"{len(messages)} messages, {counter.name}")
        for column in ("#", "role", "tokens", "content"):
            table.add_column(column, justify="right" if column in ("#", "tokens") else "left")
        for position, message in enumerate(messages):
            preview = (message.content or f"<{len(message.tool_calls)} tool call(s)>")[:60]
            table.add_row(str(position), message.role, str(counter.count_message(message)), preview)
        console.print(table)
    typer.echo(counter.count_messages(messages, tools=tools))


def trim(
    source: SourceArgument = "-",
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", help="Prompt-token budget.", min=1)] = 4096,
    model: ModelOption = None,
    encoding: EncodingOption = None,
    keep_first: Annotated[int, typer.Option(help="Messages after the system prompt that are always kept.", min=0)] = 0,
    keep_system: Annotated[bool, typer.Option(help="Always keep the leading system messages.")] = True,
) -> None:
    """Fit a JSON conversation into --max-tokens; prints the kept messages as JSON."""
    counter = make_counter(model, encoding)
    raw = read_source(source)
    messages, tools = parse_conversation(raw, source)
    kept = trim_messages(messages, max_tokens, counter, keep_system=keep_system,
                         keep_first=keep_first, tools=tools)
    used = counter.count_messages(kept, tools=tools)
    console.print(f"kept {len(kept)} of {len(messages)} messages, {used} of {max_tokens} tokens "
                  f"({counter.name})", highlight=False)
    typer.echo(json.dumps([message.to_openai() for message in kept], ensure_ascii=False, indent=2))


def register(app: typer.Typer) -> None:
    """Add the text-side commands to the app."""
    app.command()(count)
    app.command()(trim)
