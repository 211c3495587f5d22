"""schemathesis hooks for scripts/contract.sh: rules of the API that a JSON Schema cannot say.

Two rules, each refused with 422 on its field although every value on its own is valid:
- a product's sale must end after it starts (`sale_ends_at`): the two times of one body, or a
  PATCH's time and the product's stored other one;
- a product with a per-buyer limit needs a `user_id` in `none` mode (`user_id`), and an
  order's `qty` may not pass the product's `max_per_order` (`qty`), and a restock may not
  take the stock past 10^12 (`delta`): rules of the stored product, not of the body;
- an `Idempotency-Key` already used with another body is 422 `idempotency_key_reused` (the
  IETF draft's status): a rule of what was sent before.
The generators skip bodies that break the first rule where they can (`filter_body`); the
coverage phase does not run generator hooks, so a "valid data refused" failure is dropped
when (and only when) the 422 names exactly one of these rules and nothing else.
"""

import json
import re
from datetime import datetime

import schemathesis

WINDOW = {"sale_ends_at": ["The sale must end after it starts."]}
BUYER_NEEDED = {"user_id": ["The user id field is required for this product."]}
STATE_RULES = {
    "qty": re.compile(r"The qty must not be greater than [0-9]+\."),
    "delta": re.compile(r"The stock would pass [0-9]+ units: at most [0-9]+ can be added now\."),
}


def _state_rule(errors):
    """Whether a 422's errors name exactly one rule about the stored product."""
    if errors in (WINDOW, BUYER_NEEDED):
        return True
    if not isinstance(errors, dict) or len(errors) != 1:
        return False
    ((field, messages),) = errors.items()
    rule = STATE_RULES.get(field)
    return rule is not None and len(messages) == 1 and rule.fullmatch(messages[0]) is not None


def _instant(v):
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None


@schemathesis.hook
def filter_body(context, body):
    if not isinstance(body, dict):
        return True
    start, end = _instant(body.get("sale_starts_at")), _instant(body.get("sale_ends_at"))
    return start is None or end is None or start < end


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if response is None or response.status_code != 422:
        return True
    if "accepted" not in str(getattr(failure, "title", "")).lower() and type(failure).__name__ != "RejectedPositiveData":
        return True
    try:
        body = json.loads(response.content)
    except ValueError:
        return True
    if not isinstance(body, dict):
        return True
    if body.get("code") == "idempotency_key_reused":
        return False
    return not _state_rule(body.get("errors"))
