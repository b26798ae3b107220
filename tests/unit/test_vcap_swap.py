"""The cf renderer's swap of VCAP_SERVICES values (svcctl.apply.vcap_swap) gives the very text of the slow way.

Every cf case under manifest_cases/, each rendered once more from its own output, and generated manifests
(several apps, quotes, spaces, comments after the value, long values) are rendered both ways and compared;
and the swap is shown to be taken where svcctl wrote the manifest, so a regression to the slow way shows.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from svcctl.apply import manifests
from svcctl.apply.manifests import BoundService, render_cf, vcap_services
from svcctl.apply.vcap_swap import Swap
from svcctl.secrets import Secret

CASES = Path(__file__).parent / "manifest_cases"


def _service(i: int, password: str = "pw", tag: str = "postgres") -> BoundService:
    return BoundService(
        binding_name=f"web-db{i}", instance=f"db{i}", engine="postgres", label="postgresql", plan="pg-small",
        tags=[tag], host="10.0.0.11", port=5432, database=f"db{i}", username=f"sv_web_db{i}_r0",
        password=Secret(password), role="readwrite",
    )  # fmt: skip


def _slow(text: str | None, app: str, services: list[BoundService]) -> str:
    vcap = json.dumps(vcap_services(services), sort_keys=True, separators=(",", ":")) if services else None
    return manifests._render_cf(text or "", app, vcap, "m.yml")


def _cases() -> list[tuple[str | None, str, list[BoundService]]]:
    out: list[tuple[str | None, str, list[BoundService]]] = []
    for folder in sorted(p for p in CASES.iterdir() if p.is_dir() and (p / "expected.yml").exists()):
        spec = json.loads((folder / "services.json").read_text())
        services = [BoundService(**{**s, "password": Secret(s["password"])}) for s in spec["services"]]
        given = next(iter(folder.glob("input.*")), None)
        text = given.read_text() if given else None
        out += [(text, spec["app"], services), ((folder / "expected.yml").read_text(), spec["app"], services)]
        out.append(((folder / "expected.yml").read_text(), spec["app"], []))
    return out


@pytest.mark.parametrize("index", range(len(_cases())))
def test_every_manifest_case_renders_as_the_slow_way(index: int) -> None:
    text, app, services = _cases()[index]
    assert render_cf(text, app, services) == _slow(text, app, services)


OTHER = (
    "  - name: api\n    env:\n      VCAP_SERVICES: '{\"a\":\"it''s\"}'\n",
    '  - name: api\n    env:\n      VCAP_SERVICES: \'{"a":"two words"}\'\n',
    "  - name: api\n    env:\n      VCAP_SERVICES: 'x'   # theirs\n",
    "  - name: api\n    env: {VCAP_SERVICES: 'x'}\n",
    "",
)
WEB = (
    "",
    "  - name: web\n",
    "  - name: web\n    env:\n      VCAP_SERVICES: 'old'\n      LOG: debug\n",
    "  - name: web\n    env:\n      VCAP_SERVICES: 'old'  # managed by svcctl\n",
    "  - name: web\n    env:\n      VCAP_SERVICES:   'old'\n# the end\n",
)
SERVICES: tuple[list[BoundService], ...] = (
    [],
    [_service(0)],
    [_service(i, password=f"p'w{i}") for i in range(3)],
    [_service(0, tag="two words")],
)


@pytest.mark.parametrize(("other", "web", "services"), list(itertools.product(OTHER, WEB, SERVICES)))
def test_generated_manifests_render_as_the_slow_way(other: str, web: str, services: list[BoundService]) -> None:
    for head in ("applications:\n", "---\napplications:\n"):
        text = head + other + web
        once = render_cf(text, "web", services)
        assert once == _slow(text, "web", services)
        assert render_cf(once, "web", services) == once  # and again, from what it wrote


@pytest.mark.parametrize("web", [WEB[0], WEB[2]])
def test_a_line_longer_than_the_emitters_width_renders_as_the_slow_way(web: str) -> None:
    services = [_service(i) for i in range(400)]  # a line of ~120 kB; the emitter's width is 65,536
    text = "applications:\n" + OTHER[0] + web
    once = render_cf(text, "web", services)
    assert len(once) > 100_000 and once == _slow(text, "web", services)
    assert render_cf(once, "web", services) == once == _slow(once, "web", services)


def test_the_swap_is_taken_for_a_manifest_svcctl_wrote(monkeypatch: pytest.MonkeyPatch) -> None:
    services = [_service(i) for i in range(50)]
    written = render_cf(None, "web", services)
    seen: list[str] = []
    real = manifests._render_cf

    def spy(text: str, app: str, vcap: str | None, source: str) -> str:
        seen.append(text)
        return real(text, app, vcap, source)

    monkeypatch.setattr(manifests, "_render_cf", spy)
    assert render_cf(written, "web", services) == written
    assert len(seen) == 1 and "binding_name" not in seen[0], "the VCAP_SERVICES JSON went through the YAML parser"


@pytest.mark.parametrize(
    ("rendered", "why"),
    [
        ("a: 'T'\nb: 'T'\n", "twice"),
        ("a: 'T'  # note\n", "a comment after it"),
        ("a: T\n", "unquoted"),
    ],
)
def test_a_token_out_of_place_refuses_the_swap(rendered: str, why: str) -> None:
    swap = Swap()
    key = swap.stand_in('{"a":1}')
    assert key is not None
    assert swap.back_into(rendered.replace("T", key)) is None, why


def test_values_that_could_be_folded_are_not_swapped() -> None:
    swap = Swap()
    assert swap.stand_in('{"a":"two words"}') is None
    assert swap.stand_in('{"a":"\\u00e9"}') is not None  # json's escapes are ASCII
    text: Any = f"a: '{swap.token}'\n"
    assert swap.out_of(text) is None  # a text that holds the token already
