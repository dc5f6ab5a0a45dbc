"""Admin routes for running a shop: its configuration, manual tags, campaigns and their effect.

The same use cases as `memberflow config|tags|campaigns|report campaign`, behind the same
checks as every admin route (see `services.api.auth`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, Field, ValidationError

from memberflow.abc_report import BadPeriod, NoData, customer_abc, product_abc
from memberflow.campaign_report import NoCampaigns, campaign_report
from memberflow.configure import apply_shop_config
from services.api.admin import (
    MemberQuery,
    RequestRefused,
    in_transaction,
)
from services.api.auth import ID_PATTERN, TEXT_PATTERN, Admin, Reader, Writer
from services.campaigns import operations as campaign_ops
from services.campaigns.config import CampaignDefinition
from services.campaigns.operations import FileSender
from services.tagging import operations as tagging_ops
from services.tiering import operations as tiering_ops
from shared.audit import audit
from shared.filters import MemberFilter
from shared.shopconfig import ConfigError, ShopConfig, parse
from shared.shops import shop_configs

Id = Annotated[str, PathParam(pattern=ID_PATTERN)]
CONFIG_BODY = {"requestBody": {"required": True, "content": {
    "application/yaml": {"schema": {"type": "string"}},
    "application/json": {"schema": {"type": "object"}}}}}


class TagChange(BaseModel):
    reason: str = Field(min_length=1, max_length=500, pattern=TEXT_PATTERN)
    members: list[Annotated[str, Field(pattern=ID_PATTERN)]] = Field(
        default_factory=list, max_length=10_000)
    filter: MemberQuery | None = None
    everyone: bool = False
    dry_run: bool = Field(False, description="show what would change; change nothing")


class TagMove(TagChange):
    to: Annotated[str, Field(pattern=ID_PATTERN, description="the tag the members join")]


class RulePreview(BaseModel):
    when: str = Field(min_length=1, max_length=2000, pattern=TEXT_PATTERN,
                      examples=["spend >= 500 and trades >= 3"])


async def _yaml_body(request: Request) -> Any:
    """The body read as YAML (JSON is YAML too), or a 422 saying it is neither."""
    raw = await request.body()
    try:
        return yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RequestRefused("body: not YAML or JSON", [
            {"field": "body", "problem": str(exc)[:300]}]) from None


async def _config_body(request: Request, shop_id: str) -> ShopConfig:
    """A configuration from the body (YAML or JSON), for the path's shop; every problem named."""
    data = await _yaml_body(request)
    try:
        config = parse(data, "body")
    except ConfigError as exc:
        raise RequestRefused(f"{len(exc.problems)} problem(s) in the configuration", [
            {"field": p.split(":", 1)[0], "problem": p.split(":", 1)[-1].strip()}
            for p in exc.problems]) from None
    if config.shop_id != shop_id:
        raise RequestRefused("body.shop_id: names another shop", [
            {"field": "shop_id", "problem": f"is {config.shop_id!r}; this is shop {shop_id!r}"}])
    return config


