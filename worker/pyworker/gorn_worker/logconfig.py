"""gunicorn's ``logconfig_dict``, ``logconfig_json`` and ``logconfig`` (``--log-config``):
Python :mod:`logging` configured in each worker before the app is imported, as gunicorn
configures it in its processes, so the app's loggers (and the ``gunicorn.error`` and
``gunicorn.access`` loggers that apps borrow handlers from) get the file's handlers.

gunicorn's semantics: the first of the three that is set wins; a dict or JSON object is
laid over gunicorn's default configuration with a shallow update (a ``loggers`` key
replaces the default loggers); an ini file gets the defaults and ``__file__``/``here``.
gorn's own error and access logs keep their formats (``--log-format``,
``--access-logformat``): they do not go through :mod:`logging`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional


class LogConfigError(Exception):
    pass


def defaults() -> dict[str, Any]:
    """gunicorn's default logging configuration (glogging's), as a fresh dict."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": True, "qualname": "gunicorn.error"},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": True, "qualname": "gunicorn.access"},
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stdout"},
            "error_console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stderr"},
        },
        "formatters": {
            "generic": {
                "format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
                "datefmt": "[%Y-%m-%d %H:%M:%S %z]",
                "class": "logging.Formatter",
            }
        },
    }


def configure(config_dict: Optional[dict[str, Any]], json_path: str, ini_path: str) -> Optional[str]:
    """Apply the first configuration given; returns what was applied (for a debug line),
    None when nothing is set. Raises :class:`LogConfigError` naming the setting."""
    if not (config_dict or json_path or ini_path):
        return None  # logging.config imports handlers, socketserver, pickle: ~10 ms of every start
    import logging.config

    if config_dict:
        cfg = defaults()
        cfg.update(config_dict)
        _dict_config(logging.config, cfg, "logconfig_dict")
        return "logconfig_dict"
    if json_path:
        cfg = defaults()
        try:
            with open(json_path, encoding="utf-8") as f:
                loaded = json.load(f)
        except (OSError, ValueError) as e:
            raise LogConfigError(f"logconfig_json {json_path}: {e}") from None
        if not isinstance(loaded, dict):
            raise LogConfigError(f"logconfig_json {json_path}: want a JSON object")
        cfg.update(loaded)
        _dict_config(logging.config, cfg, f"logconfig_json {json_path}")
        return f"logconfig_json {json_path}"
    if ini_path:
        if not os.path.exists(ini_path):
            raise LogConfigError(f"logconfig {ini_path}: not found")
        file_defaults = {k: str(v) for k, v in defaults().items()}
        file_defaults["__file__"] = ini_path
        file_defaults["here"] = os.path.dirname(ini_path)
        try:
            logging.config.fileConfig(ini_path, defaults=file_defaults, disable_existing_loggers=False)
        except Exception as e:  # configparser and logging raise many kinds
            raise LogConfigError(f"logconfig {ini_path}: {type(e).__name__}: {e}") from None
        return f"logconfig {ini_path}"
    return None


def _dict_config(module: Any, cfg: dict[str, Any], what: str) -> None:
    try:
        module.dictConfig(cfg)
    except (AttributeError, ImportError, ValueError, TypeError) as e:
        raise LogConfigError(f"{what}: {e}") from None
