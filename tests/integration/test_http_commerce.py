"""Catalog, inventory and orders over HTTP, with the real relay, projectors and order saga."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from api.queries.common import encode_cursor
from tests.integration.commerce import assert_stock, new_sku, place, product, stock_of, wait_order
from tests.integration.http import Api, User, assert_problem
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("pipeline")


@pytest.fixture(scope="module")
def manager(api: Api, admin: User) -> User:
    """The module's catalog keeper: each test makes products of its own (new SKUs) as it."""
    manager = api.register("Mara Manager")
    assert api.post(f"/v1/users/{manager.id}/roles", {"role": "manager"}, admin).status_code == 200
    return api.relogin(manager)


@pytest.fixture
def shop(api: Api, admin: User, manager: User) -> dict[str, User]:
    """Buyers of the test's own (their order lists are checked whole), and the module's staff."""
    alice, bob = (api.register(n) for n in ("Alice Buyer", "Bob Buyer"))
    return {"manager": manager, "alice": alice, "bob": bob, "admin": admin}


def test_managers_keep_the_catalog_and_members_read_it(api: Api, shop: dict[str, User]) -> None:
    manager, alice = shop["manager"], shop["alice"]
    sku = new_sku("lamp")
    r = api.post(
        "/v1/products",
        {"sku": sku, "name": "Desk lamp", "description": "Brass, adjustable", "price_minor": 4999, "currency": "EUR"},
        manager,
    )
    assert r.status_code == 201, r.text
    got = stock_of(api, alice, sku, r.json()["position"])
    assert got == {
        **got,
        "sku": sku.upper(),
        "name": "Desk lamp",
        "description": "Brass, adjustable",
        "price_minor": 4999,
        "currency": "EUR",
        "active": True,
        "available": 0,
        "reserved": 0,
    }
    assert api.get(f"/v1/products/{sku.lower()}", alice).json()["sku"] == sku.upper()
    assert_problem(
        api.post("/v1/products", {"sku": sku, "name": "Again", "price_minor": 1, "currency": "EUR"}, manager),
        409,
        says="exists already",
    )
    r = api.post(f"/v1/products/{sku}/edit", {"name": "Brass desk lamp"}, manager, if_match=r.headers["etag"])
    assert r.status_code == 200 and r.json()["version"] == 2
    r = api.post(f"/v1/products/{sku}/reprice", {"price_minor": 3999}, manager)
    assert r.status_code == 200 and r.json()["version"] == 3, r.text
    r = api.post(f"/v1/inventory/{sku}/receive", {"quantity": 12}, manager)
    assert r.status_code == 200, r.text
    r = api.post(f"/v1/inventory/{sku}/adjust", {"delta": -2, "reason": "damaged in transit"}, manager)
    assert r.status_code == 200, r.text
    got = stock_of(api, alice, sku, r.json()["position"])
    assert (got["name"], got["price_minor"], got["available"], got["reserved"]) == ("Brass desk lamp", 3999, 10, 0)
    assert api.get(f"/v1/products/{sku}", alice).headers["etag"] == '"3"'
    assert_problem(api.post(f"/v1/inventory/{sku}/adjust", {"delta": -11, "reason": "lost"}, manager), 409)
    r = api.post(f"/v1/products/{sku}/discontinue", user=manager)
    assert stock_of(api, alice, sku, r.json()["position"])["active"] is False
    assert_problem(api.post(f"/v1/products/{sku}/reprice", {"price_minor": 1}, manager), 409)
    assert_problem(api.post("/v1/orders", {"lines": [{"sku": sku, "quantity": 1}]}, alice), 422, field="lines")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/products", {"sku": "A", "name": "x", "price_minor": -1, "currency": "EUR"}, "price_minor"),
        ("/v1/products", {"sku": "A", "name": "x", "price_minor": 1, "currency": "euro"}, "currency"),
        ("/v1/products", {"sku": "has space", "name": "x", "price_minor": 1, "currency": "EUR"}, "sku"),
        ("/v1/products", {"sku": "A", "name": "x", "price_minor": 1, "currency": "EUR", "colour": "red"}, None),
        ("/v1/products", {"name": "x", "price_minor": 1, "currency": "EUR"}, "sku"),
        ("/v1/inventory/{sku}/receive", {"quantity": 0}, "quantity"),
        ("/v1/inventory/{sku}/adjust", {"delta": 0, "reason": "none"}, "delta"),
        ("/v1/inventory/{sku}/adjust", {"delta": 5}, "reason"),
        ("/v1/orders", {"lines": []}, "lines"),
        ("/v1/orders", {"lines": [{"sku": "{sku}", "quantity": 0}]}, None),
        ("/v1/orders", {"lines": [{"sku": "{sku}", "quantity": 1}, {"sku": "{sku}", "quantity": 2}]}, "lines"),
        ("/v1/orders", {"lines": [{"sku": "NO-SUCH-SKU", "quantity": 1}]}, "lines"),
    ],
)
def test_bad_input_is_422_and_changes_nothing(
    api: Api, shop: dict[str, User], path: str, body: dict[str, Any], field: str | None
) -> None:
    manager = shop["manager"]
    sku, position = product(api, manager, stock=3)
    body = json.loads(json.dumps(body).replace("{sku}", sku))  # the parameters name the product made above
    before = stock_of(api, manager, sku, position)
    assert_problem(api.post(path.replace("{sku}", sku), body, manager), 422, field=field)
    assert api.get("/v1/orders", manager, x_min_position=position).status_code == 200
    after = stock_of(api, manager, sku)
    assert (after["version"], after["available"], after["reserved"]) == (
        before["version"],
        before["available"],
        before["reserved"],
    )


