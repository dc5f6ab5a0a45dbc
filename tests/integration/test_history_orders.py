"""Historic orders imported from a spreadsheet reach the members like live orders."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from memberflow.cli import main
from memberflow.runtime import Services, Stack
from shared.db import make_engine
from shared.metrics import Metrics
from tests.support import scalar
from tests.unit.test_orders_import import TAOBAO

pytestmark = pytest.mark.integration


def test_imported_orders_count_once_however_often_the_file_comes(stack: Stack,
                                                                  tmp_path: Path) -> None:
    engine = make_engine(stack.database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO members (shop_id, member_id) VALUES ('tea', 'x')")
    sheet = tmp_path / "orders.csv"
    sheet.write_text(TAOBAO, encoding="utf-8-sig")
    env = {"MEMBERFLOW_TOPIC_PREFIX": stack.settings.topic_prefix}
    where = ["--kafka", stack.bootstrap, "--database-url", stack.database_url]
    runner = CliRunner()
    first = runner.invoke(main, ["orders", "import", str(sheet), "--shop", "tea", *where],
                          env=env)
    assert first.exit_code == 0, first.output
    assert ("9 events (2 order.completed, 3 order.paid, 3 order.placed, 1 order.refunded)"
            in first.output)
    assert "9 new, 0 imported before, 0 refused" in first.output
    again = runner.invoke(main, ["orders", "import", str(sheet), "--shop", "tea", *where],
                          env=env)
    assert "0 new, 9 imported before" in again.output

    async def catch_up() -> None:
        services = Services(stack, ["tiering"], Metrics())
        await services.start()
        try:
            await services.wait_caught_up(deadline_s=90)
        finally:
            await services.close()
    asyncio.run(catch_up())
    spend = dict(engine.connect().exec_driver_sql(
        "SELECT member_id, spend_cents FROM members WHERE shop_id = 'tea' "
        "AND completed_trades > 0").all())
    assert spend == {"tb-ann": 9980, "tb-bob": 15000}     # 200.00 less a 50.00 refund
    assert scalar(engine, "SELECT count(*) FROM events WHERE event_id LIKE 'import:tea:%%'") == 9

    broken = tmp_path / "broken.csv"
    broken.write_text("order_id,member_id,amount,paid_at\nB1,m1,1.234,2026-03-01 10:00\n")
    refused = runner.invoke(main, ["orders", "import", str(broken), "--shop", "tea", *where],
                            env=env)
    assert refused.exit_code == 1 and "line 2, amount:" in refused.output
    engine.dispose()
