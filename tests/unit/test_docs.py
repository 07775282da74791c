"""The docs say what the code does: every rule-file key in the rule language page (and so in
bpfwall.yaml(5)), every command in the CLI page's synopsis, no development history."""

from __future__ import annotations

import pathlib
import re

import click

from bpfwall import cli, config, manpage

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def test_every_rule_file_key_is_documented():
    text = (DOCS / "rule-language.md").read_text()
    for model in (config.RuleModel, config.FileModel, config.ConntrackModel):
        for key in model.model_fields:
            assert f"`{key}`" in text, f"{model.__name__}.{key} is not in docs/rule-language.md"


def test_every_command_is_in_the_cli_synopsis():
    synopsis = (DOCS / "cli.md").read_text().split("```")[1]
    ctx = click.Context(cli.main)
    for name in cli.main.list_commands(ctx):
        command = cli.main.get_command(ctx, name)
        if isinstance(command, click.Group):
            for sub in command.list_commands(ctx):
                assert re.search(rf"^bpfwall {name} .*{sub}", synopsis, re.M), f"bpfwall {name} {sub}"
        else:
            assert re.search(rf"^bpfwall {name}\b", synopsis, re.M), f"bpfwall {name} is not in docs/cli.md"


def test_user_docs_carry_no_development_history():
    for page in [ROOT / "README.md", *DOCS.glob("*.md")]:
        assert not re.search(r"\bissue \d+", page.read_text(), re.I), page.name


def test_the_rule_language_page_renders_as_a_manual_page():
    page = manpage.rule_language((DOCS / "rule-language.md").read_text())
    assert page.startswith(".TH BPFWALL.YAML 5") and ".EX" in page and "icmp_type" in page


def test_the_layout_tree_names_every_module_and_bpf_file():
    tree = (DOCS / "how-it-works.md").read_text().split("```")[1]
    files = [p.name for p in (ROOT / "bpf").glob("*.[ch]")] + \
        [p.name for p in (ROOT / "src" / "bpfwall").glob("*.py") if p.name != "__init__.py"]
    for name in files:
        assert name in tree, f"{name} is missing from the layout in docs/how-it-works.md"
