"""`bytecover serve`: the completion and fill-in-the-middle endpoints editor plugins already speak
(llama.cpp's ``/infill`` and ``/completion``, OpenAI's ``/v1/completions`` with ``suffix``), backed
by the exact byte-level model. See docs/serving.md.

One job per module, top to bottom:

``options``    command-line arguments and `Settings` (no web stack imported: `bytecover --help` stays fast)
``requests``   request bodies: parsing, validation, unsupported-field reports (`RequestError`)
``prompts``    how a request becomes a token context + a byte prompt (FIM layouts, sentinel parsing)
``stopping``   when a middle ends and what of it is shown (stop strings, sentinels, n_indent, suffix)
``worker``     the generation worker: one thread per request, pieces pushed to the event loop
``llama_api``  llama.cpp-shaped responses; ``openai_api``: OpenAI-shaped responses
``app``        the ASGI app: routes, auth, limits, errors; ``main``: load the model and run uvicorn
"""
