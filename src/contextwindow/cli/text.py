"""Text-side commands: ``count`` and ``trim`` (no model, no torch)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ..adapters import as_messages
from ..errors import ConfigError, InvalidMessageError, ResourceError
from ..messages import Message, check_conversation
from ..tokens import TokenCounter
from ..trim import trim as trim_messages

console = Console(stderr=True)

ModelOption = Annotated[str | None, typer.Option(
    "--model", "-m", help="OpenAI model whose tokenizer and chat framing to use (default gpt-4o).")]
EncodingOption = Annotated[str | None, typer.Option(
    "--encoding", "-e", help="A tiktoken encoding instead of a model (o200k_base, cl100k_base).")]
SourceArgument = Annotated[str, typer.Argument(
    help="A file path, or - for standard input.", show_default=True)]


def make_counter(model: str | None, encoding: str | None) -> TokenCounter:
    if model and encoding:
        raise ConfigError("give --model or --encoding, not both")
    if encoding:
        return TokenCounter.for_encoding(encoding)
    return TokenCounter.for_model(model or "gpt-4o")


MAX_INPUT_ENV = "CONTEXTWINDOW_MAX_INPUT_MB"
DEFAULT_MAX_INPUT_MB = 256


def max_input_bytes() -> int:
    """The largest input ``count`` and ``trim`` read (``CONTEXTWINDOW_MAX_INPUT_MB``): the
    text is held in memory while counted (about twice its size at the peak), so a file that
    would not fit is refused up front rather than swapped through."""
    raw = os.environ.get(MAX_INPUT_ENV, str(DEFAULT_MAX_INPUT_MB))
    try:
        megabytes = float(raw)
    except ValueError:
        raise ConfigError(f"{MAX_INPUT_ENV} must be a number of megabytes, not {raw!r}") from None
    if megabytes <= 0:
        raise ConfigError(f"{MAX_INPUT_ENV} must be positive, not {raw!r}")
    return int(megabytes * 1_000_000)


def _too_large(what: str, limit: int) -> ResourceError:
    return ResourceError(f"{what} is larger than the input limit of {limit / 1e6:g} MB; raise it "
                         f"with the environment variable {MAX_INPUT_ENV}=<megabytes>")


def read_source(source: str) -> str:
    """The whole input as text, refused above :func:`max_input_bytes`; on a terminal, a note
    that it is waiting for standard input (else it would wait silently)."""
    limit = max_input_bytes()
    if source == "-":
        if sys.stdin.isatty():
            console.print("reading from stdin… (end with Ctrl-D, or pass a file)",
                          highlight=False)
        text = sys.stdin.read(limit + 1)  # characters: at least as many bytes
        if len(text) > limit:
            raise _too_large("standard input", limit)
        return text
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"no such file: {source}")
    if path.stat().st_size > limit:
        raise _too_large(source, limit)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessageError(f"{source} is not UTF-8 text: {exc}") from None


def parse_conversation(text: str, source: str) -> tuple[dict[str, Any], list[Message]]:
    """A JSON list of messages, or an object with ``messages`` (and ``tools``, or any other
    request field): the request as an object, and its messages read and checked (tool results
    must answer their calls, as providers require)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidMessageError(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    request = data if isinstance(data, dict) else {"messages": data}
    if not isinstance(request.get("messages"), list):
        raise InvalidMessageError(
            f"{source}: expected a JSON list of messages or an object with a 'messages' list")
    if request.get("tools") is not None and not isinstance(request["tools"], list):
        raise InvalidMessageError(f"{source}: 'tools' must be a list of tool definitions")
    messages = as_messages(request["messages"])
    check_conversation(messages)
    return request, messages


def preview(message: Message) -> str:
    """The start of a message's text, or what it carries instead."""
    if message.content:
        return message.content[:60]
    if message.parts is not None:
        return f"<{len(message.content_parts or ())} content part(s)>"
    return f"<{len(message.tool_calls) or 1} tool call(s)>"


def looks_like_json(text: str) -> bool:
    return text.lstrip()[:1] in ("[", "{")


def count(
    source: SourceArgument = "-",
    model: ModelOption = None,
    encoding: EncodingOption = None,
    text: Annotated[bool, typer.Option(
        "--text", help="Treat the input as plain text even if it looks like JSON.")] = False,
    per_message: Annotated[bool, typer.Option(
        "--per-message", help="Also show a table of each message's tokens.")] = False,
) -> None:
    """Count tokens of a text file or of a JSON conversation (prompt tokens, as the API bills
    them); an object with "messages" and "tools" counts the tool definitions too."""
    counter = make_counter(model, encoding)
    raw = read_source(source)
    if text or not looks_like_json(raw):
        typer.echo(counter.count_text(raw))
        return
    request, messages = parse_conversation(raw, source)
    if per_message:
        table = Table(title=f"{len(messages)} messages, {counter.name}")
        for column in ("#", "role", "tokens", "content"):
            table.add_column(column, justify="right" if column in ("#", "tokens") else "left")
        for position, message in enumerate(messages):
            table.add_row(str(position), message.role, str(counter.count_message(message)),
                          preview(message))
        console.print(table)
    typer.echo(counter.count_messages(messages, tools=request.get("tools")))


def trim(
    source: SourceArgument = "-",
    max_tokens: Annotated[int, typer.Option(
        "--max-tokens", "-n", help="Prompt-token budget.", min=1)] = 4096,
    model: ModelOption = None,
    encoding: EncodingOption = None,
    keep_first: Annotated[int, typer.Option(
        help="Messages after the system prompt that are always kept.", min=0)] = 0,
    keep_system: Annotated[bool, typer.Option(
        help="Always keep the leading system messages.")] = True,
) -> None:
    """Fit a JSON conversation into --max-tokens; prints it back with only the kept messages,
    each exactly as given (ids, content parts and every field), and the request's other fields
    ("tools"...) unchanged."""
    counter = make_counter(model, encoding)
    raw = read_source(source)
    request, messages = parse_conversation(raw, source)
    tools = request.get("tools")
    kept = trim_messages(messages, max_tokens, counter, keep_system=keep_system,
                         keep_first=keep_first, tools=tools)
    used = counter.count_messages(kept, tools=tools)
    console.print(f"kept {len(kept)} of {len(messages)} messages, {used} of {max_tokens} tokens "
                  f"({counter.name})", highlight=False)
    position = {id(message): k for k, message in enumerate(messages)}  # trim returns its input
    kept_raw = [request["messages"][position[id(message)]] for message in kept]
    result = {**request, "messages": kept_raw} if raw.lstrip().startswith("{") else kept_raw
    typer.echo(json.dumps(result, ensure_ascii=False, indent=2))


def register(app: typer.Typer) -> None:
    """Add the text-side commands to the app."""
    app.command()(count)
    app.command()(trim)
