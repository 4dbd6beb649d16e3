//! The cancel level of a run: how hard it is being stopped.
//!
//! A run watches its level (a `watch` channel of [`Cancel`]); whoever
//! stops it only ever [`raise`]s the level, never lowers it.

use tokio::sync::watch;

/// How hard a run is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Cancel {
    /// Keep going.
    No,
    /// Stop: SIGINT, then SIGTERM, then SIGKILL, a grace period apart.
    Interrupt,
    /// Stop now: SIGKILL.
    Kill,
}

/// Raise `current` to `level` if that is harder; whether it changed (for
/// `watch::Sender::send_if_modified`).
pub(crate) fn raise(current: &mut Cancel, level: Cancel) -> bool {
    if level > *current {
        *current = level;
        true
    } else {
        false
    }
}

/// Resolves once the run is being cancelled (or its level is gone).
pub(crate) async fn cancelled(cancel: &mut watch::Receiver<Cancel>) {
    let _ = cancel.wait_for(|c| *c != Cancel::No).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_only_goes_up() {
        let mut level = Cancel::No;
        assert!(raise(&mut level, Cancel::Interrupt));
        assert_eq!(level, Cancel::Interrupt);
        assert!(!raise(&mut level, Cancel::Interrupt));
        assert!(!raise(&mut level, Cancel::No));
        assert_eq!(level, Cancel::Interrupt);
        assert!(raise(&mut level, Cancel::Kill));
        assert!(!raise(&mut level, Cancel::Interrupt));
        assert_eq!(level, Cancel::Kill);
    }
}
