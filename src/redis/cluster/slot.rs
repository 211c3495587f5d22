//! Redis Cluster's addressing: the slot of a key (CRC16 of its hash tag), the slot map a
//! node reports (`CLUSTER SLOTS`), and the redirections a node answers with.
//!
//! Written here rather than taken from a client library: the routing is these three small
//! pieces, and the clients that have them (fred, redis-rs) own their connections, which would
//! take away the checks every connection of ours makes before it carries a request
//! (`redis::check`) and the per-core pipelining and batching of the workers.

use crate::config::RedisTarget;
use crate::redis::reply::{ReplyError, array, as_int, as_string};
use redis_async::resp::RespValue;

/// Slots of a Redis Cluster.
pub const SLOTS: usize = 16384;

/// CRC16-XMODEM (polynomial 0x1021, initial value 0), as Redis Cluster computes it.
const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_XMODEM);

/// The slot of `key`: CRC16 of the text between the first `{` and the next `}` when that is
/// not empty, else of the whole key, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match memchr::memchr(b'{', key) {
        Some(open) => match memchr::memchr(b'}', &key[open + 1..]) {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    CRC16.checksum(hashed) % SLOTS as u16
}

/// A node's address, as the cluster names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Node {
    /// The address of a configured server (a seed node).
    pub fn of(target: &RedisTarget) -> Node {
        Node {
            host: target.host.clone(),
            port: target.port,
        }
    }

    /// How to connect to this node: `template`'s credentials (every node of a cluster shares
    /// them) with this node's address.
    pub fn target(&self, template: &RedisTarget) -> RedisTarget {
        RedisTarget {
            host: self.host.clone(),
            port: self.port,
            ..template.clone()
        }
    }

    /// Parses `host:port` (as in `MOVED 3999 127.0.0.1:7002`; IPv6 hosts end at the last `:`).
    pub fn parse(s: &str) -> Option<Node> {
        let (host, port) = s.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Some(Node {
            host: host.to_string(),
            port: port.parse().ok()?,
        })
    }
}

/// Which master serves each slot.
#[derive(Clone, Debug)]
pub struct SlotMap {
    /// The masters, sorted, each once.
    masters: Vec<Node>,
    /// Per slot, an index into `masters` (`u16::MAX`: no master serves it).
    owner: Box<[u16]>,
}

/// No master serves the slot (a cluster being set up, or a slot lost with its master).
const UNSERVED: u16 = u16::MAX;

impl SlotMap {
    /// Reads a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id, ...], replicas...], ...]`.
    /// An empty host means "the node you asked": `asked` stands in for it.
    pub fn parse(v: RespValue, asked: &Node) -> Result<SlotMap, ReplyError> {
        let mut ranges = Vec::new();
        for range in array(v, "CLUSTER SLOTS")? {
            let mut fields = array(range, "CLUSTER SLOTS range")?.into_iter();
            let (Some(start), Some(end), Some(master)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(ReplyError("CLUSTER SLOTS range of the wrong length".into()));
            };
            let (start, end) = (as_int(&start)?, as_int(&end)?);
            if !(0..SLOTS as i64).contains(&start) || !(start..SLOTS as i64).contains(&end) {
                return Err(ReplyError(format!("CLUSTER SLOTS range {start}-{end}")));
            }
            let mut node = array(master, "CLUSTER SLOTS node")?.into_iter();
            let (Some(host), Some(port)) = (node.next(), node.next()) else {
                return Err(ReplyError(
                    "CLUSTER SLOTS node without host and port".into(),
                ));
            };
            let host = as_string(host)?;
            let port = u16::try_from(as_int(&port)?)
                .map_err(|_| ReplyError("CLUSTER SLOTS port out of range".into()))?;
            let node = if host.is_empty() || host == "?" {
                Node {
                    host: asked.host.clone(),
                    port,
                }
            } else {
                Node { host, port }
            };
            ranges.push((start as usize, end as usize, node));
        }
        let mut masters: Vec<Node> = ranges.iter().map(|(_, _, n)| n.clone()).collect();
        masters.sort();
        masters.dedup();
        let mut owner = vec![UNSERVED; SLOTS].into_boxed_slice();
        for (start, end, node) in &ranges {
            let i = masters.binary_search(node).expect("listed above") as u16;
            owner[*start..=*end].fill(i);
        }
        Ok(SlotMap { masters, owner })
    }

