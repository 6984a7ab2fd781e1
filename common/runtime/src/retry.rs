//! Retry policy shared by every upstream call: exponential backoff with jitter via `backon`
//! (the `backoff` crate is unmaintained, RUSTSEC-2025-0012).

use std::time::Duration;

use backon::ExponentialBuilder;

/// Exponential backoff with full jitter: `attempts` tries in total (so `attempts - 1` retries),
/// starting at `min_delay`, doubling, capped at `max_delay`.
pub fn backoff(attempts: u32, min_delay: Duration, max_delay: Duration) -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_jitter()
        .with_factor(2.0)
        .with_min_delay(min_delay)
        .with_max_delay(max_delay)
        .with_max_times(attempts.saturating_sub(1) as usize)
}

/// The default policy for HTTP upstreams: 3 tries, 200 ms then 400 ms (plus jitter), at most 5 s.
pub fn upstream() -> ExponentialBuilder {
    backoff(3, Duration::from_millis(200), Duration::from_secs(5))
}

/// Picks the delay before the next try: a server's `Retry-After` wins over the computed backoff
/// when it is longer, capped at `cap` so one source cannot stall a cycle for minutes.
pub fn honour_retry_after(
    computed: Option<Duration>,
    retry_after: Option<Duration>,
    cap: Duration,
) -> Option<Duration> {
    // `None` from backon means "give up": keep that decision.
    let next = computed?;
    Some(match retry_after {
        Some(ra) if ra > next => ra.min(cap),
        _ => next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_extends_but_is_capped() {
        let s = Duration::from_secs;
        assert_eq!(honour_retry_after(Some(s(1)), Some(s(5)), s(3)), Some(s(3)));
        assert_eq!(honour_retry_after(Some(s(2)), Some(s(1)), s(3)), Some(s(2)));
        assert_eq!(honour_retry_after(None, Some(s(1)), s(3)), None);
    }
}
