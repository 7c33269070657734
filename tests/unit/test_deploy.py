"""Deploy to the Space: right folder, one upload, bounded wait for the right version. No network."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub.errors import EntryNotFoundError

from nbops.serve import deploy, space, space_wait
from nbops.serve.deploy import DeployError
from tests.conftest import REPO

NAME = "drug-classifier"
PARAMS = REPO / "params" / "smoke.yaml"


def space_folder(tmp_path, version="4", name=NAME, where="champion"):
    folder = tmp_path / "space"
    (folder / where).mkdir(parents=True)
    (folder / "README.md").write_text("---\nsdk: docker\n---\n")
    (folder / where / "model_card.json").write_text(json.dumps({"name": name, "version": version}))
    return folder


class FakeApi:
    """HfApi as the deploy uses it. The Space is at commit `head` holding a marker with
    `served_hash` (None: no marker); an upload makes commit `abc`; the runtime replays
    `runtimes` ((stage, sha) pairs, the last one repeating)."""

    def __init__(self, error=None, head="0ld", served_hash=None, runtimes=(("RUNNING", "abc"),)):
        self.calls = []  # uploads
        self.asked = []  # every other request
        self.error = error
        self.head = head
        self.served_hash = served_hash
        self.runtimes = list(runtimes)

    def space_info(self, repo_id):
        self.asked.append(("space_info", repo_id))
        return SimpleNamespace(sha=self.head)

    def hf_hub_download(self, repo_id, filename, repo_type, revision, local_dir):
        self.asked.append(("download", repo_id, filename, repo_type, revision))
        if self.served_hash is None:
            raise EntryNotFoundError(f"{filename} not found")
        path = Path(local_dir) / filename
        path.write_text(json.dumps({"model": "models:/x/4", "content_hash": self.served_hash}))
        return str(path)

    def upload_folder(self, **kw):
        self.calls.append(kw)
        if self.error:
            raise self.error
        return SimpleNamespace(commit_url="https://huggingface.co/spaces/acme/drugs/commit/abc", oid="abc")

    def get_space_runtime(self, repo_id):
        self.asked.append(("runtime", repo_id))
        stage, sha = self.runtimes.pop(0) if len(self.runtimes) > 1 else self.runtimes[0]
        if isinstance(stage, Exception):
            raise stage
        return SimpleNamespace(stage=stage, raw={"stage": stage, "sha": sha})


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
    assert space_wait.served_version(status, text, NAME) == expected


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
        space_wait.wait_for_version("http://example.org/x", "1", NAME, get=answers((200, "")))


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
        assert space_wait.http_get(f"{base}/model_card.json") == (200, '{"version": "4"}')
        assert space_wait.http_get(f"{base}/other")[0] == 503
        assert (
            space_wait.wait_for_version(
                f"{base}/model_card.json", "4", NAME, timeout_s=5, interval_s=1, say=lambda _: None
            )
            >= 0
        )
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------ no commit for the same content


def test_a_space_holding_the_same_content_gets_no_commit(tmp_path):
    folder = space_folder(tmp_path)
    api = FakeApi(head="f00d", served_hash=space.content_hash(folder), runtimes=[("RUNNING", "f00d")])
    done = run(folder, answers((200, f"{NAME} v4")), api)
    assert api.calls == []  # nothing uploaded, so no Space commit and no rebuild
    assert ("download", "acme/drug_app.v2", ".nbops-space", "space", "f00d") in api.asked
    assert done.commit_url is None and done.revision == "f00d"
    assert done.content_hash == space.content_hash(folder) and done.seconds_to_live == 0


def test_changed_content_is_uploaded_once(tmp_path):
    folder = space_folder(tmp_path)
    api = FakeApi(served_hash="0" * 64)
    done = run(folder, answers((200, f"{NAME} v4")), api)
    assert len(api.calls) == 1 and done.revision == "abc"
    (folder / "README.md").write_text("---\nsdk: docker\n---\nnew words\n")
    assert space.content_hash(folder) != done.content_hash


def test_a_space_without_marker_is_uploaded(tmp_path):
    api = FakeApi(served_hash=None)  # not made by `make space` yet
    run(space_folder(tmp_path), answers((200, f"{NAME} v4")), api)
    assert len(api.calls) == 1


# ------------------------------------------------------------------ wait for the new build, not the old one


def test_the_old_container_serving_the_same_version_is_not_taken_for_the_new_build(tmp_path):
    """A README push rebuilds the Space with the same champion: the old container answers
    `v4` all along, so only the runtime running the new commit says the deploy is live."""
    clock = FakeClock()
    api = FakeApi(
        runtimes=[
            ("RUNNING", "0ld"),  # the Hub has not picked the commit up yet
            ("RUNNING_BUILDING", "abc"),  # old container still up, new image building
            ("RUNTIME_ERROR", "0ld"),  # the old one's trouble is not this deploy's
            ("APP_STARTING", "abc"),
            ("RUNNING", "abc"),
        ]
    )
    get = answers((200, f"<html>{NAME} v4</html>"))
    done = run(space_folder(tmp_path), get, api, clock, interval_s=10)
    assert done.seconds_to_live == 40  # v4 from the old container was not taken for the new build
    assert len(get.asked) == 5  # asked all along: a request wakes a sleeping Space
    assert [a for a in api.asked if a[0] == "runtime"] == [("runtime", "acme/drug_app.v2")] * 5


def test_a_build_error_on_the_new_commit_stops_the_wait_at_once(tmp_path):
    clock = FakeClock()
    api = FakeApi(runtimes=[("BUILDING", "abc"), ("BUILD_ERROR", "abc")])
    with pytest.raises(DeployError) as exc:
        run(space_folder(tmp_path), answers((200, "")), api, clock, interval_s=10)
    assert exc.value.problems == [
        "Space acme/drug_app.v2 stopped at BUILD_ERROR on commit abc: "
        "see its logs at https://huggingface.co/spaces/acme/drug_app.v2?logs=build"
    ]
    assert clock.now == 10


def test_a_paused_space_is_named_not_waited_for(tmp_path):
    with pytest.raises(DeployError, match=r"acme/drug_app.v2 is PAUSED: restart it in its settings"):
        run(space_folder(tmp_path), answers((200, "")), FakeApi(runtimes=[("PAUSED", "0ld")]))


def test_a_runtime_that_never_runs_the_commit_times_out_saying_so(tmp_path):
    with pytest.raises(DeployError) as exc:
        run(
            space_folder(tmp_path),
            answers((200, f"{NAME} v4")),
            FakeApi(runtimes=[("RUNNING", "0ld")]),
            timeout_s=30,
            interval_s=15,
        )
    assert exc.value.problems[0].endswith(
        "(3 checks; last: still running commit 0ld, not abc; HTTP 200, serving v4)"
    )


def test_a_hub_hiccup_while_polling_the_runtime_is_retried(tmp_path):
    import httpx2

    api = FakeApi(runtimes=[(httpx2.ReadTimeout("timed out"), None), ("RUNNING", "abc")])
    done = run(space_folder(tmp_path), answers((200, f"{NAME} v4")), api, interval_s=5)
    assert done.seconds_to_live == 5


# ------------------------------------------------------------------ a private Space, a network failure


def test_the_page_is_polled_with_the_token(tmp_path, monkeypatch):
    seen = []

    def http_get(url, timeout=15.0, token=None):
        seen.append((url, token))
        return 200, f"{NAME} v4"

    monkeypatch.setattr(deploy, "http_get", http_get)
    deploy.deploy(
        space_folder(tmp_path), "acme/drugs", NAME, "4", "hf_secret", api=FakeApi(), say=lambda _: None
    )
    assert seen == [("https://acme-drugs.hf.space/", "hf_secret")]


@pytest.mark.parametrize(
    "error",
    ["httpx.ConnectError", "httpx2.ConnectError", "httpx2.ReadTimeout", "OSError"],
)
def test_a_network_failure_is_one_line_and_exit_1_not_a_traceback(tmp_path, monkeypatch, capsys, error):
    import importlib

    import huggingface_hub

    from nbops.ml import tracking

    module, _, name = error.rpartition(".")
    cls = getattr(importlib.import_module(module), name) if module else OSError
    api = FakeApi()

    def unreachable(repo_id):
        raise cls("[Errno -3] Temporary failure in name resolution")

    api.space_info = unreachable
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token: api)
    monkeypatch.setattr(tracking, "configure_tracking", lambda root: "sqlite:///unused")
    monkeypatch.setattr(deploy, "resolve_champion", lambda name: "4")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    folder = space_folder(tmp_path)
    code = deploy.main(["--params", str(PARAMS), "--space-dir", str(folder), "--space-id", "acme/drugs"])
    assert code == 1
    assert capsys.readouterr().err == (
        "error: reading Space acme/drugs failed: [Errno -3] Temporary failure in name resolution\n"
    )


def test_the_commit_message_names_the_commit_the_run_tested_not_mains_head(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    from nbops.ml import tracking

    api = FakeApi()
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token: api)
    monkeypatch.setattr(tracking, "configure_tracking", lambda root: "sqlite:///unused")
    monkeypatch.setattr(deploy, "resolve_champion", lambda name: "4")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("GITHUB_SHA", "b" * 40)  # main's head under workflow_run
    monkeypatch.setenv("HEAD_SHA", "a" * 40)
    folder = space_folder(tmp_path)
    args = ["--params", str(PARAMS), "--space-dir", str(folder), "--space-id", "acme/drugs", "--no-wait"]
    assert deploy.main(args) == 0
    assert api.calls[0]["commit_message"] == f"Deploy {NAME} v4 (champion) from aaaaaaaaaaaa"
    monkeypatch.delenv("HEAD_SHA")
    api.calls.clear()
    assert deploy.main(args) == 0
    assert api.calls[0]["commit_message"].endswith("from bbbbbbbbbbbb")


def test_http_get_sends_the_token_and_drops_it_on_a_redirect_to_another_host():
    heard = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            heard.append((self.headers["Host"].split(":")[0], self.path, self.headers.get("Authorization")))
            if self.path == "/away":  # another host name for the same server
                self.send_response(302)
                self.send_header("Location", f"http://localhost:{self.server.server_port}/landed")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b"ok"
            self.send_response(200)
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
        assert space_wait.http_get(f"{base}/page", token="hf_secret") == (200, "ok")
        assert space_wait.http_get(f"{base}/page") == (200, "ok")
        assert space_wait.http_get(f"{base}/away", token="hf_secret") == (200, "ok")  # localhost: 127.0.0.1
    finally:
        server.shutdown()
        server.server_close()
    assert heard[0] == ("127.0.0.1", "/page", "Bearer hf_secret")
    assert heard[1] == ("127.0.0.1", "/page", None)
    assert heard[2] == ("127.0.0.1", "/away", "Bearer hf_secret")
    assert heard[3] == ("localhost", "/landed", None)  # never the token to another host


def test_a_connection_error_during_the_upload_is_one_line(tmp_path):
    import httpx2

    api = FakeApi(error=httpx2.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(DeployError) as exc:
        run(space_folder(tmp_path), answers((200, "")), api)
    assert exc.value.problems == ["upload to Space acme/drug_app.v2 failed: [Errno 111] Connection refused"]
