"""The reference pages, written from the code at every build so they never go stale.

mkdocs runs this as a hook (``hooks:`` in mkdocs.yml): ``on_files`` adds three generated pages,
``reference/configuration.md`` (from the settings' declarations), ``reference/cli.md`` (from the
``retail`` command's argparse parsers) and ``reference/api.md`` (from the FastAPI app's OpenAPI
description). tests/test_docs.py imports the same functions to check the docs against the code.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json

GENERATED = "This page is generated from the code at every build of the site (`docs/hooks/reference.py`)."


# --- configuration -------------------------------------------------------------------------------

CONFIGURATION_INTRO = """# Configuration

Every setting is an environment variable, read and checked once when a process starts (a bad
value fails at once, naming the variable). Connections are Airflow connections: tasks look them up
through Airflow (the environment's `AIRFLOW_CONN_*`, URI or JSON, the metadata database, or any
secrets backend); the consumer and the API read the environment. dbt reads its settings with
`env_var`. Nothing secret is in the repository; the sandbox's generated passwords live under
`.state/` (mode 600).

Each setting is declared once, in its room's `settings.py`: its name, type, default, validation and
meaning in one declaration. The process reads it from there and this table is made from there;
`retail settings` prints the same table. `tests/test_settings.py` checks that every variable the
Python code and dbt's `env_var` read is declared; `tests/test_docs.py` that this page equals the
declarations and that the parsers' defaults are the documented ones.

"""


def settings_modules() -> list[str]:
    from retail_platform.settings import SETTINGS_MODULES

    return list(SETTINGS_MODULES)


def declarations(module: str) -> list:
    """The module's declarations: ``Setting`` objects, or (name, default, meaning) rows not yet converted."""
    return list(importlib.import_module(module).SETTINGS_DOC)


def setting_row(entry) -> dict[str, str]:
    """One table row of a declaration (a ``Setting``, or an old-style (name, default, meaning) tuple)."""
    name, default, meaning = tuple(entry)
    return {
        "variable": name,
        "type": getattr(entry, "type_name", ""),
        "default": default,
        "validation": getattr(entry, "validation", ""),
        "meaning": meaning,
    }


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def configuration_rows() -> list[tuple[str, dict[str, str]]]:
    return [(module, setting_row(entry)) for module in settings_modules() for entry in declarations(module)]


def configuration_page() -> str:
    lines = [CONFIGURATION_INTRO]
    current = None
    for module, row in configuration_rows():
        if module != current:
            current = module
            path = module.replace(".", "/") + ".py"
            lines += ["", f"## `{module}`", "", f"Declared in `include/{path}`.", ""]
            lines += ["| variable | type | default | validation | meaning |", "|---|---|---|---|---|"]
        default = f"`{_cell(row['default'])}`" if row["default"] else ""
        lines.append(
            f"| `{row['variable']}` | {_cell(row['type'])} | {default} | {_cell(row['validation'])} "
            f"| {_cell(row['meaning'])} |"
        )
    return "\n".join(lines) + f"\n\n{GENERATED}\n"


# --- the retail command ------------------------------------------------------------------------


class _Parsed(Exception):
    """Raised in place of running a command: the parser, and what it parsed (None for a capture)."""

    def __init__(self, parser, namespace=None):
        self.parser, self.namespace = parser, namespace


@contextlib.contextmanager
def _intercept(parse: bool):
    """Patch argparse so that the first parser a command builds is handed back instead of run."""
    original = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        if parse:
            _no_abbreviations(self)  # a docs page must spell an option out
            raise _Parsed(self, original(self, args, namespace))  # exits 2 on an unknown option
        raise _Parsed(self)

    argparse.ArgumentParser.parse_args = capture
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    parser.allow_abbrev = False
    for sub in _subcommands(parser).values():
        _no_abbreviations(sub)


def command_parser(command: str) -> argparse.ArgumentParser:
    """The parser of ``retail <command>``: the main parser's, or the room command's own."""
    from retail_platform import cli

    if command not in cli.ROOM_COMMANDS:
        return cli.build_parser()
    with _intercept(parse=False):
        try:
            cli.main([command])
        except _Parsed as parsed:
            return parsed.parser
    raise RuntimeError(f"retail {command} built no parser")


