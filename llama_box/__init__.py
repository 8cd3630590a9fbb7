"""llama-box: an OpenAI-compatible inference server for GGUF models, open to plugins."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llama-box")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
