"""Property-based fuzzing of a real server's API: hostile requests never break it.

The requests come from ``tools/hostile_requests.py`` (hypothesis strategies),
the same generator as ``bench/bench_hostile.py``'s longer run. Derandomized:
each run sends the same requests.
"""

from __future__ import annotations

import pytest
import requests
from hostile_requests import HostileRequest, hostile_requests, repeatable
from hypothesis import given

pytestmark = pytest.mark.slow

#: Requests per server: one without an API key (the fast path on the lean
#: transport), one with (LitServe's route), so twice this many in all.
EXAMPLES = 1000
#: Seconds any one answer may take.
REQUEST_TIMEOUT = 10


def send(session: requests.Session, server, request: HostileRequest) -> requests.Response:
    return session.post(
        f"{server.url}/predict",
        params=request.query,
        headers=request.headers,
        data=request.body,
        timeout=REQUEST_TIMEOUT,
    )


def check(server, request: HostileRequest, response: requests.Response) -> None:
    """No 5xx; a JSON answer or a JSON error with a message; 401 for a wrong key."""
    assert response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/json", response.text
    body = response.json()
    if response.status_code == 200:
        assert "label" in body
    else:
        assert body["detail"]
    if server.api_key is not None and not request.right_key:
        assert response.status_code == 401


def fuzz(server, samples: list[bytes]) -> int:
    """Send `EXAMPLES` hostile requests to ``server``; return how many were sent."""
    sent = 0
    with requests.Session() as session:

        @repeatable(EXAMPLES)
        @given(hostile_requests(samples, server.api_key))
        def one(request: HostileRequest) -> None:
            nonlocal sent
            sent += 1
            check(server, request, send(session, server, request))

        one()
    return sent


def test_hostile_requests_never_break_the_server(
    server, guarded_server, classifier, reference
) -> None:
    samples = [reference["Saturn"][0].read_bytes(), reference["Moon"][0].read_bytes()]
    data = samples[0]
    probabilities = classifier.predict(classifier.prepare(data)[None])[0]
    expected = classifier.classes[int(probabilities.argmax())]
    sent = 0
    for target in (server, guarded_server):
        sent += fuzz(target, samples)
        # Still alive, and still right.
        headers = {"Content-Type": "image/jpeg", **target.key_header}
        answer = requests.post(f"{target.url}/predict", data=data, headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["top_k"][0]["label"] == expected
        health = requests.get(f"{target.url}/health", headers=target.key_header, timeout=10)
        assert health.status_code == 200
        assert "Traceback" not in target.log_text()
    assert sent >= 2 * EXAMPLES
