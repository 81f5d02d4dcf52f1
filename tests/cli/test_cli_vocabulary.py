"""One vocabulary across commands: the same option name for the same thing, old spellings
still accepted but hidden, and error lines that say which extra to install, printed literally
and on one line."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import typer
from typer.core import TyperGroup

from contextwindow.cli import app, main

MODEL_COMMANDS = ("chat", "serve", "demo", "stream", "recall", "rope", "passkey", "evict-sweep")


def commands() -> dict[str, Any]:
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    return dict(group.commands)


def options(command: Any) -> dict[str, Any]:
    return {name: param for param in command.params if param.param_type_name == "option"
            for name in (*param.opts, *param.secondary_opts)}


def test_short_n_is_always_the_prompt_token_budget() -> None:
    with_n = {name: options(command)["-n"].opts for name, command in commands().items()
              if "-n" in options(command)}
    assert with_n == {name: ["--max-tokens", "-n"] for name in ("chat", "trim", "cache-report")}


def test_every_model_command_takes_threads() -> None:
    found = commands()
    assert set(MODEL_COMMANDS) <= set(found)
    assert all("--threads" in options(found[name]) for name in MODEL_COMMANDS)


def test_json_is_a_flag_that_prints_and_json_out_a_file() -> None:
    for name, command in commands().items():
        opts = options(command)
        if "--json" in opts and not opts["--json"].hidden:
            assert opts["--json"].is_flag, name
        if "--json-out" in opts:
            assert not opts["--json-out"].is_flag, name
            assert opts["--json"].hidden and not opts["--json"].is_flag  # the old spelling


def test_chat_and_serve_share_store_overflow_and_default_model() -> None:
    found = commands()
    chat, serve = options(found["chat"]), options(found["serve"])
    for name in ("--store", "--overflow", "--model", "--threads", "--keep-first"):
        assert name in chat and name in serve
    assert chat["--model"].help == serve["--model"].help
    assert "default qwen2.5-0.5b" in str(chat["--model"].help)
    # The old spellings are accepted, and hidden from --help.
    assert chat["--db"].hidden and chat["--memory"].hidden and serve["--policy"].hidden
    assert not chat["--store"].hidden and not serve["--overflow"].hidden


def test_serve_reads_old_policy_as_overflow(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["serve", "--upstream", "http://127.0.0.1:9/v1", "--upstream-model", "gpt-4o",
            "--upstream-context", "512", "--store", "none"]
    assert main([*args, "--policy", "bogus"]) == 2
    assert capsys.readouterr().err == ("error: unknown overflow mode 'bogus'; expected one of "
                                       "trim, sinks, none, summary, recall\n")
    assert main(["serve", "--store", "none", "--overflow", "summary"]) == 2
    assert "expected one of trim, sinks, none (summary, recall: with --upstream)" in \
        capsys.readouterr().err
    assert main([*args, "--recall-tokens", "100"]) == 2
    assert capsys.readouterr().err == "error: --recall-tokens needs --overflow recall\n"


def test_serve_passes_recall_tokens_to_the_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve --upstream ... --overflow recall --recall-tokens N`` builds the gateway with
    that share (the app is then served; here it is stopped before uvicorn starts)."""
    import contextwindow.serve as serve_package

    built: dict[str, object] = {}

    def fake_gateway(url: str, **options: object) -> None:
        built.update(options, url=url)
        raise SystemExit(0)

    monkeypatch.setattr(serve_package, "create_gateway", fake_gateway)
    assert main(["serve", "--upstream", "http://127.0.0.1:9/v1", "--upstream-model", "gpt-4o",
                 "--upstream-context", "512", "--store", "none", "--overflow", "recall",
                 "--recall-tokens", "100"]) == 0
    assert (built["url"], built["policy"], built["recall_tokens"]) == (
        "http://127.0.0.1:9/v1", "recall", 100)


def run_without(modules: tuple[str, ...], *argv: str) -> subprocess.CompletedProcess[str]:
    """``contextwindow ARGV`` in a fresh interpreter where ``modules`` cannot be imported, on a
    narrow stderr that is not a terminal."""
    code = (f"import sys\nfor name in {modules!r}:\n    sys.modules[name] = None\n"
            "from contextwindow.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          env={"COLUMNS": "40", "PATH": "/usr/bin:/bin"}, timeout=120,
                          check=False)


@pytest.mark.parametrize("argv", [("chat", "--model", "smollm2-135m"),
                                  ("stream", "--text", "README.md"),
                                  ("serve", "--store", "none")])
def test_model_commands_without_the_model_extra_name_it(argv: tuple[str, ...]) -> None:
    done = run_without(("torch", "transformers"), *argv)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr  # one line, however narrow the log
    assert lines[0].startswith("error: this command needs the model extra (")
    assert lines[0].endswith("; pip install 'contextwindow[model]'")


def test_serve_without_its_extra_names_it_literally() -> None:
    done = run_without(("uvicorn",), "serve", "--store", "none")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        ("error: serve needs the serve extra (import of uvicorn halted; None in sys.modules); "
         "pip install 'contextwindow[serve]'")]


@pytest.mark.parametrize(("blocked", "code", "extra"), [
    ("langchain_core", "import contextwindow.integrations.langchain", "langchain"),
    ("langchain_core", "import contextwindow.integrations.langgraph", "langchain"),
    ("llama_index", "import contextwindow.integrations.llamaindex", "llamaindex"),
    ("redis", "import contextwindow.stores as s; s.open('redis://127.0.0.1:9')", "redis"),
    ("psycopg", "import contextwindow.stores as s; s.open('postgresql://127.0.0.1:9/x')",
     "postgres"),
])
def test_a_missing_framework_or_driver_names_its_extra(blocked: str, code: str,
                                                       extra: str) -> None:
    script = (f"import sys\nsys.modules[{blocked!r}] = None\ntry:\n    {code}\n"
              "except ImportError as exc:\n    print(type(exc).__mro__[1].__name__, exc)\n"
              "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(f"pip install 'contextwindow[{extra}]'"), done.stdout
