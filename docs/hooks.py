"""MkDocs hooks: the site's home page is the README and its changes page CHANGELOG.md (each kept
once, at the top of the repository), the settings and commands pages are generated from the code
(the settings table, the click commands), and the benchmarks page lists the runs `make bench` wrote."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "docs" / "benchmarks" / "runs"


def on_page_read_source(page, config):
    if page.file.src_uri == "index.md":
        text = (ROOT / "README.md").read_text(encoding="utf-8")
        # The README's links point into docs/ from the top of the repository; the site is docs/.
        return re.sub(r"\]\(docs/", "](", text).replace("](CHANGELOG.md)", "](changelog.md)")
    if page.file.src_uri == "changelog.md":
        return re.sub(r"\]\(docs/", "](", (ROOT / "CHANGELOG.md").read_text(encoding="utf-8"))
    return None


def on_page_markdown(markdown, page, config, files):
    for marker, generate in GENERATED.items():
        if marker in markdown:
            markdown = markdown.replace(marker, generate())
    if page.file.src_uri != "benchmarks/index.md":
        return markdown
    runs = sorted(RUNS.glob("*.md"), reverse=True)
    listed = "\n".join(f"- [{run.stem}](runs/{run.name})" for run in runs)
    return markdown + "\n" + (listed or "No run on this machine yet: `make bench` writes one.") + "\n"


def settings_table() -> str:
    from backup_api import config

    return config.settings_table()


def commands_reference() -> str:
    """Each command's --help, as `game-backup-api COMMAND --help` prints it, under a heading of its own."""
    import click

    from backup_api.cli import main
    from backup_api.commands import COMMANDS

    sections = []

    def walk(command, parent):
        ctx = click.Context(command, info_name=command.name, parent=parent, terminal_width=100, max_content_width=100)
        path = ctx.command_path
        sections.append(f"## `{path}`\n\n```text\n{command.get_help(ctx)}\n```\n")
        for name in getattr(command, "commands", {}):
            walk(command.commands[name], ctx)

    top = click.Context(main, info_name="game-backup-api")
    for command in COMMANDS:
        walk(command, top)
    return "\n".join(sections)


GENERATED = {"<!-- generated: settings -->": settings_table, "<!-- generated: commands -->": commands_reference}
