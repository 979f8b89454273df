"""The hosts the settings name, the hosts file, and the routing order."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings
from services.breaker import Breaker
from services.errors import UpstreamUnavailableError
from services.lmstudio import Host, HostsFileError, HostSpec, LMStudioClient, host_specs
from services.lmstudio.hosts import load_hosts_file
from services.lmstudio.listing import ModelInfo
from services.lmstudio.routing import rank


def test_one_url_a_list_or_a_file(tmp_path: Path) -> None:
    assert host_specs("http://one:1234", [], None, "t") == [HostSpec("http://one:1234", "http://one:1234", "t")]
    urls = ["http://a:1234", "http://b:1234"]
    assert [s.name for s in host_specs("http://one:1234", urls, None, None)] == urls
    path = tmp_path / "hosts.yaml"
    path.write_text("hosts:\n  - {name: gpu, url: 'http://a:1234/v1/', weight: 3}\n  - url: http://b:1234\n")
    specs = host_specs("http://one:1234", [], str(path), "shared")
    assert specs == [
        HostSpec("gpu", "http://a:1234", "shared", 3.0),
        HostSpec("http://b:1234", "http://b:1234", "shared"),
    ]


def settings_from(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    """Settings read from these environment variables, as the gateway reads them."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


def test_settings_normalise_the_list_and_refuse_both_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(monkeypatch, LMSTUDIO_BASE_URLS="http://a:1234/v1, http://b:1234/")
    assert settings.lmstudio_base_urls == ["http://a:1234", "http://b:1234"]
    with pytest.raises(ValueError, match="the same URL is listed twice"):
        settings_from(monkeypatch, LMSTUDIO_BASE_URLS="http://a:1234,http://a:1234/v1")
    with pytest.raises(ValueError, match="must start with http"):
        settings_from(monkeypatch, LMSTUDIO_BASE_URLS="a:1234")
    with pytest.raises(ValueError, match="not both"):
        settings_from(monkeypatch, LMSTUDIO_BASE_URLS="http://a:1", LMSTUDIO_HOSTS_FILE="x")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hosts: []", 'a non-empty "hosts" list'),
        ("[1, 2]", 'a non-empty "hosts" list'),
        ("hosts:\n  - {name: a}", "entry 1 ('a'): field \"url\": Field required"),
        ("hosts:\n  - {url: 'http://a', weight: 0}", 'entry 1: field "weight": Input should be greater than 0'),
        ("hosts:\n  - {url: 'http://a', color: red}", 'entry 1: field "color": Extra inputs are not permitted'),
        ("hosts:\n  - {name: a, url: 'http://a'}\n  - {name: a, url: 'http://b'}", "'a' is used by another entry"),
        ("hosts:\n  - {url: 'http://a'}\n  - {url: 'http://a/v1'}", "'http://a' is listed twice"),
        ("hosts:\n  - {url: 'http://a', token: '${env:NOPE_NOT_SET}'}", "refers to an unset variable"),
        ("hosts: [ {url: 'http://a', token: 'sk-secret'", "not valid YAML or JSON at line"),
    ],
)
def test_a_broken_hosts_file_names_the_entry_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text(text)
    with pytest.raises(HostsFileError) as caught:
        load_hosts_file(path, environ={})
    assert message in str(caught.value)
    assert "sk-secret" not in str(caught.value)


def test_tokens_come_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text("hosts:\n  - {url: 'http://a', token: 'Bearer-less ${env:HOST_A_TOKEN}'}\n")
    assert load_hosts_file(path, environ={"HOST_A_TOKEN": "abc"})[0].token == "Bearer-less abc"


def host(name: str, models: dict[str, bool], *, weight: float = 1.0, breaker: Breaker | None = None) -> Host:
    client = LMStudioClient.create(f"http://{name}:1234", name=name, breaker=breaker)
    infos = {m: ModelInfo(m, "llm", loaded) for m, loaded in models.items()}
    return Host(HostSpec(name, f"http://{name}:1234", weight=weight), client, models=infos)


def names(hosts: list[Host]) -> list[str]:
    return [h.name for h in hosts]


def test_rank_loaded_first_then_available_and_never_hosts_without_the_model() -> None:
    a, b, c = host("a", {"m": False}), host("b", {"m": True}), host("c", {"other": True})
    assert names(rank([a, b, c], "m", 0.0)) == ["b", "a"]
    assert names(rank([a, b, c], "nowhere", 0.0)) == ["a", "b", "c"]  # no host lists it: every host is tried
    assert names(rank([c], "m", 0.0)) == ["c"]  # one host: always it


def test_rank_least_in_flight_per_weight_then_served() -> None:
    a, b = host("a", {"m": True}), host("b", {"m": True}, weight=2)
    assert names(rank([a, b], "m", 0.0)) == ["a", "b"]
    a.in_flight = 1
    assert names(rank([a, b], "m", 0.0)) == ["b", "a"]
    b.in_flight = 2  # 2 / weight 2 == 1 / 1: the one that served less
    a.served, b.served = 1.0, 0.5
    assert names(rank([a, b], "m", 0.0)) == ["b", "a"]


def test_rank_puts_failing_hosts_last() -> None:
    def unavailable(detail: str, wait: float) -> UpstreamUnavailableError:
        return UpstreamUnavailableError(detail, retry_after=wait)

    breaker = Breaker("x", failures=1, reset_s=60, counts=lambda e: True, unavailable=unavailable)
    breaker._inner.open()  # as a failed call opens it
    breaker._opened_at, breaker._tripped = 1e18, True
    a, b, c = host("a", {"m": True}, breaker=breaker), host("b", {"m": False}), host("c", {"m": True})
    c.down_until = 10.0
    assert names(rank([a, b, c], "m", now=5.0)) == ["b", "a", "c"]  # open breaker (a) and just-failed (c) last
    assert names(rank([a, b, c], "m", now=11.0)) == ["c", "b", "a"]
    c.reachable = False
    assert names(rank([a, b, c], "m", now=11.0)) == ["b", "a", "c"]
