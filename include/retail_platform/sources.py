"""Every source the platform extracts, and the one home of the names its pipeline goes by.

A source is one contract file in the contracts folder (``RETAIL_CONTRACTS_DIR``, default
``include/contracts``). Its connection id is the contract's ``source.connection_id``; its Airflow
pool, lake prefix, Asset, dbt source and DAG ids are derived here from the contract's source name.
Adding a source is adding a contract file (and generating its dbt sources): no code changes.

DAG files call :func:`source_names` while they are parsed: it reads only each file's ``source``
block, so a mistake in a table fails the run's first task (a configuration error, announced) rather
than the DAG file's import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from retail_platform.contract.model import Contract, ContractError, SourceInfo, load_contract
from retail_platform.lake.batches import RAW_ZONE
from retail_platform.settings import Settings


@dataclass(frozen=True)
class SourceNames:
    """What one source's pipeline is called, everywhere (DAGs, pools, Assets, lake, dbt)."""

    name: str
    connection_id: str
    contract_path: Path | None = None

    @classmethod
    def of(cls, contract: Contract, path: Path | None = None) -> SourceNames:
        return cls(contract.source.name, contract.source.connection_id, path)

    @property
    def pool(self) -> str:
        """The Airflow pool that caps concurrent queries on the source's replica."""
        return self.connection_id

    @property
    def lake_prefix(self) -> str:
        return f"{RAW_ZONE}/{self.name}"

    @property
    def asset_uri(self) -> str:
        """The Asset extraction publishes after each run (the transform is scheduled on it)."""
        return f"retail://lake/{self.lake_prefix}"

    @property
    def asset_name(self) -> str:
        return f"lake_{RAW_ZONE}_{self.name}"

    @property
    def dbt_source(self) -> str:
        return self.name

    def lake_relation(self, table: str) -> str:
        """The warehouse relation over a table's committed batches (schema ``lake_raw``): sources
        may share table names, so the source's name comes first."""
        return f"{self.name}__{table}"

    @property
    def extract_dag_id(self) -> str:
        return f"extract_{self.name}"

    @property
    def watch_dag_id(self) -> str:
        return f"watch_{self.name}_schema"

    def load_contract(self) -> Contract:
        """The whole contract, validated (every error names the table and field)."""
        contract = load_contract(self.contract_path)
        if contract.source.name != self.name:
            raise ContractError(f"{self.contract_path}: the source changed name while running")
        return contract


def contract_files(contracts_dir: Path) -> list[Path]:
    if not contracts_dir.is_dir():
        raise ContractError(f"the contracts folder {contracts_dir} does not exist (set RETAIL_CONTRACTS_DIR)")
    return sorted(p for p in contracts_dir.glob("*.yml") if not p.name.startswith("_"))


def _names_in(path: Path) -> SourceNames:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        info = SourceInfo.model_validate((doc or {}).get("source"))
    except yaml.YAMLError as exc:
        raise ContractError(f"source contract {path} is not valid YAML: {exc}") from None
    except (ValidationError, AttributeError) as exc:
        raise ContractError(f"source contract {path}: its `source` block is invalid: {exc}") from None
    return SourceNames(info.name, info.connection_id, path)


def source_names(contracts_dir: Path) -> list[SourceNames]:
    """Every source in the folder, by name; two contracts may not share a name or a connection."""
    found = [_names_in(path) for path in contract_files(contracts_dir)]
    for attribute in ("name", "connection_id"):
        values = [getattr(n, attribute) for n in found]
        duplicated = sorted({v for v in values if values.count(v) > 1})
        if duplicated:
            raise ContractError(f"{contracts_dir}: two contracts share the source {attribute} {duplicated}")
    return found


def extract_dag_ids(contracts_dir: Path) -> set[str]:
    """The extraction DAGs' ids, one a source."""
    return {names.extract_dag_id for names in source_names(contracts_dir)}


def names_for(settings: Settings, source: str) -> SourceNames:
    """The named source of the settings' contracts folder."""
    return names_of(settings.contracts_dir, source)


def names_of(contracts_dir: Path, source: str) -> SourceNames:
    for names in source_names(contracts_dir):
        if names.name == source:
            return names
    known = ", ".join(n.name for n in source_names(contracts_dir)) or "none"
    raise ContractError(f"no source contract named {source!r} in {contracts_dir} (known: {known})")


def only_source(contracts_dir: Path, source: str | None) -> SourceNames:
    """The named source, or the folder's only one when none is named (command-line defaults)."""
    if source is not None:
        return names_of(contracts_dir, source)
    found = source_names(contracts_dir)
    if len(found) != 1:
        raise ContractError(
            f"{contracts_dir} holds {len(found)} source contracts "
            f"({', '.join(n.name for n in found) or 'none'}): name one with --source"
        )
    return found[0]
