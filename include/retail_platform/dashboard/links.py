"""Links into the "Demand now" dashboard already filtered, e.g. to a spike's product and country.

Superset reads the initial value of native filters from the `native_filters` URL parameter, a
rison document (`(<filter id>:(extraFormData:(filters:!((col:…,op:IN,val:!(…)))),filterState:(value:!(…))))`).
The filter ids and the `product` column ("name (code)": names are not unique) are the bundle's
(include/superset/bundle/dashboards/demand_now.yaml, datasets/…/fct_hourly_demand.yaml).
"""

from __future__ import annotations

import re
from urllib.parse import quote

PRODUCT_FILTER_ID = "NATIVE_FILTER-product"
COUNTRY_FILTER_ID = "NATIVE_FILTER-country"
_RISON_ID = re.compile(r"^[A-Za-z_./~][A-Za-z0-9_./~-]*$")


def product_label(name: str, code: str) -> str:
    """How the dashboard names a product (the datasets' `product` column)."""
    return f"{name} ({code})"


def rison(value) -> str:
    """Rison encoding of strings, numbers, lists and dicts (what the URL parameter needs)."""
    if isinstance(value, dict):
        return "(" + ",".join(f"{rison(str(k))}:{rison(v)}" for k, v in value.items()) + ")"
    if isinstance(value, list | tuple):
        return "!(" + ",".join(rison(v) for v in value) + ")"
    if isinstance(value, bool):
        return "!t" if value else "!f"
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    if text and _RISON_ID.match(text) and not text[0].isdigit():
        return text
    return "'" + text.replace("!", "!!").replace("'", "!'") + "'"


def filtered_dashboard_url(dashboard_url: str, filters: dict[str, tuple[str, str]]) -> str:
    """``dashboard_url`` opened with each native filter (id → (column, value)) set to one value."""
    state = {
        filter_id: {
            "extraFormData": {"filters": [{"col": column, "op": "IN", "val": [value]}]},
            "filterState": {"value": [value]},
        }
        for filter_id, (column, value) in filters.items()
    }
    separator = "&" if "?" in dashboard_url else "?"
    return f"{dashboard_url}{separator}native_filters={quote(rison(state), safe='')}"


def spike_dashboard_url(dashboard_url: str, product_name: str, product_code: str, country: str) -> str:
    """The dashboard filtered to one product in one country (what a spike alert opens)."""
    return filtered_dashboard_url(
        dashboard_url,
        {
            PRODUCT_FILTER_ID: ("product", product_label(product_name, product_code)),
            COUNTRY_FILTER_ID: ("country", country),
        },
    )
