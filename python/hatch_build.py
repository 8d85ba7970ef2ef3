"""Hatchling build hook: put the cross-compiled gorn binary into the wheel as a script and
tag the wheel for the platform the binary was built for.

`make wheel` sets GORN_WHEEL_BINARY (the binary) and GORN_WHEEL_PLATFORM (a platform tag
such as manylinux_2_17_x86_64.manylinux2014_x86_64). The hook refuses a binary whose ELF
machine does not match the tag's architecture, so a tag cannot lie about what is inside.
"""

from __future__ import annotations

import os
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# ELF e_machine values of the architectures gorn wheels are built for.
ELF_MACHINES = {"x86_64": 62, "aarch64": 183}


def elf_machine(path: str) -> int:
    """Return the e_machine of the 64-bit little-endian ELF file at path."""
    with open(path, "rb") as f:
        header = f.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise ValueError(f"{path} is not an ELF binary")
    if header[4] != 2 or header[5] != 1:
        raise ValueError(f"{path} is not a 64-bit little-endian ELF binary")
    return int.from_bytes(header[18:20], "little")


class GornBinaryHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        binary = os.environ.get("GORN_WHEEL_BINARY", "")
        platform = os.environ.get("GORN_WHEEL_PLATFORM", "")
        if not binary or not platform:
            raise RuntimeError("GORN_WHEEL_BINARY or GORN_WHEEL_PLATFORM unset: use make wheel")
        arch = next((a for a in ELF_MACHINES if platform.endswith("_" + a)), None)
        if arch is None:
            raise RuntimeError(f"platform tag {platform!r} names no architecture gorn is built for")
        machine = elf_machine(binary)
        if machine != ELF_MACHINES[arch]:
            raise RuntimeError(f"{binary} is ELF machine {machine}, not {arch} as {platform} says")
        build_data["pure_python"] = False
        build_data["tag"] = f"py3-none-{platform}"
        build_data["shared_scripts"][os.path.abspath(binary)] = "gorn"
