"""Deploy to the Space: right folder, one upload, bounded wait for the right version. No network."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from nbops import deploy
from nbops.deploy import DeployError

NAME = "drug-classifier"


def space_folder(tmp_path, version="4", name=NAME, where="champion"):
    folder = tmp_path / "space"
    (folder / where).mkdir(parents=True)
    (folder / "README.md").write_text("---\nsdk: docker\n---\n")
    (folder / where / "model_card.json").write_text(json.dumps({"name": name, "version": version}))
    return folder


class FakeApi:
    def __init__(self, error=None):
        self.calls = []
        self.error = error

    def upload_folder(self, **kw):
        self.calls.append(kw)
        if self.error:
            raise self.error
        return SimpleNamespace(commit_url="https://huggingface.co/spaces/acme/drugs/commit/abc")


class FakeClock:
    """time.monotonic and time.sleep that only move when the code sleeps."""

    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def answers(*responses):
    """A getter replaying (status, text) pairs or exceptions, recording the URLs asked."""
    asked = []
    queue = list(responses)

    def get(url):
        asked.append(url)
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item

    get.asked = asked
    return get


def run(folder, get, api=None, clock=None, **kw):
    clock = clock or FakeClock()
    return deploy.deploy(
        folder,
        "acme/drug_app.v2",
        NAME,
        "4",
        "hf_secret",
        commit="f" * 40,
        api=api or FakeApi(),
        get=get,
        sleep=clock.sleep,
        clock=clock.clock,
        say=lambda _: None,
        **kw,
    )


def test_uploads_the_folder_once_then_waits_until_the_space_serves_the_champion(tmp_path):
    folder = space_folder(tmp_path)
    api, clock = FakeApi(), FakeClock()
    get = answers(
        OSError("connection refused"),
        (503, ""),
        (200, json.dumps({"name": NAME, "version": "3"})),
        (200, json.dumps({"name": NAME, "version": "4"})),
    )
    done = run(folder, get, api, clock, interval_s=10, version_path="model_card.json")
    assert api.calls == [
        {
            "repo_id": "acme/drug_app.v2",
            "repo_type": "space",
            "folder_path": str(folder),
            "commit_message": f"Deploy {NAME} v4 (champion) from ffffffffffff",
            "ignore_patterns": deploy.UPLOAD_IGNORED,
        }
    ]
    assert get.asked == ["https://acme-drug-app-v2.hf.space/model_card.json"] * 4
    assert clock.sleeps == [10, 10, 10]
    assert done.seconds_to_live == 30 and done.version == "4"
    assert done.commit_url.endswith("/commit/abc")


def test_the_wait_is_bounded_and_says_what_it_last_saw(tmp_path):
    clock = FakeClock()
    get = answers((200, json.dumps({"version": "3"})))
    with pytest.raises(DeployError) as exc:
        run(
            space_folder(tmp_path),
            get,
            clock=clock,
            timeout_s=60,
            interval_s=15,
            version_path="model_card.json",
        )
    assert exc.value.problems == [
        f"https://acme-drug-app-v2.hf.space/model_card.json did not serve {NAME} v4 within 60s "
        "(5 checks; last: HTTP 200, serving v3)"
    ]
    assert clock.now == 60 and clock.sleeps == [15, 15, 15, 15]  # checks at 0, 15, 30, 45, 60 s


def test_a_page_naming_the_version_counts_as_an_answer(tmp_path):
    page = f"<html>… model {NAME} v4 (alias champion) …</html>"
    done = run(space_folder(tmp_path), answers((200, page)))  # default: the dashboard page
    assert done.url == "https://acme-drug-app-v2.hf.space/"
    assert done.seconds_to_live == 0


@pytest.mark.parametrize(
    "status, text, expected",
    [
        (200, '{"version": "12"}', "12"),
        (200, '{"version": 12}', "12"),
        (200, f"{NAME} v12 and {NAME} v120", "120"),
        (200, f"{NAME} v1x", None),
        (404, '{"version": "12"}', None),
        (200, "nothing here", None),
    ],
)
def test_served_version_reads_json_or_page_text(status, text, expected):
    assert deploy.served_version(status, text, NAME) == expected


def test_a_folder_exported_for_another_version_is_not_uploaded(tmp_path):
    api = FakeApi()
    with pytest.raises(DeployError, match=rf"names {NAME} v3 but the champion is {NAME} v4: rebuild"):
        run(space_folder(tmp_path, version="3"), answers((200, "")), api)
    assert api.calls == []


def test_a_folder_for_another_model_is_not_uploaded(tmp_path):
    with pytest.raises(DeployError, match=rf"names other v4 but the champion is {NAME} v4"):
        run(space_folder(tmp_path, name="other"), answers((200, "")))


def test_no_space_folder_says_make_space(tmp_path):
    with pytest.raises(DeployError, match=r"space: no Space folder: build it with `make space`"):
        run(tmp_path / "space", answers((200, "")))


def test_two_model_cards_are_ambiguous(tmp_path):
    folder = space_folder(tmp_path)
    (folder / "model_card.json").write_text("{}")
    with pytest.raises(DeployError, match="expected one model_card.json, found 2"):
        run(folder, answers((200, "")))


def test_missing_token_names_the_environment_and_uploads_nothing(tmp_path):
    api = FakeApi()
    with pytest.raises(
        DeployError, match="HF_TOKEN is not set: add it as a secret of the `production` environment"
    ):
        deploy.deploy(
            space_folder(tmp_path),
            "acme/drugs",
            NAME,
            "4",
            "",
            api=api,
            get=answers((200, "")),
            say=lambda _: None,
        )
    assert api.calls == []


def test_an_upload_error_is_one_line_without_the_token(tmp_path):
    api = FakeApi(
        error=OSError("401 Client Error: Unauthorized for url: https://huggingface.co/api/spaces\nmore")
    )
    with pytest.raises(DeployError) as exc:
        run(space_folder(tmp_path), answers((200, "")), api)
    assert exc.value.problems == [
        "upload to Space acme/drug_app.v2 failed: 401 Client Error: Unauthorized for "
        "url: https://huggingface.co/api/spaces"
    ]
    assert "hf_secret" not in str(exc.value)


@pytest.mark.parametrize("space_id", ["", "drugs", "acme/", "/drugs", "acme/drugs/x", "acme/dr ugs", "-a/b"])
def test_space_id_must_be_owner_slash_name(space_id):
    with pytest.raises(DeployError, match="Space id must look like 'owner/name'"):
        deploy.validate_space_id(space_id)


def test_resolve_champion_names_the_model_when_there_is_none():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    class Client:
        def get_model_version_by_alias(self, name, alias):
            raise MlflowException("no alias", error_code=RESOURCE_DOES_NOT_EXIST)

    with pytest.raises(DeployError, match=f"registered model '{NAME}' has no champion: nothing to deploy"):
        deploy.resolve_champion(NAME, Client())


def test_resolve_champion_returns_the_alias_version():
    class Client:
        def get_model_version_by_alias(self, name, alias):
            assert (name, alias) == (NAME, "champion")
            return SimpleNamespace(version=7)

    assert deploy.resolve_champion(NAME, Client()) == "7"


def test_polling_refuses_plain_http_to_remote_hosts():
    with pytest.raises(DeployError, match="https only"):
        deploy.wait_for_version("http://example.org/x", "1", NAME, get=answers((200, "")))


def test_http_get_reads_status_and_body_from_a_loopback_server():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            code = 200 if self.path == "/model_card.json" else 503
            body = json.dumps({"version": "4"}).encode() if code == 200 else b"building"
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        assert deploy.http_get(f"{base}/model_card.json") == (200, '{"version": "4"}')
        assert deploy.http_get(f"{base}/other")[0] == 503
        assert (
            deploy.wait_for_version(
                f"{base}/model_card.json", "4", NAME, timeout_s=5, interval_s=1, say=lambda _: None
            )
            >= 0
        )
    finally:
        server.shutdown()
        server.server_close()
