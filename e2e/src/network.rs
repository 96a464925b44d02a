//! Pod networking: the address pool of the pod range, and one network namespace per pod
//! joined to the cluster bridge by a veth pair (eth0 inside, default route via the bridge).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::str::FromStr;

use anyhow::{Context as _, bail};

use crate::host;

/// Every network namespace the agent creates starts with this, so leftovers can be found.
pub const NETNS_PREFIX: &str = "mapchaos-";

/// An IPv4 range such as `10.213.0.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (ip, prefix) = s.split_once('/').context("CIDR needs a /prefix")?;
        let prefix: u8 = prefix.parse().context("CIDR prefix")?;
        if !(8..=30).contains(&prefix) {
            bail!("CIDR prefix /{prefix} out of range 8..=30");
        }
        let ip: Ipv4Addr = ip.parse().context("CIDR address")?;
        let mask = u32::MAX << (32 - prefix);
        Ok(Cidr {
            base: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }
}

impl Cidr {
    fn size(&self) -> u32 {
        1 << (32 - self.prefix)
    }

    /// The bridge's (gateway's) address: the first host of the range.
    pub fn gateway(&self) -> Ipv4Addr {
        self.nth(1)
    }

    fn nth(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + offset)
    }
}

/// Hands out pod addresses round-robin, so a just-freed address is not reused at once (a
/// scraper or endpoint list may still point at it).
#[derive(Debug)]
pub struct AddressPool {
    cidr: Cidr,
    next: u32,
    used: BTreeSet<u32>,
}

impl AddressPool {
    pub fn new(cidr: Cidr) -> Self {
        Self {
            cidr,
            next: 2,
            used: BTreeSet::new(),
        }
    }

    /// A free address and its offset in the range (used to name the veth).
    pub fn allocate(&mut self) -> Option<(Ipv4Addr, u32)> {
        let first = 2;
        let last = self.cidr.size() - 2;
        let span = last - first + 1;
        for i in 0..span {
            let offset = first + (self.next - first + i) % span;
            if self.used.insert(offset) {
                self.next = if offset == last { first } else { offset + 1 };
                return Some((self.cidr.nth(offset), offset));
            }
        }
        None
    }

    /// Takes a specific address (a pod keeps its IP across an agent restart), if it is in
    /// the range, not reserved and free.
    pub fn claim(&mut self, ip: Ipv4Addr) -> Option<u32> {
        let offset = u32::from(ip).checked_sub(u32::from(self.cidr.base))?;
        let usable = 2..=self.cidr.size() - 2;
        (usable.contains(&offset) && self.used.insert(offset)).then_some(offset)
    }

    pub fn release(&mut self, offset: u32) {
        self.used.remove(&offset);
    }
}

/// One pod's network namespace and the host end of its veth.
#[derive(Clone, Debug)]
pub struct PodNetwork {
    pub netns: String,
    pub host_veth: String,
    pub ip: Ipv4Addr,
    pub offset: u32,
}

impl PodNetwork {
    pub fn new(pod_uid: &str, ip: Ipv4Addr, offset: u32) -> Self {
        Self {
            netns: format!("{NETNS_PREFIX}{pod_uid}"),
            host_veth: format!("mcv{offset}"),
            ip,
            offset,
        }
    }

    /// Creates the namespace, the veth pair on `bridge`, addresses, loopback and route.
    /// On failure nothing is left behind.
    pub async fn create(&self, bridge: &str, cidr: &Cidr) -> anyhow::Result<()> {
        let result = self.try_create(bridge, cidr).await;
        if result.is_err() {
            self.delete().await;
        }
        result
    }

