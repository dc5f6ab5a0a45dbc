"""Opening the configured database, or the embedded one under the data dir.

Kept apart from `memberflow.runtime` (brokers, workers, HTTP) so that commands which only read
or write the database load only what that takes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from shared.config import Settings
from shared.embedded import EmbeddedDatabase


@contextlib.contextmanager
def open_database(settings: Settings) -> Iterator[tuple[str, bool]]:
    """The configured database URL, or an embedded server under the data dir.

    The embedded server is supervised (see `shared.supervise`): should this process die without
    stopping it, its watchdog (or the next start on the data dir) does. While `memberflow up`
    runs on the same data dir, its server is shared, not started again.
    """
    with embedded_or_configured(settings) as (url, db):
        yield url, db is not None


@contextlib.contextmanager
def embedded_or_configured(settings: Settings
                           ) -> Iterator[tuple[str, EmbeddedDatabase | None]]:
    url = settings.database_url_plain()
    if url:
        yield url, None
        return
    with EmbeddedDatabase(settings.data_dir / "pg", run_dir=settings.data_dir / "run") as db:
        yield db.create_database("memberflow"), db