    /// The master serving `slot`, if any.
    pub fn master_of(&self, slot: u16) -> Option<&Node> {
        match self.owner[slot as usize] {
            UNSERVED => None,
            i => Some(&self.masters[i as usize]),
        }
    }

    pub fn masters(&self) -> &[Node] {
        &self.masters
    }

    /// Whether every slot has a master.
    pub fn is_complete(&self) -> bool {
        !self.owner.contains(&UNSERVED)
    }
}

/// A cluster's answer that the command must go elsewhere or wait (the command did not run).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redirect {
    /// `MOVED <slot> <node>`: the slot has a new master; the slot map is stale.
    Moved(u16, Node),
    /// `ASK <slot> <node>`: the slot is being migrated and this key is on `node` already;
    /// send `ASKING` and the command there, once (the slot map is unchanged).
    Ask(u16, Node),
    /// `TRYAGAIN`: a multi-key command during a migration found some keys on each side; try
    /// again shortly. `CLUSTERDOWN` (`cluster_down`): the cluster cannot serve the slot now
    /// (a failover); try again shortly too.
    Retry { cluster_down: bool },
}

impl Redirect {
    /// The redirection an error reply means, if any.
    pub fn of(error: &str) -> Option<Redirect> {
        let mut words = error.split_ascii_whitespace();
        let kind = words.next()?;
        match kind {
            "MOVED" | "ASK" => {
                let slot: u16 = words.next()?.parse().ok()?;
                let node = Node::parse(words.next()?)?;
                if slot as usize >= SLOTS {
                    return None;
                }
                Some(if kind == "MOVED" {
                    Redirect::Moved(slot, node)
                } else {
                    Redirect::Ask(slot, node)
                })
            }
            "TRYAGAIN" => Some(Redirect::Retry {
                cluster_down: false,
            }),
            "CLUSTERDOWN" => Some(Redirect::Retry { cluster_down: true }),
            _ => None,
        }
    }

    /// Whether the slot map that sent the command is out of date: the slot moved, or the
    /// cluster is failing over (its masters are changing).
    pub fn map_is_stale(&self) -> bool {
        matches!(
            self,
            Redirect::Moved(..) | Redirect::Retry { cluster_down: true }
        )
    }
}

/// The slot ranges of the node that answered `CLUSTER NODES` (its `myself` line; ranges
/// being imported or migrated, `[slot-<-id]`, are not its own yet or still are).
pub fn myself_slots(nodes: &str) -> Vec<(u16, u16)> {
    let Some(line) = nodes.lines().find(|l| {
        l.split(' ')
            .nth(2)
            .is_some_and(|flags| flags.split(',').any(|f| f == "myself"))
    }) else {
        return Vec::new();
    };
    line.split(' ')
        .skip(8)
        .filter(|r| !r.starts_with('['))
        .filter_map(|r| match r.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => r.parse().ok().map(|s| (s, s)),
        })
        .collect()
}

/// The hash tag of the markers of the node that answered `CLUSTER NODES` (see
/// `redis::check`): one of its own slots; `None` when it serves none.
pub fn marker_tag(nodes: &str) -> Option<String> {
    let ranges = myself_slots(nodes);
    if ranges.is_empty() {
        return None;
    }
    tag_in(&|s| ranges.iter().any(|(a, b)| (*a..=*b).contains(&s)))
}

