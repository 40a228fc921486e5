//! etcd leases through the `etcd` crate against a real etcd (mutual TLS): the election an HA
//! cluster's VIP follows. A key put under a lease is held while the lease is renewed; a
//! second claimant's create-if-absent fails; when the holder stops renewing, the key goes
//! with the lease and the next claimant wins; a revoked lease frees the key at once.

mod common;

use std::time::{Duration, Instant};

use common::registries::{etcd, Pki};
use etcd::{Compare, EtcdClient, Op};

#[test]
fn a_lease_holds_a_key_while_renewed_and_frees_it_when_not() {
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
        let claim = |who: &'static str, lease| {
            let key = key.clone();
            let client = &client;
            async move {
                client
                    .txn(
                        &[Compare::Absent(key.clone())],
                        &[Op::PutWithLease(key, who.as_bytes().to_vec(), lease)],
                    )
                    .await
                    .unwrap()
            }
        };
        let first = client.lease_grant(2).await.unwrap();
        let second = client.lease_grant(2).await.unwrap();
        assert!(claim("node1", first).await, "the first claim wins");
        assert!(!claim("node2", second).await, "a held key is not taken");

        // Renewed past its TTL, the lease keeps the key.
        let renewed_until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < renewed_until {
            assert!(client.lease_keep_alive(first).await.unwrap().is_some());
            assert!(client.lease_keep_alive(second).await.unwrap().is_some());
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let held = client.get(&key).await.unwrap().unwrap();
        assert_eq!(held.value, b"node1");
        assert!(!claim("node2", second).await);

        // node1 stops renewing (it died, or lost quorum): the key goes with the lease.
        let stopped = Instant::now();
        loop {
            assert!(client.lease_keep_alive(second).await.unwrap().is_some());
            if claim("node2", second).await {
                break;
            }
            assert!(
                stopped.elapsed() < Duration::from_secs(8),
                "the expired holder's key never went"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!(
            "taken over {:?} after the holder stopped renewing",
            stopped.elapsed()
        );
        assert_eq!(client.get(&key).await.unwrap().unwrap().value, b"node2");
        assert_eq!(client.lease_keep_alive(first).await.unwrap(), None);

        // Revoking frees it at once.
        client.lease_revoke(second).await.unwrap();
        assert!(client.get(&key).await.unwrap().is_none());
    });
    drop(server);
}