def router() -> APIRouter:
    api = APIRouter(prefix="/api/v1")

    # --- configuration ---------------------------------------------------------------------

    @api.get("/shops/{shop_id}/config", tags=["configuration"])
    async def current_config(request: Request, access: Reader) -> dict[str, Any]:
        """The shop's configuration in force, with its version."""
        entry = await in_transaction(request, lambda conn: shop_configs(
            conn, [access.shop_id]).get(access.shop_id))
        if entry is None:
            raise HTTPException(404, f"shop {access.shop_id!r} has no configuration yet")
        return {"version": entry[0], "config": entry[1].model_dump(mode="json")}

    @api.get("/shops/{shop_id}/config/history", tags=["configuration"])
    async def config_history(request: Request, access: Reader) -> list[dict[str, Any]]:
        """Every applied version, newest first: who applied it and when."""
        def work(conn: Any) -> list[dict[str, Any]]:
            rows = conn.exec_driver_sql(
                "SELECT version, applied_by, applied_at, config FROM shop_config_history "
                "WHERE shop_id = %s ORDER BY version DESC", (access.shop_id,)).all()
            return [{"version": r.version, "applied_by": r.applied_by,
                     "applied_at": r.applied_at.isoformat(), "config": r.config} for r in rows]
        return await in_transaction(request, work)

    @api.post("/shops/{shop_id}/config/check", tags=["configuration"],
              openapi_extra=CONFIG_BODY)
    async def check_config(request: Request, access: Admin) -> dict[str, Any]:
        """Validate a configuration and say what applying it would change; applies nothing."""
        config = await _config_body(request, access.shop_id)
        outcomes = await in_transaction(request, lambda conn: tagging_ops.preview(conn, config))
        return {"valid": True, "tags": [o.__dict__ for o in outcomes]}

    @api.put("/shops/{shop_id}/config", tags=["configuration"], openapi_extra=CONFIG_BODY)
    async def apply_config(request: Request, access: Admin) -> dict[str, Any]:
        """Apply a configuration as the shop's next version (audited); the same one again is a
        no-op."""
        config = await _config_body(request, access.shop_id)
        topics = request.app.state.topics

        def work(conn: Any) -> Any:
            result = apply_shop_config(conn, topics, config, access.operator, datetime.now(UTC))
            if result.changed:
                audit(conn, access.shop_id, None, "config.apply", access.operator,
                      {"version": result.version})
            return result

        result = await in_transaction(request, work)
        return {"version": result.version, "changed": result.changed,
                "moved_up": result.moved_up, "tags": [o.__dict__ for o in result.tags],
                "campaigns": result.campaigns}

    # --- tags ------------------------------------------------------------------------------

    def tag_route(kind: str) -> Any:
        async def route(request: Request, access: Writer, tag_id: Id,
                        body: TagChange) -> dict[str, Any]:
            selection = (body.filter or MemberQuery()).selection(body.members)
            if selection == MemberFilter() and not body.everyone:
                raise HTTPException(422, "members: name the members, give a filter, or set "
                                         "everyone to true")
            topic = request.app.state.topics.tag_events
            now = datetime.now(UTC)

            def change(conn: Any) -> Any:
                if isinstance(body, TagMove):
                    return tagging_ops.move_to(conn, topic, access.shop_id, selection, tag_id,
                                               body.to, access.operator, body.reason, now)
                use = tagging_ops.remove if kind == "remove" else tagging_ops.add_to
                return use(conn, topic, access.shop_id, selection, tag_id, access.operator,
                           body.reason, now)

            def work(conn: Any) -> dict[str, Any]:
                result = change(conn)
                if result.missing:
                    raise RequestRefused("members: not in this shop; nothing was changed", [
                        {"field": "members", "problem": f"no member {m!r}"}
                        for m in result.missing[:50]])
                answer = {"selected": result.selected, "changed": result.changed,
                          "dry_run": body.dry_run}
                if body.dry_run:
                    raise _Rehearsed(answer)
                return answer

            try:
                return await in_transaction(request, work)
            except _Rehearsed as rehearsal:
                return rehearsal.answer
        return route

    api.add_api_route("/shops/{shop_id}/tags/{tag_id}/members", tag_route("add"),
                      methods=["POST"], tags=["tags"],
                      summary="Add to: the selected members gain the tag (audited)")
    api.add_api_route("/shops/{shop_id}/tags/{tag_id}/members", tag_route("remove"),
                      methods=["DELETE"], tags=["tags"],
                      summary="Take the tag from the selected members (audited)")

    async def move(request: Request, access: Writer, tag_id: Id,
                   body: TagMove) -> dict[str, Any]:
        """Move to (cut): the selected members holding the tag lose it and gain `to`
        (audited)."""
        handled: dict[str, Any] = await tag_route("move")(request, access, tag_id, body)
        return handled

    api.add_api_route("/shops/{shop_id}/tags/{tag_id}/move", move, methods=["POST"],
                      tags=["tags"], summary="Move to: from this tag to another (audited)")

    @api.get("/shops/{shop_id}/tags", tags=["tags"])
    async def tags_overview(request: Request, access: Reader) -> list[dict[str, Any]]:
        """The shop's tags: group, how each is applied, how many members hold it."""
        rows = await in_transaction(request, lambda conn: tagging_ops.overview(
            conn, access.shop_id))
        if rows is None:
            raise HTTPException(404, f"shop {access.shop_id!r} has no configuration yet")
        return rows

    @api.get("/shops/{shop_id}/levels", tags=["levels"])
    async def levels_overview(request: Request, access: Reader) -> list[dict[str, Any]]:
        """The ladder: each level's name, what earns it, its discount, members holding it."""
        return await in_transaction(request, lambda conn: tiering_ops.level_overview(
            conn, access.shop_id))

    @api.post("/shops/{shop_id}/tags/preview", tags=["tags"])
    async def preview_rule(request: Request, access: Reader, body: RulePreview
                           ) -> dict[str, Any]:
        """How many members a rule condition holds for now."""
        n = await in_transaction(request, lambda conn: tagging_ops.preview_rule(
            conn, access.shop_id, body.when))
        return {"when": body.when, "members": n}

    # --- reports ---------------------------------------------------------------------------

    @api.get("/shops/{shop_id}/reports/abc-customers", tags=["reports"])
    async def abc_customers(request: Request, access: Reader) -> dict[str, Any]:
        """Head-count ABC of members by spend over the rolling period."""
        try:
            return await in_transaction(request, lambda conn: customer_abc(
                conn, access.shop_id))
        except NoData as exc:
            raise HTTPException(404, str(exc)) from None

    @api.get("/shops/{shop_id}/reports/abc-products", tags=["reports"])
    async def abc_products(request: Request, access: Reader,
                           days: Annotated[int | None, Query(ge=1, le=3660)] = None,
                           first_day: Annotated[date | None, Query(alias="from")] = None,
                           last_day: Annotated[date | None, Query(alias="to")] = None
                           ) -> dict[str, Any]:
        """Revenue ABC of items sold in completed trades over a period (shop days with
        from/to, else the configured days up to the shop's clock)."""
        def work(conn: Any) -> dict[str, Any]:
            return product_abc(conn, access.shop_id, first_day, last_day, days).to_dict()

        try:
            return await in_transaction(request, work)
        except NoData as exc:
            raise HTTPException(404, str(exc)) from None
        except BadPeriod as exc:
            raise RequestRefused(str(exc), [{"field": "query", "problem": str(exc)}]) from None

    # --- campaigns -------------------------------------------------------------------------

    @api.get("/shops/{shop_id}/campaigns", tags=["campaigns"])
    async def campaigns(request: Request, access: Reader) -> list[dict[str, Any]]:
        """Campaigns: draft, confirmed, sent, or known only from the message history."""
        return await in_transaction(request, lambda conn: campaign_ops.listing(
            conn, access.shop_id))

    @api.post("/shops/{shop_id}/campaigns", tags=["campaigns"], openapi_extra=CONFIG_BODY)
    async def create_campaign(request: Request, access: Writer) -> dict[str, Any]:
        """Create (or, before it is confirmed, change) a campaign from its definition (YAML or
        JSON: the keys of `examples/campaign.yaml`); audited."""
        data = await _yaml_body(request)
        try:
            definition = CampaignDefinition.model_validate(data)
        except ValidationError as exc:
            raise RequestRefused(f"{len(exc.errors())} problem(s) in the campaign", [
                {"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]}
                for e in exc.errors()]) from None
        topic = request.app.state.topics.credit_events
        changed = await in_transaction(request, lambda conn: campaign_ops.create(
            conn, topic, access.shop_id, definition, "api", access.operator))
        return {"campaign_id": definition.id, "changed": changed, "status": "draft"}

    @api.post("/shops/{shop_id}/campaigns/{campaign_id}/confirm", tags=["campaigns"])
    async def confirm_campaign(request: Request, access: Writer, campaign_id: Id
                               ) -> dict[str, Any]:
        """Record the audience the target selects now, and freeze the campaign (audited)."""
        topic = request.app.state.topics.credit_events
        done = await in_transaction(request, lambda conn: campaign_ops.confirm(
            conn, topic, access.shop_id, campaign_id, access.operator, datetime.now(UTC)))
        return {"campaign_id": campaign_id, "status": "confirmed", "audience": done.audience}

    @api.post("/shops/{shop_id}/campaigns/{campaign_id}/send", tags=["campaigns"])
    async def send_campaign(request: Request, access: Writer, campaign_id: Id
                            ) -> dict[str, Any]:
        """Send a confirmed campaign to its audience on each of its channels (the file sender:
        one JSON-lines file per campaign for the delivering system) and record every message
        sent as an event (audited). A campaign is sent once, within its window."""
        outgoing = request.app.state.outgoing
        if outgoing is None:
            raise HTTPException(503, "this server has no message sender: send with "
                                     "`memberflow campaigns send`")
        sender = FileSender(outgoing)
        topics = request.app.state.topics
        sent = await in_transaction(request, lambda conn: campaign_ops.send(
            conn, topics, access.shop_id, campaign_id, sender, access.operator,
            datetime.now(UTC)))
        return {"campaign_id": campaign_id, "status": "sent", "messages": sent,
                "sender": sender.name}

    @api.get("/shops/{shop_id}/campaigns/effect", tags=["campaigns"])
    async def effect(request: Request, access: Reader,
                     campaign: Annotated[str | None, Query(pattern=ID_PATTERN)] = None
                     ) -> dict[str, Any]:
        """Messages, clicks, conversions and revenue per campaign, channel and day (last click
        credited), and which days can no longer change."""
        lateness = request.app.state.lateness

        def work(conn: Any) -> dict[str, Any]:
            return campaign_report(conn, access.shop_id, campaign, lateness).to_dict()

        try:
            return await in_transaction(request, work)
        except NoCampaigns as exc:
            raise HTTPException(404, str(exc)) from None

    return api


class _Rehearsed(Exception):
    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
