//! A TCP proxy that makes loopback look like a WAN link, for benchmarks: every byte arrives
//! `one_way` later than it was sent, and each connection carries at most `rate` bytes per
//! second in each direction (what a long-distance TCP flow gets), so tools are compared where
//! parallel transfers and round trips matter, as they do between a connected site and a
//! remote registry.
//!
//! Plain threads: a benchmark opens tens of connections, and each direction is a reader that
//! paces chunks onto a queue and a writer that releases each one when its delay is over.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How the link behaves.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// Half the round trip.
    pub one_way: Duration,
    /// Bytes per second per connection and direction.
    pub rate: u64,
}

const CHUNK: usize = 16 << 10;

/// Accepts on `listener` forever, relaying each connection to `upstream` through `link`.
pub fn serve(listener: TcpListener, upstream: SocketAddr, link: Link) -> io::Result<()> {
    for client in listener.incoming() {
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                eprintln!("wan-proxy: accept: {e}");
                continue;
            }
        };
        std::thread::spawn(move || {
            let server = match TcpStream::connect(upstream) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("wan-proxy: connect {upstream}: {e}");
                    return;
                }
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                return;
            };
            let up = std::thread::spawn(move || relay(client, server, link));
            relay(s2, c2, link);
            let _ = up.join();
        });
    }
    Ok(())
}

/// One direction: `from` -> `to`, paced and delayed.
fn relay(mut from: TcpStream, to: TcpStream, link: Link) {
    // Enough queued chunks for the bandwidth-delay product, and no more: a sender that
    // outruns the link is held back by TCP, as on a real one.
    let in_flight = ((link.rate as f64 * link.one_way.as_secs_f64()) as usize / CHUNK + 4).max(8);
    let (tx, rx) = mpsc::sync_channel::<(Instant, Vec<u8>)>(in_flight);
    let writer = std::thread::spawn(move || {
        let mut to = to;
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    // When the link is free again: each chunk occupies it for len / rate.
    let mut free_at = Instant::now();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let now = Instant::now();
        free_at = free_at.max(now) + Duration::from_secs_f64(n as f64 / link.rate as f64);
        if free_at > now {
            std::thread::sleep(free_at - now);
        }
        if tx
            .send((free_at + link.one_way, buf[..n].to_vec()))
            .is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = writer.join();
}