def parse_command(argv: list[str]) -> argparse.Namespace:
    """Parse ``retail <argv>`` with the real parsers, without running anything (SystemExit(2) when
    the command or an option does not exist)."""
    from retail_platform import cli

    with _intercept(parse=True):
        try:
            cli.main(list(argv))
        except _Parsed as parsed:
            return parsed.namespace
    raise RuntimeError(f"retail {' '.join(argv)} parsed nothing")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help(parser: argparse.ArgumentParser) -> str:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        parser.print_help()
    return out.getvalue().rstrip()


def cli_page() -> str:
    from retail_platform import cli

    lines = [
        "# The `retail` command",
        "",
        "The platform's command line. Run it inside the project's environment with the running "
        "sandbox's connections: `./platform retail ...`. Every command below is printed from its "
        "argparse parser.",
        "",
        "```text",
        _help(cli.build_parser()),
        "```",
        "",
    ]
    commands = {name: sub for name, sub in _subcommands(cli.build_parser()).items()}
    for room in cli.ROOM_COMMANDS:
        if room != "down":  # `retail up|down` share one parser
            commands[room] = command_parser(room)
    for name in sorted(commands):
        parser = commands[name]
        lines += [f"## `retail {name}`", "", "```text", _help(parser), "```", ""]
        for sub_name, sub in _subcommands(parser).items():
            lines += [f"### `retail {name} {sub_name}`", "", "```text", _help(sub), "```", ""]
    return "\n".join(lines) + f"\n{GENERATED}\n"


# --- the API -------------------------------------------------------------------------------------


def openapi() -> dict:
    """The API's OpenAPI description, from the app the API serves (no server, store or key needed)."""
    from retail_platform.serving.api import create_app
    from retail_platform.serving.handler import Handler, HandlerConfig

    return create_app(Handler(None, HandlerConfig()), None).openapi()


def _schema_name(schema: dict) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if schema.get("type") == "array":
        return f"list of {_schema_name(schema.get('items', {}))}"
    if "anyOf" in schema:
        return " or ".join(_schema_name(s) for s in schema["anyOf"])
    if "enum" in schema:
        return "one of " + ", ".join(f"`{value}`" for value in schema["enum"])
    if schema.get("type", "object") == "object" and "title" in schema:
        return schema["title"]
    return schema.get("type", "object")


def _operation(path: str, method: str, op: dict) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", "", op.get("summary", ""), ""]
    if op.get("security"):
        lines += ["Requires the `X-API-Key` header.", ""]
    params = op.get("parameters", [])
    if params:
        lines += ["| parameter | in | type | required | constraints |", "|---|---|---|---|---|"]
        for p in params:
            schema = p.get("schema", {})
            limits = ", ".join(
                f"{k} {schema[k]}"
                for k in ("minimum", "maximum", "minLength", "maxLength", "default")
                if k in schema
            )
            lines.append(
                f"| `{p['name']}` | {p['in']} | {_schema_name(schema)} | {p.get('required', False)} | {limits} |"
            )
        lines.append("")
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if body:
        lines += [f"Request body: `{_schema_name(body)}` (JSON)" + (":" if "properties" in body else "."), ""]
        lines += _fields(body)
    lines += ["| status | answer |", "|---|---|"]
    for status, response in op.get("responses", {}).items():
        content = response.get("content", {})
        schema = next(iter(content.values()), {}).get("schema") if content else None
        shape = f"`{_schema_name(schema)}`" if schema else ""
        lines.append(f"| {status} | {_cell(response.get('description', ''))} {shape} |")
    return lines + [""]


def _schemas(components: dict) -> list[str]:
    lines = ["## Schemas", ""]
    for name, schema in sorted(components.get("schemas", {}).items()):
        lines += [f"### `{name}`", "", _cell(schema.get("description", "")), ""]
        if "enum" in schema:
            lines += [_schema_name(schema), ""]
        lines += _fields(schema)
    return lines


