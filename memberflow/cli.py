"""The `memberflow` command: run the pipeline, replay history, inspect and configure shops.

Each command's module is loaded only when that command runs (`--help` loads them all): a
command that asks the running API loads nothing of the database, brokers or web server.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from shared import logs
from shared.trouble import BrokerUnreachable, PortBusy


class _Commands(click.Group):
    """Subcommands named by "module:attribute", loaded on first use.

    Ordinary trouble outside memberflow (a port taken, no broker at the address given) ends any
    command with one clear line and a non-zero exit, not a traceback."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module, attribute = self.lazy[cmd_name].split(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command) and command.name == cmd_name, cmd_name
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (PortBusy, BrokerUnreachable) as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Commands, lazy={
    "up": "memberflow.cli_stack:up",
    "api": "memberflow.cli_stack:api",
    "worker": "memberflow.cli_stack:worker",
    "replay": "memberflow.cli_stack:replay_cmd",
    "run": "memberflow.cli_stack:run",
    "demo": "memberflow.cli_stack:demo",
    "config": "memberflow.cli_ops:config",
    "schema": "memberflow.cli_ops:schema",
    "levels": "memberflow.cli_tiers:levels",
    "tokens": "memberflow.cli_tokens:tokens_group",
    "orders": "memberflow.cli_orders:orders",
})
@click.option("-v", "--verbose", is_flag=True, help="log progress and worker activity")
def main(verbose: bool) -> None:
    """memberflow: member levels, tags, ABC classes and campaign effect from order streams."""
    logs.configure(verbose)


@main.group(cls=_Commands, lazy={
    "list": "memberflow.cli_read:members_list",
    "blacklist": "memberflow.cli_tiers:blacklist",
    "blacklisted": "memberflow.cli_read:blacklisted_list",
    "import": "memberflow.cli_members:members_import",
    "export": "memberflow.cli_members:members_export",
    "erase": "memberflow.cli_members:members_erase",
    "important": "memberflow.cli_tags:important",
})
def members() -> None:
    """Member records."""


@main.group(cls=_Commands, lazy={
    "abc-customers": "memberflow.cli_read:report_abc_customers",
    "abc-products": "memberflow.cli_tiers:report_abc_products",
    "campaign": "memberflow.cli_campaigns:report_campaign",
    "levels": "memberflow.cli_analysis:report_levels",
    "time": "memberflow.cli_analysis:report_time",
    "amounts": "memberflow.cli_analysis:report_amounts",
    "counts": "memberflow.cli_analysis:report_counts",
    "dormant": "memberflow.cli_analysis:report_dormant",
    "growth": "memberflow.cli_analysis:report_growth",
    "rfm": "memberflow.cli_analysis:report_rfm",
    "coupons": "memberflow.cli_analysis:report_coupons",
    "predicted": "memberflow.cli_analysis:report_predicted",
})
def report() -> None:
    """Reports: levels, time, amounts, counts, dormant members, growth and churn, RFM, coupon
    suggestion, predicted value, customer
    and product ABC, a campaign's effect."""



@main.group(cls=_Commands, lazy={
    "list": "memberflow.cli_read:tags_list",
    "add": "memberflow.cli_tags:tags_add",
    "move": "memberflow.cli_tags:tags_move",
    "remove": "memberflow.cli_tags:tags_remove",
    "preview": "memberflow.cli_tags:tags_preview",
    "history": "memberflow.cli_tags:tags_history",
})
def tags() -> None:
    """Tags: list them, tag members by hand, preview rules, explain a member's tags."""


@main.group(cls=_Commands, lazy={
    "list": "memberflow.cli_read:campaigns_list",
    "create": "memberflow.cli_campaigns:campaigns_create",
    "confirm": "memberflow.cli_campaigns:campaigns_confirm",
    "send": "memberflow.cli_campaigns:campaigns_send",
})
def campaigns() -> None:
    """Campaigns: define, confirm (record the audience), send; see `report campaign`."""



@main.group("dead-letters", cls=_Commands, lazy={
    "list": "memberflow.cli_read:dead_letters_list",
    "redrive": "memberflow.cli_ops:dead_letters_redrive",
})
def dead_letters() -> None:
    """Rejected events parked for an operator."""


if __name__ == "__main__":
    main()
