"""Provision Superset for the retail platform; runs inside Superset's own environment (.venv-bi).

    SUPERSET_CONFIG_PATH=include/superset/superset_config.py .venv-bi/bin/python include/superset/provision.py

Every step is idempotent, so it runs on every start-up:

1. Superset's metadata database is migrated and its built-in roles synchronised (`superset db
   upgrade` and `superset init`, in one process);
2. the `admin` user exists with the password from the environment;
3. the bundle (include/superset/bundle: database, datasets, charts, the "Demand now" dashboard) is
   imported with overwrite, the warehouse connection taken from configuration;
4. the `marketing` role is view-only: it opens the dashboards, filters and cross-filters them,
   explores the bundle's datasets and downloads what a chart shows, and nothing else: it saves no
   chart, dashboard, theme or annotation (the shared dashboard stays code), has no other dataset,
   no schema or database access (so no `ml` schema) and no SQL Lab; the `marketing` user has that
   role only.

Environment (set by the launcher or a deployment; secrets never on the command line):
SUPERSET_CONFIG_PATH, SUPERSET_SECRET_KEY, SUPERSET_ADMIN_PASSWORD, SUPERSET_MARKETING_PASSWORD,
RETAIL_SUPERSET_METADATA_URI and RETAIL_SUPERSET_WAREHOUSE_URI.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import yaml

BUNDLE_DIR = Path(__file__).resolve().parent / "bundle"
DATABASE_FILE = "databases/retail_warehouse.yaml"
MARKETING_ROLE = "marketing"
USERS = {
    # username: (first name, last name, role, password variable)
    "admin": ("Platform", "Admin", "Admin", "SUPERSET_ADMIN_PASSWORD"),
    "marketing": ("Marketing", "Team", MARKETING_ROLE, "SUPERSET_MARKETING_PASSWORD"),
}


def bundle_contents(bundle_dir: Path, warehouse_uri: str) -> dict[str, str]:
    """The bundle's files by relative path, the warehouse connection set from configuration."""
    contents = {
        path.relative_to(bundle_dir).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(bundle_dir.rglob("*.yaml"))
    }
    database = yaml.safe_load(contents[DATABASE_FILE])
    database["sqlalchemy_uri"] = warehouse_uri
    if not warehouse_uri.startswith("duckdb"):
        # The DuckDB connect arguments mean nothing to another driver; there, read-only is the
        # database user's (SELECT-only) grants.
        database["extra"].pop("engine_params", None)
    contents[DATABASE_FILE] = yaml.safe_dump(database, sort_keys=False)
    return contents


def migrate_and_sync(appbuilder, security_manager) -> None:
    from flask_migrate import upgrade

    upgrade()
    appbuilder.add_permissions(update_perms=True)
    security_manager.sync_role_definitions()


def ensure_user(security_manager, username: str) -> object:
    first, last, role_name, password_var = USERS[username]
    password = os.environ[password_var]
    role = security_manager.find_role(role_name) or security_manager.add_role(role_name)
    user = security_manager.find_user(username=username)
    if user is None:
        user = security_manager.add_user(
            username, first, last, f"{username}@retail.invalid", [role], password=password
        )
        if not user:
            raise SystemExit(f"could not create the Superset user {username!r}")
    else:
        security_manager.reset_password(user.id, password)
        user.roles = [role]
        user.active = True
    return user


def import_bundle(contents: dict[str, str], admin) -> None:
    from superset.commands.exceptions import CommandInvalidError
    from superset.commands.importers.v1.assets import ImportAssetsCommand
    from superset.utils.core import override_user

    with override_user(admin):
        command = ImportAssetsCommand(contents)
        try:  # run() would say "unknown reason": say which file and field
            command.validate()
        except CommandInvalidError as invalid:
            raise SystemExit(f"the bundle does not validate: {invalid.normalized_messages()}") from invalid
        ImportAssetsCommand(contents).run()


def dashboards_in(contents: dict[str, str]) -> list[str]:
    return [yaml.safe_load(text)["uuid"] for name, text in contents.items() if name.startswith("dashboards/")]


