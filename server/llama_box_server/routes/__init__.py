"""HTTP routes, one module per API area; each is a built-in plugin (``llama_box_routes``)."""
