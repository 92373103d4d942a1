"""The docs stay true: the site builds strict, links and anchors resolve, every command shown exists
with the options shown, the configuration reference is the settings' declarations, and every alert
the code sends is in the operators' runbook."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load_hook():
    spec = importlib.util.spec_from_file_location("docs_reference_hook", DOCS / "hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hook = _load_hook()


def pages() -> list[Path]:
    """The site's own pages and the README."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


# --- the build -----------------------------------------------------------------------------------


def test_the_site_builds_in_strict_mode_with_the_generated_reference(tmp_path):
    built = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert built.returncode == 0, built.stderr[-3000:]
    configuration = (tmp_path / "site" / "reference" / "configuration" / "index.html").read_text()
    for _module, row in hook.configuration_rows():
        assert row["variable"] in configuration
    assert (
        "retail recommender rollback" in (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    )
    assert "/v1/recommendations" in (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    # Offline: no page loads a font, script or style from another address (no CDN, no analytics).
    for page in (tmp_path / "site").rglob("*.html"):
        outside = re.findall(r"<(?:link|script|img)[^>]*(?:href|src)=\"(https?://[^\"]+)\"", page.read_text())
        assert not outside, f"{page.relative_to(tmp_path)} loads {outside}"


def test_a_broken_anchor_fails_the_strict_build(tmp_path):
    """The strict build is what catches a broken link: show that it does, on a copy of the docs."""
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(DOCS, tmp_path / "docs")
    page = tmp_path / "docs" / "getting-started.md"
    page.write_text(page.read_text() + "\nSee [the runbook](roles/operators.md#no-such-section).\n")
    built = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert built.returncode != 0
    assert "no-such-section" in built.stderr


# --- links ---------------------------------------------------------------------------------------

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {
        slugify(re.sub(r"[`*]", "", h), "-") for h in re.findall(r"^#{1,6} (.+?)\s*$", text, re.MULTILINE)
    }


def links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text())
    return [a or b for a, b in LINK.findall(text)]


GENERATED = {"reference/configuration.md", "reference/cli.md", "reference/api.md", "reference/openapi.json"}


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    """No external fetches: only links inside the repository are checked (files and anchors)."""
    broken = []
    for link in links(page):
        if re.match(r"[a-z]+:", link):
            continue  # http(s), mailto: not fetched
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        generated = str(path.relative_to(DOCS)) in GENERATED if path.is_relative_to(DOCS) else False
        if not path.exists() and not generated:
            broken.append(f"{link}: no file {path.relative_to(ROOT)}")
        elif anchor and path.suffix == ".md" and not generated and anchor not in anchors(path):
            broken.append(f"{link}: no heading #{anchor} in {path.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_readme_is_short_and_says_the_test_command_as_ci_runs_it():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    ci_command = re.search(r"^exec (\./platform test)$", (ROOT / ".ci" / "run").read_text(), re.MULTILINE)
    assert ci_command, ".ci/run runs ./platform test"
    assert re.search(rf"^{re.escape(ci_command.group(1))}\s+#", readme, re.MULTILINE)
    assert "DESIGN.md" not in readme


# --- commands ------------------------------------------------------------------------------------

# `./platform <command>` runs `retail <command>` (run: `retail pipeline`).
PLATFORM_COMMANDS = {
    "run": "pipeline",
    "up": "up",
    "down": "down",
    "status": "status",
    "serve": "serve",
    "dashboard": "dashboard",
}
# Placeholders the docs write for values, and a value of the type the option takes.
PLACEHOLDERS = {"F": "0.5", "N": "7", "RATE": "1", "S": "5", "MINUTES": "30", "PORT": "8601"}
COMMAND = re.compile(
    r"^(?:\$ )?(?:\./platform (retail|run|up|down|status|serve|dashboard)|retail)(?= |$) ?(.*)$"
)


def commands_shown(path: Path) -> list[str]:
    """`retail ...` and `./platform <command> ...` lines of code blocks, and inline code spans."""
    text = path.read_text()
    found = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        found += [line.strip() for line in block.splitlines()]
    text = FENCE.sub("", text)
    found += re.findall(r"`([^`\n]+)`", text)
    # `retail api: <message>` is an error message the command prints, not a command
    return [line for line in found if COMMAND.match(line) and not re.match(r"retail [\w-]+: ", line)]


def argv_of(line: str) -> list[str]:
    head, rest = COMMAND.match(line).groups()
    argv = [] if head in (None, "retail") else [PLATFORM_COMMANDS[head]]
    tokens = shlex.split(rest.replace("[", " ").replace("]", " "), comments=True)
    for token in tokens:
        if token in ("...", "…") or token.startswith("<"):
            break  # "and so on": what follows is not an option
        token = token.split("|")[0]  # `start|stop|status`: one of them
        argv.append(PLACEHOLDERS.get(token, token))
    return argv


def shown_commands() -> list[tuple[str, str]]:
    return sorted({(str(p.relative_to(ROOT)), line) for p in pages() for line in commands_shown(p)})


def test_the_docs_show_commands():
    assert len(shown_commands()) > 30


@pytest.mark.parametrize(("page", "line"), shown_commands())
def test_every_command_shown_exists_with_the_options_shown(page, line):
    from retail_platform import cli

    argv = argv_of(line)
    if not argv:
        return  # `./platform retail ...`: the command itself, with nothing after it
    groups = set(cli.ROOM_COMMANDS) | set(hook._subcommands(cli.build_parser()))
    if len(argv) == 1 and argv[0] in groups:
        return  # a command named on its own (`retail recommender`), not a call: it exists
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        try:
            hook.parse_command(argv)
        except SystemExit as exit_:  # 0: --help printed; 2: the parser refused it
            assert exit_.code == 0, f"{page}: `{line}` does not parse as retail {argv}: {errors.getvalue()}"


def test_a_command_with_an_option_that_does_not_exist_is_refused():
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):
        hook.parse_command(argv_of("./platform retail recommender rollback --to-version V1"))
    assert hook.parse_command(argv_of("./platform retail recommender rollback --to V1")).to == "V1"


# --- the configuration reference ---------------------------------------------------------------


def declared():
    from retail_platform.settings import Setting

    for module in hook.settings_modules():
        for entry in importlib.import_module(module).SETTINGS_DOC:
            yield module, entry, isinstance(entry, Setting)


def test_the_configuration_reference_is_the_declarations():
    page = hook.configuration_page()
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]*) \| ([^|]*) \|", page, re.MULTILINE)
    shown = {
        name: (kind.strip(), default.strip().strip("`").replace("\\|", "|")) for name, kind, default in rows
    }
    names = [entry.name if typed else entry[0] for _module, entry, typed in declared()]
    assert sorted(shown) == sorted(names), "one row per declaration, and no other"
    for _module, entry, typed in declared():
        name, default, _meaning = tuple(entry)
        assert shown[name][1] == (default or ""), name
        if typed:
            assert shown[name][0] == entry.type_name, name


