//! Values as the daemon's messages write them.

use std::time::Duration;

/// `5s`, `500ms`, `1.5s`.
pub(crate) fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_milliseconds_below_a_second_and_in_seconds_above() {
        let said: Vec<String> = [0, 500, 999, 1000, 1500, 2000, 30_000, 61_250]
            .into_iter()
            .map(|ms| duration(Duration::from_millis(ms)))
            .collect();
        assert_eq!(
            said,
            ["0ms", "500ms", "999ms", "1s", "1.5s", "2s", "30s", "61.2s"]
        );
    }
}
