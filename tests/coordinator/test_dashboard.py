"""The dashboard over plain HTTP (no browser): every page answers HTML for known ids and a 404
page for unknown ones, peer-supplied strings are escaped, and a played-out dispute is drawn down
to the step and chunk the API reports."""

import re

import httpx

from tests.coordinator.market import funded, tiny_spec_json

EVIL = '<script>alert("x")</script><b>bold</b>'


def _html(http: httpx.Client, path: str, status: int = 200) -> str:
    resp = http.get(path)
    assert resp.status_code == status, (path, resp.status_code, resp.text[:500])
    assert resp.headers["content-type"].startswith("text/html"), path
    return resp.text


def test_pages_answer_html_and_404_for_unknown_ids(server, make_client):
    submitter, verifier = funded(make_client), funded(make_client)
    verifier.register_verifier([EVIL], 100)
    job_id = submitter.submit_job(tiny_spec_json(), 1000, bidding_s=30).job_id
    with httpx.Client(base_url=server.url) as http:
        market = _html(http, "/")
        assert f'href="/jobs/{job_id}"' in market
        assert f'href="/accounts/{verifier.public_key}"' in market
        job = _html(http, f"/jobs/{job_id}")
        assert "job.submitted" in job and 'id="job-state">bidding<' in job
        account = _html(http, f"/accounts/{submitter.public_key}")
        assert "<td>faucet</td>" in account and "<td>job.submitted</td>" in account
        log = _html(http, "/log")
        assert 'id="check"' in log and "/v1/log/proof/consistency" in log
        css = http.get("/static/dashboard.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        for path in (
            "/jobs/" + "0" * 64,
            "/jobs/not-a-job",
            "/disputes/1",
            "/disputes/abc",
            "/disputes/99999999999999999999999",
            "/accounts/" + "f" * 64,
            "/accounts/<b>",
        ):
            assert "Not found" in _html(http, path, 404)

        paths = http.get("/openapi.json").json()["paths"]
        assert not any(p in paths for p in ("/", "/log", "/jobs/{job_id}"))


def test_peer_strings_are_escaped(server, make_client):
    """A verifier's profile label is free text chosen by a peer: the market shows it escaped."""
    verifier = funded(make_client)
    verifier.register_verifier([EVIL], 100)
    with httpx.Client(base_url=server.url) as http:
        market = _html(http, "/")
    assert EVIL not in market and "<script>alert" not in market and "<b>bold" not in market
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in market
    # the page's own scripts are the only ones
    assert len(re.findall(r"<script>", market)) == 1