def test_an_order_is_reserved_paid_shipped_and_delivered(api: Api, shop: dict[str, User]) -> None:
    manager, alice = shop["manager"], shop["alice"]
    pen, _ = product(api, manager, stock=10, price=250)
    ink, _ = product(api, manager, stock=4, price=1000)
    order = place(api, alice, (pen, 3), (ink, 2))
    seen = wait_order(api, alice, order)
    assert seen["status"] == "reserved" and seen["total_minor"] == 3 * 250 + 2 * 1000 and seen["currency"] == "EUR"
    assert seen["lines"] == [
        {"sku": pen, "quantity": 3, "unit_price_minor": 250, "currency": "EUR"},
        {"sku": ink, "quantity": 2, "unit_price_minor": 1000, "currency": "EUR"},
    ]
    assert seen["payment_due_at"] is not None and seen["reason"] is None
    eventually(
        lambda: assert_stock(api, alice, pen, available=7, reserved=3), what="the pens' reservation in the catalog"
    )
    r = api.post(f"/v1/products/{pen}/reprice", {"price_minor": 999}, manager)  # captured prices stay
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    assert stock_of(api, alice, pen, r.json()["position"])["price_minor"] == 999
    assert_problem(api.post(f"/v1/orders/{order}/ship", user=alice), 403)
    r = api.post(f"/v1/orders/{order}/pay", {"payment_ref": "psp-123"}, alice)
    assert r.status_code == 200, r.text
    assert_problem(api.post(f"/v1/orders/{order}/pay", {"payment_ref": "psp-123"}, alice), 409)
    assert api.post(f"/v1/orders/{order}/ship", user=manager).status_code == 200
    r = api.post(f"/v1/orders/{order}/deliver", user=manager)
    assert r.status_code == 200
    done = api.get(f"/v1/orders/{order}", alice, x_min_position=r.json()["position"]).json()
    assert done["status"] == "delivered" and done["total_minor"] == 2750 and done["payment_ref"] == "psp-123"
    assert [h["status"] for h in done["history"]] == ["placed", "reserved", "paid", "shipped", "delivered"]
    assert all(h["at"] for h in done["history"])
    eventually(lambda: assert_stock(api, alice, pen, reserved=0), what="the saga to commit the shipped pens")
    assert (stock_of(api, alice, pen)["available"], stock_of(api, alice, ink)["available"]) == (7, 2)


