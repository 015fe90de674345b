"""The client's own tools on the llama.cpp brain: an answer that may be calls of the tools the request
defined (``Generation.tool_calls``), read from llama.cpp's parsed calls or from text the model wrote."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import replace

from flashvl.stages.base import ChatRequest, Generation, TextDelta
from flashvl.stages.client_tools import answered_before, forced, may_be_call, parse_text_calls, tool_names

Run = Callable[..., AsyncGenerator[TextDelta | Generation, None]]  # the stage's one llama.cpp request


async def with_client_tools(run: Run, request: ChatRequest, *, live: bool) -> AsyncIterator[TextDelta | Generation]:
    """An answer that may be calls of the client's tools (``Generation.tool_calls``).

    Calls llama.cpp parsed come as they are; a call the model wrote as text (plain or fenced JSON,
    Hermes tags) is read as one when it names a defined tool, so streamed text is held back while it
    could still be one. A model that only repeats a call whose result the conversation already has
    (small models do) is asked once more without the tools, to answer from the result.
    """
    names = tool_names(request.tools)
    attempts = [request]
    if not forced(request.tool_choice) and any(m.role == "tool" for m in request.messages):
        attempts.append(replace(request, tool_choice="none"))
    for attempt in attempts:
        held: list[TextDelta] = []
        passing = False  # the text is an answer, not a call: pieces go out as they come
        final: Generation | None = None
        async with aclosing(run(attempt, live=live)) as events:
            async for event in events:
                if isinstance(event, Generation):
                    final = event
                elif passing or event.kind == "thinking":
                    yield event
                else:
                    held.append(event)
                    if not may_be_call("".join(d.text for d in held)):
                        passing = True
                        for delta in held:
                            yield delta
                        held = []
        assert final is not None
        calls = final.tool_calls
        if not calls and not passing and final.finish_reason != "length":
            calls = parse_text_calls(final.text, names)
            if calls:
                final.text = ""
        if calls and not passing and attempt is not attempts[-1] and answered_before(calls, request.messages):
            continue
        if calls and request.parallel_tool_calls is False:
            calls = calls[:1]
        if calls:
            final.tool_calls, final.finish_reason = calls, "tool_calls"
        else:
            final.tool_calls = None
            for delta in held:
                yield delta
        yield final
        return
