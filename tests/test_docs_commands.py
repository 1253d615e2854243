"""The commands in the docs' code blocks are commands that run: every ``python -m scripts.X ...`` parses with that
script's own options, and every ``monai.bundle run`` names a config that exists and only keys that config has.

MONAI's bundle CLI takes any ``--key value`` without complaint, so a documented option that a config lost (or never
had) would do nothing, silently; argparse typos in the docs would fail only in a user's shell. Nothing is run here:
the scripts stop right after parsing."""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("bundles/*/docs/README.md"))]
#: ``monai.bundle run`` options that are the CLI's own, not config keys.
BUNDLE_CLI_OPTIONS = {"config_file", "meta_file", "logging_file", "args_file"}


def documented_commands() -> list[tuple[str, list[str]]]:
    """``(where, argv after "-m")`` of each ``python -m`` / ``torchrun ... -m`` line in the docs' fenced code blocks,
    continuation lines joined, comments and ``[optional]`` groups dropped."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```[a-z]*\n(.*?)```", doc.read_text(encoding="utf-8"), re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                if not re.match(r"\s*([A-Z_]+=\S*\s+)*(python3?|torchrun)\s.*-m\s", line):
                    continue  # not a command (Python, output, layout)
                line = re.sub(r"\[--[^\]]*\]", " ", line)  # usage notation: optional options
                words = shlex.split(line, comments=True)
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # OMP_NUM_THREADS=1 python ...
                    words.pop(0)
                if words[:1] in (["python"], ["python3"], ["torchrun"]) and "-m" in words:
                    argv = words[words.index("-m") + 1:]
                    found.append((f"{doc.relative_to(ROOT)}: {' '.join(argv)[:90]}", argv))
    return found


COMMANDS = documented_commands()


class Parsed(Exception):
    """Raised right after a script's options parsed: the test's stop sign."""


def test_the_docs_have_commands_of_both_kinds():
    modules = {argv[0] for _, argv in COMMANDS}
    assert "monai.bundle" in modules and len(modules) > 8, modules


@pytest.mark.parametrize("where, argv", [c for c in COMMANDS if c[1][0].startswith("scripts.")], ids=lambda v: str(v))
def test_script_commands_parse(where, argv, monkeypatch):
    module = importlib.import_module(argv[0])
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(Parsed):
        module.main()


def _config_keys(config_file: str) -> set[str]:
    files = ast.literal_eval(config_file) if config_file.startswith("[") else [config_file]
    keys: set[str] = set()
    for name in files:
        path = ROOT / name
        assert path.is_file(), f"{name}: no such config"
        keys |= set(json.loads(path.read_text(encoding="utf-8")))
    return keys


@pytest.mark.parametrize("where, argv", [c for c in COMMANDS if c[1][0] == "monai.bundle"], ids=lambda v: str(v))
def test_bundle_commands_name_keys_their_configs_have(where, argv):
    assert argv[1] == "run", where
    options = {word[2:]: value for word, value in zip(argv, argv[1:]) if word.startswith("--")}
    keys = _config_keys(options["config_file"])
    runner = argv[2] if not argv[2].startswith("--") else "run"
    assert runner in keys, f"{where}: no runner {runner!r}"
    unknown = sorted(set(options) - BUNDLE_CLI_OPTIONS - keys)
    assert not unknown, f"{where}: {unknown} not in {options['config_file']}"
