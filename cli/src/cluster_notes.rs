//! What `mapchaos run` tells a user about a Redis Cluster target before the
//! storm: the primaries it found, and a key prefix that would put every
//! storm key in one slot.

use mapchaos_api::spec::{KeySource, KeySpec};
use mapchaos_storm::cluster::ClusterTarget;
use mapchaos_storm::cluster::slots::{hash_tag, slot_of};

/// Print the notes on stderr.
pub fn print(cluster: &ClusterTarget, keys: &KeySpec) {
    let primaries = cluster.primaries();
    eprintln!(
        "note: --target is a Redis Cluster: {} primaries ({}); keys go to their slot's primary",
        primaries.len(),
        primaries.join(", ")
    );
    if let Some(warning) = hash_tag_warning(keys) {
        eprintln!("warning: {warning}");
    }
}

/// A synthetic keyspace whose prefix holds a hash tag hashes every key to
/// one slot, so one primary gets the whole storm.
fn hash_tag_warning(keys: &KeySpec) -> Option<String> {
    if keys.source != KeySource::Synthetic {
        return None;
    }
    let tag = hash_tag(keys.prefix.as_bytes())?;
    Some(format!(
        "spec.storm.keys.prefix {:?} holds the hash tag {{{}}}: every storm key hashes to slot {}, so one primary gets the whole storm",
        keys.prefix,
        String::from_utf8_lossy(tag),
        slot_of(keys.prefix.as_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_with_a_hash_tag_is_warned_about() {
        let mut keys = KeySpec {
            prefix: "{orders}:".into(),
            ..KeySpec::default()
        };
        let warning = hash_tag_warning(&keys).unwrap();
        assert!(warning.contains("{orders}"), "{warning}");
        assert!(
            warning.contains(&slot_of(b"orders").to_string()),
            "{warning}"
        );
        keys.prefix = "orders:".into();
        assert_eq!(hash_tag_warning(&keys), None);
        keys.prefix = "orders{}:".into();
        assert_eq!(hash_tag_warning(&keys), None, "an empty tag is no tag");
    }
}
