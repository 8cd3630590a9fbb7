"""llama-box plugin: the CPU backend."""