def test_a_short_line_rejects_the_whole_order_and_reserves_nothing(api: Api, shop: dict[str, User]) -> None:
    manager, bob = shop["manager"], shop["bob"]
    plenty, _ = product(api, manager, stock=50)
    scarce, _ = product(api, manager, stock=1)
    order = place(api, bob, (plenty, 5), (scarce, 2))
    seen = wait_order(api, bob, order)
    assert seen["status"] == "rejected" and f"only 1 of {scarce} available, 2 requested" in seen["reason"]
    assert [h["status"] for h in seen["history"]] == ["placed", "rejected"]
    eventually(  # the catalog view applies stock events apart from the order view
        lambda: assert_stock(api, bob, plenty, available=50, reserved=0), what="the plentiful stock, untouched"
    )
    assert_problem(api.post(f"/v1/orders/{order}/pay", {"payment_ref": "x"}, bob), 409)


def test_cancelling_releases_the_reservation(api: Api, shop: dict[str, User]) -> None:
    manager, alice = shop["manager"], shop["alice"]
    sku, _ = product(api, manager, stock=5)
    order = place(api, alice, (sku, 4))
    assert wait_order(api, alice, order)["status"] == "reserved"
    r = api.post(f"/v1/orders/{order}/cancel", user=alice)
    assert r.status_code == 200, r.text
    seen = api.get(f"/v1/orders/{order}", alice, x_min_position=r.json()["position"]).json()
    assert seen["status"] == "cancelled" and seen["reason"] == "cancelled by the customer"
    eventually(lambda: assert_stock(api, alice, sku, available=5, reserved=0), what="the reservation's release")
    assert_problem(api.post(f"/v1/orders/{order}/cancel", user=alice), 409)


def test_members_see_only_their_own_orders_and_only_staff_change_catalog_or_stock(
    api: Api, shop: dict[str, User]
) -> None:
    manager, alice, bob, admin = shop["manager"], shop["alice"], shop["bob"], shop["admin"]
    sku, _ = product(api, manager, stock=5)
    mine = place(api, alice, (sku, 1))
    theirs = place(api, bob, (sku, 1))
    wait_order(api, alice, mine)
    wait_order(api, bob, theirs)
    listed = [o["id"] for o in api.get("/v1/orders", alice).json()["items"]]
    assert mine in listed and theirs not in listed
    assert all(o["customer_id"] == str(alice.id) for o in api.get("/v1/orders", alice).json()["items"])
    assert_problem(api.get(f"/v1/orders/{theirs}", alice), 404)
    for action in ("pay", "cancel", "ship", "deliver"):
        body = {"payment_ref": "x"} if action == "pay" else None
        assert_problem(api.post(f"/v1/orders/{theirs}/{action}", body, alice), 404)
    for staff in (manager, admin):
        assert api.get(f"/v1/orders/{theirs}", staff).status_code == 200
        everyone = api.get(f"/v1/orders?customer_id={bob.id}", staff).json()["items"]
        assert [o["id"] for o in everyone] == [theirs]
    for path, body in [
        ("/v1/products", {"sku": new_sku(), "name": "x", "price_minor": 1, "currency": "EUR"}),
        (f"/v1/products/{sku}/edit", {"name": "mine now"}),
        (f"/v1/products/{sku}/reprice", {"price_minor": 1}),
        (f"/v1/products/{sku}/discontinue", None),
        (f"/v1/inventory/{sku}/receive", {"quantity": 100}),
        (f"/v1/inventory/{sku}/adjust", {"delta": 100, "reason": "mine"}),
    ]:
        assert_problem(api.post(path, body, alice), 403)
    assert_problem(api.get("/v1/orders"), 401)
    assert_problem(api.post("/v1/orders", {"lines": [{"sku": sku, "quantity": 1}]}), 401)
    assert stock_of(api, alice, sku)["price_minor"] == 1250


