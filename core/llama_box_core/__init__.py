"""llama-box-core: the hook specs, value types, plugin manager and engine of llama-box.

Plugins depend on this distribution alone; it knows nothing of HTTP, the command line or
llama.cpp.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llama-box-core")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0"
