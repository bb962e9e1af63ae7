"""A small Stripe on loopback: the parts of Stripe's API the product calls, and webhooks.

The stripe SDK is pointed at it (STRIPE_API_BASE); it speaks Stripe's wire format
(form-encoded requests with bracketed keys, JSON objects, `{"error": {...}}` bodies) and keeps
every object in memory, so what the product sent can be asserted on. Webhook bodies are signed
as Stripe signs them: header `Stripe-Signature: t=<unix time>,v1=<HMAC-SHA256(secret,
"<t>.<body>")>`.

A hosted checkout page (`GET /checkout/<session id>`, a "Pay" button) lets a browser test go
through Checkout: paying creates the subscription, delivers the webhooks and redirects to the
session's success URL.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import itertools
import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

API_VERSION = "2026-05-27.dahlia"
Deliver = Callable[[bytes, str], int]


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header Stripe would send with `body`."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def parse_form(body: str) -> dict[str, Any]:
    """Stripe's form encoding (`a[b][0][c]=v`) back into nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+|\[\]", key)
        node: Any = root
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            following = None if last else parts[index + 1]
            child: Any = [] if following is not None and following.isdigit() else {}
            if isinstance(node, list):
                position = int(part)
                while len(node) <= position:
                    node.append({} if not last else None)
                if last:
                    node[position] = value
                else:
                    if not isinstance(node[position], dict | list):
                        node[position] = child
                    node = node[position]
            elif last:
                node[part] = value
            else:
                node = node.setdefault(part, child)
    return root


