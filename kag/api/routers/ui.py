"""The auditor review page: static HTML and vanilla JS served by the API; the page calls the API with the
auditor's key, which it keeps in sessionStorage for the tab's life."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse

router = APIRouter(tags=["ui"], include_in_schema=False)


def _page(name: str) -> str:
    return resources.files("kag.api").joinpath("static", name).read_text(encoding="utf-8")


@router.get("/ui", include_in_schema=False)
def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/audit")


@router.get("/ui/audit", response_class=HTMLResponse, include_in_schema=False)
def audit_page() -> HTMLResponse:
    return HTMLResponse(_page("audit.html"), headers={"Cache-Control": "no-store"})
