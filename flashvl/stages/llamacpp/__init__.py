"""The offline brain: a GGUF model run in-process by llama.cpp's own server (xllamacpp).

xllamacpp runs llama.cpp's C++ server inside this process: ``n_parallel`` slots with
continuous batching, prompt caching and JSON-schema constrained decoding. Its
``handle_chat_completions(body, callback)`` blocks the calling thread and calls
``callback(chunk_dict)`` for every OpenAI-style stream chunk; returning ``True``
from the callback ends the stream, and llama.cpp then cancels the task and frees
the slot. Each request therefore runs on a worker thread, its chunks are bridged
to the event loop with ``call_soon_threadsafe``, and closing the ``stream``
iterator sets a flag that the next callback returns.

``generate`` (nobody reads the pieces as they come) keeps the chunks on the worker
thread and hands them over once, at the end: no event-loop wake-up per token, so
the Python side takes no CPU from llama.cpp's threads while it decodes (on a
2-core machine that alone was ~5% of a short answer's latency).

Limit: the flag is seen only when the next chunk arrives, so a request that is
still waiting for a slot or processing its prompt stops after its first token.

llama.cpp's server also always listens on a loopback HTTP port (random unless
``http_port`` is set). It is locked with a random API key unless one is given;
``http_address``/``http_api_key`` expose both for benchmarks against the same engine.
"""

from flashvl.stages.llamacpp.stage import LlamaCppLanguageStage

__all__ = ["LlamaCppLanguageStage"]
