"""API upload jobs: stage 1 makes the documents searchable, stage 2 (the graph) runs in the background
and the job view counts its documents per graph status."""

from __future__ import annotations

import time
from typing import Any

from tests.kag.api.conftest import Api
from tests.kag.api.test_endpoints import wait_job


def test_an_upload_job_shows_its_graph_stage_and_the_graph_follows_in_the_background(api: Api) -> None:
    h = api.h("admin")
    c = api.client
    assert c.post("/v1/collections", json={"name": "stages"}, headers=h).status_code == 201
    files = [
        ("files", ("wren.md", b"# Wren\n\nThe Wren sensor is built by Northwind Robotics in Oslo.\n", "text/markdown")),
        ("files", ("kite.txt", b"The Kite drone uses the Wren sensor for mapping.\n", "text/plain")),
    ]
    job_id = c.post("/v1/collections/stages/documents", files=files, headers=h).json()["id"]
    job = wait_job(api, job_id, h)
    assert job["status"] == "completed" and job["documents_added"] == 2
    assert job["graph_pending"] + job["graph_done"] == 2 and job["graph_failed"] == 0
    assert job["stage"] in ("graph", "done")
    # searchable at once, whatever the graph has done yet
    hits = c.post("/v1/search", json={"query": "Who builds the Wren sensor?", "collections": ["stages"]}, headers=h)
    assert hits.status_code == 200 and hits.json()["results"]
    deadline = time.monotonic() + 120
    view: dict[str, Any] = job
    while view["stage"] != "done":
        assert time.monotonic() < deadline, view
        time.sleep(0.2)
        view = c.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert (view["graph_done"], view["graph_pending"], view["graph_failed"]) == (2, 0, 0)
    listed = next(j for j in c.get("/v1/jobs?collection=stages", headers=h).json()["jobs"] if j["id"] == job_id)
    assert listed["graph_done"] == 2 and listed["stage"] == "done"
    graph = c.post(
        "/v1/search",
        json={"query": "Who builds the Wren sensor?", "collections": ["stages"], "mode": "graph"},
        headers=h,
    )
    assert graph.status_code == 200 and graph.json()["results"]
    assert c.delete("/v1/collections/stages", headers=h).status_code == 200