def test_the_catalog_lists_from_redis_and_searches_in_sql_with_one_cursor(api: Api, shop: dict[str, User]) -> None:
    manager, alice = shop["manager"], shop["alice"]
    tag = uuid.uuid4().hex[:8]
    made = []
    for i, (name, price, stock) in enumerate(
        [("Apple", 300, 0), ("banana", 100, 5), ("Cherry", 200, 1), ("date", 500, 0), ("Elderberry", 400, 9)]
    ):
        sku, position = product(api, manager, stock=stock, price=price, name=f"{tag} {name}", sku=f"Z{tag}-{i}".upper())
        made.append(sku)
    assert position
    r = api.get(f"/v1/products?q={tag}&sort=name&limit=2", alice, x_min_position=position).json()
    names = [p["name"].split()[1] for p in r["items"]]
    assert names == ["Apple", "banana"] and r["next_cursor"]
    rest = api.get(f"/v1/products?q={tag}&sort=name&limit=10&cursor={r['next_cursor']}", alice).json()
    assert [p["name"].split()[1] for p in rest["items"]] == ["Cherry", "date", "Elderberry"]
    assert rest["next_cursor"] is None
    stocked = api.get(f"/v1/products?q={tag}&in_stock=true&sort=-price", alice).json()["items"]
    assert [p["price_minor"] for p in stocked] == [400, 200, 100]
    ranged = api.get(f"/v1/products?q={tag}&min_price=200&max_price=400&sort=price", alice).json()["items"]
    assert [p["price_minor"] for p in ranged] == [200, 300, 400]
    # Without text, from Redis: the whole catalog of this run, paged by price, must include ours in order.
    seen: list[dict[str, Any]] = []
    cursor = ""
    for _ in range(200):
        page = api.get(f"/v1/products?sort=price&in_stock=true&limit=7{cursor}", alice, x_min_position=position).json()
        seen += page["items"]
        if not page["next_cursor"]:
            break
        cursor = f"&cursor={page['next_cursor']}"
    prices = [(p["price_minor"], p["sku"]) for p in seen]
    assert prices == sorted(prices) and all(p["available"] > 0 and p["active"] for p in seen)
    assert [p["sku"] for p in seen if p["sku"] in made] == [made[1], made[2], made[4]]
    by_sku = api.get("/v1/products?sort=-sku&min_price=100&max_price=500&limit=200", alice).json()["items"]
    skus = [p["sku"] for p in by_sku]
    assert skus == sorted(skus, reverse=True) and set(made) <= set(skus)
    assert_problem(api.get("/v1/products?cursor=garbage", alice), 422)
    assert_problem(api.get("/v1/products?min_price=5&max_price=1", alice), 422)
    assert_problem(api.get("/v1/products/NOPE-NOPE", alice), 404)


def test_many_buyers_of_the_last_units_never_oversell(api: Api, shop: dict[str, User]) -> None:
    manager = shop["manager"]
    buyers = [api.register(f"Buyer {i}") for i in range(12)]
    sku, _ = product(api, manager, stock=7)

    def buy(buyer: User) -> list[str]:
        return [place(api, buyer, (sku, 1)) for _ in range(3)]

    def shrink() -> int:  # a manager writes stock off while the saga reserves
        done = 0
        for _ in range(2):
            r = api.post(f"/v1/inventory/{sku}/adjust", {"delta": -1, "reason": "shrinkage"}, manager)
            assert r.status_code in (200, 409), r.text  # 409: the saga got there first
            done += r.status_code == 200
        return done

    with ThreadPoolExecutor(max_workers=13) as pool:
        shrinking = pool.submit(shrink)
        orders = [(b, o) for b, placed in zip(buyers, pool.map(buy, buyers), strict=True) for o in placed]
        written_off = shrinking.result()
    statuses = [wait_order(api, b, o)["status"] for b, o in orders]
    assert set(statuses) <= {"reserved", "rejected"}
    assert statuses.count("reserved") == 7 - written_off and statuses.count("rejected") == 36 - (7 - written_off)
    eventually(
        lambda: assert_stock(api, manager, sku, reserved=7 - written_off, available=0),
        what="the catalog view to apply the last decision",
    )


def test_every_event_of_an_order_carries_the_requests_correlation_id(
    api: Api, shop: dict[str, User], chronicle_app: Any
) -> None:
    manager, alice = shop["manager"], shop["alice"]
    sku, _ = product(api, manager, stock=2)
    correlation = uuid.uuid4()
    r = api.post("/v1/orders", {"lines": [{"sku": sku, "quantity": 2}]}, alice, x_correlation_id=str(correlation))
    order = r.json()["id"]
    wait_order(api, alice, order)
    cancel = api.post(f"/v1/orders/{order}/cancel", user=alice, x_correlation_id=str(correlation))
    assert cancel.status_code == 200

    def released() -> list[Any]:
        with chronicle_app.database.connection() as conn:
            rows = conn.execute(
                "SELECT type, event_id, causation_id, actor_id FROM events WHERE correlation_id = %s"
                " ORDER BY notification_id",
                (correlation,),
            ).fetchall()
        assert [t for t, *_ in rows].count("Stock.Released") == 1, rows
        return list(rows)

    rows = eventually(released, what="the saga to release the cancelled order's stock")
    types = [t for t, *_ in rows]
    assert types == ["Order.Placed", "Stock.Reserved", "Order.Reserved", "Order.Cancelled", "Stock.Released"]
    ids = {t: event_id for t, event_id, _, _ in rows}
    causes = {t: cause for t, _, cause, _ in rows}
    assert causes["Stock.Reserved"] == causes["Order.Reserved"] == ids["Order.Placed"]
    assert causes["Stock.Released"] == ids["Order.Cancelled"]
    assert {actor for t, _, _, actor in rows if t.startswith("Stock.")} == {"saga:order"}