    async fn try_create(&self, bridge: &str, cidr: &Cidr) -> anyhow::Result<()> {
        let ns = self.netns.as_str();
        let peer = format!("mcp{}", self.offset);
        let addr = format!("{}/{}", self.ip, cidr.prefix);
        let gateway = cidr.gateway().to_string();
        // A leftover from an earlier pod with the same address would make `link add` fail.
        let _ = host::run("ip", &["link", "del", &self.host_veth]).await;
        host::run("ip", &["netns", "add", ns]).await?;
        host::run(
            "ip",
            &[
                "link",
                "add",
                &self.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ],
        )
        .await?;
        host::run("ip", &["link", "set", &peer, "netns", ns]).await?;
        host::run(
            "ip",
            &["link", "set", &self.host_veth, "master", bridge, "up"],
        )
        .await?;
        host::run("ip", &["-n", ns, "link", "set", &peer, "name", "eth0"]).await?;
        host::run("ip", &["-n", ns, "addr", "add", &addr, "dev", "eth0"]).await?;
        host::run("ip", &["-n", ns, "link", "set", "eth0", "up"]).await?;
        host::run("ip", &["-n", ns, "link", "set", "lo", "up"]).await?;
        host::run(
            "ip",
            &["-n", ns, "route", "add", "default", "via", &gateway],
        )
        .await?;
        Ok(())
    }

    /// Deletes the namespace (which takes the veth pair with it) after killing whatever
    /// still runs inside. Never fails: teardown has to go on.
    pub async fn delete(&self) {
        delete_netns(&self.netns).await;
        let _ = host::run("ip", &["link", "del", &self.host_veth]).await;
    }
}

/// Kills every process in a network namespace, then deletes it.
pub async fn delete_netns(netns: &str) {
    if let Ok(pids) = host::run("ip", &["netns", "pids", netns]).await {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i64>().ok())
        {
            host::kill("KILL", pid).await;
        }
    }
    if let Err(e) = host::run("ip", &["netns", "del", netns]).await {
        tracing::debug!(%netns, error = %e, "netns already gone");
    }
}

/// Removes pod namespaces left by an earlier run of the agent (their pods are re-created).
pub async fn delete_leftovers() -> anyhow::Result<usize> {
    let list = host::run("ip", &["netns", "list"]).await?;
    let ours: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(NETNS_PREFIX))
        .collect();
    for ns in &ours {
        delete_netns(ns).await;
    }
    Ok(ours.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_masks() {
        let c: Cidr = "10.213.0.9/24".parse().expect("valid");
        assert_eq!(c.base, Ipv4Addr::new(10, 213, 0, 0));
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 213, 0, 1));
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        assert!("10.0.0.0/31".parse::<Cidr>().is_err());
    }

    #[test]
    fn pool_skips_network_gateway_and_broadcast_and_goes_round_robin() {
        let mut pool = AddressPool::new("10.1.2.0/29".parse().expect("valid"));
        let got: Vec<u32> = (0..5)
            .filter_map(|_| pool.allocate())
            .map(|(_, o)| o)
            .collect();
        assert_eq!(got, vec![2, 3, 4, 5, 6]);
        assert_eq!(pool.allocate(), None);
        pool.release(3);
        pool.release(5);
        assert_eq!(
            pool.allocate().map(|(ip, _)| ip),
            Some(Ipv4Addr::new(10, 1, 2, 3))
        );
        assert_eq!(pool.allocate().map(|(_, o)| o), Some(5));
    }

    #[test]
    fn claim_takes_only_free_usable_addresses_in_range() {
        let mut pool = AddressPool::new("10.1.2.0/24".parse().expect("valid"));
        assert_eq!(pool.claim(Ipv4Addr::new(10, 1, 2, 9)), Some(9));
        assert_eq!(pool.claim(Ipv4Addr::new(10, 1, 2, 9)), None);
        assert_eq!(pool.claim(Ipv4Addr::new(10, 1, 2, 1)), None);
        assert_eq!(pool.claim(Ipv4Addr::new(10, 1, 2, 255)), None);
        assert_eq!(pool.claim(Ipv4Addr::new(10, 1, 3, 9)), None);
    }

    #[test]
    fn freed_address_is_not_reused_immediately() {
        let mut pool = AddressPool::new("10.1.2.0/24".parse().expect("valid"));
        let (_, a) = pool.allocate().expect("free");
        pool.release(a);
        let (_, b) = pool.allocate().expect("free");
        assert_ne!(a, b);
    }

    #[test]
    fn names_fit_linux_interface_limits() {
        let n = PodNetwork::new(
            "0f1e2d3c-aaaa-bbbb-cccc-000000000000",
            Ipv4Addr::LOCALHOST,
            65534,
        );
        assert!(n.host_veth.len() <= 15);
        assert!(n.netns.starts_with(NETNS_PREFIX));
    }
}
