"""Whether llama.cpp may repack weights into its extra buffer types on this CPU.

Repacking (llama.cpp's "extra buffer types") lays quantised weights out for the CPU's
fastest kernels. On CPUs with AMX it also puts them in the AMX buffer type, whose matrix
multiply crashes on some hosts (llama.cpp issue 20824: worker threads without the
tile-data permission). So: repacking stays on where there is no AMX; on an AMX CPU a
child process loads the model with repacking and runs one real batched decode, and the
verdict is kept per CPU model and llama.cpp version so the probe runs once.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

AMX_FLAGS = frozenset({"amx_int8", "amx_tile", "amx_bf16"})
PROBE_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class CpuInfo:
    model_name: str
    flags: frozenset[str]

    @property
    def has_amx(self) -> bool:
        return bool(self.flags & AMX_FLAGS)


@dataclass(frozen=True)
class RepackChoice:
    enabled: bool
    reason: str


def read_cpuinfo(path: str = "/proc/cpuinfo") -> CpuInfo:
    """The first processor's model name and feature flags (empty off Linux)."""
    name, flags = "unknown CPU", frozenset[str]()
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            for line in file:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and name == "unknown CPU":
                    name = value.strip()
                elif key == "flags" and not flags:
                    flags = frozenset(value.split())
    except OSError:
        pass
    return CpuInfo(name, flags)


class VerdictStore:
    """Probe verdicts on disk: {"<cpu model> | <llama.cpp version>": true/false}."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def default(cls) -> VerdictStore:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
        return cls(Path(base) / "llama-box" / "repack-verdicts.json")

    def _read(self) -> dict[str, bool]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> bool | None:
        value = self._read().get(key)
        return value if isinstance(value, bool) else None

    def put(self, key: str, safe: bool) -> None:
        data = self._read()
        data[key] = safe
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            tmp.replace(self.path)
        except OSError as error:  # a read-only home only costs a probe next time
            log.warning("could not keep the repack verdict in %s: %s", self.path, error)


def decide_repack(
    requested: bool | None,
    cpu: CpuInfo,
    probe: Callable[[], bool],
    verdicts: VerdictStore,
    llama_version: str,
) -> RepackChoice:
    """Repack unless the user said otherwise or this AMX CPU crashed with it."""
    if requested is not None:
        flag = "--repack" if requested else "--no-repack"
        return RepackChoice(requested, f"{flag} given")
    if not cpu.has_amx:
        return RepackChoice(True, "the CPU has no AMX")
    key = f"{cpu.model_name} | llama.cpp {llama_version}"
    safe = verdicts.get(key)
    if safe is not None:
        outcome = "passed" if safe else "crashed"
        return RepackChoice(safe, f"AMX CPU; the earlier probe on it {outcome} ({verdicts.path})")
    log.info("AMX CPU: probing a batched decode with repacked weights in a child process")
    safe = probe()
    verdicts.put(key, safe)
    if safe:
        return RepackChoice(True, "AMX CPU; a batched decode with repacked weights passed")
    return RepackChoice(False, "AMX CPU; a batched decode with repacked weights crashed")


def probe_in_child(command: list[str], timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    """Run ``command``; True if it exits 0. A crash (signal), error or hang is False."""
    try:
        done = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        log.warning("the repack probe did not finish in %.0f s", timeout)
        return False
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        log.warning("the repack probe exited with %d: %s", done.returncode, " | ".join(tail))
    return done.returncode == 0


def probe_command(model_path: str, threads: int) -> list[str]:
    """The child that loads ``model_path`` with repacking on and warms it up."""
    return [sys.executable, "-m", "llama_box_llamacpp.probe", model_path, str(threads)]
