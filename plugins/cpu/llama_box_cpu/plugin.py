"""The CPU backend is always present; it describes the processor llama.cpp runs on."""

from __future__ import annotations

import platform

from llama_box_core.hookspecs import hookimpl
from llama_box_core.settings import Settings, available_cpus
from llama_box_core.types import Backend


def processor_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@hookimpl
def llama_box_backend(settings: Settings) -> Backend:
    return Backend(
        name="CPU",
        devices=[f"CPU: {processor_name()} ({available_cpus()} CPUs usable)"],
        description=f"{settings.n_threads} threads for generation, "
        f"{settings.n_threads_batch} for prompts",
    )