def _fields(schema: dict) -> list[str]:
    properties = schema.get("properties", {})
    if not properties:
        return []
    required = set(schema.get("required", []))
    lines = ["| field | type | required | description |", "|---|---|---|---|"]
    for field, spec in properties.items():
        lines.append(
            f"| `{field}` | {_schema_name(spec)} | {field in required} | {_cell(spec.get('description', ''))} |"
        )
    return lines + [""]


def api_page(spec: dict | None = None) -> str:
    spec = spec or openapi()
    info = spec["info"]
    lines = [
        "# The recommendation API",
        "",
        f"**{info['title']}**, version {info['version']}: {info.get('description', '')}",
        "",
        "How to call it, keys and examples: [the sales platform's page](../roles/sales-platform.md). "
        "The running API serves the same description at `/openapi.json` and Swagger UI at `/docs`; "
        "[openapi.json](openapi.json) is the copy made with this site.",
        "",
        "## Endpoints",
        "",
    ]
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            lines += _operation(path, method, op)
    lines += _schemas(spec.get("components", {}))
    return "\n".join(lines) + f"\n{GENERATED}\n"


# --- the dashboard's charts ---------------------------------------------------------------------


def charts_table() -> str:
    """Each chart of the dashboards as code (include/superset/bundle/charts), with its description."""
    from pathlib import Path

    import yaml

    import retail_platform

    folder = Path(retail_platform.__file__).resolve().parents[1] / "superset" / "bundle" / "charts"
    lines = ["| chart | kind | what it shows |", "|---|---|---|"]
    for path in sorted(folder.glob("*.yaml")):
        chart = yaml.safe_load(path.read_text())
        kind = chart.get("viz_type", "").replace("echarts_timeseries_", "").replace("_", " ")
        lines.append(
            f"| **{_cell(chart['slice_name'])}** | {kind} | {_cell(chart.get('description') or '')} |"
        )
    return "\n".join(lines) + "\n\n_(From the chart files in `include/superset/bundle/charts/`.)_\n"


def dead_letter_kinds() -> str:
    """The kinds a refused event is counted and kept under (the serving side's DeadLetterKind)."""
    from retail_platform.serving.events import DeadLetterKind

    return ", ".join(f"`{kind.value}`" for kind in DeadLetterKind)


def dags_readme() -> str:
    """dags/README.md (the DAGs' table, kept beside the DAG files) without its title."""
    from pathlib import Path

    import retail_platform

    readme = Path(retail_platform.__file__).resolve().parents[2] / "dags" / "README.md"
    return readme.read_text().split("\n", 1)[1].strip() + "\n\n_(From `dags/README.md`.)_\n"


MARKERS = {
    "<!-- generated: dags -->": dags_readme,
    "<!-- generated: charts -->": charts_table,
    "<!-- generated: dead-letter-kinds -->": dead_letter_kinds,
}


# --- mkdocs hook -------------------------------------------------------------------------------


def generated_pages() -> dict[str, str]:
    spec = openapi()
    return {
        "reference/configuration.md": configuration_page(),
        "reference/cli.md": cli_page(),
        "reference/api.md": api_page(spec),
        "reference/openapi.json": json.dumps(spec, indent=2) + "\n",
    }


def on_files(files, config):
    from mkdocs.structure.files import File

    for path, content in generated_pages().items():
        files.append(File.generated(config, path, content=content))
    return files


def on_page_markdown(markdown, page, config, files):
    """Fill each marker; a marker alone on an indented line (inside an admonition) keeps its indent."""
    import re

    for marker, make in MARKERS.items():
        if marker in markdown:
            text = make().rstrip("\n")
            markdown = re.sub(
                rf"^([ \t]*){re.escape(marker)}$",
                lambda m, text=text: "\n".join(
                    m.group(1) + line if line else line for line in text.split("\n")
                ),
                markdown,
                flags=re.MULTILINE,
            )
            markdown = markdown.replace(marker, text)
    return markdown
