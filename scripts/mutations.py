#!/usr/bin/env python3
"""Rule mutations: each breaks one rule of the Lua scripts or the SQL (in migrations or in
the Rust files that hold it) on purpose, and the
named tests must then fail. A mutation the tests survive is a rule nothing checks.

Usage: scripts/mutations.py [NAME...]   (all of them by default; a few minutes)

Each mutation replaces one exact text in one file, runs `cargo test --features
flashsale/failpoints --test it <filter>` and puts the file back, whatever happens. Run from a
clean checkout: it refuses to touch a file with uncommitted changes. PostgreSQL and Redis must
be running (scripts/services.sh). The Rust rules are mutated by cargo-mutants instead
(docs/development.md).
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (name, file, text, replacement, test filter, what it breaks)
MUTATIONS = [
    ("pay-past-expiry", "lua/pay.lua",
     "if rec.st == 'pending' and rec.exp <= now then", "if false then",
     "cancel::past_its_expiry", "a payment after expires_at but before the reaper's tick wins"),
    ("fail-past-expiry", "lua/fail.lua",
     "  if rec.exp <= now then", "  if false then",
     "cancel::past_its_expiry", "a failure past expiry is recorded as payment_failed"),
    ("cancel-past-expiry", "lua/cancel.lua",
     "if rec.st == 'pending' and rec.exp <= now then", "if false then",
     "cancel::past_its_expiry", "a cancellation past expiry beats the expiry"),
    ("cancel-paid", "lua/cancel.lua",
     "if rec.st == 'pending' then", "if rec.st == 'pending' or rec.st == 'paid' then",
     "cancel::", "a paid order can be cancelled (units sold twice)"),
    ("cancel-anyones", "lua/cancel.lua",
     "if ARGV[2] ~= '' and rec.user ~= ARGV[2] then", "if false then",
     "auth::only_the_buyer_cancels", "in jwt mode anyone cancels anyone's order"),
    ("cancel-repeat-refused", "lua/cancel.lua",
     "if rec.st == 'buyer_cancelled' then\n  return record_reply(1", "if false then\n  return record_reply(1",
     "cancel::a_cancelled_order", "a repeated cancellation answers 409"),
    ("allowance-kept", "lua/lib.lua",
     "if redis.call('HINCRBY', users_key, rec.user, -rec.qty) <= 0 then",
     "if redis.call('HINCRBY', users_key, rec.user, 0) <= 0 then",
     "cancel::a_cancelled_order", "a cancelled order keeps counting against its buyer's limit"),
    ("units-back-twice", "lua/lib.lua",
     "redis.call('INCRBY', stock_key, rec.qty)", "redis.call('INCRBY', stock_key, rec.qty * 2)",
     "cancel::", "a cancelled order returns its units twice"),
    ("events-out-of-order", "src/events/mod.rs",
     "AND p.sequence < d.sequence AND p.status = 'pending')",
     "AND p.sequence < d.sequence AND p.status = 'pending' AND false)",
     "events::events_are_delivered", "an order's event n+1 is sent before event n is done"),
    ("late-payment-event-twice", "src/writer/pg.rs",
     "    ON CONFLICT (order_reference) DO NOTHING\n    RETURNING order_reference\n), bumped AS (",
     "    ON CONFLICT (order_reference) DO UPDATE SET amount_cents = EXCLUDED.amount_cents\n"
     "    RETURNING order_reference\n), bumped AS (",
     "events::every_change", "a repeated late payment records a second event"),
    ("retention-drops-pending", "src/events/mod.rs",
     "            AND (d.status = 'pending'\n", "            AND (false\n",
     "events::events_past", "retention deletes an event whose delivery is still pending"),
    ("buyer-reason-refused", "migrations/0007_buyer_cancellation.sql",
     "('payment_failed', 'expired', 'buyer')", "('payment_failed', 'expired')",
     "cancel::a_cancelled_order", "PostgreSQL cannot record a buyer's cancellation"),
]


def dirty(path):
    out = subprocess.run(["git", "status", "--porcelain", "--", path], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return bool(out.strip())


def run(name, path, old, new, test, what):
    f = ROOT / path
    text = f.read_text()
    if text.count(old) != 1:
        return f"BROKEN  {name}: the text to mutate is not once in {path}"
    if dirty(path):
        return f"SKIPPED {name}: {path} has uncommitted changes"
    try:
        f.write_text(text.replace(old, new))
        r = subprocess.run(["cargo", "test", "-q", "--features", "flashsale/failpoints",
                            "--test", "it", "--", test], cwd=ROOT, capture_output=True, text=True)
    finally:
        f.write_text(text)
    if r.returncode != 0:
        return f"CAUGHT  {name}: {what} ({test} failed)"
    return f"MISSED  {name}: {what} ({test} passed with the mutation)"


def main():
    wanted = set(sys.argv[1:])
    results = [run(*m) for m in MUTATIONS if not wanted or m[0] in wanted]
    print("\n".join(results))
    sys.exit(0 if all(r.startswith("CAUGHT") for r in results) else 1)


if __name__ == "__main__":
    main()
