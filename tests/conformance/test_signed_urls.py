"""Issue 13 item 8: a signed envd file URL whose expiration has passed answers E2B's own 401,
`{"code":401,"message":"signature is already expired"}` (E2B's SDK tests expect exactly this body).

The URLs come from the released SDK (`download_url`/`upload_url` with a negative expiration). With
`E2B_SANDBOX_URL` set they point at the shared sandbox URL, so the request carries the routing headers the
SDK itself would send to envd.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from e2b import AsyncSandbox, Sandbox

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]
EXPIRED = {"code": 401, "message": "signature is already expired"}


def _fetch(url: str, sandbox_id: str, method: str = "GET", **kwargs: object) -> httpx.Response:
    headers = {"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": "49983"}
    return httpx.request(method, url, headers=headers, trust_env=False, timeout=30, **kwargs)  # type: ignore[arg-type]


def test_expired_signed_urls_answer_e2bs_401_sync() -> None:
    sbx = Sandbox.create(timeout=120)
    try:
        sbx.files.write("/home/user/hello.txt", "hello world")
        valid = _fetch(sbx.download_url("/home/user/hello.txt", use_signature_expiration=60), sbx.sandbox_id)
        assert valid.status_code == 200 and valid.text == "hello world"

        expired = _fetch(sbx.download_url("/home/user/hello.txt", use_signature_expiration=-10), sbx.sandbox_id)
        assert (expired.status_code, expired.json()) == (401, EXPIRED)

        upload = sbx.upload_url("/home/user/late.txt", use_signature_expiration=-10)
        refused = _fetch(upload, sbx.sandbox_id, "POST", files={"file": ("late.txt", b"too late")})
        assert (refused.status_code, refused.json()) == (401, EXPIRED)
        assert not sbx.files.exists("/home/user/late.txt")
    finally:
        sbx.kill()


def test_expired_signed_url_answers_e2bs_401_async() -> None:
    async def scenario() -> httpx.Response:
        sbx = await AsyncSandbox.create(timeout=120)
        try:
            await sbx.files.write("/home/user/hello.txt", "hello world")
            url = sbx.download_url("/home/user/hello.txt", use_signature_expiration=-10)
            return await asyncio.to_thread(_fetch, url, sbx.sandbox_id)
        finally:
            await sbx.kill()

    expired = asyncio.run(scenario())
    assert (expired.status_code, expired.json()) == (401, EXPIRED)


def test_a_forged_signature_with_a_past_expiration_is_not_told_it_expired() -> None:
    """The signature is checked first: only the holder of a once-valid URL learns that it expired."""
    sbx = Sandbox.create(timeout=120)
    try:
        url = sbx.download_url("/home/user/x.txt", use_signature_expiration=-10)
        forged = httpx.URL(url).copy_set_param("signature", "v1_forged")
        answer = _fetch(str(forged), sbx.sandbox_id)
        assert answer.status_code == 401 and answer.json()["message"] != EXPIRED["message"]
    finally:
        sbx.kill()
