//! Compare-and-swap claims through the `etcd` crate against a real etcd (mutual TLS): the
//! primitive an HA cluster's VIP election is built on. A create-only claim answers the
//! revision it wrote, which is the key's mod revision; a renewal naming that revision
//! succeeds and answers the next one; a takeover naming a revision the holder has renewed
//! past fails and writes nothing; one naming the current revision wins, and the old holder's
//! next renewal then fails. And a client reaches its member at the alternate URL when the
//! endpoint refuses, as a member configured before the gateway had a port of its own needs.

mod common;

use common::registries::{etcd, free_port, Pki};
use etcd::{Compare, EtcdClient, Op};

#[test]
fn a_claim_is_renewed_and_taken_over_only_at_the_revision_it_was_last_written() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let server = etcd(dir.path(), &pki);
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    let client = EtcdClient::new(
        &format!("https://127.0.0.1:{}", server.port),
        &read(&pki.ca),
        &read(&pki.cert),
        &read(&pki.key),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let key = "/airgap/test/vip-holder".to_string();
        let put = |who: &str| [Op::Put(key.clone(), who.as_bytes().to_vec())];
        let at = |revision: i64| [Compare::ModRevision(key.clone(), revision)];

        let first = client
            .txn_at(&[Compare::Absent(key.clone())], &put("node1"))
            .await
            .unwrap()
            .expect("the first claim wins");
        assert_eq!(client.get(&key).await.unwrap().unwrap().mod_revision, first);
        let again = client
            .txn_at(&[Compare::Absent(key.clone())], &put("node2"))
            .await
            .unwrap();
        assert_eq!(
            again, None,
            "a held claim is not taken by a create-only put"
        );

        // node1 renews: a new revision each time.
        let renewed = client.txn_at(&at(first), &put("node1")).await.unwrap();
        let renewed = renewed.expect("a renewal at the current revision");
        assert!(renewed > first);
        // node2 saw `first` and waited: its takeover names a revision renewed past.
        assert_eq!(
            client.txn_at(&at(first), &put("node2")).await.unwrap(),
            None
        );
        assert_eq!(client.get(&key).await.unwrap().unwrap().value, b"node1");

        // node1 stops renewing; node2's takeover at the current revision wins.
        let taken = client.txn_at(&at(renewed), &put("node2")).await.unwrap();
        assert!(taken.is_some_and(|r| r > renewed));
        assert_eq!(client.get(&key).await.unwrap().unwrap().value, b"node2");
        // node1's next renewal fails: it must let go.
        assert_eq!(
            client.txn_at(&at(renewed), &put("node1")).await.unwrap(),
            None
        );
        assert!(!client.txn(&at(renewed), &put("node1")).await.unwrap());
    });
    drop(server);
}

/// A member's JSON gateway has a port of its own since etcd 3.5 members got one; a member
/// configured by an older release serves it only on its client port. A client whose endpoint
/// refuses connections asks the same member at its alternate URL, requests and health checks
/// alike; without the alternate the same client fails.
#[test]
fn a_refused_endpoint_is_asked_again_at_the_same_members_alternate_url() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let server = etcd(dir.path(), &pki);
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    // A loopback port nothing listens on: connections to it are refused.
    let refused = free_port();
    let client = EtcdClient::new(
        &format!("https://127.0.0.1:{refused}"),
        &read(&pki.ca),
        &read(&pki.cert),
        &read(&pki.key),
    )
    .unwrap();
    let with_alternate = client
        .clone()
        .with_alternate(&format!("https://127.0.0.1:{}", server.port));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        assert!(client.health().await.is_err());
        assert!(client.get("/airgap/test/k").await.is_err());
        with_alternate.health().await.unwrap();
        with_alternate
            .txn_at(&[], &[Op::Put("/airgap/test/k".into(), b"v".to_vec())])
            .await
            .unwrap();
        let kv = with_alternate.get("/airgap/test/k").await.unwrap().unwrap();
        assert_eq!(kv.value, b"v");
    });
}
