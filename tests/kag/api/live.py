"""Start `kag serve` as a real process on a free loopback port, for tests and the load benchmark."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """A `kag serve` process over its own data dir; the port comes in through `PORT`, as platforms set it."""

    def __init__(self, data_dir: Path, *, env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "KAG_DATA_DIR": str(data_dir),
            "PORT": str(self.port),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            **(env or {}),
        }
        self.env.pop("KAG_API_PORT", None)
        self.log = log or data_dir.parent / f"serve-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        #: the server process; subclasses may run another entry point over the same settings
        self.command = [sys.executable, "-m", "kag.cli", "serve", "--log-level", "warning"]

    def kag(self, *args: str) -> str:
        """Run a `kag` command against the same data dir; its stdout."""
        out = subprocess.run(
            [sys.executable, "-m", "kag.cli", *args], env=self.env, capture_output=True, text=True, timeout=120
        )
        if out.returncode != 0:
            raise RuntimeError(f"kag {' '.join(args)} failed: {out.stderr}")
        return out.stdout

    def create_key(self, name: str, role: str, *collections: str, default: str | None = None) -> str:
        args = ["keys", "create", name, "--role", role, "--json"]
        for c in collections or ("*",):
            args += ["-c", c]
        if default:
            args += ["--default-collection", default]
        return str(json.loads(self.kag(*args))["secret"])

    def start(self, timeout: float = 180) -> LiveServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kag serve exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"kag serve not ready in {timeout}s: {self.log.read_text()[-3000:]}")

    def terminate(self) -> None:
        """SIGTERM: the server drains and exits on its own."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 120) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def upload(url: str, key: str, collection: str, paths: list[Path]) -> dict[str, Any]:
    files = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]
    r = httpx.post(
        f"{url}/v1/collections/{collection}/documents",
        files=files,
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )
    r.raise_for_status()
    return dict(r.json())


def wait_job(url: str, key: str, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}, timeout=30).json()
        if job["status"] not in ("queued", "running"):
            return dict(job)
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s")
