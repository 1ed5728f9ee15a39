import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from medvlp.knowledge.teachers import (AnswerCache, FakeTeacher, OpenAICompatTeacher, PrivacyError,
                                       TeacherStats, structure_with_teacher)
from medvlp.knowledge.ums import CXR_FINDINGS

FIND = ("cardiomegaly", "pleural_effusion")
GOOD = json.dumps({"findings": {"cardiomegaly": "present", "pleural_effusion": None}, "laterality": None})


class Server:
    """A real chat-completions server on 127.0.0.1 whose behaviour per request is scripted."""

    def __init__(self, script):
        self.script, self.requests = list(script), []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                self._send(200, json.dumps({"data": [{"id": "tiny-model"}]}).encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                kind = outer.script.pop(0) if outer.script else "good"
                if kind == "500":
                    return self._send(500, b"boom")
                if kind == "slow":
                    time.sleep(1.5)
                if kind == "400" and "response_format" in body:
                    return self._send(400, b'{"error": "response_format unsupported"}')
                content = {"good": GOOD, "slow": GOOD, "400": GOOD, "malformed": '{"findings": {"cardio'}[kind]
                self._send(200, json.dumps({"choices": [{"message": {"content": content}}]}).encode())

            def _send(self, code, data):
                try:
                    self.send_response(code)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(request):
    s = Server(request.param)
    yield s
    s.close()


def teacher(url, **kw):
    kw = {"timeout": 0.5, "max_retries": 1, "backoff": 0.01, **kw}
    return OpenAICompatTeacher(url, **kw)


@pytest.mark.parametrize("server", [["good"]], indirect=True)
def test_good_answer_uses_json_schema_and_model_listing(server):
    t = teacher(server.url)
    assert t.model == "tiny-model"
    rec = structure_with_teacher(t, "Cardiomegaly.", FIND)
    assert rec.states == {"cardiomegaly": "present", "pleural_effusion": None}
    assert server.requests[0]["response_format"]["type"] == "json_schema"


@pytest.mark.parametrize("server", [["malformed", "good"]], indirect=True)
def test_malformed_json_is_retried_with_the_error(server):
    stats = TeacherStats()
    rec = structure_with_teacher(teacher(server.url), "Cardiomegaly.", FIND, stats=stats)
    assert rec.verifier.passed and rec.provenance.attempts == 2 and stats.invalid == 1
    assert "malformed JSON" in server.requests[1]["messages"][0]["content"]


@pytest.mark.parametrize("server", [["500", "good"]], indirect=True)
def test_http_500_is_retried(server):
    rec = structure_with_teacher(teacher(server.url), "Cardiomegaly.", FIND)
    assert rec.verifier.passed and len(server.requests) == 2


@pytest.mark.parametrize("server", [["slow", "slow", "slow", "slow", "slow", "slow"]], indirect=True)
def test_timeouts_end_unanswerable_with_reason(server):
    stats = TeacherStats()
    rec = structure_with_teacher(teacher(server.url), "Cardiomegaly.", FIND, stats=stats, max_attempts=2)
    assert rec.verifier.passed is False and "timeout" in rec.verifier.reason
    assert all(v is None for v in rec.states.values()) and stats.transport_errors == 2


@pytest.mark.parametrize("server", [["slow"]], indirect=True)
def test_slow_server_within_timeout_succeeds(server):
    rec = structure_with_teacher(teacher(server.url, timeout=3.0), "Cardiomegaly.", FIND)
    assert rec.verifier.passed


@pytest.mark.parametrize("server", [["400"]], indirect=True)
def test_server_without_json_schema_support(server):
    rec = structure_with_teacher(teacher(server.url), "Cardiomegaly.", FIND)
    assert rec.verifier.passed and "response_format" not in server.requests[-1]


def test_remote_endpoint_refused_without_flag():
    with pytest.raises(PrivacyError, match="allow_remote=True"):
        OpenAICompatTeacher("https://api.openai.com/v1", "gpt-4o-mini")
    with pytest.raises(PrivacyError, match="not a loopback"):
        OpenAICompatTeacher("http://10.0.0.5:8000/v1", "m")


def test_invalid_answers_end_unanswerable_and_cache_makes_rerun_free(tmp_path):
    fake = FakeTeacher(["not json at all", '{"findings": {"cardiomegaly": "yes"}}'])
    with AnswerCache(tmp_path / "c.sqlite") as cache:
        rec = structure_with_teacher(fake, "Heart big.", FIND, cache=cache, max_attempts=2)
    assert rec.verifier.reason.startswith("no valid answer after 2 attempts")
    assert "findings keys wrong" in rec.verifier.reason
    assert len(fake.prompts) == 2
    fake2 = FakeTeacher(["should not be called"])
    with AnswerCache(tmp_path / "c.sqlite") as cache:
        rec2 = structure_with_teacher(fake2, "Heart big.", FIND, cache=cache, max_attempts=2)
        assert cache.hits == 2
    assert fake2.prompts == [] and rec2.verifier.reason == rec.verifier.reason


def test_fake_default_follows_the_labeler():
    rec = structure_with_teacher(FakeTeacher(), "Heart size is normal. No pleural effusion.", CXR_FINDINGS)
    assert rec.states["cardiomegaly"] == "absent" and rec.states["pleural_effusion"] == "absent"
