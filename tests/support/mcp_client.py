"""An MCP client written with the official Python SDK (`mcp`), driving `mofa mcp` over stdio.

    python mcp_client.py MOFA_BINARY NATS_URL [slow]

Prints one JSON object per line: the tool list, a good call, a call with bad arguments, a
call to a tool nobody serves; then {"waiting": ...} and, once the server announces that the
tool list changed, the new list. With `slow`: one call to the tool `slow` through a server
whose call timeout is 1 s, and its outcome.
"""

import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def emit(**fields):
    print(json.dumps(fields), flush=True)


def text_of(result):
    return "".join(getattr(block, "text", "") for block in result.content)


async def slow(binary, url):
    params = StdioServerParameters(command=binary, args=["mcp", "--nats", url, "--timeout", "1s"])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            loop = asyncio.get_running_loop()
            started = loop.time()
            result = await session.call_tool("slow", {})
            emit(call="slow", is_error=bool(result.is_error), text=text_of(result),
                 seconds=loop.time() - started)


async def main(binary, url):
    changed = asyncio.Event()

    async def on_message(message):
        inner = getattr(message, "root", message)
        method = getattr(inner, "method", None)
        if method == "notifications/tools/list_changed" or type(inner).__name__ == "ToolListChangedNotification":
            changed.set()

    params = StdioServerParameters(command=binary, args=["mcp", "--nats", url, "--timeout", "5s"])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write, message_handler=on_message) as session:
            await session.initialize()
            listed = await session.list_tools()
            emit(tools=[{"name": t.name, "description": t.description, "schema": t.input_schema}
                        for t in listed.tools])
            good = await session.call_tool("get_weather", {"city": "Paris"})
            emit(call="good", is_error=bool(good.is_error), text=text_of(good),
                 structured=good.structured_content)
            bad = await session.call_tool("get_weather", {"city": 7})
            emit(call="bad", is_error=bool(bad.is_error), text=text_of(bad))
            missing = await session.call_tool("no_such_tool", {})
            emit(call="missing", is_error=bool(missing.is_error), text=text_of(missing))
            emit(waiting="tools/list_changed")
            await asyncio.wait_for(changed.wait(), timeout=30)
            listed = await session.list_tools()
            emit(tools_after=[t.name for t in listed.tools])


if __name__ == "__main__":
    if sys.argv[3:] == ["slow"]:
        asyncio.run(slow(sys.argv[1], sys.argv[2]))
    else:
        asyncio.run(main(sys.argv[1], sys.argv[2]))
