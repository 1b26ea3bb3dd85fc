"""The node hands envd tokens down to a runtime that needs them (microvm persistence), and its owner's /init
carries the sandbox's own token, which a restored sandbox's envd already holds (docs/persistence.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from sandhive.node.node import Node
from sandhive.node.request import Identity
from tests.unit.fakes import FakeEnvd, FakeRuntime, request


@dataclass
class HeaderEnvd(FakeEnvd):
    tokens: list[str | None] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/init":
            self.tokens.append(request.headers.get("x-access-token"))
        return super().handler(request)


class TokenRuntime(FakeRuntime):
    token_for = None


async def test_use_tokens_reaches_a_runtime_that_takes_them_and_skips_one_that_does_not() -> None:
    def tokens(sandbox_id: str) -> str:
        return f"token-{sandbox_id}"

    taking, plain = TokenRuntime(), FakeRuntime()
    for runtime in (taking, plain):
        node = Node(runtime, http=FakeEnvd().client())
        node.use_tokens(tokens)
        await node.close()
    assert taking.token_for is tokens
    assert not hasattr(plain, "token_for")


async def test_the_owners_init_carries_the_sandboxs_own_token() -> None:
    envd = HeaderEnvd()
    node = Node(FakeRuntime(), http=httpx.AsyncClient(transport=httpx.MockTransport(envd.handler)))
    try:
        handle = await node.create(request(), Identity(token_for=lambda sandbox_id: f"token-{sandbox_id}"))
    finally:
        await node.close()
    assert envd.tokens[-1] == f"token-{handle.sandbox_id}"
    assert envd.inits[handle.address][-1]["accessToken"] == f"token-{handle.sandbox_id}"