# Gamma's permissions that create, change or delete content: marketing is view-only.
WRITE_PERMISSIONS = frozenset(
    {
        "can_write",
        "can_add",
        "can_edit",
        "can_delete",
        "can_save",
        "can_save_dash",
        "can_copy_dash",
        "can_overwrite",
        "can_import",
        "can_import_dashboards",
        "can_tag",
        "can_bulk_create",
        "can_set_embedded",
        "can_delete_embedded",
        "can_invalidate",
        "can_put_chart_customizations",
        "can_export_streaming_csv",
    }
)
# The page's own state (filters chosen, a shared link) is kept by POSTs to these: not content.
UI_STATE_VIEWS = frozenset(
    {
        "DashboardFilterStateRestApi",
        "ExploreFormDataRestApi",
        "DashboardPermalinkRestApi",
        "ExplorePermalinkRestApi",
    }
)


def read_only(permissions) -> list:
    """Gamma's permissions without any that creates, edits or deletes content."""
    return [
        pv
        for pv in permissions
        if pv.view_menu.name in UI_STATE_VIEWS or pv.permission.name not in WRITE_PERMISSIONS
    ]


def grant_marketing(security_manager, db, dashboard_uuids: list[str]) -> list[str]:
    """The marketing role: Gamma's reading rights (see dashboards and charts, explore what it may
    read) plus read access to the datasets of the bundle's dashboards, and nothing else."""
    from superset.models.dashboard import Dashboard

    role = security_manager.find_role(MARKETING_ROLE)
    gamma = security_manager.find_role("Gamma")
    permissions = read_only(gamma.permissions)
    granted = []
    for dashboard in db.session.query(Dashboard).filter(Dashboard.uuid.in_(dashboard_uuids)):
        for dataset in dashboard.datasources:
            pv = security_manager.add_permission_view_menu("datasource_access", dataset.get_perm())
            permissions.append(pv)
            granted.append(f"{dataset.schema}.{dataset.table_name}")
        dashboard.roles = [role]
    role.permissions = list(dict.fromkeys(permissions))
    return sorted(set(granted))


def scope_native_filters(db, dashboard_uuids: list[str]) -> None:
    """Record which charts each native filter applies to (its scope minus its exclusions), with
    the ids the import gave the charts."""
    from superset.models.dashboard import Dashboard

    for dashboard in db.session.query(Dashboard).filter(Dashboard.uuid.in_(dashboard_uuids)):
        metadata = json.loads(dashboard.json_metadata or "{}")
        chart_ids = sorted(chart.id for chart in dashboard.slices)
        for native_filter in metadata.get("native_filter_configuration", []):
            excluded = set(native_filter.get("scope", {}).get("excluded", []))
            native_filter["chartsInScope"] = [i for i in chart_ids if i not in excluded]
        cross_filters = metadata.get("global_chart_configuration")
        if cross_filters:  # the charts a click in another chart filters
            excluded = set(cross_filters.get("scope", {}).get("excluded", []))
            cross_filters["chartsInScope"] = [i for i in chart_ids if i not in excluded]
        dashboard.json_metadata = json.dumps(metadata)


def main() -> int:
    from superset.app import create_app

    app = create_app()
    with app.app_context():
        from superset import appbuilder, db, security_manager

        migrate_and_sync(appbuilder, security_manager)
        security_manager.add_role(MARKETING_ROLE)
        admin = ensure_user(security_manager, "admin")
        ensure_user(security_manager, "marketing")
        db.session.commit()
        contents = bundle_contents(BUNDLE_DIR, os.environ["RETAIL_SUPERSET_WAREHOUSE_URI"])
        import_bundle(contents, admin)
        dashboards = dashboards_in(contents)
        granted = grant_marketing(security_manager, db, dashboards)
        scope_native_filters(db, dashboards)
        db.session.commit()
    print(json.dumps({"imported": sorted(contents), "marketing_datasets": granted}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
