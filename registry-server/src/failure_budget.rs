//! How many failures an address may cause in a window before it is told to wait: the
//! registry's logins and the join API's tokens both count refusals per client address, so a
//! guesser spends its own budget, not the server's time, and others are unaffected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bound on addresses tracked, so a flood from many addresses cannot grow memory.
const MAX_TRACKED: usize = 4096;

#[derive(Debug)]
pub struct FailureBudget {
    budget: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureBudget {
    /// `budget` failures per address within `window`.
    pub fn new(budget: u32, window: Duration) -> Self {
        FailureBudget {
            budget,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` has spent its budget in the current window.
    pub fn spent(&self, ip: IpAddr) -> bool {
        self.failures.lock().is_ok_and(|f| {
            f.get(&ip)
                .is_some_and(|(since, n)| since.elapsed() < self.window && *n >= self.budget)
        })
    }

    /// Whether `ip` has caused `times` its budget in the current window: past being told to
    /// wait, it is flooding.
    pub fn far_over(&self, ip: IpAddr, times: u32) -> bool {
        self.failures.lock().is_ok_and(|f| {
            f.get(&ip).is_some_and(|(since, n)| {
                since.elapsed() < self.window && *n >= self.budget.saturating_mul(times)
            })
        })
    }

    /// Counts one failure for `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let Ok(mut f) = self.failures.lock() else {
            return;
        };
        if f.len() >= MAX_TRACKED {
            let window = self.window;
            f.retain(|_, (since, _)| since.elapsed() < window);
            if f.len() >= MAX_TRACKED {
                f.clear();
            }
        }
        let entry = f.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }

    /// Clears `ip`'s failures: it proved itself (a join that went through), so its earlier
    /// mistakes no longer count against it.
    pub fn forgive(&self, ip: IpAddr) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_spends_its_own_budget_and_gets_it_back_after_the_window() {
        let b = FailureBudget::new(2, Duration::from_millis(200));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        b.failed(a);
        b.failed(a);
        assert!(b.spent(a));
        assert!(!b.far_over(a, 2));
        b.failed(a);
        b.failed(a);
        assert!(b.far_over(a, 2));
        b.forgive(a);
        assert!(!b.spent(a));
        b.failed(a);
        assert!(!b.spent(a));
        b.failed(a);
        assert!(b.spent(a));
        assert!(!b.spent(other));
        std::thread::sleep(Duration::from_millis(250));
        assert!(!b.spent(a));
    }
}
