"""Every file in examples/ does what its comments say, on a fresh data dir."""

from __future__ import annotations

import json
from pathlib import Path

from memberflow.database import open_database
from shared import tokens
from shared.config import Settings
from shared.db import make_engine
from tests.api_support import ApiServer
from tests.e2e.test_cli import mf

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_examples_run(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "state")]

    def cli(*args: str) -> str:
        out = mf(*args, *data, cwd=tmp_path)
        assert out.returncode == 0, (args, out.stderr)
        return out.stdout

    assert sorted(p.name for p in EXAMPLES.iterdir()) == [
        "campaign.yaml", "customers.csv", "customers.xlsx", "events.jsonl", "policy.yaml",
        "shop.yaml"]
    assert mf("config", "check", str(EXAMPLES / "shop.yaml"), cwd=tmp_path).returncode == 0
    # Several shops at once: a folder of configuration files.
    shops = tmp_path / "shops"
    shops.mkdir()
    (shops / "demo.yaml").write_text((EXAMPLES / "shop.yaml").read_text(encoding="utf-8"),
                                     encoding="utf-8")
    (shops / "second.yaml").write_text("shop_id: second-shop\nname: 第二家店\n",
                                       encoding="utf-8")
    twice = mf("run", "--events", str(EXAMPLES / "events.jsonl"), "--config", str(shops),
               "--config", str(shops / "demo.yaml"), *data, cwd=tmp_path)
    assert twice.returncode != 0 and "shop demo-shop is configured twice" in twice.stderr
    ran = cli("run", "--events", str(EXAMPLES / "events.jsonl"), "--config", str(shops))
    assert "10 accepted, 0 rejected" in ran
    assert "shop second-shop: applied as version 1" in ran
    assert json.loads(cli("members", "list", "--shop", "second-shop", "--format", "json")) == []
    imported = cli("members", "import", str(EXAMPLES / "customers.csv"), "--shop", "demo-shop")
    assert ("3 rows from customers.csv: 0 members created, 3 with personal data changed, "
            "0 regions set, 2 levels set, 2 tags added") in imported
    imported = cli("members", "import", str(EXAMPLES / "customers.xlsx"), "--shop", "demo-shop")
    assert "2 rows from customers.xlsx: 2 members created" in imported
    members = {m["member_id"]: m for m in json.loads(cli(
        "members", "list", "--shop", "demo-shop", "--format", "json"))}
    assert set(members) == {f"tb-buyer-00{i}" for i in range(1, 6)}
    assert members["tb-buyer-002"]["spend"] == "599.00"      # 699.00 completed, 100.00 refunded
    assert "vip-care" in members["tb-buyer-001"]["tags"]
    preview = json.loads(cli("levels", "preview", "--shop", "demo-shop", "--policy",
                             str(EXAMPLES / "policy.yaml"), "--format", "json"))
    assert preview["members"] == 5
    created = cli("campaigns", "create", str(EXAMPLES / "campaign.yaml"), "--shop", "demo-shop")
    assert "big-spender-thanks" in created

    # The same state through the API: the reports an operator reads.
    with open_database(Settings(data_dir=tmp_path / "state")) as (url, _):
        engine = make_engine(url, pool_size=2)
        try:
            with engine.begin() as conn:
                token = tokens.create(conn, name="analyst", shops=["demo-shop"],
                                      rights=["read"], expires_in=None, operator="test").token
            with ApiServer(engine) as api:
                customers = api.call("GET", "/api/v1/shops/demo-shop/reports/abc-customers",
                                     token=token)
                assert customers.status == 200, customers
                assert customers.json["ranked_members"] == 3
                products = api.call("GET", "/api/v1/shops/demo-shop/reports/abc-products"
                                    "?from=2026-11-01&to=2026-11-30", token=token)
                assert products.status == 200, products
                assert {i["sku"] for i in products.json["items"]} == {"SKU-0001", "SKU-0002",
                                                                      "SKU-0003"}
                wrong = api.call("GET", "/api/v1/shops/demo-shop/reports/abc-products"
                                 "?from=2026-11-30&to=2026-11-01", token=token)
                assert wrong.status == 422
                # ... and in the console, signed in with the same token.
                cookie = {"Cookie": f"mf_console={token}"}
                page = api.call("GET", "/console/shops/demo-shop/reports", headers=cookie)
                assert page.status == 200 and "Customer ABC" in page.text
                assert "SKU-0002" in page.text
                chart = api.call("GET", "/console/shops/demo-shop/reports/pareto.png",
                                 headers=cookie)
                assert chart.raw[:8] == b"\x89PNG\r\n\x1a\n"
        finally:
            engine.dispose()