def test_odd_input_is_a_clear_4xx_never_a_500(api: Api, shop: dict[str, User]) -> None:
    manager, alice = shop["manager"], shop["alice"]
    sku, _ = product(api, manager, stock=3)
    order = place(api, alice, (sku, 1))
    wait_order(api, alice, order)
    assert_problem(api.post(f"/v1/orders/{order}/pay", {"payment_ref": "psp\u0000"}, alice), 422, field="payment_ref")
    assert_problem(
        api.post(
            "/v1/products", {"sku": new_sku(), "name": "Nul\u0000name", "price_minor": 1, "currency": "EUR"}, manager
        ),
        422,
        field="name",
    )
    assert_problem(
        api.post(f"/v1/products/{sku}/edit", {"description": "bell \u0007"}, manager), 422, field="description"
    )
    assert_problem(
        api.post(f"/v1/inventory/{sku}/adjust", {"delta": 1, "reason": "x\u0000"}, manager), 422, field="reason"
    )
    assert_problem(api.get("/v1/products?q=a%00b", alice), 422)
    assert_problem(api.get(f"/v1/products/{sku}%00", alice), 404)
    forged = [encode_cursor(v) for v in ([True, "A"], [1.5, "A"], [[1], "A"], [1, 2, 3], [None, "A"])]
    for cursor in [*forged, encode_cursor(["x", "y"])]:
        assert_problem(api.get(f"/v1/orders?cursor={cursor}", alice), 422)
        assert_problem(api.get(f"/v1/products?sort=price&cursor={cursor}", alice), 422)
        assert_problem(api.get(f"/v1/products?sort=-price&q=x&cursor={cursor}", alice), 422)
    for cursor in [*forged, encode_cursor([1, "A"])]:
        for sort in ("-name", "sku"):
            assert_problem(api.get(f"/v1/products?sort={sort}&cursor={cursor}", alice), 422)
            assert_problem(api.get(f"/v1/products?sort={sort}&q=x&cursor={cursor}", alice), 422)
    superscript_two: Any = "\u00b2".encode("latin-1")  # str.isdigit() says yes; int() says no
    assert_problem(api.post(f"/v1/orders/{order}/cancel", user=alice, if_match=superscript_two), 400)
    assert_problem(api.get(f"/v1/orders/{order}", alice, x_min_position=superscript_two), 400)
    assert_problem(api.get(f"/v1/orders/{order}", alice, x_min_position="9" * 30), 400)
    assert api.post(f"/v1/orders/{order}/cancel", user=alice).status_code == 200


def test_a_cursor_never_widens_the_filters_it_is_sent_with(api: Api, shop: dict[str, User]) -> None:
    manager, alice = shop["manager"], shop["alice"]
    tag = uuid.uuid4().hex[:6].upper()
    for price in (100, 200, 300, 400, 500):
        _, position = product(api, manager, stock=1, price=price, sku=f"W{tag}-{price}")
    first = api.get("/v1/products?sort=-price&in_stock=true&limit=1", alice, x_min_position=position).json()
    top = first["items"][0]["price_minor"]
    assert top >= 500 and first["next_cursor"]
    narrowed = api.get(
        f"/v1/products?sort=-price&in_stock=true&max_price=250&limit=50&cursor={first['next_cursor']}", alice
    ).json()["items"]
    assert narrowed and all(p["price_minor"] <= 250 for p in narrowed)
    assert {f"W{tag}-200", f"W{tag}-100"} <= {p["sku"] for p in narrowed}
