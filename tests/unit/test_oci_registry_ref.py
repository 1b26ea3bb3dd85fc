"""`--template-registry HOST:PORT[/prefix]` and the names it makes (templates/oci_registry.py, templates/pull.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandhive.templates.oci_registry import RegistryError, TemplateRegistryRef
from sandhive.templates.pull import cache_entry


def test_a_registry_reference_names_each_template_under_its_prefix() -> None:
    ref = TemplateRegistryRef.parse("registry.internal:5000/team-a/sandhive")
    assert (ref.host, ref.prefix, ref.insecure) == ("registry.internal:5000", "team-a/sandhive", False)
    assert ref.reference("abc123") == "registry.internal:5000/team-a/sandhive/templates/abc123:latest"
    assert ref.api == "https://registry.internal:5000/v2/"
    bare = TemplateRegistryRef.parse("127.0.0.1:5000", insecure=True)
    assert bare.repository("abc") == "templates/abc" and bare.api == "http://127.0.0.1:5000/v2/"
    assert bare.tls_flag("dest") == ["--dest-tls-verify=false"] and ref.tls_flag("src") == []


@pytest.mark.parametrize("text", ["", "http://host:5000", "host:5000/UPPER", "host/../x", "host:5000/a b"])
def test_a_malformed_registry_reference_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        TemplateRegistryRef.parse(text)


@pytest.mark.parametrize("template_id", ["../base", "a/b", "Base", "x.y"])
def test_a_template_id_that_is_no_id_names_no_repository(template_id: str) -> None:
    with pytest.raises(ValueError):
        TemplateRegistryRef.parse("host:5000").repository(template_id)


def test_the_cache_is_addressed_by_sha256_digests_only(tmp_path: Path) -> None:
    digest = "sha256:" + "ab" * 32
    assert cache_entry(tmp_path, digest) == tmp_path / ("sha256-" + "ab" * 32)
    for bad in ("sha256:../../etc", "md5:" + "ab" * 16, "sha256:" + "AB" * 32, "sha256:" + "ab" * 31):
        with pytest.raises(RegistryError):
            cache_entry(tmp_path, bad)
