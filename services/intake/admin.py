"""AdminService: accounts, API keys and device tokens. Every call needs the admin scope; every change is an event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from smsgw.domain import credentials as cr
from smsgw.domain import errors as de
from smsgw.domain.phone import normalize_e164
from smsgw.domain.routes import MessageFacts
from smsgw.domain.senders import normalize_sender
from smsgw.events.envelope import timestamp
from smsgw.grpcx.errors import unary_rpc
from smsgw.v1 import accounts_pb2 as ac
from smsgw.v1 import accounts_pb2_grpc as ac_grpc

from .account_log import AccountLog
from .auth import Authenticator
from .route_explainer import RouteExplainer


class AdminServicer(ac_grpc.AdminServiceServicer):
    def __init__(self, accounts: AccountLog, auth: Authenticator, routes: RouteExplainer):
        self.accounts = accounts
        self.directory = accounts.directory
        self.auth = auth
        self.routes = routes

    def _admin(self, context, what: str) -> cr.Principal:
        return self.auth.principal(context, cr.ADMIN, what)

    @unary_rpc
    async def CreateAccount(self, request, context):
        actor = self._admin(context, "CreateAccount")
        event = self.directory.create_account(
            request.id, request.display_name, actor=actor.key_id, now=datetime.now(UTC)
        )
        await self.accounts.append([event])
        return ac.CreateAccountResponse(account=_account(self.directory.account(request.id)))

    @unary_rpc
    async def ListAccounts(self, request, context):
        self._admin(context, "ListAccounts")
        return ac.ListAccountsResponse(
            accounts=[_account(a) for a in sorted(self.directory.accounts.values(), key=lambda a: a.account_id)]
        )

    @unary_rpc
    async def CreateApiKey(self, request, context):
        actor = self._admin(context, "CreateApiKey")
        event, secret = self.directory.create_key(
            request.account_id, request.scopes, request.name, actor=actor.key_id, now=datetime.now(UTC)
        )
        await self.accounts.append([event])
        key = self.directory.keys[event.api_key_created.key_id]
        return ac.CreateApiKeyResponse(key=key.to_proto(), secret=secret)

    @unary_rpc
    async def ListApiKeys(self, request, context):
        self._admin(context, "ListApiKeys")
        self.directory.account(request.account_id)
        return ac.ListApiKeysResponse(keys=[k.to_proto() for k in self.directory.keys_of(request.account_id)])

    @unary_rpc
    async def RevokeApiKey(self, request, context):
        actor = self._admin(context, "RevokeApiKey")
        event = self.directory.revoke_key(
            request.key_id, request.reason or "revoked by an admin", actor=actor.key_id, now=datetime.now(UTC)
        )
        await self.accounts.append([event])
        return ac.RevokeApiKeyResponse(key=self.directory.keys[request.key_id].to_proto())

    @unary_rpc
    async def RotateApiKey(self, request, context):
        actor = self._admin(context, "RotateApiKey")
        events, secret = self.directory.rotate_key(request.key_id, actor=actor.key_id, now=datetime.now(UTC))
        await self.accounts.append(events)
        new = self.directory.keys[events[0].api_key_created.key_id]
        return ac.RotateApiKeyResponse(
            key=new.to_proto(), secret=secret, revoked=self.directory.keys[request.key_id].to_proto()
        )

    @unary_rpc
    async def SetAccountLimits(self, request, context):
        actor = self._admin(context, "SetAccountLimits")
        event = self.directory.set_limits(request.account_id, request.limits, actor=actor.key_id, now=datetime.now(UTC))
        await self.accounts.append([event])
        return ac.SetAccountLimitsResponse(account=_account(self.directory.account(request.account_id)))

    @unary_rpc
    async def SetAccountSenders(self, request, context):
        actor = self._admin(context, "SetAccountSenders")
        event = self.directory.set_senders(
            request.account_id, request.senders, actor=actor.key_id, now=datetime.now(UTC), pool=request.pool
        )
        await self.accounts.append([event])
        return ac.SetAccountSendersResponse(account=_account(self.directory.account(request.account_id)))

    @unary_rpc
    async def SetAccountDestinations(self, request, context):
        actor = self._admin(context, "SetAccountDestinations")
        event = self.directory.set_destinations(
            request.account_id, request.countries, actor=actor.key_id, now=datetime.now(UTC)
        )
        await self.accounts.append([event])
        return ac.SetAccountDestinationsResponse(account=_account(self.directory.account(request.account_id)))

    @unary_rpc
    async def IssueDeviceToken(self, request, context):
        actor = self._admin(context, "IssueDeviceToken")
        event, secret = self.directory.issue_device_token(
            request.account_id,
            request.carrier,
            request.device_id,
            request.sim_slot if request.HasField("sim_slot") else None,
            actor=actor.key_id,
            now=datetime.now(UTC),
        )
        await self.accounts.append([event])
        token = self.directory.device_tokens.records[event.device_token_issued.token_id]
        return ac.IssueDeviceTokenResponse(token=token.to_proto(), secret=secret)

    @unary_rpc
    async def ListDeviceTokens(self, request, context):
        self._admin(context, "ListDeviceTokens")
        self.directory.account(request.account_id)
        tokens = self.directory.device_tokens.of_account(request.account_id)
        return ac.ListDeviceTokensResponse(tokens=[t.to_proto() for t in tokens])

    @unary_rpc
    async def RevokeDeviceToken(self, request, context):
        actor = self._admin(context, "RevokeDeviceToken")
        event = self.directory.revoke_device_token(
            request.token_id, request.reason or "revoked by an admin", actor=actor.key_id, now=datetime.now(UTC)
        )
        await self.accounts.append([event])
        return ac.RevokeDeviceTokenResponse(token=self.directory.device_tokens.records[request.token_id].to_proto())

    @unary_rpc
    async def SetAccountEncoding(self, request, context):
        actor = self._admin(context, "SetAccountEncoding")
        event = self.directory.set_encoding(
            request.account_id, request.smart_encoding, actor=actor.key_id, now=datetime.now(UTC)
        )
        await self.accounts.append([event])
        return ac.SetAccountEncodingResponse(account=_account(self.directory.account(request.account_id)))

    @unary_rpc
    async def ApplyRouteTable(self, request, context):
        actor = self._admin(context, "ApplyRouteTable")
        applied = self.accounts.route_tables.next_version(
            request.routes_json,
            comment=request.comment,
            source=request.source,
            expected_version=request.expected_version,
        )
        event = cr.platform_event(actor.key_id, datetime.now(UTC), route_table_applied=applied)
        await self.accounts.append_in_log_order(event)
        current = self.accounts.route_tables.current
        if current is None or current.event_id != event.event_id:
            raise de.RouteTableChanged(
                f"another route table (version {self.accounts.route_tables.current_version}) was applied at the "
                "same time and came first; yours was not applied. Read it (smsgw routes show) and apply again",
                metadata={"current_version": str(self.accounts.route_tables.current_version)},
            )
        return ac.ApplyRouteTableResponse(table=current.to_proto())

    @unary_rpc
    async def GetRouteTable(self, request, context):
        self._admin(context, "GetRouteTable")
        versions = self.accounts.route_tables.versions
        shown = versions if request.history else versions[-1:]
        return ac.GetRouteTableResponse(versions=[v.to_proto() for v in shown])

    @unary_rpc
    async def ExplainRoute(self, request, context):
        self._admin(context, "ExplainRoute")
        to = normalize_e164(request.to, field="to")
        sender = getattr(request, "from")
        facts = MessageFacts(
            to=to,
            sender=normalize_sender(sender) if sender.strip() else "",
            account=request.account_id,
            tags=frozenset(request.tags),
            message_id=request.message_id or str(uuid.uuid4()),
        )
        version, source, e = self.routes.explain(facts)
        return ac.ExplainRouteResponse(
            table_version=version,
            source=source,
            sender_kind=e.sender_kind,
            country=e.country,
            routes=[
                ac.RouteVerdict(
                    position=v.position, name=v.name, conditions=v.conditions, mismatch=v.mismatch, chosen=v.chosen
                )
                for v in e.verdicts
            ],
            chosen_route=e.chosen_route,
            chosen_carrier=e.chosen_carrier,
            why=e.why,
            rewritten_sender=e.rewritten_sender,
            carriers=[
                ac.CarrierHealth(
                    carrier=c.carrier,
                    healthy=c.healthy,
                    failure_ratio=c.failure_ratio,
                    outcomes=c.outcomes,
                    undelivered_ratio=c.undelivered_ratio,
                    receipts=c.receipts,
                    replicas_reporting=c.replicas_reporting,
                    replicas_connected=c.replicas_connected,
                )
                for c in e.carriers
            ],
        )

    @unary_rpc
    async def ListAuditEvents(self, request, context):
        self._admin(context, "ListAuditEvents")
        return ac.ListAuditEventsResponse(
            events=[e for e in self.directory.events if not request.account_id or e.account_id == request.account_id]
        )


def _account(record: cr.AccountRecord) -> ac.Account:
    account = ac.Account(
        id=record.account_id,
        display_name=record.display_name,
        limits=cr.limits_message(record.limits),
        senders=record.senders,
        sender_pool=record.sender_pool,
        smart_encoding=record.smart_encoding,
        destination_countries=record.destination_countries,
    )
    if record.created_at is not None:
        account.created_at.CopyFrom(timestamp(record.created_at))
    return account
