"""Fixtures: an in-memory Kubernetes API server (tests/kube_emulator.py) and clients for it.

* ``kube_emulator``: a fresh, started :class:`KubeEmulator` per test, closed after.
* ``kube_api_client``: a ``kubernetes.client.ApiClient`` for it (no token,
  5 s default request timeout).
* ``kube_client_factory``: ``make(token=None, timeout=5.0) -> ApiClient`` for
  auth tests; every client it made is closed after the test.

A server per test costs about a millisecond to start, so correctness (no state
leaking between tests) wins over a session-scoped server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.kube_emulator import KubeEmulator

DEFAULT_TIMEOUT = 5.0


def make_api_client(
    url: str, token: str | None = None, timeout: float | None = DEFAULT_TIMEOUT
) -> Any:
    """A real ``kubernetes.client.ApiClient`` for ``url`` whose requests
    default to ``timeout`` seconds (an explicit ``_request_timeout`` wins)."""
    from kubernetes import client

    configuration = client.Configuration(host=url)
    if token is not None:
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}

    class _TimeoutApiClient(client.ApiClient):
        def call_api(
            self,
            method,
            url,
            header_params=None,
            body=None,
            post_params=None,
            _request_timeout=None,
        ):
            return super().call_api(
                method,
                url,
                header_params,
                body,
                post_params,
                _request_timeout=_request_timeout or timeout,
            )

    return _TimeoutApiClient(configuration)


@pytest.fixture
def kube_emulator() -> Iterator[KubeEmulator]:
    emulator = KubeEmulator().start()
    try:
        yield emulator
    finally:
        emulator.close()


@pytest.fixture
def kube_client_factory(kube_emulator: KubeEmulator) -> Iterator[Callable[..., Any]]:
    made: list[Any] = []

    def make(token: str | None = None, timeout: float | None = DEFAULT_TIMEOUT) -> Any:
        api_client = make_api_client(kube_emulator.url, token, timeout)
        made.append(api_client)
        return api_client

    yield make
    for api_client in made:
        api_client.close()


@pytest.fixture
def kube_api_client(kube_client_factory: Callable[..., Any]) -> Any:
    return kube_client_factory()
