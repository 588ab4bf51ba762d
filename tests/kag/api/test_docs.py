"""/docs (Swagger UI) and /redoc load every asset from the API itself: they work with no internet."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from tests.kag.api.conftest import Api


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "spec-url") and value:
                self.urls.append(value)


def page_urls(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize(("page", "script"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")])
def test_docs_pages_reference_only_local_assets_that_are_served(api: Api, page: str, script: str) -> None:
    r = api.client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "http://" not in r.text and "https://" not in r.text and "//cdn" not in r.text
    urls = page_urls(r.text)
    assert any(u.endswith(script) for u in urls), urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url  # same origin
        asset = api.client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 100, (url, asset.status_code)
    assert "/openapi.json" in urls or "url: '/openapi.json'" in r.text


def test_swagger_ui_asks_no_online_validator(api: Api) -> None:
    assert '"validatorUrl": null' in api.client.get("/docs").text
