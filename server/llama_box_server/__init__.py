"""llama-box-server: the OpenAI-compatible HTTP server and the ``llama-box`` command."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llama-box-server")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0"