def _documented_value(text: str, read: dict[str, str]) -> str:
    """The documented default with its placeholders filled: <state>, <project> and <VARIABLE>."""
    from retail_platform.settings import Settings

    platform = Settings.from_env({})
    text = text.replace("<state>", str(platform.state_dir)).replace("<project>", str(platform.project_dir))
    return re.sub(r"<([A-Z0-9_]+)>", lambda m: read[m.group(1)], text)


def _as_text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings_classes():
    for module_name in hook.settings_modules():
        module = importlib.import_module(module_name)
        for value in vars(module).values():
            if (
                dataclasses.is_dataclass(value)
                and value.__module__ == module_name
                and hasattr(value, "from_env")
            ):
                yield module, value


def test_the_parsers_defaults_are_the_documented_ones():
    """Read with nothing set, every field equals the default the configuration reference shows."""
    read = {}  # variable: the value its settings object holds, as text
    checks = []
    for module, cls in settings_classes():
        obj = cls.from_env({})
        fields = {f.name for f in dataclasses.fields(cls)}
        for entry in module.SETTINGS_DOC:
            if getattr(entry, "attr", None) in fields:
                read[entry.name] = _as_text(getattr(obj, entry.attr))
                checks.append(entry)
    for entry in checks:
        if entry.default is None and "<" not in (entry.shown or ""):
            documented = "None"  # unset: a free port, the lake's bucket, AWS's endpoint
        else:
            documented = _documented_value(entry.default_text.removesuffix(" (read-only)"), read)
        assert read[entry.name] == documented, (
            f"{entry.name}: documented {documented!r}, read {read[entry.name]!r}"
        )
    assert len(checks) >= 60, f"only {len(checks)} settings are declared with the field they fill"


# --- the runbook ---------------------------------------------------------------------------------

# Alert(kind="..."), Alert.message("...", and the helpers that build one: _alert("...", _announce("...".
ALERT_KIND = re.compile(
    r"Alert\(\s*kind=\"([a-z_]+)\"|Alert\.message\(\s*\"([a-z_]+)\"|_(?:alert|announce)\(\s*\"([a-z_]+)\""
)


def test_every_alert_the_code_sends_is_in_the_operators_runbook():
    kinds = set()
    for folder in ("include", "plugins", "dags"):
        for path in (ROOT / folder).rglob("*.py"):
            kinds |= {next(k for k in match if k) for match in ALERT_KIND.findall(path.read_text())}
    assert {"configuration_error", "source_outage", "warehouse_build_failed"} <= kinds, (
        "the scan finds alerts"
    )
    runbook = (DOCS / "roles" / "operators.md").read_text()
    listed = set(re.findall(r"^\| `([a-z_]+)` \|", runbook, re.MULTILINE))
    assert kinds <= listed, f"alerts missing from the runbook: {sorted(kinds - listed)}"


def test_every_airflow_command_shown_exists_with_the_options_shown():
    """`./platform airflow ...` lines are parsed by Airflow's own CLI parser, nothing run."""
    lines = sorted(
        {
            (str(p.relative_to(ROOT)), m)
            for p in [*pages(), ROOT / "dags" / "README.md"]
            for m in re.findall(r"\./platform airflow ([^`\n#]+)", p.read_text())
        }
    )
    lines = [(page, line.strip()) for page, line in lines if not line.strip().startswith("...")]
    assert lines, "the runbook shows Airflow commands"
    from airflow.cli.cli_parser import get_parser

    for page, line in lines:
        parser = get_parser()
        hook._no_abbreviations(parser)
        with contextlib.redirect_stderr(io.StringIO()) as errors, contextlib.redirect_stdout(io.StringIO()):
            try:
                parser.parse_args(shlex.split(line))
            except SystemExit as exit_:
                assert exit_.code == 0, f"{page}: `airflow {line}` does not parse: {errors.getvalue()}"


def test_retail_settings_prints_every_declared_setting(capsys):
    """The cheap command the docs show is run: `retail settings` prints the declarations' table."""
    from retail_platform import cli

    assert cli.main(["settings"]) == 0
    printed = capsys.readouterr().out
    for _module, entry, _typed in declared():
        name, default, _meaning = tuple(entry)
        assert re.search(rf"^\| `{name}` \|(.*\|)? {re.escape(default)} \|", printed, re.MULTILINE), name
