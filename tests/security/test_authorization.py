"""Authorization per route, against a real ``flashvl serve`` process (vision stage only, no job worker).

Scopes: an ``infer`` key cannot submit batch jobs or read the review queue; a job belongs to the key
that submitted it (another key gets 404, ``admin`` sees it); reviewers resolve items and the item
records who did. One key is made with ``flashvl keys new ... --append-to FILE`` and served from that
file, as the README tells an operator to do.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flashvl.cli import main as flashvl_main
from flashvl.config import Settings
from flashvl.pipeline.review.sqlite import SqliteReviewStore
from flashvl.security.auth import Authenticator, AuthError, hash_key, new_key
from tests.servers import start_server, stop_server

INFER, BATCH_A, BATCH_B, REVIEWER, ADMIN = (new_key() for _ in range(5))
ENTRIES = [
    f"app:infer:{hash_key(INFER)}",
    f"team-a:batch:{hash_key(BATCH_A)}",
    f"team-b:batch:{hash_key(BATCH_B)}",
    f"alice:review:{hash_key(REVIEWER)}",
    f"ops:admin:{hash_key(ADMIN)}",
]
JSONL = b'{"image": "file:///nowhere/a.png", "key": "a"}\n{"image": "file:///nowhere/b.png", "key": "b"}\n'


class Server:
    def __init__(self, base: str, made_key: str, keys_file: Path, review_id: str) -> None:
        self.base, self.made_key, self.keys_file, self.review_id = base, made_key, keys_file, review_id

    def call(self, method: str, path: str, key: str | None, **kwargs: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.request(method, self.base + path, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("authz")
    keys_file = folder / "api-keys"
    command = ["keys", "new", "made", "--scopes", "infer,batch", "--append-to", str(keys_file)]
    made = subprocess.run(
        [sys.executable, "-m", "flashvl", *command],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    made_key = next(line.rsplit(" ", 1)[1] for line in made.stdout.splitlines() if line.startswith("key "))
    reviews = SqliteReviewStore(folder / "reviews.sqlite3")  # an answer flagged earlier, from key "app"
    item = reviews.add(
        question="How many dogs?",
        answer="Two dogs.",
        description="a cat on a sofa",
        reasons=["named_object: dog not seen"],
        image_sha256=["0" * 64],
        route="cascade",
        owner="key:app",
    )
    reviews.close()
    proc, base = start_server(
        [
            "--language",
            "none",
            "--api-keys",
            ",".join(ENTRIES),
            "--api-keys-file",
            str(keys_file),
            "--no-jobs-worker",  # jobs stay queued: this is about who sees them
            "--review-sqlite-path",
            str(folder / "reviews.sqlite3"),
            "--no-metrics-public",
        ],
        folder / "server.log",
    )
    yield Server(base, made_key, keys_file, item.id)
    stop_server(proc)


def _refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.json()["error"]["code"] == code


def test_each_key_reaches_only_its_scopes_routes(server: Server) -> None:
    s = server
    # An infer-only key: the model routes, not batch jobs, not other clients' flagged answers.
    assert s.call("GET", "/v1/models", INFER).status_code == 200
    assert s.call("GET", "/api/limits", INFER).status_code == 200
    _refused(s.call("POST", "/jobs?task=safety", INFER, content=JSONL), 403, "insufficient_scope")
    _refused(s.call("GET", "/jobs", INFER), 403, "insufficient_scope")
    _refused(s.call("GET", "/review", INFER), 403, "insufficient_scope")
    _refused(s.call("GET", f"/review/{s.review_id}", INFER), 403, "insufficient_scope")
    resolve = s.call("POST", f"/review/{s.review_id}/resolve", INFER, json={"verdict": "accept"})
    _refused(resolve, 403, "insufficient_scope")
    # A batch-only key: jobs, nothing else.
    assert s.call("GET", "/jobs", BATCH_A).status_code == 200
    _refused(s.call("GET", "/v1/models", BATCH_A), 403, "insufficient_scope")
    _refused(s.call("POST", "/infer", BATCH_A, json={}), 403, "insufficient_scope")
    _refused(s.call("GET", "/review", BATCH_A), 403, "insufficient_scope")
    # A reviewer: the review queue only.
    assert s.call("GET", "/review", REVIEWER).status_code == 200
    _refused(s.call("GET", "/jobs", REVIEWER), 403, "insufficient_scope")
    _refused(s.call("POST", "/moderate", REVIEWER, json={}), 403, "insufficient_scope")
    # /metrics is admin-only here (--no-metrics-public); admin implies every scope.
    _refused(s.call("GET", "/metrics", INFER), 403, "insufficient_scope")
    _refused(s.call("GET", "/metrics", None), 401, "unauthorized")
    for path in ("/metrics", "/v1/models", "/jobs", "/review", "/openapi.json", "/docs", "/redoc"):
        assert s.call("GET", path, ADMIN).status_code == 200, path
    assert "/jobs" in s.call("GET", "/openapi.json", INFER).json()["paths"]
    # No credential: refused by the gate, with a challenge, on every protected route.
    for method, path in [("POST", "/jobs"), ("GET", "/jobs"), ("GET", "/review"), ("GET", "/openapi.json")]:
        response = s.call(method, path, None)
        _refused(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_job_is_seen_only_by_its_submitter_and_admin(server: Server) -> None:
    s = server
    submitted = s.call("POST", "/jobs?task=safety&job_id=team-a-job", BATCH_A, content=JSONL)
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["total"] == 2
    assert s.call("POST", "/jobs?task=ocr&job_id=team-b-job", BATCH_B, content=JSONL).status_code == 202
    # The owner reads it.
    own = s.call("GET", "/jobs/team-a-job", BATCH_A)
    assert own.status_code == 200 and own.json()["owner"] == "key:team-a" and own.json()["queued"] == 2
    assert s.call("GET", "/jobs/team-a-job/results", BATCH_A).status_code == 200
    # Another key: exactly what a job id that does not exist gets (ids do not leak).
    missing = s.call("GET", "/jobs/no-such-job", BATCH_B)
    _refused(missing, 404, "job_not_found")
    for path in ("/jobs/team-a-job", "/jobs/team-a-job/results", "/jobs/team-a-job/results?format=csv"):
        _refused(s.call("GET", path, BATCH_B), 404, "job_not_found")
    # ... and cannot add items to it either (nor learn its task).
    taken = s.call("POST", "/jobs?task=ocr&job_id=team-a-job", BATCH_B, content=JSONL)
    _refused(taken, 409, "job_conflict")
    assert "safety" not in taken.text
    assert s.call("GET", "/jobs/team-a-job", BATCH_A).json()["total"] == 2
    # Listing: each key its own jobs, admin every job.
    assert [j["job_id"] for j in s.call("GET", "/jobs", BATCH_A).json()["jobs"]] == ["team-a-job"]
    assert [j["job_id"] for j in s.call("GET", "/jobs", BATCH_B).json()["jobs"]] == ["team-b-job"]
    everyone = {j["job_id"]: j["owner"] for j in s.call("GET", "/jobs", ADMIN).json()["jobs"]}
    assert everyone["team-a-job"] == "key:team-a" and everyone["team-b-job"] == "key:team-b"
    assert s.call("GET", "/jobs/team-a-job", ADMIN).status_code == 200
    assert s.call("GET", "/jobs/team-a-job/results", ADMIN).status_code == 200


def test_a_reviewer_resolves_and_the_item_says_who(server: Server) -> None:
    s = server
    listed = s.call("GET", "/review?status=all", REVIEWER).json()["items"]
    item = next(i for i in listed if i["id"] == s.review_id)
    assert item["owner"] == "key:app" and item["question"] == "How many dogs?" and item["resolved_by"] is None
    body = {"verdict": "corrected", "corrected_answer": "No dogs: a cat.", "note": "checked the image"}
    resolved = s.call("POST", f"/review/{s.review_id}/resolve", REVIEWER, json=body)
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["resolved_by"] == "key:alice" and resolved.json()["status"] == "resolved"
    again = s.call("GET", f"/review/{s.review_id}", ADMIN).json()
    assert again["resolved_by"] == "key:alice" and again["resolution"]["corrected_answer"] == "No dogs: a cat."


def test_a_key_made_by_flashvl_keys_new_works_on_the_server(server: Server) -> None:
    s = server
    assert s.made_key.startswith("fvl_")
    text = s.keys_file.read_text()
    assert s.made_key not in text and hash_key(s.made_key) in text and text.startswith("made:batch+infer:")
    assert stat.S_IMODE(s.keys_file.stat().st_mode) == 0o600
    assert s.call("GET", "/v1/models", s.made_key).status_code == 200
    submitted = s.call("POST", "/jobs?task=safety", s.made_key, content=JSONL)
    assert submitted.status_code == 202 and submitted.json()["job_id"].startswith("safety-")
    assert s.call("GET", f"/jobs/{submitted.json()['job_id']}", s.made_key).json()["owner"] == "key:made"
    _refused(s.call("GET", "/review", s.made_key), 403, "insufficient_scope")
    _refused(s.call("GET", "/v1/models", s.made_key[:-2] + "xx"), 401, "unauthorized")


def test_flashvl_keys_new_json_and_bad_scopes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert flashvl_main(["keys", "new", "rev", "--scopes", "review", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["scopes"] == ["review"] and made["entry"].startswith("rev:review:")
    principal = Authenticator(Settings(api_keys=[made["entry"]])).authenticate(f"Bearer {made['key']}", None)
    assert principal.name == "key:rev" and principal.has("review") and not principal.has("infer")
    with pytest.raises(AuthError):
        Authenticator(Settings(api_keys=[made["entry"]])).authenticate(f"Bearer {made['key']}x", None)
    assert flashvl_main(["keys", "new", "x", "--scopes", "infer,root"]) == 2
    assert "root" in capsys.readouterr().err
    assert flashvl_main(["keys", "new", "bad:name"]) == 2
    keys_file = tmp_path / "keys"
    assert flashvl_main(["keys", "new", "dup", "--append-to", str(keys_file)]) == 0
    assert flashvl_main(["keys", "new", "dup", "--append-to", str(keys_file)]) == 2  # names are unique
    assert len(keys_file.read_text().splitlines()) == 1
