"""Where the model's weights and cache go: -dev, -sm, -ts, -mg, -ot, --numa and -nkvo as
llama.cpp model and context parameters (device and buffer-type handles from core's ggml
binding)."""

from __future__ import annotations

import ctypes
import re
from typing import Any

import llama_cpp as lc

from llama_box_core.ggml import GgmlError
from llama_box_core.settings import Settings

SPLIT_MODES = {
    "none": lc.LLAMA_SPLIT_MODE_NONE,
    "layer": lc.LLAMA_SPLIT_MODE_LAYER,
    "row": lc.LLAMA_SPLIT_MODE_ROW,
    "tensor": lc.LLAMA_SPLIT_MODE_TENSOR,
}
NUMA = {
    "distribute": lc.GGML_NUMA_STRATEGY_DISTRIBUTE,
    "isolate": lc.GGML_NUMA_STRATEGY_ISOLATE,
    "numactl": lc.GGML_NUMA_STRATEGY_NUMACTL,
}


class TensorBufferOverride(ctypes.Structure):
    """llama.cpp's ``llama_model_tensor_buft_override``."""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


_numa_done = False


def init_numa(settings: Settings) -> None:
    global _numa_done
    if settings.numa and not _numa_done:
        lc.llama_numa_init(NUMA[settings.numa])
        _numa_done = True


def placement_fields(settings: Settings) -> tuple[dict[str, Any], list[Any]]:
    """Model parameter values, and the native arrays they point into (keep them alive
    until the model is loaded). ``ValueError`` for a device or buffer type ggml lacks."""
    from llama_box_llamacpp.devices import loaded_ggml

    fields: dict[str, Any] = {
        "split_mode": SPLIT_MODES[settings.split_mode],
        "main_gpu": settings.main_gpu,
    }
    keep: list[Any] = []
    try:
        if settings.device:
            names = [n.strip() for n in settings.device.split(",") if n.strip()]
            handles = [] if names == ["none"] else [loaded_ggml().device_address(n) for n in names]
            devices = (ctypes.c_void_p * (len(handles) + 1))(*handles, None)
            keep.append(devices)
            fields["devices"] = ctypes.cast(devices, ctypes.c_void_p)
        if settings.tensor_split:
            parts = [float(p) for p in re.split(r"[,/]", settings.tensor_split) if p.strip()]
            if len(parts) > lc.llama_max_devices():
                raise GgmlError(f"-ts gives {len(parts)} parts; at most {lc.llama_max_devices()}")
            split = (ctypes.c_float * lc.llama_max_devices())(*parts)
            keep.append(split)
            fields["tensor_split"] = split
        if settings.override_tensor:
            overrides = _overrides(settings.override_tensor, loaded_ggml().buffer_type_addresses())
            keep.append(overrides)
            fields["tensor_buft_overrides"] = ctypes.cast(overrides, ctypes.c_void_p)
    except GgmlError as error:
        raise ValueError(str(error)) from error
    return fields, keep


def _overrides(specs: tuple[str, ...], buffer_types: dict[str, int]) -> Any:
    pairs = []
    for spec in (item for value in specs for item in value.split(",") if item.strip()):
        pattern, _, name = spec.partition("=")
        if not pattern or name not in buffer_types:
            raise GgmlError(
                f"-ot {spec!r}: want PATTERN=BUFFER_TYPE, buffer types: {', '.join(buffer_types)}"
            )
        pairs.append((pattern.encode(), buffer_types[name]))
    return (TensorBufferOverride * (len(pairs) + 1))(*pairs, (None, None))
