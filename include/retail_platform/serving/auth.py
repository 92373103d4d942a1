"""API keys: from ``RETAIL_API_KEYS`` (``name:key`` pairs, comma-separated), else the Airflow connection
``retail_api_keys`` through any of Airflow's backends (e.g. AWS Secrets Manager): its password is one
key, or its extra ``{"keys": {"name": "key"}}`` several. Keys are compared in constant time, each one
every time, and never logged: only the matching key's name is."""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field

from retail_platform.errors import ConfigurationError
from retail_platform.serving.settings import API_KEYS_CONN_ID

ENV_VAR = "RETAIL_API_KEYS"
MIN_KEY_LENGTH = 16


class ApiKeysMalformed(ConfigurationError):
    pass


@dataclass(frozen=True)
class ApiKeys:
    keys: dict[str, bytes] = field(repr=False)

    def __post_init__(self):
        if not self.keys:
            raise ApiKeysMalformed("no API key configured")
        short = [name for name, key in self.keys.items() if len(key) < MIN_KEY_LENGTH]
        if short:
            raise ApiKeysMalformed(
                f"API keys of {', '.join(short)} are shorter than {MIN_KEY_LENGTH} characters"
            )

    @classmethod
    def parse(cls, text: str, origin: str) -> ApiKeys:
        keys = {}
        for i, item in enumerate(p.strip() for p in text.split(",")):
            if not item:
                continue
            name, sep, key = item.partition(":")
            keys[name if sep else f"key{i + 1}"] = (key if sep else name).encode()
        try:
            return cls(keys)
        except ApiKeysMalformed as exc:
            raise ApiKeysMalformed(f"{origin}: {exc}") from None

    @classmethod
    def from_environment(cls) -> ApiKeys:
        if os.environ.get(ENV_VAR):
            return cls.parse(os.environ[ENV_VAR], ENV_VAR)
        from retail_platform.serving.holder import service_connection

        record = service_connection(API_KEYS_CONN_ID)
        keys = {str(k): str(v).encode() for k, v in (record.extra or {}).get("keys", {}).items()}
        if record.password:
            keys.setdefault(record.login or "default", record.password.encode())
        try:
            return cls(keys)
        except ApiKeysMalformed as exc:
            raise ApiKeysMalformed(f"connection {API_KEYS_CONN_ID!r} ({record.origin}): {exc}") from None

    def client_of(self, presented: str | None) -> str | None:
        """The name of the key presented, or None; every key is compared, in constant time."""
        if not presented:
            return None
        candidate = presented.encode()
        match = None
        for name, key in self.keys.items():
            if hmac.compare_digest(candidate, key):
                match = name
        return match