class FakeStripe:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self.meter_events: dict[str, dict[str, Any]] = {}
        # Meter event creates still to answer with a 500; `accept_then_fail` records the
        # event first (Stripe got it, the answer was lost).
        self.fail_meter_events = 0
        self.accept_then_fail = False
        self.webhook_secret = ""
        self.deliver: Deliver | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.put(
            {
                "id": "acct_fakeplatform",
                "object": "account",
                "type": "standard",
                "email": "billing@engram.example",
                "country": "US",
                "default_currency": "usd",
                "charges_enabled": True,
                "payouts_enabled": True,
                "details_submitted": True,
                "business_profile": {"name": "Engram Cloud"},
                "settings": {"dashboard": {"display_name": "Engram Cloud"}},
                "metadata": {},
                "created": int(time.time()),
                "livemode": False,
            }
        )
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeStripe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- objects ----------------------------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):06d}"

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.objects[obj["id"]] = obj
        return obj

    def calls(self, method: str, path: str) -> list[dict[str, Any]]:
        return [params for m, p, params in self.requests if m == method and p == path]

    def add_price(self, lookup_key: str, unit_amount: int) -> dict[str, Any]:
        product = self.put(
            {
                "id": self.new_id("prod"),
                "object": "product",
                "name": lookup_key,
                "active": True,
                "created": int(time.time()),
                "livemode": False,
                "metadata": {},
                "type": "service",
            }
        )
        return self.put(self._price(product["id"], lookup_key, unit_amount))

    def _price(self, product: str, lookup_key: str, unit_amount: int) -> dict[str, Any]:
        return {
            "id": self.new_id("price"),
            "object": "price",
            "active": True,
            "currency": "usd",
            "unit_amount": unit_amount,
            "unit_amount_decimal": str(unit_amount),
            "lookup_key": lookup_key or None,
            "product": product,
            "type": "recurring",
            "billing_scheme": "per_unit",
            "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
            "created": int(time.time()),
            "livemode": False,
            "metadata": {},
            "nickname": None,
        }

    # --- the checkout flow and subscription life ----------------------------------------------

    def complete_checkout(self, session_id: str) -> dict[str, Any]:
        """What Stripe does when the customer pays: a subscription, then its webhooks."""
        session = self.objects[session_id]
        price = self.objects[session["line_items"][0]["price"]]
        now = int(time.time())
        subscription_id = self.new_id("sub")
        subscription = self.put(
            {
                "id": subscription_id,
                "object": "subscription",
                "customer": session["customer"],
                "status": "active",
                "created": now,
                "start_date": now,
                "current_period_start": now,
                "current_period_end": now + 30 * 86400,
                "cancel_at_period_end": False,
                "livemode": False,
                "metadata": dict(session.get("subscription_data", {}).get("metadata", {})),
                "items": {
                    "object": "list",
                    "has_more": False,
                    "url": f"/v1/subscription_items?subscription={subscription_id}",
                    "data": [
                        {
                            "id": self.new_id("si"),
                            "object": "subscription_item",
                            "subscription": subscription_id,
                            "price": price,
                            "quantity": 1,
                            "created": now,
                            "metadata": {},
                        }
                    ],
                },
            }
        )
        session.update(status="complete", payment_status="paid", subscription=subscription["id"])
        self.send("customer.subscription.created", subscription)
        self.send("checkout.session.completed", session)
        self.send("invoice.paid", self.invoice(subscription, paid=True))
        return subscription

    def invoice(self, subscription: dict[str, Any], *, paid: bool) -> dict[str, Any]:
        return {
            "id": self.new_id("in"),
            "object": "invoice",
            "customer": subscription["customer"],
            "status": "paid" if paid else "open",
            "paid": paid,
            "livemode": False,
            "parent": {
                "type": "subscription_details",
                "subscription_details": {"subscription": subscription["id"]},
            },
        }

    def set_status(self, subscription_id: str, status: str) -> dict[str, Any]:
        subscription = self.objects[subscription_id]
        subscription["status"] = status
        return subscription

    def fail_payment(self, subscription_id: str) -> dict[str, Any]:
        subscription = self.set_status(subscription_id, "past_due")
        return self.send("invoice.payment_failed", self.invoice(subscription, paid=False))

    def event(self, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self.new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": {"object": json.loads(json.dumps(obj))},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }

    def send(self, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an event and deliver it, signed, to the configured webhook."""
        event = self.put(self.event(event_type, obj))
        self.deliver_event(event)
        return event

    def deliver_event(self, event: dict[str, Any], secret: str | None = None) -> int:
        body = json.dumps(event).encode()
        assert self.deliver is not None, "no webhook delivery configured"
        return self.deliver(body, sign(body, secret or self.webhook_secret))

    @staticmethod
    def post_to(url: str) -> Deliver:
        """Deliver webhooks over HTTP to `url` (a live server)."""

        def deliver(body: bytes, signature: str) -> int:
            request = urllib.request.Request(
                url,
                data=body,
                headers={"Content-Type": "application/json", "Stripe-Signature": signature},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status

        return deliver

    # --- the API ------------------------------------------------------------------------------

    def handle(self, method: str, path: str, params: dict[str, Any]) -> tuple[int, Any]:
        self.requests.append((method, path, params))
        routes: list[tuple[str, str, Callable[..., tuple[int, Any]]]] = [
            ("POST", r"/v1/customers", self._create_customer),
            ("POST", r"/v1/checkout/sessions", self._create_checkout_session),
            ("POST", r"/v1/billing_portal/sessions", self._create_portal_session),
            ("POST", r"/v1/billing/meter_events", self._create_meter_event),
            ("POST", r"/v1/webhook_endpoints", self._create_webhook_endpoint),
            ("POST", r"/v1/products", self._create_product),
            ("POST", r"/v1/prices", self._create_price),
            ("GET", r"/v1/prices", self._list_prices),
            ("GET", r"/v1/products", self._list("product")),
            ("GET", r"/v1/account", lambda params: (200, self.objects["acct_fakeplatform"])),
            ("GET", r"/v1/[a-z_/]+/[A-Za-z0-9_]*\d[A-Za-z0-9_]*/[a-z_]+", self._empty_list),
            ("GET", r"/v1/(?:[a-z_]+/)*(?P<object_id>[A-Za-z0-9_]+)", self._retrieve),
        ]
        for route_method, pattern, action in routes:
            match = re.fullmatch(pattern, path)
            if route_method == method and match:
                return action(params, **match.groupdict())
        return 404, self._error("invalid_request_error", f"Unrecognized request URL ({path}).")

    @staticmethod
    def _error(kind: str, message: str, code: str | None = None) -> dict[str, Any]:
        return {"error": {"type": kind, "message": message, "code": code}}

    def _retrieve(self, params: dict[str, Any], object_id: str) -> tuple[int, Any]:
        obj = self.objects.get(object_id)
        if obj is None:
            return 404, self._error(
                "invalid_request_error", f"No such object: '{object_id}'", "resource_missing"
            )
        return 200, obj

    @staticmethod
    def _empty_list(params: dict[str, Any]) -> tuple[int, Any]:
        """An object's sub-list (a product's features, an invoice's lines): none here."""
        return 200, {"object": "list", "data": [], "has_more": False, "url": ""}

    def _list(self, kind: str) -> Callable[..., tuple[int, Any]]:
        def action(params: dict[str, Any]) -> tuple[int, Any]:
            data = [o for o in self.objects.values() if o.get("object") == kind]
            return 200, {"object": "list", "data": data, "has_more": False, "url": f"/v1/{kind}s"}

        return action

    def _list_prices(self, params: dict[str, Any]) -> tuple[int, Any]:
        prices = [o for o in self.objects.values() if o.get("object") == "price"]
        wanted = params.get("lookup_keys")
        if wanted:
            keys = set(wanted.values() if isinstance(wanted, dict) else wanted)
            prices = [p for p in prices if p.get("lookup_key") in keys]
        return 200, {"object": "list", "data": prices, "has_more": False, "url": "/v1/prices"}

    def _create_customer(self, params: dict[str, Any]) -> tuple[int, Any]:
        return 200, self.put(
            {
                "id": self.new_id("cus"),
                "object": "customer",
                "email": params.get("email"),
                "name": params.get("name"),
                "metadata": params.get("metadata", {}),
                "created": int(time.time()),
                "livemode": False,
                "balance": 0,
                "currency": None,
                "delinquent": False,
                "invoice_settings": {"default_payment_method": None},
            }
        )

    def _create_checkout_session(self, params: dict[str, Any]) -> tuple[int, Any]:
        if params.get("customer") not in self.objects:
            return 400, self._error("invalid_request_error", "No such customer", "resource_missing")
        for item in params.get("line_items", []):
            if item.get("price") not in self.objects:
                return 400, self._error(
                    "invalid_request_error", "No such price", "resource_missing"
                )
        session_id = self.new_id("cs_test")
        return 200, self.put(
            {
                "id": session_id,
                "object": "checkout.session",
                "mode": params.get("mode"),
                "customer": params.get("customer"),
                "client_reference_id": params.get("client_reference_id"),
                "line_items": params.get("line_items", []),
                "subscription_data": params.get("subscription_data", {}),
                "metadata": params.get("metadata", {}),
                "success_url": params.get("success_url"),
                "cancel_url": params.get("cancel_url"),
                "status": "open",
                "payment_status": "unpaid",
                "subscription": None,
                "livemode": False,
                "created": int(time.time()),
                "url": f"{self.url}/checkout/{session_id}",
            }
        )

    def _create_portal_session(self, params: dict[str, Any]) -> tuple[int, Any]:
        if params.get("customer") not in self.objects:
            return 400, self._error("invalid_request_error", "No such customer", "resource_missing")
        session_id = self.new_id("bps")
        return 200, self.put(
            {
                "id": session_id,
                "object": "billing_portal.session",
                "customer": params["customer"],
                "return_url": params.get("return_url"),
                "url": f"{self.url}/portal/{session_id}",
                "livemode": False,
            }
        )

    def _create_meter_event(self, params: dict[str, Any]) -> tuple[int, Any]:
        identifier = params.get("identifier") or self.new_id("mev")
        with self._lock:
            failing = self.fail_meter_events > 0
            if failing:
                self.fail_meter_events -= 1
            if failing and not self.accept_then_fail:
                return 500, self._error("api_error", "Something went wrong on Stripe's end.")
            # Stripe enforces identifier uniqueness: a repeat is not counted again.
            event = self.meter_events.setdefault(
                identifier,
                {
                    "object": "billing.meter_event",
                    "event_name": params.get("event_name"),
                    "identifier": identifier,
                    "payload": params.get("payload", {}),
                    "timestamp": int(params.get("timestamp") or time.time()),
                    "created": int(time.time()),
                    "livemode": False,
                },
            )
        if failing:
            return 500, self._error("api_error", "Something went wrong on Stripe's end.")
        return 200, event

    def _create_webhook_endpoint(self, params: dict[str, Any]) -> tuple[int, Any]:
        self.webhook_secret = "whsec_" + hashlib.sha256(str(time.time()).encode()).hexdigest()
        events = params.get("enabled_events", [])
        return 200, self.put(
            {
                "id": self.new_id("we"),
                "object": "webhook_endpoint",
                "url": params.get("url"),
                "enabled_events": list(events.values()) if isinstance(events, dict) else events,
                "metadata": params.get("metadata", {}),
                "api_version": params.get("api_version") or API_VERSION,
                "status": "enabled",
                "secret": self.webhook_secret,
                "application": None,
                "description": None,
                "created": int(time.time()),
                "livemode": False,
            }
        )

    def _create_product(self, params: dict[str, Any]) -> tuple[int, Any]:
        return 200, self.put(
            {
                "id": self.new_id("prod"),
                "object": "product",
                "name": params.get("name"),
                "active": True,
                "metadata": params.get("metadata", {}),
                "created": int(time.time()),
                "livemode": False,
                "type": "service",
            }
        )

    def _create_price(self, params: dict[str, Any]) -> tuple[int, Any]:
        if params.get("product") not in self.objects:
            return 400, self._error("invalid_request_error", "No such product", "resource_missing")
        lookup_key = params.get("lookup_key", "")
        if lookup_key and params.get("transfer_lookup_key") == "true":
            for other in self.objects.values():
                if other.get("object") == "price" and other.get("lookup_key") == lookup_key:
                    other["lookup_key"] = None
        price = self._price(params["product"], lookup_key, int(params.get("unit_amount", 0)))
        price["metadata"] = params.get("metadata", {})
        return 200, self.put(price)

    # --- the hosted pages (checkout, portal) --------------------------------------------------

    def page(self, path: str) -> tuple[int, str] | None:
        match = re.fullmatch(r"/checkout/([A-Za-z0-9_]+)", path)
        if match and match.group(1) in self.objects:
            session = self.objects[match.group(1)]
            return 200, (
                "<!doctype html><title>Stripe Checkout (fake)</title>"
                f"<h1>Subscribe</h1><p>{html.escape(session['line_items'][0]['price'])}</p>"
                f'<form method="post"><button id="pay">Pay</button></form>'
                f'<a href="{html.escape(session["cancel_url"])}">Back</a>'
            )
        match = re.fullmatch(r"/portal/([A-Za-z0-9_]+)", path)
        if match and match.group(1) in self.objects:
            return 200, "<!doctype html><title>Customer portal (fake)</title><h1>Billing</h1>"
        return None

    def pay(self, path: str) -> str | None:
        """POST /checkout/<id>: pay, then where the browser goes next."""
        match = re.fullmatch(r"/checkout/([A-Za-z0-9_]+)", path)
        if not match or match.group(1) not in self.objects:
            return None
        session = self.objects[match.group(1)]
        self.complete_checkout(session["id"])
        return str(session["success_url"]).replace("{CHECKOUT_SESSION_ID}", session["id"])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Request-Id", "req_fake")
                self.end_headers()
                self.wfile.write(body)

            def _api(self, method: str) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else url.query
                status, payload = fake.handle(method, url.path, parse_form(raw))
                self._send(status, json.dumps(payload).encode(), "application/json")

            def do_GET(self) -> None:
                page = fake.page(urlsplit(self.path).path)
                if page is not None:
                    self._send(page[0], page[1].encode(), "text/html; charset=utf-8")
                else:
                    self._api("GET")

            def do_POST(self) -> None:
                path = urlsplit(self.path).path
                if path.startswith("/v1/"):
                    self._api("POST")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                target = fake.pay(path)
                if target is None:
                    self._send(404, b"not found", "text/plain")
                    return
                self.send_response(303)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_DELETE(self) -> None:
                self._api("DELETE")

        return Handler
