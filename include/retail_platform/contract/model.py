"""The source contract: one declarative file that drives extraction, the schema watch and dbt sources.

Per table: primary key, extraction mode (and cursor), expected columns (name, type,
nullability), owners to notify, and whether it is critical. Loading validates the file
and every error names the table and the field at fault.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from retail_platform.contract.types import ColumnType, UnsupportedTypeError, parse_type
from retail_platform.errors import ConfigurationError
from retail_platform.extraction_modes import ExtractionMode


class ContractError(ConfigurationError):
    pass


def cursor_type_problem(mode: ExtractionMode, ctype) -> str | None:
    """Why a column of this type cannot be the mode's cursor, or None when it can."""
    if mode is ExtractionMode.INCREMENTAL and ctype.base not in ("datetime", "timestamp"):
        return "incremental needs a DATETIME or TIMESTAMP"
    if mode is ExtractionMode.APPEND_ONLY and not ctype.is_integer:
        return "append_only needs an integer key"
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Owners(_Strict):
    team: str
    slack_channel: str | None = None
    # Slack mention syntax (<@U0123>, <!subteam^S0123>) or plain handles (@checkout-oncall).
    slack_mentions: list[str] = Field(default_factory=list)


class Column(_Strict):
    name: Annotated[str, Field(min_length=1)]
    type: str
    nullable: bool = False
    # Present on a modern replica, absent on classicmodels v3.1 as published: absence is not drift.
    optional: bool = False
    description: str | None = None

    @field_validator("type")
    @classmethod
    def _supported(cls, value: str) -> str:
        try:
            parse_type(value)
        except UnsupportedTypeError as exc:
            raise ValueError(f"unsupported column type {exc}") from None
        return value

    @property
    def parsed_type(self) -> ColumnType:
        return parse_type(self.type)


class Extraction(_Strict):
    mode: ExtractionMode
    cursor: str | None = None
    # incremental: minutes re-read before the interval start (late commits, clock skew)
    lookback_minutes: int = Field(default=15, ge=0)
    # append_only: keys re-read below the watermark (out-of-order commits)
    lookback_keys: int = Field(default=0, ge=0)


class Table(_Strict):
    description: str | None = None
    primary_key: list[str] = Field(min_length=1)
    extraction: Extraction
    critical: bool = False
    owners: Owners | None = None
    columns: list[Column] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Table:
        names = [c.name for c in self.columns]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"columns: duplicated {', '.join(duplicates)}")
        by_name = {c.name: c for c in self.columns}
        for key in self.primary_key:
            if key not in by_name:
                raise ValueError(f"primary_key: column {key!r} is not in columns")
            if by_name[key].optional:
                raise ValueError(f"primary_key: column {key!r} cannot be optional")
        mode, cursor = self.extraction.mode, self.extraction.cursor
        if mode is ExtractionMode.FULL:
            if cursor is not None:
                raise ValueError("extraction.cursor: a full snapshot has no cursor")
            return self
        if cursor is None:
            raise ValueError(f"extraction.cursor: required for mode {mode.value}")
        if cursor not in by_name:
            raise ValueError(f"extraction.cursor: column {cursor!r} is not in columns")
        ctype = by_name[cursor].parsed_type
        problem = cursor_type_problem(mode, ctype)
        if problem:
            raise ValueError(f"extraction.cursor: {cursor!r} is {ctype.declared}; {problem}")
        return self

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


# A source's name and connection id become DAG ids, pool and Asset names, lake folders and SQL
# identifiers: lower-case letters, digits and underscores only.
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"


class SourceInfo(_Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    system: str = "mysql"
    database: str
    connection_id: Annotated[str, Field(pattern=NAME_PATTERN)]
    default_owners: Owners
    # Who hears that data will be stale (outages, pauses): the platform's consumers.
    downstream_channel: str | None = None


class Contract(_Strict):
    version: int = 1
    source: SourceInfo
    tables: dict[str, Table] = Field(min_length=1)

    def owners_of(self, table: str) -> Owners:
        return self.tables[table].owners or self.source.default_owners

    def to_yaml(self) -> str:
        """The contract as YAML, one line a column (defaults left out)."""
        doc = self.model_dump(mode="json", exclude_none=True)
        for name, table in doc["tables"].items():
            full = self.tables[name]
            table["extraction"] = full.extraction.model_dump(mode="json", exclude_none=True)
            table["critical"] = full.critical
            table["columns"] = [
                _FlowDict(
                    c.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
                    | {"name": c.name, "type": c.type}
                )
                for c in full.columns
            ]
        return yaml.dump(doc, Dumper=_ContractDumper, sort_keys=False, allow_unicode=True, width=120)


class _FlowDict(dict):
    pass


class _ContractDumper(yaml.SafeDumper):
    pass


_ContractDumper.add_representer(
    _FlowDict,
    lambda dumper, data: dumper.represent_mapping(
        "tag:yaml.org,2002:map",
        sorted(
            data.items(), key=lambda kv: ("name", "type", "nullable", "optional", "description").index(kv[0])
        ),
        flow_style=True,
    ),
)


def _location(loc: tuple) -> str:
    parts = [str(p) for p in loc]
    # tables.<name>.columns.<index>.type -> tables.<name>.columns[<index>].type
    out = []
    for part in parts:
        if part.isdigit() and out:
            out[-1] += f"[{part}]"
        else:
            out.append(part)
    return ".".join(out)


def parse_contract(doc: dict, origin: str = "<contract>") -> Contract:
    try:
        return Contract.model_validate(doc)
    except ValidationError as exc:
        messages = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            messages.append(f"  {_location(error['loc'])}: {message}")
        raise ContractError(f"invalid source contract {origin}:\n" + "\n".join(messages)) from None


def load_contract(path: Path | str) -> Contract:
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContractError(f"source contract not found: {path} (set RETAIL_CONTRACT_PATH)") from None
    except yaml.YAMLError as exc:
        raise ContractError(f"source contract {path} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ContractError(f"source contract {path} must be a mapping at the top level")
    return parse_contract(doc, str(path))
