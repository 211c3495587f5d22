//! Redis: key names (`keys`), command encoding (`cmd`), connecting and the handshake
//! (`conn`, shared by the workers' pipeline and the writer's client), reading replies
//! (`reply`, `scan`, `record`), the journal format (`journal`), the Lua scripts one file per
//! family (`scripts`), the workers' client (`client`: one pipelined connection, `pipeline`, to
//! the Redis or to each master of a Redis Cluster, routed by `cluster`) and the checks a new
//! connection makes before it is trusted (`check`: eviction policy, database identity,
//! restart).
//!
//! Key layout: every key of product P carries the hash tag `{p:P}` under the configured
//! prefix, so one product lives in one Redis Cluster slot and every script touches one
//! product's keys only.
//!
//! | key                       | type   | holds                                             |
//! |---------------------------|--------|---------------------------------------------------|
//! | `<pfx>:{p:P}:stock`       | string | reservable units; absent = product not loaded     |
//! | `<pfx>:{p:P}:product`     | hash   | name, price, max, limit, created, updated         |
//! | `<pfx>:{p:P}:order:<ref>` | string | the order record, `st\|qty\|amt\|exp\|ct\|uc\|user` (see `lua/lib.lua`) |
//! | `<pfx>:{p:P}:pending`     | zset   | references joined by NUL → expiry (ms), one member per reserve call or restored order: what the reaper watches |
//! | `<pfx>:{p:P}:journal`     | zset   | changes owed to PostgreSQL → time (ms): `<ref>,<ref>,…\|pending` per reserve call, `<ref>\|<state>` per later change |
//! | `<pfx>:redis_run_id`      | string | the Redis `run_id` whose data was last checked (see `check`) |
//! | `<pfx>:database`          | string | the identity of the PostgreSQL database the prefix's data belongs to (see `check`) |
//! | `<pfx>:{m:K}:redis_run_id`, `<pfx>:{m:K}:database` | string | the same two markers per master of a cluster, `K` chosen so that `{m:K}` is a slot the master serves |
//! | `<pfx>:{p:P}:users`       | hash   | user → units pending or paid (limited products; a user at 0 is removed) |
//! | `<pfx>:{p:P}:idem:<hash>` | string | `ref\|qty\|amt\|exp\|ct` to replay for an Idempotency-Key; `<hash>` is 128 bits of SHA-256 of the buyer and the key (`FLASHSALE_IDEMPOTENCY_TTL_SECS`) |
//!
//! Client text never decides the kind of a key: idempotency keys are hashed, user ids are
//! fields of a hash, and references in key names are ours (`<pid>-<ULID>`) or come from
//! PostgreSQL. Every SCAN still checks the exact kind of each key it finds
//! (`Keys::product_if`), since a glob cannot.

pub mod check;
pub mod client;
pub mod cluster;
pub mod cmd;
pub mod conn;
pub mod journal;
pub mod keys;
pub mod pipeline;
pub mod record;
pub mod reply;
pub mod scan;
pub mod scripts;