/// A hash tag of the form `m:<k>` whose slot is one of `slots` (for keys that must live on
/// one particular master, such as its restart marker), the smallest such `k`.
pub fn tag_in(slots: &dyn Fn(u16) -> bool) -> Option<String> {
    // A master serving a single slot needs ~16k tries on average: microseconds each.
    (0..2_000_000u32)
        .map(|k| format!("m:{k}"))
        .find(|tag| slots(key_slot(tag.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::reply::fake::{bulk, int};

    #[test]
    fn slots_match_redis() {
        // Values from CLUSTER KEYSLOT of Redis 7.
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"fs:{p:12}:stock"), key_slot(b"p:12"));
        assert_eq!(key_slot(b"fs:{p:12}:order:12-X"), key_slot(b"p:12"));
        // An empty tag hashes the whole key; only the first tag counts.
        assert_eq!(key_slot(b"a{}b"), CRC16.checksum(b"a{}b") % 16384);
        assert_eq!(key_slot(b"a{b}{c}"), key_slot(b"b"));
        assert_eq!(key_slot(b"a{b"), CRC16.checksum(b"a{b") % 16384);
    }

    #[test]
    fn redirections_parse() {
        let n = Node {
            host: "127.0.0.1".into(),
            port: 7002,
        };
        assert_eq!(
            Redirect::of("MOVED 3999 127.0.0.1:7002"),
            Some(Redirect::Moved(3999, n.clone()))
        );
        assert_eq!(
            Redirect::of("ASK 3999 127.0.0.1:7002"),
            Some(Redirect::Ask(3999, n))
        );
        assert_eq!(
            Redirect::of("ASK 1 [::1]:7000"),
            Some(Redirect::Ask(
                1,
                Node {
                    host: "::1".into(),
                    port: 7000
                }
            ))
        );
        assert_eq!(
            Redirect::of("TRYAGAIN Multiple keys request during rehashing of slot"),
            Some(Redirect::Retry {
                cluster_down: false
            })
        );
        assert_eq!(
            Redirect::of("CLUSTERDOWN The cluster is down"),
            Some(Redirect::Retry { cluster_down: true })
        );
        assert_eq!(Redirect::of("MOVED 99999 h:1"), None);
        assert_eq!(Redirect::of("NOSCRIPT No matching script"), None);
        assert_eq!(Redirect::of("ERR x"), None);
    }

    #[test]
    fn slot_maps_parse() {
        let node = |h: &str, p: i64| RespValue::Array(vec![bulk(h), int(p), bulk("id")]);
        let v = RespValue::Array(vec![
            RespValue::Array(vec![
                int(0),
                int(5460),
                node("127.0.0.1", 7000),
                node("127.0.0.1", 7003),
            ]),
            RespValue::Array(vec![int(5461), int(10922), node("", 7001)]),
            RespValue::Array(vec![int(10923), int(16383), node("127.0.0.1", 7002)]),
        ]);
        let asked = Node {
            host: "10.0.0.9".into(),
            port: 7001,
        };
        let m = SlotMap::parse(v, &asked).unwrap();
        assert!(m.is_complete());
        assert_eq!(m.masters().len(), 3);
        assert_eq!(m.master_of(0).unwrap().port, 7000);
        assert_eq!(m.master_of(5461).unwrap(), &asked);
        assert_eq!(m.master_of(16383).unwrap().port, 7002);
        let partial = RespValue::Array(vec![RespValue::Array(vec![int(0), int(10), node("h", 1)])]);
        let m = SlotMap::parse(partial, &asked).unwrap();
        assert!(!m.is_complete());
        assert!(m.master_of(11).is_none());
        let bad = RespValue::Array(vec![RespValue::Array(vec![int(5), int(2), node("h", 1)])]);
        assert!(SlotMap::parse(bad, &asked).is_err());
    }

    #[test]
    fn own_slots_come_from_the_myself_line() {
        let nodes = "\
a1 127.0.0.1:7001@17001 master - 0 1 2 connected 5461-10922\n\
b2 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 10923 [12-<-c3]\n\
c3 127.0.0.1:7003@17003 slave b2 0 1 1 connected\n";
        assert_eq!(myself_slots(nodes), vec![(0, 5460), (10923, 10923)]);
        let replica = "c3 127.0.0.1:7003@17003 myself,slave b2 0 1 1 connected\n";
        assert!(myself_slots(replica).is_empty());
    }

    #[test]
    fn tags_land_where_asked() {
        let tag = tag_in(&|s| s == 42).unwrap();
        assert_eq!(key_slot(format!("x:{{{tag}}}:y").as_bytes()), 42);
        let tag = tag_in(&|s| (100..200).contains(&s)).unwrap();
        assert!((100..200).contains(&key_slot(tag.as_bytes())));
    }
}
