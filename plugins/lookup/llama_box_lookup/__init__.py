"""N-gram lookup speculation (``--lookup-ngram-min``): drafts come from what followed the
same few tokens earlier in the slot's context, and from llama.cpp's static and dynamic
lookup cache files (``-lcs``, ``-lcd``)."""
