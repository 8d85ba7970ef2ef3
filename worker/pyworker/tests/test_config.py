"""Settings: types, defaults, validation, and agreement with CONTRACT.md."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from gorn_worker.config import ConfigError, Settings, describe

CONTRACT = Path(__file__).resolve().parents[2] / "CONTRACT.md"


def load(**kw: Any) -> Settings:
    doc: dict[str, Any] = {"app": "m:app", "listen_fds": [3]}
    doc.update(kw)
    return Settings.from_mapping(doc)[0]


def test_minimal_and_defaults() -> None:
    s = load()
    assert s.app == "m:app" and s.listen_fds == (3,)
    assert s.keepalive == 75.0 and s.limit_request_line == 4094 and s.limit_request_fields == 100
    assert s.log_level == "info" and s.log_format == "text" and s.access_log is None
    assert s.scoreboard_fd == -1 and s.lifeline_fd == -1


def test_full_contract_table_round_trip() -> None:
    doc = {
        "app": "pkg.mod:create_app()", "slot": 3, "generation": 2, "listen_fds": [3, 4],
        "scoreboard_fd": 5, "lifeline_fd": 6, "worker_class": "sync", "workers": 4,
        "keepalive": 5, "header_timeout": 7.5, "graceful_timeout": 30, "limit_request_line": 0,
        "limit_request_fields": 50, "limit_request_field_size": 1000, "limit_request_body": 10,
        "root_path": "/x/", "forwarded_allow_ips": ["10.0.0.0/8", "*"], "access_log": "-",
        "access_log_format": "json", "error_log": "/tmp/e.log", "log_level": "debug",
        "log_format": "json", "proc_name": "p", "server_software": "gorn/0.1.0",
    }
    s, unknown = Settings.from_json(json.dumps(dict(doc, future_key=1)))
    assert unknown == ["future_key"]
    assert s.keepalive == 5.0 and isinstance(s.keepalive, float)
    assert s.root_path == "/x" and s.listen_fds == (3, 4)
    s2, _ = Settings.from_json(s.to_json())
    assert s2 == s


def test_contract_keys_match_settings() -> None:
    text = CONTRACT.read_text()
    table = text.split("## Scoreboard")[0]
    keys = set(re.findall(r"^\| `([a-z_]+)` \|", table, re.M))
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert keys and keys <= fields, keys - fields
    assert "pythonpath" in describe()


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"app": ""}, "module"),
        ({"app": ":x"}, "module"),
        ({"listen_fds": []}, "listen_fds"),
        ({"listen_fds": [3, 3]}, "duplicates"),
        ({"listen_fds": [-1]}, "listen_fds"),
        ({"listen_fds": "3"}, "list of int"),
        ({"listen_fds": [True]}, "list of int"),
        ({"slot": True}, "int"),
        ({"slot": 1.0}, "int"),
        ({"slot": -1}, "slot"),
        ({"workers": 0}, "workers"),
        ({"keepalive": "2"}, "float"),
        ({"keepalive": -1}, "keepalive"),
        ({"header_timeout": float("nan")}, "header_timeout"),
        ({"limit_request_line": -5}, "limit_request_line"),
        ({"log_level": "verbose"}, "log_level"),
        ({"log_format": "xml"}, "log_format"),
        ({"worker_class": "tornado"}, "worker_class"),
        ({"root_path": "x"}, "root_path"),
        ({"forwarded_allow_ips": ["not-an-ip"]}, "forwarded_allow_ips"),
        ({"forwarded_allow_ips": "*"}, "list of str"),
        ({"access_log": 1}, "str or null"),
        ({"access_log": ""}, "access_log"),
        ({"server_software": "a\r\nb"}, "control"),
        ({"scoreboard_fd": -2}, "scoreboard_fd"),
    ],
)
def test_invalid(kw: dict, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        load(**kw)


def test_null_lists_and_check_mode() -> None:
    s = load(pythonpath=None, forwarded_allow_ips=None)
    assert s.pythonpath == () and s.forwarded_allow_ips == ()
    with pytest.raises(ConfigError, match="listen_fds is empty"):
        load(listen_fds=None)
    s = load(listen_fds=None, check=True)
    assert s.check and s.listen_fds == ()
    with pytest.raises(ConfigError, match="bool"):
        load(check=1)


def test_missing_required_and_bad_json() -> None:
    with pytest.raises(ConfigError, match="app"):
        Settings.from_mapping({"listen_fds": [3]})
    with pytest.raises(ConfigError, match="JSON"):
        Settings.from_json("{nope")
    with pytest.raises(ConfigError, match="object"):
        Settings.from_json("[1]")
    with pytest.raises(ConfigError, match="not set"):
        Settings.from_environ({})
