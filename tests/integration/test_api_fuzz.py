"""Schemathesis against the served OpenAPI document: whatever it sends, no answer is a 5xx and
every answer matches the document's status codes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from sqlalchemy import Engine

from shared import tokens
from shared.db import make_engine
from tests.api_support import TEA, ApiServer, seed_two_shops

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(pg_admin_url: str, pg_template: str) -> Iterator[tuple[ApiServer, str]]:
    from tests.conftest import fresh_database

    with fresh_database(pg_admin_url, pg_template) as url:
        engine: Engine = make_engine(url, pool_size=4)
        seed_two_shops(engine)
        with engine.begin() as conn:
            token = tokens.create(conn, name="fuzzer", shops=[TEA],
                                  rights=[r for r in tokens.RIGHTS], expires_in=None,
                                  operator="test").token
        try:
            with ApiServer(engine) as api:
                yield api, token
        finally:
            engine.dispose()


def test_no_input_makes_the_api_fail(served: tuple[ApiServer, str]) -> None:
    api, token = served
    schema = schemathesis.openapi.from_url(api.url + "/api/v1/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: schemathesis.Case) -> None:
            # The real shop in the path half of the time, so requests reach the handlers, not
            # only the tenancy check.
            if "shop_id" in (case.path_parameters or {}) and len(str(case.query)) % 2 == 0:
                case.path_parameters["shop_id"] = TEA
            response = case.call(base_url=api.url,
                                 headers={"Authorization": f"Bearer {token}"})
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {case.query!r}: "
                                f"{response.status_code} {response.text[:300]}")

        fuzz()
    assert operations >= 15
    assert failures == []
