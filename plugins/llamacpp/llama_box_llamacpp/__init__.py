"""llama-box plugin: GGUF text models on llama.cpp."""
