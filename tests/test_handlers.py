"""The HTTP layer in front of a real service (an offline upstream, a store with cached
repositories and tags), through aiohttp's test client: `n`/`last` pagination of
`_catalog` and `tags/list` gives a correct page or PAGINATION_NUMBER_INVALID, never 500."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mirror import config as config_module
from mirror.cache.store import ContentStore, TagRecord
from mirror.proxy.app import create_app
from mirror.reference import OCI_MANIFEST, Digest, Repository

PREFIX = "up.test"
REPOSITORIES = [f"team{t}/tool-{n}" for t in range(3) for n in range(4)]
TAGS = sorted(["1.0", "1.1", "2.0", "latest", "v3", "v10", "z", "_x", "A", "0"])
TAGGED = "team1/tool-2"
DIGEST = Digest("ab" * 32)


class _App:
    """The real application on a private event loop, for synchronous property tests."""

    def __init__(self, config: config_module.Config) -> None:
        self._runner = asyncio.Runner()
        self._client = self._runner.run(self._start(config))

    @staticmethod
    async def _start(config: config_module.Config) -> TestClient:
        client = TestClient(TestServer(create_app(config)))
        await client.start_server()
        return client

    def get(self, path: str, query: dict[str, str]) -> tuple[int, dict, str | None]:
        async def fetch() -> tuple[int, dict, str | None]:
            async with self._client.get(path, params=query) as response:
                return response.status, await response.json(), response.headers.get("Link")

        return self._runner.run(fetch())

    def close(self) -> None:
        self._runner.run(self._client.close())
        self._runner.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("pages")
    store = ContentStore(root / "cache")
    for name in REPOSITORIES:
        store.link_manifest(Repository(PREFIX, name), DIGEST, OCI_MANIFEST)
    for tag in TAGS:
        store.write_tag(Repository(PREFIX, TAGGED), tag, TagRecord(DIGEST, OCI_MANIFEST, 0.0))
    upstream = {"url": "http://127.0.0.1:9", "prefix": PREFIX, "default": True, "mode": "offline"}
    config = config_module.load(
        None,
        {
            "cache": {"root": str(root / "cache"), "index_dir": str(root / "index")},
            "upstreams": {"up": upstream},
        },
    )
    running = _App(config)
    yield running
    running.close()


def _expected_page(items: list[str], query: dict[str, str]) -> tuple[list[str], bool] | None:
    """The spec's page for `query`, and whether more follow; None: n is not a number."""
    after = [item for item in items if "last" not in query or item > query["last"]]
    if "n" not in query:
        return after, False
    if not re.fullmatch(r"[0-9]{1,4300}", query["n"]):
        return None
    count = int(query["n"])
    return after[:count], 0 < count < len(after)


def _check_page(app: _App, path: str, key: str, items: list[str], query: dict[str, str]):
    status, body, link = app.get(path, query)
    expected = _expected_page(items, query)
    if expected is None:
        assert status == 400, body
        assert body["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"
        return None
    page, more = expected
    assert status == 200, body
    assert body[key] == page
    assert (link is not None) == more, link
    return link


TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)  # sendable as UTF-8
NUMBERS = (
    st.integers(0, 2**70).map(str)
    | st.text(st.characters(categories=["Nd"]), min_size=1, max_size=2)  # any script's digits
    | st.sampled_from(["", "-1", "+3", " 3", "3 ", "1_0"])
)
QUERIES = st.fixed_dictionaries(
    {}, optional={"n": NUMBERS | TEXT, "last": st.sampled_from(TAGS + REPOSITORIES) | TEXT}
)
PAGES = settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PAGES
@given(QUERIES)
@example({"n": "+3"})  # found by hypothesis: int() takes a sign, and gave a page
@example({"n": "٣"})  # int() reads any script's digits
@example({"n": "1_0"})  # and underscores between digits
@example({"n": " 3"})  # and spaces around them
def test_catalog_pages(app, query):
    repositories = [f"{PREFIX}/{name}" for name in sorted(REPOSITORIES)]
    _check_page(app, "/v2/_catalog", "repositories", repositories, query)


@PAGES
@given(QUERIES, st.sampled_from([{}, {"ns": PREFIX}]))
@example({"n": "٣"}, {})
def test_tags_list_pages(app, query, ns):
    _check_page(app, f"/v2/{TAGGED}/tags/list", "tags", TAGS, {**query, **ns})


@pytest.mark.parametrize("count", [1, 3, 9])
@pytest.mark.parametrize("ns", [{}, {"ns": PREFIX}])
def test_following_the_link_walks_every_tag_once(app, count, ns):
    """The Link of each page is the next page, with the request's `ns` kept (a containerd
    client lost its upstream on page two before)."""
    seen: list[str] = []
    path, query = f"/v2/{TAGGED}/tags/list", {"n": str(count), **ns}
    for _ in range(len(TAGS) + 1):
        status, body, link = app.get(path, query)
        assert status == 200 and body["name"] == TAGGED
        seen += body["tags"]
        if link is None:
            break
        target = re.fullmatch(r'<([^?>]+)\?([^>]*)>; rel="next"', link)
        assert target, link
        path = target[1]
        query = dict(part.split("=", 1) for part in target[2].split("&"))
        assert query.get("ns") == ns.get("ns")
    assert seen == TAGS
