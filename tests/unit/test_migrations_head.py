"""`shared.db.HEAD` names the newest migration (migrate() trusts it to skip loading alembic)."""

from __future__ import annotations

from alembic.config import Config
from alembic.script import ScriptDirectory

from shared.db import HEAD, MIGRATIONS


def test_head_is_the_newest_migration() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD]
