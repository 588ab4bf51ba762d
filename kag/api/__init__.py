"""The kag HTTP service (FastAPI): `create_app(settings, runtime=None)`; `kag serve` runs it."""

from kag.api.app import create_app

__all__ = ["create_app"]
