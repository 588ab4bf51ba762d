"""API keys in the ledger (SQLite and PostgreSQL) and `kag keys` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kag.cli import app
from kag.errors import AuthenticationError, InvalidRequestError, NotFoundError
from kag.keys import KeyStore, Role, hash_secret
from kag.ledger import Ledger
from kag.ledger.models import ApiKeyRow


def test_create_authenticate_revoke(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    store = KeyStore(ledger)
    key, secret = store.create("hr-bot", "reader", ["hr", "legal"], default_collection="hr", rate_limit_per_minute=5)
    assert secret.startswith("kag_") and len(secret) > 40 and key.prefix == secret[:12]
    assert key.role is Role.READER and key.collections == ("hr", "legal") and key.default_collection == "hr"
    with ledger.session() as s:
        row = s.get(ApiKeyRow, key.id)
        assert row is not None and row.secret_hash == hash_secret(secret) and secret not in str(row.__dict__)
    assert store.authenticate(secret).id == key.id
    assert key.may_use("hr") and not key.may_use("eng")
    store.touch(key.id)
    assert store.get(key.id).last_used_at is not None
    with pytest.raises(AuthenticationError, match="unknown"):
        store.authenticate("kag_" + "x" * 43)
    with pytest.raises(AuthenticationError, match="malformed"):
        store.authenticate("Bearer nonsense")
    revoked = store.revoke(key.id)
    assert revoked.revoked and store.revoke(key.id).revoked_at == revoked.revoked_at
    with pytest.raises(AuthenticationError, match="revoked"):
        store.authenticate(secret)
    assert store.list() == [] and [k.id for k in store.list(include_revoked=True)] == [key.id]
    with pytest.raises(NotFoundError):
        store.revoke("k_missing")
    ledger.close()


def test_every_bad_key_spec_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}")
    store = KeyStore(ledger)
    for kwargs, match in [
        ({"name": "a", "role": "root", "collections": ["hr"]}, "unknown role"),
        ({"name": " ", "role": "reader", "collections": ["hr"]}, "needs a name"),
        ({"name": "a", "role": "reader", "collections": []}, "at least one collection"),
        ({"name": "a", "role": "reader", "collections": ["bad/name"]}, "invalid collection name"),
        ({"name": "a", "role": "reader", "collections": ["hr"], "default_collection": "eng"}, "not in the key's"),
        ({"name": "a", "role": "reader", "collections": ["hr"], "rate_limit_per_minute": -1}, "rate_limit"),
    ]:
        with pytest.raises(InvalidRequestError, match=match):
            store.create(**kwargs)
    assert store.list(include_revoked=True) == []
    all_key, _ = store.create("admin", Role.ADMIN, ["*"])
    assert all_key.all_collections and all_key.may_use("anything") and all_key.scope(["b", "a"]) == ["a", "b"]
    ledger.close()


def test_keys_cli_create_list_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"KAG_DATA_DIR": str(tmp_path / "data")}
    result = runner.invoke(app, ["keys", "create", "ops", "--role", "auditor", "-c", "hr", "--json"], env=env)
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert created["role"] == "auditor" and created["secret"].startswith("kag_")
    result = runner.invoke(app, ["keys", "create", "bad", "--role", "root"], env=env)
    assert result.exit_code == 1 and "Error: unknown role 'root'" in result.stderr
    plain = runner.invoke(app, ["keys", "create", "w", "--role", "writer", "-c", "hr"], env=env)
    assert plain.exit_code == 0 and plain.stdout.strip().startswith("kag_") and "not shown again" in plain.stderr
    listed = json.loads(runner.invoke(app, ["keys", "list", "--json"], env=env).stdout)
    assert {k["name"] for k in listed} == {"ops", "w"} and all("secret" not in k for k in listed)
    assert runner.invoke(app, ["keys", "revoke", created["id"]], env=env).exit_code == 0
    listed = json.loads(runner.invoke(app, ["keys", "list", "--json"], env=env).stdout)
    assert [k["name"] for k in listed] == ["w"]
    missing = runner.invoke(app, ["keys", "revoke", "k_nope"], env=env)
    assert missing.exit_code == 1 and "no API key with id k_nope" in missing.stderr
